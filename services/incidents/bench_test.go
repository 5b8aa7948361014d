package incidents_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"

	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/incidents/pdtest"
)

// BenchmarkWebhookDeliveries offers signed PagerDuty deliveries at a fixed
// rate (open loop: a slow answer does not slow the sender) over loopback
// HTTP for a fixed time, and reports the latency distribution of
// verify + decode + de-duplicate + publish + remember + answer. The same
// run measures a baseline: publishing the same events straight to EVENTS
// with emit.Event at the same rate, and GET /healthz on the same server at
// the same rate (the HTTP floor of this machine at that moment); the
// endpoint adds the HMAC, the decode and the KV look-up to their sum.
//
//	go test -run '^$' -bench WebhookDeliveries -benchtime 1x ./services/incidents/
//
// SB_BENCH_RATE (default 2000/s) and SB_BENCH_SECONDS (default 5) change
// the load. "tcp" connects the service to NATS over loopback TCP (a
// service against a NATS cluster); "inprocess" as the all-in-one binary
// does.
func BenchmarkWebhookDeliveries(b *testing.B) {
	b.Run("tcp", func(b *testing.B) { benchWebhook(b, false) })
	b.Run("inprocess", func(b *testing.B) { benchWebhook(b, true) })
}

func benchWebhook(b *testing.B, inProcess bool) {
	rate := envInt("SB_BENCH_RATE", 2000)
	secs := envInt("SB_BENCH_SECONDS", 5)
	n := rate * secs
	e := newEnv(b, nil, inProcess)
	bodies := make([][]byte, n)
	sigs := make([]string, n)
	for i := range n {
		inc := pdtest.Incident{ID: fmt.Sprintf("PB%06d", i), Number: 1000 + i, Title: "production cop dropped points check", Status: "triggered", Urgency: "high", ServiceID: svcAPI.ID}
		bodies[i] = pdtest.Delivery(fmt.Sprintf("EVB%07d", i), "incident.triggered", inc, []pdtest.User{pdRob}, nil)
		sigs[i] = pdtest.Signature(bodies[i], secretOld, secretNew)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024}, Timeout: 10 * time.Second}
	url := e.base + "/webhooks/pagerduty"
	ctx := natstest.Context(b, time.Duration(secs+60)*time.Second)

	// Baseline first, on the same server: emit.Event of the same events.
	baseLat, baseFailed := openLoop(rate, n, func(i int) error {
		_, err := emit.Event(ctx, e.js, &eventv1.Event{Id: fmt.Sprintf("BASE%07d", i), Source: "bench", Type: "incident.triggered", Title: "x"})
		return err
	})
	// And the HTTP floor: GET /healthz on the same server at the same rate.
	httpLat, httpFailed := openLoop(rate, n, func(i int) error {
		resp, err := client.Get(e.base + "/healthz")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	})
	b.ResetTimer()
	lat, failed := openLoop(rate, n, func(i int) error {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(bodies[i]))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-PagerDuty-Signature", sigs[i])
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	b.StopTimer()
	if failed > 0 || baseFailed > 0 || httpFailed > 0 {
		b.Fatalf("%d deliveries, %d baseline publishes and %d health checks failed", failed, baseFailed, httpFailed)
	}
	if got := len(e.events("sb.event.pagerduty.>")); got != n {
		b.Fatalf("%d events published, want %d", got, n)
	}
	slices.Sort(lat)
	slices.Sort(baseLat)
	slices.Sort(httpLat)
	p50, p99, mx := quantile(lat, .50), quantile(lat, .99), lat[len(lat)-1]
	bp50, bp99 := quantile(baseLat, .50), quantile(baseLat, .99)
	b.ReportMetric(float64(rate), "deliveries/s")
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(mx.Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(bp99.Microseconds())/1000, "baseline-p99-ms")
	hp99 := quantile(httpLat, .99)
	b.ReportMetric(float64(hp99.Microseconds())/1000, "healthz-p99-ms")
	b.ReportMetric(float64(p99)/float64(max(hp99, 1)), "p99/healthz-p99")
	b.Logf("webhook: %d deliveries at %d/s: p50 %v p99 %v max %v; histogram %s", n, rate, p50, p99, mx, histogram(lat))
	b.Logf("baseline emit.Event: p50 %v p99 %v; histogram %s", bp50, bp99, histogram(baseLat))
	b.Logf("baseline GET /healthz: p50 %v p99 %v; histogram %s", quantile(httpLat, .5), hp99, histogram(httpLat))
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// openLoop calls f(i) for i in [0,n) at rate per second, each in its own
// goroutine (at most 1024 at once), and returns every call's latency.
func openLoop(rate, n int, f func(i int) error) ([]time.Duration, int) {
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	sem := make(chan struct{}, 1024)
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			t0 := time.Now()
			err := f(i)
			lat[i] = time.Since(t0)
			if err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return lat, failed
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

func histogram(lat []time.Duration) string {
	bounds := []time.Duration{time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}
	counts := make([]int, len(bounds)+1)
	for _, l := range lat {
		i := slices.IndexFunc(bounds, func(b time.Duration) bool { return l <= b })
		if i < 0 {
			i = len(bounds)
		}
		counts[i]++
	}
	var buf bytes.Buffer
	for i, c := range counts {
		if i < len(bounds) {
			fmt.Fprintf(&buf, "≤%v:%d ", bounds[i], c)
		} else {
			fmt.Fprintf(&buf, ">%v:%d", bounds[len(bounds)-1], c)
		}
	}
	return buf.String()
}

// BenchmarkWebhookHandler is the closed-loop cost of one delivery through
// the handler (no network between PagerDuty and the service; NATS
// in-process): verify, decode, look up, publish, remember. ns/op across
// parallel workers is the service's throughput limit on this machine.
//
//	go test -run '^$' -bench WebhookHandler ./services/incidents/
func BenchmarkWebhookHandler(b *testing.B) {
	e := newEnv(b, nil, true)
	h := e.svc.Handler()
	bodies := make([][]byte, b.N)
	sigs := make([]string, b.N)
	for i := range b.N {
		inc := pdtest.Incident{ID: fmt.Sprintf("PH%06d", i), Number: 1000 + i, Title: "production cop dropped points check", Status: "triggered", Urgency: "high"}
		bodies[i] = pdtest.Delivery(fmt.Sprintf("EVH%d-%07d", b.N, i), "incident.triggered", inc, []pdtest.User{pdRob}, nil)
		sigs[i] = pdtest.Signature(bodies[i], secretNew)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			req := httptest.NewRequest(http.MethodPost, "/webhooks/pagerduty", bytes.NewReader(bodies[i]))
			req.Header.Set("X-PagerDuty-Signature", sigs[i])
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusAccepted {
				b.Errorf("status %d %s", w.Code, w.Body.String())
			}
		}
	})
}
