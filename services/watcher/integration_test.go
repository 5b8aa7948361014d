package watcher

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/lb"
	"github.com/switchboard-ops/switchboard/services/lb/haproxytest"
	"github.com/switchboard-ops/switchboard/services/watcher/graphitetest"
)

// canaryFeeder sends canary.<host>.points_received to a real carbon: eight
// minutes of history at once, then the current interval every second, for
// every host not stopped.
type canaryFeeder struct {
	g       *graphitetest.Graphite
	mu      sync.Mutex
	stopped map[string]time.Time
	hosts   []string
	done    chan struct{}
	wg      sync.WaitGroup
}

func startFeeder(t *testing.T, g *graphitetest.Graphite, hosts []string, stopped map[string]time.Time) *canaryFeeder {
	f := &canaryFeeder{g: g, hosts: hosts, stopped: stopped, done: make(chan struct{})}
	now := time.Now().Truncate(graphitetest.Step)
	var pts []graphitetest.Point
	for ts := now.Add(-8 * time.Minute); !ts.After(now); ts = ts.Add(graphitetest.Step) {
		pts = append(pts, f.points(ts)...)
	}
	if err := g.Send(pts...); err != nil {
		t.Fatal(err)
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-f.done:
				return
			case <-tick.C:
				_ = g.Send(f.points(time.Now().Truncate(graphitetest.Step))...) // fails while Graphite is stopped, as a sender's would
			}
		}
	}()
	t.Cleanup(func() { close(f.done); f.wg.Wait() })
	return f
}

func (f *canaryFeeder) points(ts time.Time) []graphitetest.Point {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []graphitetest.Point
	for _, h := range f.hosts {
		if at, ok := f.stopped[h]; ok && !ts.Before(at) {
			continue
		}
		out = append(out, graphitetest.Point{Metric: "canary." + h + ".points_received", Value: 6, Time: ts})
	}
	return out
}

// TestWithRealGraphiteRealChatRealLBAndRealHAProxy is the whole story: one
// host's canary stops; the watcher says so in advisory mode; switched to
// enforce, it removes the host from a real HAProxy through the chat and the
// lb service; with Graphite stopped it removes nothing and says so once.
func TestWithRealGraphiteRealChatRealLBAndRealHAProxy(t *testing.T) {
	g := graphitetest.Start(t)
	hosts := fleetNames(4)
	web := haproxytest.StartHTTP(t, 0, hosts...)
	var servers []haproxytest.Server
	for _, h := range hosts {
		servers = append(servers, haproxytest.Server{Name: h, Addr: web[h].Addr})
	}
	hap := haproxytest.Start(t, haproxytest.Config{Backends: []haproxytest.Backend{{Name: "superagg", Check: true, Servers: servers}}})

	e := newEnv(t, hosts)
	lbCfg := lb.DefaultConfig()
	lbCfg.Environments = map[string]lb.EnvConfig{"production": {Instances: []lb.InstanceConfig{{Name: "lb1", Address: hap.Address()}}}}
	lbCfg.Timeout = 5 * time.Second
	lbCfg.ReconcileInterval = time.Hour
	lbSvc, err := lb.New(context.Background(), lbCfg, lb.Deps{NC: natstest.ConnectURL(t, e.url)})
	if err != nil {
		t.Fatal(err)
	}
	if err := lbSvc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lbSvc.Stop(context.Background()) })

	startFeeder(t, g, hosts, map[string]time.Time{"superagg-0003": time.Now().Add(-4 * time.Minute)})
	if err := g.WaitFor("canary.superagg-0001.points_received", time.Now().Add(-time.Minute), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(g.URL)
	svc, stop := e.startWatcher(cfg, Deps{})

	p := e.waitPost("superagg-0003 looks sick (canary", "of expected over 5 min", "would remove it from backend superagg")
	t.Logf("advisory: %s", p.GetText())
	for _, h := range []string{"superagg-0001", "superagg-0002", "superagg-0004"} {
		if n := e.countPosts(h + " looks sick"); n != 0 {
			t.Fatalf("%s, which reports every interval, was called sick: %s", h, texts(e.watcherPosts()))
		}
	}
	if st, _ := hap.State("superagg", "superagg-0003"); st != "ready" {
		t.Fatalf("advisory mode changed HAProxy: superagg-0003 is %s", st)
	}

	_, ans := e.say(ana, "watcher mode superagg-canary enforce")
	t.Logf("mode: %s", ans.GetText())
	done := e.waitPost("superagg-0003 has now been removed from the backend superagg ✓")
	t.Logf("result: %s", done.GetText())
	if st, _ := hap.State("superagg", "superagg-0003"); st != "maint" {
		t.Fatalf("superagg-0003 is %s in HAProxy, want maint", st)
	}
	for _, h := range []string{"superagg-0001", "superagg-0002", "superagg-0004"} {
		if st, _ := hap.State("superagg", h); st != "ready" {
			t.Fatalf("%s is %s, want ready", h, st)
		}
	}
	// The watcher reads the desired state the real lb wrote: what its
	// minimum-in-service check counts as out.
	ctx := natstest.Context(t, 10*time.Second)
	out, err := svc.lbOutOfService(ctx, scope{env: "production", backend: "superagg", hosts: hosts})
	if err != nil || !maps.Equal(out, map[string]bool{"superagg-0003": true}) {
		t.Fatalf("out of service per lb's desired state: %v (%v), want superagg-0003", out, err)
	}

	// Graphite goes away: a metrics outage, said once, and no action even
	// though no host has data now.
	g.Stop()
	e.waitPost("Metrics outage for check superagg-canary")
	time.Sleep(5 * time.Second) // five more cycles
	if n := e.countPosts("Metrics outage"); n != 1 {
		t.Fatalf("%d outage notices, want 1: %s", n, texts(e.watcherPosts()))
	}
	for _, h := range []string{"superagg-0001", "superagg-0002", "superagg-0004"} {
		if st, _ := hap.State("superagg", h); st != "ready" {
			t.Fatalf("%s is %s after the outage, want ready", h, st)
		}
	}
	if n := e.countPosts("has now been removed"); n != 1 {
		t.Fatalf("%d removals, want 1", n)
	}
	g.Start()
	e.waitPost("Metrics for check superagg-canary (backend superagg) are back")
	stop()
	fmt.Fprintln(testWriter{t}, texts(e.watcherPosts()))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }
