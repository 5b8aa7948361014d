package lb

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/lb/haproxytest"
)

// holdSessions sends traffic through url and makes web1 keep the requests
// it gets open until the test releases it (or ends), so there are sessions
// that end only when the test says so. It returns once web1 holds one.
func holdSessions(t *testing.T, web *haproxytest.HTTPServer, url string) {
	t.Helper()
	web.Hold()
	tr := haproxytest.StartTraffic(url, 4)
	t.Cleanup(func() {
		web.Release()
		tr.Stop()
	})
	natstest.WaitFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if web.Holding() == 0 {
			return errFmt("%s holds no request yet", web.Name)
		}
		return nil
	})
}

func TestDrainWaitReachingTheTimeoutPutsIntoMaintAnywayAndSaysSo(t *testing.T) {
	ins, web := webFleet(t, 1, 0, "web1", "web2", "web3")
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2", "web3")
	svc := e.start(testConfig(ins...))
	holdSessions(t, web["web1"], ins[0].URL)

	final, all := e.run(req{cmd: "lb drain", args: map[string]string{"hosts": "web1", "backend": "www"},
		flags: map[string]string{"wait": "true", "timeout": "1s"}, text: "kernel update"}, 30*time.Second)
	for _, p := range all {
		t.Logf("%v: %s", p.GetKind(), p.GetText())
	}

	if final.GetKind() != chatv1.Kind_KIND_RESULT ||
		!strings.Contains(final.GetText(), "The --timeout of 1s passed with sessions still open (web1 ") ||
		!strings.Contains(final.GetText(), "put into maint anyway: www/web1 → maint on lb1 (production)") ||
		!strings.Contains(final.GetText(), "lb1: done") {
		t.Fatalf("final post %v %q, want a result saying the timeout passed with web1's sessions open and maint was set anyway", final.GetKind(), final.GetText())
	}
	if st, _ := ins[0].State("www", "web1"); st != "maint" {
		t.Fatalf("web1 is %s after the timeout, want maint", st)
	}
	var waited bool
	for _, p := range all {
		waited = waited || (p.GetKind() == chatv1.Kind_KIND_PROGRESS && strings.HasPrefix(p.GetText(), "Waiting for sessions to end: web1 "))
	}
	if !waited {
		t.Fatalf("no progress post counting web1's sessions before the timeout")
	}
	d, _, err := svc.desired.server(context.Background(), "production", "www", "web1")
	if err != nil || d == nil || d.State != "maint" || d.Reason != "kernel update" || len(d.Pending) != 0 {
		t.Fatalf("desired %+v %v, want maint for kernel update, confirmed everywhere", d, err)
	}
	if n := len(e.events("server.maint")); n != 1 {
		t.Fatalf("%d server.maint events, want one at the timeout", n)
	}
}

func TestDrainWaitWithOneInstanceDownWaitsOnTheOtherAndSaysWhichIsBehind(t *testing.T) {
	ins, web := webFleet(t, 2, 0, "web1", "web2", "web3")
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2", "web3")
	cfg := testConfig(ins...)
	cfg.ReconcileInterval = 200 * time.Millisecond
	svc := e.start(cfg)
	waitSeen(t, svc, "lb2", ins[1])
	ins[1].Stop()
	holdSessions(t, web["web1"], ins[0].URL)

	cr := e.request(req{cmd: "lb drain", args: map[string]string{"hosts": "web1", "backend": "www"},
		flags: map[string]string{"wait": "true", "timeout": "60s"}, text: "kernel update"})
	if ack := e.sendOn(e.nc, cr); ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_ACCEPTED {
		t.Fatalf("drain: ack %v %s", ack.GetStatus(), ack.GetReason())
	}
	// The partial drain does not end the command: it waits for lb1's
	// sessions.
	_, posts := natstest.WaitPost(t, e.js, wire.ChatPostSubject("console", "ops"), cr.GetId(), 20*time.Second, 50*time.Millisecond, func(p *chatv1.ChatPost) bool {
		return strings.HasPrefix(p.GetText(), "Waiting for sessions to end: web1 ")
	})
	if len(posts) < 2 || posts[0].GetKind() != chatv1.Kind_KIND_PROGRESS || !strings.Contains(posts[0].GetText(), "Partly applied") ||
		!strings.Contains(posts[0].GetText(), "lb1: done") || !strings.Contains(posts[0].GetText(), "lb2: FAILED") {
		t.Fatalf("first post %v, want progress saying the drain was partly applied (lb1 done, lb2 failed)", posts)
	}
	if st, _ := ins[0].State("www", "web1"); st != "drain" {
		t.Fatalf("web1 on lb1 is %s while its sessions are open, want drain", st)
	}
	web["web1"].Release()

	final, all := e.final(cr.GetId(), 30*time.Second)
	for _, p := range all {
		t.Logf("%v: %s", p.GetKind(), p.GetText())
	}
	for _, want := range []string{
		"Partly applied: Drained after", "now in maint: www/web1 → maint on lb1 (production)", "lb1: done",
		"lb2: SKIPPED, it was unreachable when the drain was sent", "reconciliation catches it up with maint",
		"reconciliation retries lb2",
	} {
		if !strings.Contains(final.GetText(), want) {
			t.Fatalf("final post %v %q, want it to contain %q", final.GetKind(), final.GetText(), want)
		}
	}
	if final.GetKind() != chatv1.Kind_KIND_ERROR {
		t.Fatalf("final post is %v, want an error: lb2 is not in maint yet", final.GetKind())
	}
	if st, _ := ins[0].State("www", "web1"); st != "maint" {
		t.Fatalf("web1 on lb1 is %s after the drain, want maint", st)
	}
	d, _, err := svc.desired.server(context.Background(), "production", "www", "web1")
	if err != nil || d == nil || d.State != "maint" || !slices.Equal(d.Pending, []string{"lb2"}) {
		t.Fatalf("desired %+v %v, want maint pending on lb2", d, err)
	}

	// When lb2 is back, reconciliation puts web1 into maint there too.
	ins[1].Start()
	waitState(t, ins[1], "www", "web1", "maint", 10*time.Second)
}
