package watcher

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"

	"github.com/switchboard-ops/switchboard/kit/natstest"
)

func TestAdvisoryFindingThenEnforceRemovesTheHostThroughTheChat(t *testing.T) {
	hosts := fleetNames(6)
	e := newEnv(t, hosts)
	lb := e.startFakeLB()
	f := newFeed()
	f.stop("superagg-0003", time.Now().Add(-10*time.Minute))
	gr := newFakeRender(t, hosts, f.data)
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	_, stop := e.startWatcher(testConfig(gr.srv.URL), Deps{Meter: meter})

	p := e.waitPost("superagg-0003 looks sick (canary 0% of expected over 5 min", "would remove it from backend superagg")
	if len(p.GetBlocks()) != 1 || !strings.Contains(p.GetBlocks()[0].GetLink().GetUrl(), "/render?") ||
		!strings.Contains(p.GetBlocks()[0].GetLink().GetUrl(), "canary.superagg-0003.points_received") {
		t.Fatalf("advisory post without a graph link: %v", p)
	}
	if got := e.events("would-act"); len(got) != 1 || got[0].GetFields()["host"] != "superagg-0003" {
		t.Fatalf("would-act events: %v", got)
	}
	if got := e.events("sick"); len(got) != 1 {
		t.Fatalf("sick events: %d, want 1", len(got))
	}
	if got := lb.removed(); len(got) != 0 {
		t.Fatalf("advisory mode removed %v", got)
	}
	if n := wouldActCount(t, reader); n != 1 {
		t.Fatalf("sb.watcher.would_act = %d, want 1", n)
	}

	// Changing the mode needs the mode role; a viewer is refused by the chat.
	reply, _ := e.say(&chatv1.Identity{Id: "console:vic", Name: "vic"}, "watcher mode superagg-canary enforce")
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_DENIED {
		t.Fatalf("viewer switching to enforce: %v", reply)
	}
	_, ans := e.say(ana, "watcher mode superagg-canary enforce --dry-run")
	if !strings.Contains(ans.GetText(), "Would switch superagg-canary from advisory to enforce") {
		t.Fatalf("dry run: %q", ans.GetText())
	}
	_, ans = e.say(ana, "watcher mode superagg-canary enforce -- advisory was right for two weeks")
	if !strings.Contains(ans.GetText(), "switched from advisory to enforce") {
		t.Fatalf("mode answer: %q", ans.GetText())
	}
	e.waitPost("superagg-0003 has now been removed from the backend superagg ✓")
	if got, want := lb.removed(), []string{"superagg-0003@superagg by automation:watcher"}; !slices.Equal(got, want) {
		t.Fatalf("lb remove runs %v, want %v", got, want)
	}
	if got := e.events("acted"); len(got) != 1 || got[0].GetFields()["outcome"] != "succeeded" {
		t.Fatalf("acted events: %v", got)
	}
	// The command went through the chat: echoed in the channel as the
	// watcher's message and audited like a person's.
	var echoed bool
	for _, p := range e.opsPosts() {
		if p.GetKind() == chatv1.Kind_KIND_MESSAGE && strings.HasPrefix(p.GetText(), "lb remove superagg-0003 superagg -- watcher check superagg-canary") {
			echoed = true
		}
	}
	if !echoed {
		t.Fatalf("the lb remove is not in the ops channel: %s", texts(e.opsPosts()))
	}

	_, ans = e.say(ana, "watcher status")
	if !strings.Contains(ans.GetText(), "superagg-0003: 0% of expected") || !strings.Contains(ans.GetText(), "removed by the watcher") ||
		!strings.Contains(ans.GetText(), "enforce") {
		t.Fatalf("status: %s", ans.GetText())
	}
	_, ans = e.say(ana, "watcher explain superagg-0003")
	if !strings.Contains(ans.GetText(), "now: bad — points 0 of 30 expected (0%, threshold 95%)") || len(ans.GetBlocks()) != 1 {
		t.Fatalf("explain: %s", ans.GetText())
	}
	_, ans = e.say(ana, "watcher explain superagg-0001")
	if !strings.Contains(ans.GetText(), "now: good") || !strings.Contains(ans.GetText(), "memory: healthy") {
		t.Fatalf("explain of a healthy host: %s", ans.GetText())
	}
	_, ans = e.say(ana, "watcher explain web-1")
	if ans.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(ans.GetText(), "no check covers web-1") {
		t.Fatalf("explain of an unchecked host: %s", ans.GetText())
	}
	_, ans = e.say(ana, "watcher mute nosuchhost 1h")
	if ans.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(ans.GetText(), "not in the inventory") {
		t.Fatalf("mute of an unknown host: %s", ans.GetText())
	}
	_, ans = e.say(ana, "watcher mute superagg-0002 720h")
	if ans.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(ans.GetText(), "longer than the longest mute") {
		t.Fatalf("a month-long mute: %s", ans.GetText())
	}
	_, ans = e.say(ana, "watcher mute superagg-0002 2h -- firmware")
	if !strings.Contains(ans.GetText(), "superagg-0002 is muted until") {
		t.Fatalf("mute: %s", ans.GetText())
	}

	// The mode survives a restart: it lives in KV, not in the replica.
	stop()
	svc, _ := e.startWatcher(testConfig(gr.srv.URL), Deps{})
	ctx := natstest.Context(t, 10*time.Second)
	if mode, rec, err := svc.mode(ctx, svc.checks["superagg-canary"]); err != nil || mode != ModeEnforce || rec.By != "console:ana" {
		t.Fatalf("mode after restart: %q %+v %v", mode, rec, err)
	}
	// superagg-0002 stops now, but it is muted: said once, not removed.
	f.stop("superagg-0002", time.Now().Add(-10*time.Minute))
	e.waitPost("superagg-0002 looks sick", "will not remove it", "muted until")
	time.Sleep(3 * time.Second) // a few more cycles
	if n := e.countPosts("superagg-0002 looks sick"); n != 1 {
		t.Fatalf("%d posts about muted superagg-0002, want 1", n)
	}
	if got := lb.removed(); len(got) != 1 {
		t.Fatalf("lb remove runs %v after the mute, want only the first", got)
	}
}

// wouldActCount sums the sb.watcher.would_act counter.
func wouldActCount(t *testing.T, r *sdkmetric.ManualReader) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "sb.watcher.would_act" {
				for _, dp := range sum.DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n
}

func TestAMetricsOutageIsSaidOnceAndNothingIsRemoved(t *testing.T) {
	hosts := fleetNames(4)
	e := newEnv(t, hosts)
	lb := e.startFakeLB()
	f := newFeed()
	gr := newFakeRender(t, hosts, f.data)
	cfg := testConfig(gr.srv.URL)
	cfg.Checks[0].Mode = ModeEnforce
	svc, _ := e.startWatcher(cfg, Deps{})
	ctx := natstest.Context(t, 30*time.Second)
	natstest.WaitFor(t, waitTotal, 100*time.Millisecond, func() error {
		st, _, err := svc.loadState(ctx, "superagg-canary")
		if err != nil || st.LastRun.IsZero() {
			return fmt.Errorf("not evaluated yet (%v)", err)
		}
		return nil
	})
	gr.setDown(true)
	e.waitPost("Metrics outage for check superagg-canary", "Graphite did not answer", "takes no action")
	// Every host's data stops too while Graphite is down; nothing is removed.
	for _, h := range hosts {
		f.stop(h, time.Now().Add(-time.Hour))
	}
	time.Sleep(4 * time.Second)
	gr.setDown(false) // back, but with no data for anybody: still an outage
	time.Sleep(3 * time.Second)
	if n := e.countPosts("Metrics outage"); n != 1 {
		t.Fatalf("%d outage notices, want 1: %s", n, texts(e.watcherPosts()))
	}
	f.setDataAll(true)
	e.waitPost("Metrics for check superagg-canary (backend superagg) are back: 4 hosts reporting")
	if got := lb.removed(); len(got) != 0 {
		t.Fatalf("removed %v during a metrics outage", got)
	}
	if got := e.events("outage"); len(got) != 1 {
		t.Fatalf("%d outage events, want 1", len(got))
	}
}

func (f *feed) setDataAll(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on {
		f.stopped = map[string]int64{}
	}
}

func TestTwoReplicasActOnceAndASurvivorTakesOver(t *testing.T) {
	hosts := fleetNames(8)
	e := newEnv(t, hosts)
	lb := e.startFakeLB()
	f := newFeed()
	gr := newFakeRender(t, hosts, f.data)
	cfg := testConfig(gr.srv.URL)
	cfg.Checks[0].Mode = ModeEnforce
	cfg.Checks[0].Safety.MaxRemovalsPerHour = 5
	a, stopA := e.startWatcher(cfg, Deps{Instance: "replica-a"})
	b, stopB := e.startWatcher(cfg, Deps{Instance: "replica-b"})
	ctx := natstest.Context(t, 60*time.Second)
	var leader string
	natstest.WaitFor(t, waitTotal, 100*time.Millisecond, func() error {
		if leader = a.lease.leader(ctx); leader == "" {
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	f.stop("superagg-0003", time.Now().Add(-10*time.Minute))
	e.waitPost("superagg-0003 has now been removed from the backend superagg ✓")
	time.Sleep(3 * time.Second) // more cycles by both replicas
	if got := lb.removed(); len(got) != 1 {
		t.Fatalf("two replicas removed %v, want superagg-0003 once", got)
	}
	// The leader dies; the other takes over after the lease and acts on the
	// next sick host, once.
	if leader == "replica-a" {
		stopA()
	} else {
		stopB()
	}
	f.stop("superagg-0005", time.Now().Add(-10*time.Minute))
	e.waitPost("superagg-0005 has now been removed from the backend superagg ✓")
	time.Sleep(3 * time.Second)
	got := lb.removed()
	slices.Sort(got)
	if want := []string{"superagg-0003@superagg by automation:watcher", "superagg-0005@superagg by automation:watcher"}; !slices.Equal(got, want) {
		t.Fatalf("removals %v, want %v", got, want)
	}
	if n := e.countPosts("superagg-0003 looks sick"); n != 1 {
		t.Fatalf("%d findings about superagg-0003, want 1", n)
	}
	_ = b
}

// TestAnIntentRecordedByADeadReplicaIsSentOnce covers a replica killed
// between recording an action and finishing it: before sending, and after
// sending but before following the job.
func TestAnIntentRecordedByADeadReplicaIsSentOnce(t *testing.T) {
	for _, sentBeforeDeath := range []bool{false, true} {
		t.Run(fmt.Sprintf("sent before it died: %v", sentBeforeDeath), func(t *testing.T) {
			hosts := fleetNames(8)
			e := newEnv(t, hosts)
			lb := e.startFakeLB()
			f := newFeed()
			f.stop("superagg-0003", time.Now().Add(-10*time.Minute))
			gr := newFakeRender(t, hosts, f.data)
			cfg := testConfig(gr.srv.URL)
			cfg.Checks[0].Mode = ModeEnforce
			ctx := natstest.Context(t, 60*time.Second)
			// What the dead leader left in KV: superagg-0003 sick and acted
			// on, the intent recorded, the cycle's slot evaluated.
			now := time.Now()
			in := Intent{Host: "superagg-0003", Backend: "superagg", MessageID: "watcher-superagg-canary-1-acted-superagg-0003",
				Text: "lb remove superagg-0003 superagg -- watcher check superagg-canary: canary 0% of expected over 5 min", At: now}
			st := &CheckState{
				Hosts:   map[string]*HostState{"superagg-0003": {Bad: 3, Sick: true, SickSince: now, Acted: true, LastAction: now}},
				Pending: []Intent{in},
				Slot:    now.Unix(),
			}
			svc, err := New(ctx, cfg, Deps{NC: natstest.ConnectURL(t, e.url), Instance: "dead"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := svc.saveState(ctx, "superagg-canary", st, 0); err != nil {
				t.Fatal(err)
			}
			removal := &BackendState{Removals: []Removal{{Host: "superagg-0003", Check: "superagg-canary", At: now}}}
			if err := svc.saveBackend(ctx, scope{env: "production", backend: "superagg"}, removal, 0); err != nil {
				t.Fatal(err)
			}
			if sentBeforeDeath {
				msg := &chatv1.ChatMessage{Id: in.MessageID, Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops"},
					Author: svc.identity(), Text: in.Text}
				// Until the chat has discovered lb it answers "I don't know
				// lb" and creates nothing; the same id may be sent again.
				natstest.WaitFor(t, waitTotal, 200*time.Millisecond, func() error {
					if r := e.chat.Handle(ctx, msg); r.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
						return fmt.Errorf("send as the dead replica: %v", r)
					}
					return nil
				})
			}
			e.startWatcher(cfg, Deps{Instance: "survivor"})
			e.waitPost("superagg-0003 has now been removed from the backend superagg ✓")
			time.Sleep(3 * time.Second)
			if got := lb.removed(); len(got) != 1 {
				t.Fatalf("lb remove ran %d times (%v), want once", len(got), got)
			}
			if n := e.countPosts("has now been removed"); n != 1 {
				t.Fatalf("%d result posts, want 1", n)
			}
			st, _, err = svc.loadState(ctx, "superagg-canary")
			if err != nil || len(st.Pending) != 0 || len(st.Outbox) != 0 {
				t.Fatalf("state after the survivor finished: pending %v outbox %v (%v)", st.Pending, st.Outbox, err)
			}
		})
	}
}

func TestAFailedRemovalIsReportedAndTheHostStaysInTheBackend(t *testing.T) {
	hosts := fleetNames(6)
	e := newEnv(t, hosts)
	lb := e.startFakeLB()
	lb.fail = true
	f := newFeed()
	f.stop("superagg-0004", time.Now().Add(-10*time.Minute))
	gr := newFakeRender(t, hosts, f.data)
	cfg := testConfig(gr.srv.URL)
	cfg.Checks[0].Mode = ModeEnforce
	e.startWatcher(cfg, Deps{})
	p := e.waitPost("did not succeed", "below its minimum")
	if p.GetKind() != chatv1.Kind_KIND_ERROR {
		t.Fatalf("failure posted as %v", p.GetKind())
	}
	// The cool-down keeps it from retrying every cycle.
	e.waitPost("superagg-0004 looks sick", "cool-down")
	if n := len(lb.removed()); n != 1 {
		t.Fatalf("lb remove tried %d times, want 1", n)
	}
}

func TestConfigValidationNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.Graphite.URL = "" }, "watcher.graphite.url"},
		{func(c *Config) { c.Graphite.URL = "graphite:8080" }, "watcher.graphite.url"},
		{func(c *Config) { c.Checks[0].Target = "canary.points" }, "watcher.checks[0]: target"},
		{func(c *Config) { c.Checks[0].Mode = "yolo" }, "watcher.checks[0]: mode"},
		{func(c *Config) { c.Checks[0].MinRatio = 1.5 }, "min_ratio"},
		{func(c *Config) { c.Checks[0].Aggregate = AggSum }, "expected"},
		{func(c *Config) { c.Checks = append(c.Checks, c.Checks[0]) }, "used twice"},
		{func(c *Config) { c.Action = "lb remove {host}" }, "watcher.action"},
		{func(c *Config) { c.Checks[0].Environment = "production " }, "watcher.checks[0]: environment"},
	} {
		cfg := testConfig("http://graphite:8080")
		tc.change(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one naming %q", err, tc.want)
		}
	}
	if err := testConfig("http://graphite:8080").Validate(); err != nil {
		t.Fatalf("the test config is invalid: %v", err)
	}
	// The all-in-one binary starts the watcher with no checks configured.
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("the default config is invalid: %v", err)
	}
}

func TestTemplatesBecomeFewTargets(t *testing.T) {
	hosts := fleetNames(1200)
	tpl, _ := parseTemplate("canary.{host}.points_received")
	if got := tpl.targets(BatchList, hosts); len(got) != 3 || !strings.HasPrefix(got[0], "aliasByNode(canary.{superagg-0001,superagg-0002,") {
		t.Fatalf("list targets: %d, first %.60s", len(got), got[0])
	}
	if got := tpl.targets(BatchWildcard, hosts); len(got) != 1 || got[0] != "aliasByNode(canary.*.points_received,1)" {
		t.Fatalf("wildcard targets: %v", got)
	}
	fn, _ := parseTemplate("sumSeries(canary.{host}.*.points)")
	if got := fn.targets(BatchList, []string{"a.example.com"}); len(got) != 1 || got[0] != "alias(sumSeries(canary.a_example_com.*.points),'a_example_com')" {
		t.Fatalf("a template with functions: %v", got)
	}
}
