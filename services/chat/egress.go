package chat

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/emit"
)

// Adapter delivers posts to one chat system (Slack, Mattermost, ...). The
// egress calls Deliver for every post addressed to the adapter, one at a
// time per channel and in stream order.
type Adapter interface {
	// Name is the adapter's name in conversations ("slack").
	Name() string
	// Deliver shows the post to people. An error is retried with backoff
	// until the post is delivered, however long the chat system is down,
	// and the channel's later posts wait behind it. An error wrapped with
	// Permanent is not retried (channel archived, bot not invited, post
	// refused as invalid): the post is logged, reported to the ops channel
	// (EgressOptions.OpsChannel) and dropped, and the channel's next post
	// goes out.
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
	// Shards is how many channels are delivered at the same time (default
	// 16). A channel waiting to retry does not take one.
	Shards int
	// MinBackoff is the wait before a channel's post is tried again after
	// a failure; it doubles with each failure in a row (default 250ms).
	// Only a permanent error ends the retries.
	MinBackoff time.Duration
	// MaxBackoff caps the wait between retries (default 1m).
	MaxBackoff time.Duration
	// OpsChannel is the adapter's channel that is told when a post is
	// dropped as undeliverable, once per channel and reason. Empty: drops
	// are only logged.
	OpsChannel string
	// PinnedTTL: when the pinned replica stops pulling for this long,
	// another replica takes over delivery (default 10s).
	PinnedTTL time.Duration
}

func (o EgressOptions) withDefaults() EgressOptions {
	if o.Shards <= 0 {
		o.Shards = 16
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 250 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Minute
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.PinnedTTL <= 0 {
		o.PinnedTTL = 10 * time.Second
	}
	return o
}

const (
	// egressAckWait is how long the server waits for a post's ack before
	// it delivers the post again, here or, after a take-over, elsewhere.
	egressAckWait = 30 * time.Second
	// keepAliveEvery: posts held longer than this (waiting behind a
	// failing post, or in a long batch) are reported in progress, so the
	// server does not redeliver what this replica still holds.
	keepAliveEvery = egressAckWait / 4
	// stopGrace is how long Stop lets deliveries in flight finish before
	// it cancels them.
	stopGrace = 5 * time.Second
	// reportTimeout bounds the publish of one report to the ops channel.
	reportTimeout = 10 * time.Second
	// handBackTimeout bounds the calls Stop makes to hand posts back.
	handBackTimeout = 5 * time.Second
	// pinHeader carries the pin id of the replica a post was delivered to.
	pinHeader = "Nats-Pin-Id"
	// priorityGroup is the group the replicas pull in.
	priorityGroup = "egress"
	// maxReported bounds the memory of what was reported to the ops
	// channel; past it, reports start over.
	maxReported = 10_000
)

// egress consumes the CHAT posts of one adapter with a durable consumer
// shared by every chat replica. The consumer's "pinned client" priority
// policy gives one replica at a time all the posts, so posts of a channel
// stay in order; when that replica dies, another is pinned after PinnedTTL
// and the unacknowledged posts are delivered again (at least once: an
// adapter that can deduplicate by post id should).
//
// Each channel with posts waiting has a goroutine that delivers them in
// stream order. A post that fails is kept (unacknowledged, kept alive with
// InProgress) and retried with backoff until it is delivered or fails
// permanently; the channel's later posts wait behind it, and other
// channels go on. Retrying here rather than with NakWithDelay keeps the
// order: a nak'd post would be redelivered after posts that came later.
type egress struct {
	a      Adapter
	batch  BatchAdapter // nil when a delivers one post at a time
	o      EgressOptions
	js     jetstream.JetStream
	log    *slog.Logger
	tracer trace.Tracer
	cons   jetstream.Consumer
	cc     jetstream.ConsumeContext
	// slots bounds the channels being delivered at once.
	slots chan struct{}
	// waits ends on stop: retry backoffs, waits for a slot, keep-alive.
	waits     context.Context
	stopWaits context.CancelFunc
	// calls ends a moment after stop: deliveries in flight.
	calls     context.Context
	stopCalls context.CancelFunc
	wg        sync.WaitGroup

	mu       sync.Mutex
	channels map[string]*channelQueue // by subject
	held     map[uint64]bool          // stream sequences of the posts in channels
	reported map[string]bool          // channel + reason told to the ops channel
	pin      string                   // the pin id of the last post received
	stopped  bool
}

// channelQueue is one channel's posts that are not yet acknowledged: the
// head is being delivered (or waits to be retried), the rest wait.
type channelQueue struct {
	subject string
	posts   []*heldPost
	// failures in a row; only the channel's goroutine uses it.
	failures int
}

// heldPost is a post this replica holds.
type heldPost struct {
	msg jetstream.Msg
	seq uint64 // stream sequence; 0 when unknown
	// touched is when the server last heard of it (delivery or InProgress).
	touched time.Time
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
		AckWait:        egressAckWait,
		// Unlimited: a post redelivered many times (replicas failing over,
		// NATS restarts during a long outage) must still be delivered.
		MaxDeliver: -1,
		// Bounds what a replica holds while the chat system is down.
		MaxAckPending:  20000,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{priorityGroup},
		PinnedTTL:      o.PinnedTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("egress %s: declare consumer %s: %w", a.Name(), name, err)
	}
	e := &egress{
		a: a, o: o, js: js, cons: cons, log: log.With("adapter", a.Name()), tracer: tracer,
		slots:    make(chan struct{}, o.Shards),
		channels: map[string]*channelQueue{},
		held:     map[uint64]bool{},
		reported: map[string]bool{},
	}
	e.batch, _ = a.(BatchAdapter)
	e.waits, e.stopWaits = context.WithCancel(context.Background())
	e.calls, e.stopCalls = context.WithCancel(context.Background())
	e.wg.Add(1)
	go e.keepAlive()
	e.cc, err = cons.Consume(e.dispatch, jetstream.PullPriorityGroup(priorityGroup),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				e.log.Debug("egress consume", "error", err)
			}
		}))
	if err != nil {
		e.stopWaits()
		e.stopCalls()
		e.wg.Wait()
		return nil, fmt.Errorf("egress %s: consume: %w", a.Name(), err)
	}
	return e, nil
}

// dispatch queues a post behind the earlier posts of its channel, and
// starts the channel's goroutine when it has none. It never blocks: what
// a replica holds is bounded by the consumer's MaxAckPending.
func (e *egress) dispatch(m jetstream.Msg) {
	var seq uint64
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return // not acknowledged: the replica that takes over gets it
	}
	if pin := m.Headers().Get(pinHeader); pin != "" {
		e.pin = pin
	}
	if seq != 0 && e.held[seq] {
		// Redelivered while held here (the server missed the keep-alive
		// during an outage). The server takes the ack of the held copy for
		// both, so delivering the copy would only repeat the post.
		return
	}
	q := e.channels[m.Subject()]
	if q == nil {
		q = &channelQueue{subject: m.Subject()}
		e.channels[m.Subject()] = q
		e.wg.Add(1)
		go e.run(q)
	}
	q.posts = append(q.posts, &heldPost{msg: m, seq: seq, touched: time.Now()})
	if seq != 0 {
		e.held[seq] = true
	}
}

// run delivers a channel's posts until none is left, retrying a failed
// one with backoff before anything behind it.
func (e *egress) run(q *channelQueue) {
	defer e.wg.Done()
	for {
		e.mu.Lock()
		if len(q.posts) == 0 {
			delete(e.channels, q.subject)
			e.mu.Unlock()
			return
		}
		n := 1
		if e.batch != nil {
			n = min(len(q.posts), maxBatch)
		}
		batch := slices.Clone(q.posts[:n])
		e.mu.Unlock()

		select {
		case e.slots <- struct{}{}:
		case <-e.waits.Done():
			return
		}
		done, err := e.deliver(batch)
		<-e.slots
		e.release(q, done)
		if err == nil {
			q.failures = 0
			continue
		}
		if e.waits.Err() != nil {
			return // stopping: the delivery was cancelled, not failed
		}
		if done > 0 {
			q.failures = 0
		}
		q.failures++
		wait := e.backoff(q.failures)
		e.log.Warn("egress: delivery failed; retrying", "subject", q.subject, "failures", q.failures, "retry_in", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-e.waits.Done():
			t.Stop()
			return
		}
	}
}

// backoff is the wait after the n-th failure in a row: MinBackoff doubled
// n-1 times, at most MaxBackoff, less up to a quarter so that channels
// failing together do not retry together.
func (e *egress) backoff(n int) time.Duration {
	d := e.o.MinBackoff
	for i := 1; i < n && d < e.o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, e.o.MaxBackoff)
	if j := d / 4; j > 0 {
		d -= rand.N(j)
	}
	return d
}

// deliver hands the batch (one channel's posts, in order) to the adapter
// once. It acknowledges what was delivered, drops an undecodable or
// permanently failing post at the head, and returns how many posts from
// the start are finished and, when the next is not, the transient error.
func (e *egress) deliver(batch []*heldPost) (int, error) {
	posts := make([]*chatv1.ChatPost, 0, len(batch))
	for i, h := range batch {
		var p chatv1.ChatPost
		if err := wire.Unmarshal(h.msg.Data(), &p); err != nil {
			if i > 0 {
				break // delivered up to here; dropped when it is the head
			}
			e.log.Error("egress: undecodable post; dropped", "subject", h.msg.Subject(), "error", err)
			e.settle(h.msg.TermWithReason("undecodable"))
			return 1, nil
		}
		posts = append(posts, &p)
	}
	batch = batch[:len(posts)]
	ctx := extract(e.calls, batch[0].msg.Headers())
	ctx, span := e.tracer.Start(ctx, "chat egress "+e.a.Name(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("sb.post_id", posts[0].GetId()), attribute.String("sb.job_id", posts[0].GetJobId()),
			attribute.Int("sb.batch", len(posts))))
	defer span.End()

	var n int
	var err error
	if e.batch != nil {
		// Time enough for the posts that a rate limit lets through; what
		// is not done by then is handed over again.
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(len(posts))*100*time.Millisecond)
		n, err = e.batch.DeliverBatch(dctx, posts)
		cancel()
		n = max(0, min(n, len(posts)))
	} else {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = e.a.Deliver(dctx, posts[0])
		cancel()
		if err == nil {
			n = 1
		}
	}
	for _, h := range batch[:n] {
		e.settle(h.msg.Ack())
	}
	if n == len(posts) {
		return n, nil
	}
	if err == nil {
		if n > 0 {
			return n, nil
		}
		err = fmt.Errorf("adapter %s delivered none of %d posts and gave no reason", e.a.Name(), len(posts))
	}
	span.RecordError(err)
	if isPermanent(err) {
		e.drop(batch[n].msg, posts[n], err)
		return n + 1, nil
	}
	return n, err
}

// settle logs an ack that could not be sent; the server then delivers the
// post again, which at-least-once delivery allows.
func (e *egress) settle(err error) {
	if err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		e.log.Debug("egress: acknowledge post", "error", err)
	}
}

// release forgets the first n posts of q, which are acknowledged.
func (e *egress) release(q *channelQueue, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range n {
		delete(e.held, q.posts[i].seq)
		q.posts[i] = nil
	}
	q.posts = q.posts[n:]
}

// drop gives up on a post that cannot be delivered, says so in the log and
// to the ops channel, and tells the server not to deliver it again.
func (e *egress) drop(m jetstream.Msg, p *chatv1.ChatPost, cause error) {
	ch := p.GetConversation().GetChannel()
	e.log.Error("egress: post undeliverable; dropped", "post_id", p.GetId(), "job_id", p.GetJobId(), "channel", ch, "error", cause)
	e.report(p, cause)
	e.settle(m.TermWithReason("undeliverable"))
}

// report tells the ops channel about a dropped post, once per channel and
// reason: a channel that takes nothing (archived, bot not invited) is one
// report, not one per post. The report goes through the CHAT stream like
// any post, so it waits out an outage too; its id is derived from what it
// reports, so replicas reporting the same at once store it once.
func (e *egress) report(p *chatv1.ChatPost, cause error) {
	ops, ch := e.o.OpsChannel, p.GetConversation().GetChannel()
	if ops == "" || ops == ch {
		return // a report that cannot be delivered either must not loop
	}
	key := ch + "\x00" + cause.Error()
	e.mu.Lock()
	if e.reported[key] {
		e.mu.Unlock()
		return
	}
	if len(e.reported) >= maxReported {
		clear(e.reported)
	}
	e.reported[key] = true
	e.mu.Unlock()

	what := "post " + p.GetId()
	if p.GetJobId() != "" {
		what += " of job " + p.GetJobId()
	}
	sum := sha256.Sum256([]byte(e.a.Name() + "\x00" + key))
	r := &chatv1.ChatPost{
		Id:           "undeliverable-" + hex.EncodeToString(sum[:12]),
		Conversation: &chatv1.Conversation{Adapter: e.a.Name(), Channel: ops},
		Kind:         chatv1.Kind_KIND_NOTICE,
		Author:       &chatv1.Identity{Id: "service:chat", Name: "switchboard", Automation: true},
		Text: fmt.Sprintf("I could not deliver a post to %s and dropped it (%s): %v. Later posts to %s that fail the same way are only logged.",
			ch, what, cause, ch),
	}
	ctx, cancel := context.WithTimeout(e.waits, reportTimeout)
	defer cancel()
	if _, err := emit.Post(ctx, e.js, r); err != nil {
		e.log.Error("egress: report an undeliverable post to the ops channel", "ops_channel", ops, "post_id", p.GetId(), "error", err)
	}
}

// keepAlive tells the server that posts held here for a while are in
// progress, so that it does not hand them out again while they wait
// behind a failing post.
func (e *egress) keepAlive() {
	defer e.wg.Done()
	t := time.NewTicker(keepAliveEvery)
	defer t.Stop()
	for {
		select {
		case <-e.waits.Done():
			return
		case now := <-t.C:
			var stale []jetstream.Msg
			e.mu.Lock()
			for _, q := range e.channels {
				for _, h := range q.posts {
					if now.Sub(h.touched) >= keepAliveEvery {
						h.touched = now
						stale = append(stale, h.msg)
					}
				}
			}
			e.mu.Unlock()
			for _, m := range stale {
				e.settle(m.InProgress())
			}
		}
	}
}

// stop stops consuming, ends retries at once and deliveries in flight
// after stopGrace, and hands every post still held back to the stream
// (see handBack).
func (e *egress) stop() {
	if e.cc != nil {
		e.cc.Drain()
		<-e.cc.Closed()
	}
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.stopWaits()
	grace := time.AfterFunc(stopGrace, e.stopCalls)
	e.wg.Wait()
	grace.Stop()
	e.stopCalls()
	e.mu.Lock()
	var held []jetstream.Msg
	for _, q := range e.channels {
		for _, h := range q.posts {
			held = append(held, h.msg)
		}
	}
	clear(e.channels)
	clear(e.held)
	pin := e.pin
	e.mu.Unlock()
	if len(held) > 0 {
		e.handBack(held, pin)
	}
}

// handBack naks the posts this replica still holds, each channel's in
// stream order. The server redelivers nak'd posts in the order of the
// naks and before newer posts, so the replica that takes over delivers
// them first and in order, instead of after the ack wait and after newer
// posts of their channels.
//
// But the server would first offer them to this replica's pull requests,
// which outlive its subscription, and put each one it finds nobody to
// deliver to at the back of the line. So when this replica is still the
// pinned one, it unpins itself first: the server then drops its requests,
// which carry the old pin id. It does not unpin another replica, which
// may hold posts of its own. A post still on its way here when the
// subscription ended is beyond this: the server redelivers it on its own,
// perhaps ahead of these.
func (e *egress) handBack(held []jetstream.Msg, pin string) {
	ctx, cancel := context.WithTimeout(context.Background(), handBackTimeout)
	defer cancel()
	if err := e.unpin(ctx, pin); err != nil {
		e.log.Warn("egress: unpin before handing posts back; they may be redelivered out of order", "error", err)
	}
	for _, m := range held {
		e.settle(m.Nak())
	}
}

// unpin unpins this replica when it is still the pinned one.
func (e *egress) unpin(ctx context.Context, pin string) error {
	if pin == "" {
		return nil
	}
	info, err := e.cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("consumer info: %w", err)
	}
	for _, g := range info.PriorityGroups {
		if g.Group != priorityGroup || g.PinnedClientID != pin {
			continue
		}
		s, err := e.js.Stream(ctx, wire.StreamChat)
		if err != nil {
			return fmt.Errorf("stream %s: %w", wire.StreamChat, err)
		}
		if err := s.UnpinConsumer(ctx, e.cons.CachedInfo().Name, priorityGroup); err != nil {
			return fmt.Errorf("unpin %s: %w", e.cons.CachedInfo().Name, err)
		}
	}
	return nil
}
