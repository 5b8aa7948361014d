package chat

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// Adapter delivers posts to one chat system (Slack, Mattermost, ...). The
// egress calls Deliver for every post addressed to the adapter, one at a
// time per channel and in stream order.
type Adapter interface {
	// Name is the adapter's name in conversations ("slack").
	Name() string
	// Deliver shows the post to people. An error is retried with backoff;
	// an error wrapped with Permanent is not (channel archived, bot not
	// invited): the post is reported undeliverable and skipped.
	Deliver(ctx context.Context, p *chatv1.ChatPost) error
}

// BatchAdapter is an Adapter that takes a channel's backlog at once. The
// egress hands it every post of one channel that is waiting, in stream
// order, so it can coalesce a flood (notices into a digest, progress
// updates into the latest) instead of falling behind a per-channel rate
// limit such as Slack's one message per second.
type BatchAdapter interface {
	Adapter
	// DeliverBatch delivers posts, all of one channel, in order. It
	// returns how many posts from the start are done (delivered, or part
	// of something delivered) and, when not all are, why posts[n] is not;
	// that error may be permanent (see Permanent).
	DeliverBatch(ctx context.Context, posts []*chatv1.ChatPost) (n int, err error)
}

// maxBatch bounds the posts one DeliverBatch call gets.
const maxBatch = 1000

// Permanent marks a delivery error that retrying cannot fix. An adapter
// package that cannot import this one may instead return an error with a
// method Permanent() bool that returns true.
func Permanent(err error) error { return &permanentError{err} }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// isPermanent reports whether err was marked with Permanent, or says so
// itself with a Permanent() bool method.
func isPermanent(err error) bool {
	var perm *permanentError
	if errors.As(err, &perm) {
		return true
	}
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// EgressOptions tune the egress; zero values take the defaults.
type EgressOptions struct {
	// Shards is how many channels are delivered in parallel (default 16).
	Shards int
	// MaxAttempts before a post is reported undeliverable (default 10).
	MaxAttempts int
	// PinnedTTL: when the pinned replica stops pulling for this long,
	// another replica takes over delivery (default 10s).
	PinnedTTL time.Duration
}

func (o EgressOptions) withDefaults() EgressOptions {
	if o.Shards <= 0 {
		o.Shards = 16
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.PinnedTTL <= 0 {
		o.PinnedTTL = 10 * time.Second
	}
	return o
}

// egress consumes the CHAT posts of one adapter with a durable consumer
// shared by every chat replica. The consumer's "pinned client" priority
// policy gives one replica at a time all the posts, so posts of a channel
// stay in order; when that replica dies, another is pinned after PinnedTTL
// and the unacknowledged posts are delivered again (at least once: an
// adapter that can deduplicate by post id should).
type egress struct {
	a      Adapter
	o      EgressOptions
	log    *slog.Logger
	tracer trace.Tracer
	shards []chan jetstream.Msg
	cc     jetstream.ConsumeContext
	wg     sync.WaitGroup
}

// egressConsumer names the durable consumer of an adapter. Renaming it
// makes a new consumer that replays the whole stream.
func egressConsumer(adapter string) string { return "chat-egress-" + wire.Token(adapter) }

func startEgress(ctx context.Context, js jetstream.JetStream, a Adapter, o EgressOptions, log *slog.Logger, tracer trace.Tracer) (*egress, error) {
	o = o.withDefaults()
	name := egressConsumer(a.Name())
	// The filter is built by hand: ChatPostSubject(name, "*") would pass the
	// wildcard through Token, which hashes it, and match no channel.
	cons, err := js.CreateOrUpdateConsumer(ctx, wire.StreamChat, jetstream.ConsumerConfig{
		Durable:        name,
		Description:    "Delivers posts to the " + a.Name() + " adapter.",
		FilterSubjects: []string{wire.SubjectChatPostPrefix + "." + wire.Token(a.Name()) + ".*"},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        time.Minute,
		MaxAckPending:  20000,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{"egress"},
		PinnedTTL:      o.PinnedTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("egress %s: declare consumer %s: %w", a.Name(), name, err)
	}
	e := &egress{a: a, o: o, log: log.With("adapter", a.Name()), tracer: tracer}
	for i := 0; i < o.Shards; i++ {
		ch := make(chan jetstream.Msg, 1024)
		e.shards = append(e.shards, ch)
		e.wg.Add(1)
		go e.work(ch)
	}
	e.cc, err = cons.Consume(e.dispatch, jetstream.PullPriorityGroup("egress"),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				e.log.Debug("egress consume", "error", err)
			}
		}))
	if err != nil {
		e.stopWorkers()
		return nil, fmt.Errorf("egress %s: consume: %w", a.Name(), err)
	}
	return e, nil
}

// dispatch sends a post to its channel's shard; the shard keeps order.
func (e *egress) dispatch(m jetstream.Msg) {
	h := fnv.New32a()
	h.Write([]byte(m.Subject()))
	e.shards[h.Sum32()%uint32(len(e.shards))] <- m
}

func (e *egress) work(ch chan jetstream.Msg) {
	defer e.wg.Done()
	ba, batching := e.a.(BatchAdapter)
	for m := range ch {
		if !batching {
			e.deliver(m)
			continue
		}
		// Take whatever else is already waiting in this shard, without
		// waiting for more, and deliver it channel by channel.
		batch := []jetstream.Msg{m}
	more:
		for len(batch) < maxBatch {
			select {
			case m2, ok := <-ch:
				if !ok {
					break more
				}
				batch = append(batch, m2)
			default:
				break more
			}
		}
		var order []string
		bySubject := map[string][]jetstream.Msg{}
		for _, m := range batch {
			if _, ok := bySubject[m.Subject()]; !ok {
				order = append(order, m.Subject())
			}
			bySubject[m.Subject()] = append(bySubject[m.Subject()], m)
		}
		for _, subj := range order {
			e.deliverBatch(ba, bySubject[subj])
		}
	}
}

// deliverBatch delivers the waiting posts of one channel through a
// BatchAdapter, acknowledging each post as soon as the adapter reports it
// done, with the same retry and skip rules as deliver.
func (e *egress) deliverBatch(ba BatchAdapter, msgs []jetstream.Msg) {
	posts := make([]*chatv1.ChatPost, 0, len(msgs))
	kept := msgs[:0:0]
	for _, m := range msgs {
		var p chatv1.ChatPost
		if err := wire.Unmarshal(m.Data(), &p); err != nil {
			e.log.Error("egress: undecodable post; dropped", "subject", m.Subject(), "error", err)
			m.Term()
			continue
		}
		posts = append(posts, &p)
		kept = append(kept, m)
	}
	msgs = kept
	if len(msgs) == 0 {
		return
	}
	ctx := extract(context.Background(), msgs[0].Headers())
	ctx, span := e.tracer.Start(ctx, "chat egress "+e.a.Name(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("sb.post_id", posts[0].GetId()), attribute.Int("sb.batch", len(posts))))
	defer span.End()
	for attempt := 1; len(posts) > 0; {
		// Time enough for the posts that a rate limit lets through; what
		// is not done by then is handed over again.
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(len(posts))*100*time.Millisecond)
		n, err := ba.DeliverBatch(dctx, posts)
		cancel()
		n = max(0, min(n, len(posts)))
		for _, m := range msgs[:n] {
			m.Ack()
		}
		posts, msgs = posts[n:], msgs[n:]
		if len(posts) == 0 {
			return
		}
		if n > 0 {
			attempt = 1
		}
		if err == nil {
			if n > 0 {
				continue
			}
			err = fmt.Errorf("adapter %s delivered none of %d posts and gave no reason", e.a.Name(), len(posts))
		}
		if isPermanent(err) || attempt >= e.o.MaxAttempts {
			e.log.Error("egress: post undeliverable; skipped", "post_id", posts[0].GetId(), "channel", posts[0].GetConversation().GetChannel(), "attempts", attempt, "error", err)
			span.RecordError(err)
			msgs[0].Term()
			posts, msgs = posts[1:], msgs[1:]
			attempt = 1
			continue
		}
		e.log.Warn("egress: delivery failed; retrying", "post_id", posts[0].GetId(), "attempt", attempt, "error", err)
		for _, m := range msgs {
			m.InProgress()
		}
		time.Sleep(min(100*time.Millisecond<<min(attempt, 8), 15*time.Second))
		attempt++
	}
}

func (e *egress) deliver(m jetstream.Msg) {
	var p chatv1.ChatPost
	if err := wire.Unmarshal(m.Data(), &p); err != nil {
		e.log.Error("egress: undecodable post; dropped", "subject", m.Subject(), "error", err)
		m.Term()
		return
	}
	ctx := extract(context.Background(), m.Headers())
	ctx, span := e.tracer.Start(ctx, "chat egress "+e.a.Name(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("sb.post_id", p.GetId()), attribute.String("sb.job_id", p.GetJobId())))
	defer span.End()
	for attempt := 1; ; attempt++ {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := e.a.Deliver(dctx, &p)
		cancel()
		if err == nil {
			m.Ack()
			return
		}
		if isPermanent(err) || attempt >= e.o.MaxAttempts {
			e.log.Error("egress: post undeliverable; skipped", "post_id", p.GetId(), "channel", p.GetConversation().GetChannel(), "attempts", attempt, "error", err)
			span.RecordError(err)
			m.Term()
			return
		}
		e.log.Warn("egress: delivery failed; retrying", "post_id", p.GetId(), "attempt", attempt, "error", err)
		m.InProgress()
		time.Sleep(min(100*time.Millisecond<<min(attempt, 8), 15*time.Second))
	}
}

func (e *egress) stop() {
	if e.cc != nil {
		e.cc.Drain()
		<-e.cc.Closed()
	}
	e.stopWorkers()
}

func (e *egress) stopWorkers() {
	for _, ch := range e.shards {
		close(ch)
	}
	e.wg.Wait()
}
