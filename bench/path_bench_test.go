package bench_test

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"

	"github.com/switchboard-ops/switchboard/bench"
)

// wait bounds every wait in these tests and benchmarks: a ceiling for a
// stuck run on a slow machine, never a judgement of speed.
const wait = 30 * time.Second

func start(tb testing.TB) *bench.Env {
	tb.Helper()
	env, err := bench.Start(tb.Context(), bench.Options{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start: %v", err)
	}
	tb.Cleanup(env.Close)
	return env
}

func primitives(tb testing.TB, env *bench.Env) *bench.Primitives {
	tb.Helper()
	p, err := env.Primitives(tb.Context(), 512)
	if err != nil {
		tb.Fatalf("primitives: %v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

func bounded(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(tb.Context(), wait)
	tb.Cleanup(cancel)
	return ctx
}

// TestPingGoesTheWholeWayAndIsAnsweredOnce sends one ping each way the
// benchmarks do and checks the answers, so that the numbers measure a path
// that works: an accepted job, and its pong delivered in the message's
// thread.
func TestPingGoesTheWholeWayAndIsAnsweredOnce(t *testing.T) {
	env := start(t)
	ctx := bounded(t)

	msg := bench.Message(bench.AdapterName, "test", "ping")
	r, err := env.Send(ctx, msg)
	if err != nil {
		t.Fatalf("ping in-process: %v", err)
	}
	if err := bench.Check(msg, r); err != nil {
		t.Fatalf("ping in-process: %v", err)
	}

	msg = bench.Message(bench.AdapterName, "test-bridge", "ping")
	r, err = env.SendBridge(ctx, msg)
	if err != nil {
		t.Fatalf("ping over the CLI bridge: %v", err)
	}
	if err := bench.Check(msg, r); err != nil {
		t.Fatalf("ping over the CLI bridge: %v", err)
	}

	f, err := env.Follow(ctx, "test-say")
	if err != nil {
		t.Fatalf("follow: %v", err)
	}
	defer f.Stop()
	msg = bench.Message("cli", "test-say", "ping")
	r, err = f.Send(ctx, msg)
	if err != nil {
		t.Fatalf("ping as say: %v", err)
	}
	if err := bench.Check(msg, r); err != nil {
		t.Fatalf("ping as say: %v", err)
	}

	// A second delivery of the same message is the same job, not a new one.
	again := env.Chat.Handle(ctx, msg)
	if again.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_EXISTING || again.GetJobId() != r.Reply.GetJobId() {
		t.Fatalf("the same message again: got %s job %q, want EXISTING job %q", again.GetStatus(), again.GetJobId(), r.Reply.GetJobId())
	}
}

// TestPrimitivesAndCountersWork runs each primitive once, and reads the
// counters around a ping: every counted stream stores something for it.
// (How much is reported by sbbench, not asserted: the number is meant to
// go down.)
func TestPrimitivesAndCountersWork(t *testing.T) {
	env := start(t)
	p := primitives(t, env)
	ctx := bounded(t)
	for name, op := range map[string]func(context.Context) error{
		"request": p.Request, "kv create": p.KVCreate, "kv get": p.KVGet, "publish": p.JSPublish, "delivery": p.Delivery,
	} {
		if err := op(ctx); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	before, err := env.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Ping(ctx, "count"); err != nil {
		t.Fatal(err)
	}
	after, err := env.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in, out, stored := after.Per(before, 1)
	t.Logf("one ping: stored %v, %.0f messages in, %.0f out", stored, in, out)
	for _, name := range bench.CountedStreams {
		if stored[name] < 1 {
			t.Errorf("stream %s stored %v messages for a ping, want at least 1", name, stored[name])
		}
	}
	if in < 1 || out < 1 {
		t.Errorf("server counted %v messages in and %v out for a ping, want some", in, out)
	}
}

func benchPrimitive(b *testing.B, op func(*bench.Primitives) func(context.Context) error) {
	env := start(b)
	f := op(primitives(b, env))
	ctx := b.Context()
	for b.Loop() {
		if err := f(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNATSRequest is a bare request/reply to a trivial responder.
func BenchmarkNATSRequest(b *testing.B) {
	benchPrimitive(b, func(p *bench.Primitives) func(context.Context) error { return p.Request })
}

// BenchmarkKVCreate creates unique keys in a bucket with sb_jobs's settings.
func BenchmarkKVCreate(b *testing.B) {
	benchPrimitive(b, func(p *bench.Primitives) func(context.Context) error { return p.KVCreate })
}

// BenchmarkJSPublish is a synchronous JetStream publish with a message id.
func BenchmarkJSPublish(b *testing.B) {
	benchPrimitive(b, func(p *bench.Primitives) func(context.Context) error { return p.JSPublish })
}

// BenchmarkDelivery is a message stored and delivered to a consumer.
func BenchmarkDelivery(b *testing.B) {
	benchPrimitive(b, func(p *bench.Primitives) func(context.Context) error { return p.Delivery })
}

// BenchmarkWholePath is one ping at a time: ingress, RBAC, request, job,
// result post, egress delivery.
func BenchmarkWholePath(b *testing.B) {
	env := start(b)
	ctx := b.Context()
	var lat []time.Duration
	for b.Loop() {
		r, err := env.Ping(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, r.Delivered)
	}
	report(b, lat)
}

// BenchmarkWholePathParallel is the path with 64 concurrent senders, each
// in its own channel (on 2 cores; -cpu changes GOMAXPROCS and the count).
func BenchmarkWholePathParallel(b *testing.B) {
	env := start(b)
	ctx := b.Context()
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	var (
		mu  sync.Mutex
		lat []time.Duration
		n   atomic.Int64
	)
	b.RunParallel(func(pb *testing.PB) {
		ch := "par-" + strconv.FormatInt(n.Add(1), 10)
		var mine []time.Duration
		for pb.Next() {
			r, err := env.Ping(ctx, ch)
			if err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, r.Delivered)
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	report(b, lat)
}

// report adds the latency percentiles to the benchmark's line.
func report(b *testing.B, lat []time.Duration) {
	s := bench.Summarize(lat)
	b.ReportMetric(float64(s.P50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(s.P99.Microseconds()), "p99-µs")
}
