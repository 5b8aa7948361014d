package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-ops/switchboard/kit/emit"
)

// Names of what the primitives declare beside switchboard's own streams.
// Their settings copy the ones they stand for: the bucket sb_jobs's, the
// stream CHAT's, the consumer the chat egress's.
const (
	BenchBucket   = "bench_kv"
	BenchStream   = "BENCH"
	benchConsumer = "bench-delivery"
	subjEcho      = "bench.echo"
	subjPublish   = "bench.pub"
	subjDeliver   = "bench.deliver"
	headerSeq     = "Bench-Seq"
)

// Primitives are the NATS and JetStream operations the command path is
// made of, on the Env's server and over the chat service's connection.
// Each method does one operation and returns when it is complete, so its
// duration is the operation's latency.
type Primitives struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	payload []byte
	prefix  string
	seq     atomic.Uint64
	getKey  string

	echo *nats.Subscription
	cc   jetstream.ConsumeContext

	mu      sync.Mutex
	waiting map[string]chan struct{}
}

// Primitives declares the bench bucket, stream and consumer and a trivial
// responder, with payloads of size bytes (about a CommandRequest's or a
// Job's protojson size). Close removes the responder and the consumer.
func (e *Env) Primitives(ctx context.Context, size int) (_ *Primitives, err error) {
	p := &Primitives{
		nc:      e.NC,
		js:      e.JS,
		payload: make([]byte, size),
		prefix:  emit.NewID()[:8],
		waiting: map[string]chan struct{}{},
	}
	for i := range p.payload {
		p.payload[i] = 'a' + byte(i%26)
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	// The sb_jobs bucket's settings (kit/bus.EnsureStreams).
	p.kv, err = e.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BenchBucket, History: 1, TTL: 30 * 24 * time.Hour, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("bench bucket: %w", err)
	}
	p.getKey = "get." + p.prefix
	if _, err := p.kv.Put(ctx, p.getKey, p.payload); err != nil {
		return nil, fmt.Errorf("bench bucket: %w", err)
	}
	// The CHAT stream's settings.
	_, err = e.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: BenchStream, Subjects: []string{subjPublish, subjDeliver + ".>"},
		Storage: jetstream.FileStorage, MaxAge: 14 * 24 * time.Hour, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("bench stream: %w", err)
	}
	// The chat egress's consumer: durable, pinned, explicit acks.
	cons, err := e.JS.CreateOrUpdateConsumer(ctx, BenchStream, jetstream.ConsumerConfig{
		Durable:        benchConsumer,
		FilterSubjects: []string{subjDeliver + ".>"},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        time.Minute,
		MaxAckPending:  20000,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{"egress"},
		PinnedTTL:      10 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("bench consumer: %w", err)
	}
	p.cc, err = cons.Consume(p.onDelivery, jetstream.PullPriorityGroup("egress"),
		jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {}))
	if err != nil {
		return nil, fmt.Errorf("bench consumer: %w", err)
	}
	p.echo, err = e.NC.Subscribe(subjEcho, func(m *nats.Msg) { m.Respond(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("bench responder: %w", err)
	}
	// The subscription must be known to the server before the first request.
	if err := e.NC.FlushTimeout(10 * time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// Close stops the responder and the consumer.
func (p *Primitives) Close() {
	if p.echo != nil {
		p.echo.Unsubscribe()
	}
	if p.cc != nil {
		p.cc.Stop()
	}
}

func (p *Primitives) next() string {
	return p.prefix + "-" + strconv.FormatUint(p.seq.Add(1), 10)
}

// Request is a bare NATS request to a responder that echoes the payload.
func (p *Primitives) Request(ctx context.Context) error {
	_, err := p.nc.RequestWithContext(ctx, subjEcho, p.payload)
	return err
}

// KVCreate creates a new key, as jobs.Create does for every job.
func (p *Primitives) KVCreate(ctx context.Context) error {
	_, err := p.kv.Create(ctx, "k."+p.next(), p.payload)
	return err
}

// KVGet reads one key, as jobs.Modify does before updating a job.
func (p *Primitives) KVGet(ctx context.Context) error {
	_, err := p.kv.Get(ctx, p.getKey)
	return err
}

// JSPublish is a JetStream publish with a message id, waiting for the
// stream's acknowledgement, as every ChatPost and audit record is sent.
func (p *Primitives) JSPublish(ctx context.Context) error {
	m := nats.NewMsg(subjPublish)
	m.Data = p.payload
	_, err := p.js.PublishMsg(ctx, m, jetstream.WithMsgID(p.next()))
	return err
}

// Delivery publishes a message into the stream without waiting for the
// stream's acknowledgement and returns when the consumer's callback has it:
// the time to store and deliver, not counting JSPublish's round trip.
func (p *Primitives) Delivery(ctx context.Context) error {
	id := p.next()
	ch := make(chan struct{}, 1)
	p.mu.Lock()
	p.waiting[id] = ch
	p.mu.Unlock()
	m := nats.NewMsg(subjDeliver + ".x")
	m.Data = p.payload
	m.Header.Set(headerSeq, id)
	if err := p.nc.PublishMsg(m); err != nil {
		p.forget(id)
		return err
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		p.forget(id)
		return fmt.Errorf("delivery of %s: %w", id, ctx.Err())
	}
}

func (p *Primitives) forget(id string) {
	p.mu.Lock()
	delete(p.waiting, id)
	p.mu.Unlock()
}

func (p *Primitives) onDelivery(m jetstream.Msg) {
	m.Ack()
	id := m.Headers().Get(headerSeq)
	p.mu.Lock()
	ch, ok := p.waiting[id]
	delete(p.waiting, id)
	p.mu.Unlock()
	if ok {
		ch <- struct{}{}
	}
}
