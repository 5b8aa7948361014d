package lb

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/lb/haproxytest"
)

// refusingFleet starts HAProxy instances over web1..web3 whose admin socket
// is at level user where levels says so: HAProxy answers "Permission
// denied" to every change there.
func refusingFleet(t *testing.T, levels ...string) []*haproxytest.Instance {
	t.Helper()
	web := haproxytest.StartHTTP(t, 0, "web1", "web2", "web3")
	var servers []haproxytest.Server
	for _, h := range []string{"web1", "web2", "web3"} {
		servers = append(servers, haproxytest.Server{Name: h, Addr: web[h].Addr})
	}
	var ins []*haproxytest.Instance
	for _, level := range levels {
		ins = append(ins, haproxytest.Start(t, haproxytest.Config{Level: level, Map: map[string]string{"free": "10"},
			Backends: []haproxytest.Backend{{Name: "www", Servers: servers}}}))
	}
	return ins
}

func TestAChangeEveryInstanceRefusesLeavesTheDesiredStateAsItWas(t *testing.T) {
	ins := refusingFleet(t, "user", "user")
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2", "web3")
	cfg := testConfig(ins...)
	// HAProxy 2.6 takes map changes at level user, so the rate limits are
	// refused with a map file it does not know.
	ec := cfg.Environments["production"]
	ec.MapFile += ".unknown"
	cfg.Environments["production"] = ec
	svc := e.start(cfg)
	ctx := context.Background()
	// web3 was taken out earlier, when the sockets still allowed it.
	before := &desiredServer{Env: "production", Backend: "www", Server: "web3", State: "maint", Reason: "disk failing", By: "rob", Command: "lb remove"}
	if _, err := svc.desired.putServer(ctx, before); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		r      req
		server string
		want   *desiredServer // nil: no desired entry
	}{
		{"a server with a desired state keeps it", req{cmd: "lb add", args: map[string]string{"host": "web3", "backend": "www"}, text: "disk replaced"}, "web3", before},
		{"a server without one still has none", req{cmd: "lb remove", args: map[string]string{"host": "web2", "backend": "www"}}, "web2", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := e.run(tt.r, 10*time.Second)
			for _, want := range []string{"Not applied on any instance", "lb1: FAILED", "lb2: FAILED", "Permission denied",
				"HAProxy refused the change of www/" + tt.server, "left as it was: nothing will retry it"} {
				if p.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(p.GetText(), want) {
					t.Fatalf("answer %v %q, want an error containing %q", p.GetKind(), p.GetText(), want)
				}
			}
			if strings.Contains(p.GetText(), "reconciliation retries") {
				t.Fatalf("answer %q promises a retry of a change HAProxy refused", p.GetText())
			}
			got, _, err := svc.desired.server(ctx, "production", "www", tt.server)
			switch {
			case err != nil:
				t.Fatal(err)
			case tt.want == nil && got != nil:
				t.Fatalf("desired %+v, want no entry", got)
			case tt.want != nil && (got == nil || got.State != tt.want.State || got.Reason != tt.want.Reason || got.By != tt.want.By || got.Command != tt.want.Command):
				t.Fatalf("desired %+v, want it back as it was: %+v", got, tt.want)
			}
		})
	}
	if evs := e.events("server.ready"); len(evs) != 1 || evs[0].GetFields()["rolled_back"] != "true" || evs[0].GetFields()["instances"] != "lb1=failed,lb2=failed" {
		t.Fatalf("server.ready events %v, want one saying both instances failed and the desired state was rolled back", evs)
	}

	// Rate limits are kept in the same bucket and are rolled back alike.
	p, _ := e.run(req{cmd: "ratelimit set", args: map[string]string{"env": "production", "limits": "free=20"}}, 10*time.Second)
	if p.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(p.GetText(), "Unknown map identifier") || !strings.Contains(p.GetText(), "HAProxy refused the limits") {
		t.Fatalf("ratelimit set: %v %q, want an error saying HAProxy refused the limits", p.GetKind(), p.GetText())
	}
	if lim, _, err := svc.desired.limits(ctx, "production"); err != nil || lim != nil {
		t.Fatalf("desired limits %+v %v, want none", lim, err)
	}
}

func TestAChangeOneInstanceRefusesIsRetriedButSaidOnce(t *testing.T) {
	ins := refusingFleet(t, "admin", "user")
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2", "web3")
	cfg := testConfig(ins...)
	cfg.ReconcileInterval = 200 * time.Millisecond
	svc := e.start(cfg)
	waitSeen(t, svc, "lb1", ins[0])
	waitSeen(t, svc, "lb2", ins[1])
	ctx := context.Background()
	// What is published, before the streams de-duplicate it.
	notices := subscribeCount(t, e, wire.ChatPostSubject("console", "ops"), func(data []byte) bool {
		var p chatv1.ChatPost
		return wire.Unmarshal(data, &p) == nil && strings.Contains(p.GetText(), "did not take the desired state")
	})
	failedEvents := subscribeCount(t, e, wire.EventSubject("lb", "reconcile.failed"), nil)
	reconciledEvents := subscribeCount(t, e, wire.EventSubject("lb", "reconciled"), nil)

	p, _ := e.run(req{cmd: "lb remove", args: map[string]string{"host": "web3", "backend": "www"}, text: "disk failing"}, 10*time.Second)
	if p.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(p.GetText(), "Partly applied") || !strings.Contains(p.GetText(), "lb1: done") ||
		!strings.Contains(p.GetText(), "lb2: FAILED") || !strings.Contains(p.GetText(), "reconciliation retries lb2") {
		t.Fatalf("answer %v %q, want a partial failure, lb2 to be retried", p.GetKind(), p.GetText())
	}
	e.notice(5*time.Second, "HAProxy lb2 (production) did not take the desired state", "www/web3 → maint — FAILED", "Permission denied")
	reconciledBefore := reconciledEvents()

	// Several more rounds retry it, and say nothing new.
	waitRounds(t, svc, "lb2", 3)
	if n := notices(); n != 1 {
		t.Fatalf("the refusal was posted %d times, want once", n)
	}
	if n := failedEvents(); n != 1 {
		t.Fatalf("%d reconcile.failed events published, want 1", n)
	}
	if n := reconciledEvents(); n != reconciledBefore {
		t.Fatalf("reconciled events went from %d to %d in rounds that changed nothing", reconciledBefore, n)
	}
	d, _, err := svc.desired.server(ctx, "production", "www", "web3")
	if err != nil || d == nil || d.State != "maint" || !slices.Equal(d.Pending, []string{"lb2"}) {
		t.Fatalf("desired %+v %v, want maint still pending on lb2", d, err)
	}
	st, _ := e.run(req{cmd: "lb status", args: map[string]string{"target": "web3"}}, 10*time.Second)
	if !strings.Contains(st.GetText(), "lb1:maint lb2:ready") || !strings.Contains(st.GetText(), "(pending on lb2)") {
		t.Fatalf("status %q, want web3 shown partly applied, pending on lb2", st.GetText())
	}

	// Another replica taking over reconciliation knows what was said (it
	// loads it from sb_lb_desired) and does not say it again.
	svc.Stop(ctx)
	next := e.start(cfg)
	natstest.WaitFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if e, err := next.desired.kv.Get(ctx, keyLeader); err != nil || !strings.HasPrefix(string(e.Value()), next.instance+" ") {
			return errFmt("the new replica does not reconcile yet")
		}
		return nil
	})
	waitRounds(t, next, "lb2", 2)
	var stored int
	for _, p := range e.posts("", true) {
		if p.GetKind() == chatv1.Kind_KIND_NOTICE && strings.Contains(p.GetText(), "did not take the desired state") {
			stored++
		}
	}
	if n := notices(); n != 1 || stored != 1 {
		t.Fatalf("after a new replica took over, the refusal was posted %d times and stored %d times, want once", n, stored)
	}
}

// subscribeCount counts the messages published on subject (that match,
// when match is not nil) from now on; the function returns the count so far.
func subscribeCount(t *testing.T, e *testEnv, subject string, match func([]byte) bool) func() int {
	t.Helper()
	var mu sync.Mutex
	n := 0
	sub, err := e.nc.Subscribe(subject, func(m *nats.Msg) {
		if match == nil || match(m.Data) {
			mu.Lock()
			n++
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() int {
		// Everything published before this point has reached the
		// subscription once a round trip to the server is done.
		e.nc.Flush()
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// waitRounds waits until reconciliation has looked at an instance n more
// times (it records every look in seen.<instance>).
func waitRounds(t *testing.T, svc *Service, name string, n int) {
	t.Helper()
	ctx := natstest.Context(t, 20*time.Second)
	w, err := svc.desired.kv.Watch(ctx, prefixSeen+name, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for seen := 0; seen < n; {
		select {
		case <-ctx.Done():
			t.Fatalf("reconciliation looked at %s %d times in 20s, want %d", name, seen, n)
		case e := <-w.Updates():
			if e != nil {
				seen++
			}
		}
	}
}
