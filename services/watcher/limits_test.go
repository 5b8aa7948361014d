package watcher

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/natstest"
)

func TestHostsDrainedByPeopleCountAgainstTheMinimumInService(t *testing.T) {
	hosts := fleetNames(10)
	e := newEnv(t, hosts)
	lb := e.startFakeLB()
	f := newFeed()
	// Three hosts were drained by a person, as `lb drain` records it; a
	// drained host gets no canary traffic, so its data stops too.
	for _, h := range hosts[:3] {
		e.setLBState(h, "drain", "ana", "lb drain")
		f.stop(h, time.Now().Add(-10*time.Minute))
	}
	gr := newFakeRender(t, hosts, f.data)
	cfg := testConfig(gr.srv.URL)
	cfg.Checks[0].Mode = ModeEnforce
	cfg.Checks[0].Safety = Safety{MaxRemovalsPerHour: 5, MinHealthyFraction: 0.75, Cooldown: time.Hour}
	e.startWatcher(cfg, Deps{})

	f.stop("superagg-0007", time.Now().Add(-10*time.Minute))
	p := e.waitPost("superagg-0007 looks sick", "but the watcher will not remove it from backend superagg",
		"removing it would leave 6 of 10 hosts in service and healthy, below the minimum of 75% (8)",
		"3 out of service in the load balancer (superagg-0001, superagg-0002, superagg-0003)")
	t.Logf("refusal: %s", p.GetText())
	time.Sleep(3 * time.Second) // more cycles
	if got := lb.removed(); len(got) != 0 {
		t.Fatalf("lb remove ran for %v with 3 of 10 hosts drained, want none", got)
	}
	if n := e.countPosts("superagg-0007 looks sick"); n != 1 {
		t.Fatalf("%d posts about superagg-0007, want the refusal once: %s", n, texts(e.watcherPosts()))
	}
	for _, h := range hosts[:3] {
		if n := e.countPosts(h + " looks sick"); n != 0 {
			t.Fatalf("the watcher spoke of drained %s: %s", h, texts(e.watcherPosts()))
		}
	}

	// Two of them go back into service and report again: 8 of 10 may stay.
	for _, h := range hosts[:2] {
		e.setLBState(h, "ready", "ana", "lb add")
		f.resume(h)
	}
	e.waitPost("superagg-0007 has now been removed from the backend superagg ✓")
	if got, want := lb.removed(), []string{"superagg-0007@superagg by automation:watcher"}; !slices.Equal(got, want) {
		t.Fatalf("lb remove runs %v, want %v", got, want)
	}
}

func TestNothingIsRemovedWhileTheLoadBalancersStateCannotBeRead(t *testing.T) {
	hosts := fleetNames(8)
	e := newEnv(t, hosts)
	lb := e.startFakeLB()
	ctx := natstest.Context(t, 90*time.Second)
	if err := e.js.DeleteKeyValue(ctx, wire.BucketLBDesired); err != nil {
		t.Fatal(err)
	}
	f := newFeed()
	f.stop("superagg-0003", time.Now().Add(-10*time.Minute))
	gr := newFakeRender(t, hosts, f.data)
	cfg := testConfig(gr.srv.URL)
	cfg.Checks[0].Mode = ModeEnforce
	e.startWatcher(cfg, Deps{})

	p := e.waitPost("superagg-0003 looks sick", "will not remove it from backend superagg",
		"the load balancer's state could not be read (KV sb_lb_desired does not exist: is the lb service running?)",
		"cannot tell how many hosts are still in service")
	t.Logf("refusal: %s", p.GetText())
	time.Sleep(3 * time.Second) // more cycles: said once, nothing done
	if got := lb.removed(); len(got) != 0 {
		t.Fatalf("removed %v without knowing the load balancer's state", got)
	}
	if n := e.countPosts("superagg-0003 looks sick"); n != 1 {
		t.Fatalf("%d posts about superagg-0003, want 1: %s", n, texts(e.watcherPosts()))
	}
	if got := e.events("refused"); len(got) != 1 || got[0].GetFields()["limit"] != "lb-state" {
		t.Fatalf("refused events: %v", got)
	}

	// The lb service comes up: the watcher acts.
	if _, err := bus.EnsureBucket(ctx, e.js, 1, jetstream.KeyValueConfig{Bucket: wire.BucketLBDesired, History: 5, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	e.waitPost("superagg-0003 has now been removed from the backend superagg ✓")
	if got := lb.removed(); len(got) != 1 {
		t.Fatalf("lb remove runs %v, want one", got)
	}
}

func TestTwoChecksOverOneBackendShareItsHourlyLimitAndDoNotRemoveAHostTwice(t *testing.T) {
	hosts := fleetNames(8)
	e := newEnv(t, hosts)
	lb := e.startFakeLB()
	f := newFeed()
	gr := newFakeRender(t, hosts, f.data)
	cfg := testConfig(gr.srv.URL)
	cfg.Checks[0].Mode = ModeEnforce
	cfg.Checks[0].Safety.MaxRemovalsPerHour = 1
	latency := cfg.Checks[0]
	latency.Name = "superagg-latency"
	latency.Target = "canary.{host}.latency_ok"
	cfg.Checks = append(cfg.Checks, latency)
	e.startWatcher(cfg, Deps{})

	f.stop("superagg-0003", time.Now().Add(-10*time.Minute))
	f.stop("superagg-0005", time.Now().Add(-10*time.Minute))
	e.waitPost("superagg-0003 has now been removed from the backend superagg ✓")
	e.waitPost("superagg-0005 looks sick", "will not remove it",
		"the watcher removed 1 host from this backend in the last hour already (the limit is 1 an hour, for all checks of the backend)")
	time.Sleep(3 * time.Second) // more cycles of both checks
	if got, want := lb.removed(), []string{"superagg-0003@superagg by automation:watcher"}; !slices.Equal(got, want) {
		t.Fatalf("lb remove runs %v, want %v: one removal an hour for the backend, whichever check", got, want)
	}
	if n := e.countPosts("superagg-0003 looks sick"); n != 1 {
		t.Fatalf("%d posts about removing superagg-0003, want 1: %s", n, texts(e.watcherPosts()))
	}
	_, ans := e.say(ana, "watcher status")
	if n := strings.Count(ans.GetText(), "limits: 1 of 1 removals from the backend in the last hour"); n != 2 {
		t.Fatalf("status shows the shared count %d times, want for both checks:\n%s", n, ans.GetText())
	}
}
