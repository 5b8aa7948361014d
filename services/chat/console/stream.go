package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// replay says where an event stream starts reading the CHAT stream.
type replay struct {
	// start is the first stream sequence to read; 0 reads from the start.
	start uint64
	// skip is how many of the channel's posts to drop after start, so that
	// exactly History are replayed. Reading a few extra posts is cheaper
	// than searching for the exact first one.
	skip uint64
	// last is the sequence of the channel's newest post when the stream
	// began (0: none). Once it has been sent the page is up to date.
	last uint64
	// probes counts the consumers created to find start, for the log.
	probes int
}

// stream serves GET /api/stream?channel=<name>: Server-Sent Events with
// one ChatPost each ("id: <stream sequence>", "data: <protojson>"), first
// the channel's last History posts, oldest first, then live ones.
//
// With Last-Event-ID (EventSource sends it when it reconnects) or
// ?after=<sequence> (the page's own reconnects, which cannot set headers),
// it sends exactly the posts after that sequence instead.
//
// A named "synced" event with no id marks the moment the page has caught
// up; a comment line is sent after heartbeatInterval of silence.
func (c *Console) stream(w http.ResponseWriter, r *http.Request) {
	if !c.authorised(w, r) {
		return
	}
	channel := r.URL.Query().Get("channel")
	if err := validateChannel(channel); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	after, resume, err := resumePoint(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	subject := wire.ChatPostSubject(Adapter, channel)
	log := c.log.With("channel", channel, "subject", subject)

	ctx := r.Context()
	setup, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	var plan replay
	if resume {
		plan, err = c.planResume(setup, subject, after)
	} else {
		plan, err = c.planHistory(setup, subject, c.cfg.History)
	}
	if err != nil {
		log.Warn("plan event stream", "error", err)
		writeError(w, http.StatusServiceUnavailable, "cannot read the chat history right now; retrying")
		return
	}
	log.Debug("event stream starts", "resume", resume, "after", after, "start_seq", plan.start,
		"skip", plan.skip, "last_seq", plan.last, "probes", plan.probes)
	occ := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// The consumer is deleted when the browser goes; this only cleans
		// up after a replica that died.
		InactiveThreshold: time.Minute,
	}
	if plan.start > 0 {
		occ.DeliverPolicy, occ.OptStartSeq = jetstream.DeliverByStartSequencePolicy, plan.start
	}
	cons, err := c.js.OrderedConsumer(setup, wire.StreamChat, occ)
	if err != nil {
		log.Warn("create ordered consumer", "error", err)
		writeError(w, http.StatusServiceUnavailable, "cannot read the chat stream right now; retrying")
		return
	}
	it, err := cons.Messages()
	if err != nil {
		log.Warn("read ordered consumer", "error", err)
		writeError(w, http.StatusServiceUnavailable, "cannot read the chat stream right now; retrying")
		return
	}
	defer func() {
		it.Stop()
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), natsTimeout)
			defer cancel()
			if err := c.js.DeleteConsumer(dctx, wire.StreamChat, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				log.Debug("delete ordered consumer", "consumer", info.Name, "error", err)
			}
		}
	}()

	ev := &eventWriter{w: w, rc: http.NewResponseController(w), timeout: c.writeTimeout}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx would otherwise buffer the stream
	w.WriteHeader(http.StatusOK)
	ev.printf("retry: 2000\n\n")
	synced := false
	if plan.last == 0 || (resume && after >= plan.last) {
		ev.printf("event: synced\ndata: {}\n\n")
		synced = true
	}
	if err := ev.flush(); err != nil {
		return
	}

	for {
		wait, cancel := context.WithTimeout(ctx, c.heartbeat)
		msg, err := it.Next(jetstream.NextContext(wait))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return // the browser went away or the server is stopping
			}
			if errors.Is(err, context.DeadlineExceeded) {
				ev.printf(": heartbeat\n\n")
				if ev.flush() != nil {
					return
				}
				continue
			}
			// The browser reconnects with Last-Event-ID and loses nothing.
			log.Warn("read chat stream", "error", err)
			return
		}
		md, err := msg.Metadata()
		if err != nil {
			log.Warn("chat post without metadata", "error", err)
			continue
		}
		if plan.skip > 0 {
			plan.skip--
			continue
		}
		seq := md.Sequence.Stream
		if data, err := postJSON(msg.Data()); err != nil {
			// Sending it anyway would break the page; dropping it keeps the
			// sequence moving and the log says what was lost.
			log.Warn("undecodable chat post", "seq", seq, "error", err)
		} else {
			ev.printf("id: %d\ndata: %s\n\n", seq, data)
		}
		if !synced && (seq >= plan.last || md.NumPending == 0) {
			ev.printf("event: synced\ndata: {}\n\n")
			synced = true
		}
		if err := ev.flush(); err != nil {
			return
		}
	}
}

// resumePoint reads Last-Event-ID, or the after query parameter.
func resumePoint(r *http.Request) (after uint64, ok bool, err error) {
	v := strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	name := "Last-Event-ID"
	if v == "" {
		v, name = r.URL.Query().Get("after"), "after"
	}
	if v == "" {
		return 0, false, nil
	}
	after, err = strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %q is not a stream sequence", name, v)
	}
	return after, true, nil
}

// postJSON re-encodes a post: what reaches the browser is always a valid
// ChatPost on one line, whatever a publisher put on the stream.
func postJSON(data []byte) ([]byte, error) {
	var post chatv1.ChatPost
	if err := wire.Unmarshal(data, &post); err != nil {
		return nil, fmt.Errorf("decode chat post: %w", err)
	}
	b, err := wire.Marshal(&post)
	if err != nil {
		return nil, fmt.Errorf("encode chat post: %w", err)
	}
	// protojson writes one line today; a data field must never hold a
	// newline, so make sure.
	return bytes.ReplaceAll(b, []byte("\n"), []byte(" ")), nil
}

// planResume starts right after sequence after.
func (c *Console) planResume(ctx context.Context, subject string, after uint64) (replay, error) {
	s, err := c.js.Stream(ctx, wire.StreamChat)
	if err != nil {
		return replay{}, fmt.Errorf("look up stream %s: %w", wire.StreamChat, err)
	}
	last, err := lastSeq(ctx, s, subject)
	if err != nil {
		return replay{}, err
	}
	return replay{start: after + 1, last: last}, nil
}

// planHistory finds where the channel's last n posts begin.
//
// DeliverLastPerSubjectPolicy is no help here: a channel is one subject, so
// it would replay one post. JetStream has no "last n of a subject", so the
// console counts: the stream's per-subject count says whether reading all
// the channel's posts is cheap enough, and otherwise a binary search over
// start sequences, using the pending count the server computes for a
// throwaway consumer, finds a start with between n and 2n posts after it.
// That is about log2(stream length) consumer creations on a busy stream,
// and none on a quiet one.
func (c *Console) planHistory(ctx context.Context, subject string, n int) (replay, error) {
	s, err := c.js.Stream(ctx, wire.StreamChat)
	if err != nil {
		return replay{}, fmt.Errorf("look up stream %s: %w", wire.StreamChat, err)
	}
	last, err := lastSeq(ctx, s, subject)
	if err != nil || last == 0 {
		return replay{last: last}, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return replay{}, fmt.Errorf("count posts on %s: %w", subject, err)
	}
	want := uint64(n)
	total := info.State.Subjects[subject]
	if total <= 2*want {
		return replay{start: info.State.FirstSeq, skip: total - min(total, want), last: last}, nil
	}
	// Invariant: at least want posts from lo on (pending lo), fewer than
	// want from hi on.
	lo, pendingLo, hi := info.State.FirstSeq, total, last+1
	probes := 0
	for hi-lo > 1 && pendingLo > 2*want {
		mid := lo + (hi-lo)/2
		p, err := c.pendingFrom(ctx, subject, mid)
		if err != nil {
			return replay{}, err
		}
		probes++
		if p >= want {
			lo, pendingLo = mid, p
		} else {
			hi = mid
		}
	}
	return replay{start: lo, skip: pendingLo - want, last: last, probes: probes}, nil
}

// lastSeq returns the sequence of the newest post on subject, 0 if none.
func lastSeq(ctx context.Context, s jetstream.Stream, subject string) (uint64, error) {
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last post on %s: %w", subject, err)
	}
	return m.Sequence, nil
}

// pendingFrom counts the posts on subject at or after sequence seq, by
// creating a consumer that starts there and reading its pending count.
func (c *Console) pendingFrom(ctx context.Context, subject string, seq uint64) (uint64, error) {
	cons, err := c.js.CreateConsumer(ctx, wire.StreamChat, jetstream.ConsumerConfig{
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       seq,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: 30 * time.Second, // in case the delete below is lost
	})
	if err != nil {
		return 0, fmt.Errorf("count posts on %s from %d: %w", subject, seq, err)
	}
	info := cons.CachedInfo()
	if err := c.js.DeleteConsumer(ctx, wire.StreamChat, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		c.log.Debug("delete counting consumer", "consumer", info.Name, "error", err)
	}
	return info.NumPending, nil
}

// eventWriter writes Server-Sent Events with a write deadline per write,
// remembering the first error so callers check once per event.
type eventWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	err     error
}

// printf writes one piece of an event.
func (e *eventWriter) printf(format string, args ...any) {
	if e.err != nil {
		return
	}
	// The server's WriteTimeout would end every stream after 30s; a
	// deadline per write ends only those of browsers that stopped reading.
	if err := e.rc.SetWriteDeadline(time.Now().Add(e.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		e.err = err
		return
	}
	_, e.err = fmt.Fprintf(e.w, format, args...)
}

// flush sends what was written and reports the first error.
func (e *eventWriter) flush() error {
	if e.err == nil {
		e.err = e.rc.Flush()
	}
	return e.err
}
