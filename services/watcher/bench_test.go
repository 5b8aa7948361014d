package watcher

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/watcher/graphite"
)

// realisticData is a fleet's canary: every host reports every 10 seconds,
// about one interval in 200 is missing (a lost UDP packet, a slow flush),
// and one host in a thousand has stopped.
func realisticData(host string, ts int64) (float64, bool) {
	h := fnv.New32a()
	h.Write([]byte(host))
	id := h.Sum32()
	if id%1000 == 7 {
		return 0, false
	}
	if (id+uint32(ts/10))%200 == 0 {
		return 0, false
	}
	return 6 + float64(id%3), true
}

// naiveRenderer is the client the batching replaces: one GET per host.
type naiveRenderer struct {
	base string
	hc   *http.Client
}

func (n naiveRenderer) Render(ctx context.Context, q graphite.Query) ([]graphite.Series, error) {
	var out []graphite.Series
	for _, t := range q.Targets {
		c := graphite.NewClient(n.base, graphite.WithHTTPClient(n.hc))
		s, err := c.Render(ctx, graphite.Query{Targets: []string{t}, From: q.From, Until: q.Until})
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	return out, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCycle10000Hosts runs whole evaluation cycles (state from KV,
// render, verdicts, state saved) over 10,000 hosts against an in-process
// render endpoint, batched and naive in the same run:
//
//	go test -run '^$' -bench Cycle10000 -benchtime 5x ./services/watcher
func BenchmarkCycle10000Hosts(b *testing.B) {
	const n = 10000
	hosts := make([]string, n)
	inv := make([]*inventoryv1.Host, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("superagg-%05d", i)
		inv[i] = &inventoryv1.Host{Name: hosts[i], Environment: "production", Role: "superagg", Backends: []string{"superagg"},
			State: inventoryv1.HostState_HOST_STATE_ACTIVE}
	}
	s := natstest.RunServer(b)
	nc := natstest.Connect(b, s)
	js := natstest.JetStream(b, nc)
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		b.Fatal(err)
	}
	kv, _ := inventory.Bucket(ctx, js)
	if _, err := inventory.Publish(ctx, kv, "bench", inv, nil); err != nil {
		b.Fatal(err)
	}
	// The lb service's bucket, which a cycle with bad hosts reads.
	if _, err := bus.EnsureBucket(ctx, js, 1, jetstream.KeyValueConfig{Bucket: wire.BucketLBDesired, History: 5}); err != nil {
		b.Fatal(err)
	}
	fr := newFakeRender(b, hosts, realisticData)
	fr.cache = map[string][]byte{}

	for _, mode := range []struct {
		name  string
		batch string
		naive bool
	}{{"batched", BatchList, false}, {"naive-one-request-per-host", BatchAlias, true}} {
		b.Run(mode.name, func(b *testing.B) {
			cfg := testConfig(fr.srv.URL)
			cfg.Checks[0].Name = "bench-" + mode.batch
			cfg.Checks[0].Batch = mode.batch
			cfg.Checks[0].Mode = ModeAdvisory
			var tick atomic.Int64
			base := time.Now()
			d := Deps{NC: nc, Instance: "bench", Now: func() time.Time { return base.Add(time.Duration(tick.Load()) * time.Second) }}
			if mode.naive {
				d.Graphite = naiveRenderer{base: fr.srv.URL, hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
			}
			svc, err := New(ctx, cfg, d)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := svc.snapshot(ctx); err != nil {
				b.Fatal(err)
			}
			// One cycle to fill the fake's cache (and the watcher's state).
			tick.Add(1)
			if err := svc.Cycle(ctx, cfg.Checks[0].Name); err != nil {
				b.Fatal(err)
			}
			fr.requests.Store(0)
			fr.spent.Store(0)
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tick.Add(1)
				if err := svc.Cycle(ctx, cfg.Checks[0].Name); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := cpuTime() - cpu0
			server := time.Duration(fr.spent.Load())
			b.ReportMetric(float64(fr.requests.Load())/float64(b.N), "requests/op")
			// The fake serves cached bytes: nearly all of the process's CPU
			// is the watcher's (client, decoding, verdicts, KV).
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(server.Milliseconds())/float64(b.N), "fake-graphite-ms/op")
			st, _, _ := svc.loadState(ctx, cfg.Checks[0].Name)
			b.Logf("%s: %s", mode.name, st.Summary)
		})
	}
}
