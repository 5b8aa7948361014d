package lb

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/lb/haproxytest"
)

func TestDrainUnderLiveTrafficWithWaitLosesNoRequest(t *testing.T) {
	ins, web := webFleet(t, 1, 50*time.Millisecond, "web1", "web2", "web3")
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2", "web3")
	e.start(testConfig(ins...))

	tr := haproxytest.StartTraffic(ins[0].URL, 8)
	defer tr.Stop()
	natstest.WaitFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if n := servedTotal(tr); n < 20 {
			return errFmt("%d requests served so far, want 20 before the drain", n)
		}
		return nil
	})
	// web1 keeps the requests it gets from now on open until released, so
	// the drain has sessions to wait for however slow this machine is.
	web["web1"].Hold()
	natstest.WaitFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if web["web1"].Holding() == 0 {
			return errFmt("web1 holds no request yet")
		}
		return nil
	})
	cr := e.request(req{cmd: "lb drain", args: map[string]string{"hosts": "web1", "backend": "www"},
		flags: map[string]string{"wait": "true", "timeout": "60s"}, text: "kernel update"})
	if ack := e.sendOn(e.nc, cr); ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_ACCEPTED {
		t.Fatalf("drain: ack %v %s", ack.GetStatus(), ack.GetReason())
	}
	waiting, _ := natstest.WaitPost(t, e.js, wire.ChatPostSubject("console", "ops"), cr.GetId(), 20*time.Second, 50*time.Millisecond, func(p *chatv1.ChatPost) bool {
		return strings.HasPrefix(p.GetText(), "Waiting for sessions to end: web1 ")
	})
	if waiting.GetKind() != chatv1.Kind_KIND_PROGRESS || strings.HasPrefix(waiting.GetText(), "Waiting for sessions to end: web1 0") {
		t.Fatalf("progress %v %q, want a progress post counting web1's open sessions", waiting.GetKind(), waiting.GetText())
	}
	if st, _ := ins[0].State("www", "web1"); st != "drain" {
		t.Fatalf("web1 is %s while its sessions are open, want drain", st)
	}
	web["web1"].Release()
	final, all := e.final(cr.GetId(), 40*time.Second)
	servedAtMaint := web["web1"].Served()
	for _, p := range all {
		t.Logf("%v: %s", p.GetKind(), p.GetText())
	}
	time.Sleep(500 * time.Millisecond) // traffic keeps flowing to the others
	ok, failed, errs := tr.Stop()

	if final.GetKind() != chatv1.Kind_KIND_RESULT || !strings.Contains(final.GetText(), "Drained after") || !strings.Contains(final.GetText(), "lb1: done") {
		t.Fatalf("final post %v %q, want the drain result per instance", final.GetKind(), final.GetText())
	}
	if st, _ := ins[0].State("www", "web1"); st != "maint" {
		t.Fatalf("web1 is %s after drain --wait, want maint", st)
	}
	if failed != 0 {
		t.Fatalf("%d of %d requests failed during the drain: %v", failed, ok+failed, errs)
	}
	if ok < 20 {
		t.Fatalf("only %d requests went through: the test did not exercise the drain", ok)
	}
	if n := web["web1"].Served(); n != servedAtMaint {
		t.Fatalf("web1 answered %d requests after maint (had %d)", n, servedAtMaint)
	}
	var sawDraining bool
	for _, p := range all {
		sawDraining = sawDraining || strings.Contains(p.GetText(), "Draining: www/web1")
	}
	if !sawDraining {
		t.Fatalf("no progress post saying the drain started: %v", all)
	}
	evs := e.events("server.drain")
	if len(evs) != 1 || evs[0].GetFields()["server"] != "web1" || evs[0].GetFields()["reason"] != "kernel update" || evs[0].GetFields()["by"] != "ana" {
		t.Fatalf("server.drain events %v, want one for web1 saying who and why", evs)
	}
	if len(e.events("server.maint")) != 1 {
		t.Fatalf("want one server.maint event at the end of the drain")
	}
}

func TestReconciliationRestoresDesiredStateAfterReloadAndRestart(t *testing.T) {
	ins, _ := webFleet(t, 1, 0, "web1", "web2", "web3")
	in := ins[0]
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2", "web3")
	cfg := testConfig(ins...)
	cfg.ReconcileInterval = 200 * time.Millisecond
	svc := e.start(cfg)

	if p, _ := e.run(req{cmd: "lb drain", args: map[string]string{"hosts": "web2", "backend": "www"}}, 10*time.Second); p.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("drain: %q", p.GetText())
	}
	if p, _ := e.run(req{cmd: "lb weight", args: map[string]string{"host": "web3", "backend": "www", "weight": "7"}}, 10*time.Second); p.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("weight: %q", p.GetText())
	}
	if p, _ := e.run(req{cmd: "ratelimit set", args: map[string]string{"env": "production", "limits": "free=25,paid=500"}}, 10*time.Second); p.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("ratelimit set: %q", p.GetText())
	}
	waitSeen(t, svc, "lb1", in)

	// A reload without saving the server state loses every runtime change.
	in.Reload()
	waitState(t, in, "www", "web2", "drain", 10*time.Second)
	natstest.WaitFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, w := in.State("www", "web3"); w != 7 {
			return errFmt("web3 weight %d, want 7", w)
		}
		if v := in.MapValue("paid"); v != "500" {
			return errFmt("map paid=%q, want 500", v)
		}
		return nil
	})
	e.notice(5*time.Second, "restarted or reloaded", "www/web2 → drain")

	// So does a restart.
	in.Restart()
	waitState(t, in, "www", "web2", "drain", 10*time.Second)
	natstest.WaitFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if v := in.MapValue("free"); v != "25" {
			return errFmt("map free=%q, want 25", v)
		}
		return nil
	})

	// A change by hand is drift: reported, not fought (drift: report).
	in.Query("set server www/web2 state ready")
	e.notice(5*time.Second, "Drift on HAProxy lb1", "www/web2 is ready, desired drain", "Left as it is")
	time.Sleep(3 * cfg.ReconcileInterval)
	if st, _ := in.State("www", "web2"); st != "ready" {
		t.Fatalf("web2 is %s: report mode must not revert a change made by hand", st)
	}
	var drifts int
	for _, p := range e.posts("", true) {
		if strings.Contains(p.GetText(), "Drift on HAProxy lb1") {
			drifts++
		}
	}
	if drifts != 1 {
		t.Fatalf("drift reported %d times, want once", drifts)
	}
	// Another replica takes the reconciler over and meets the same drift:
	// it is not said again.
	svc2 := e.start(cfg)
	svc.Stop(context.Background())
	var stamps []string
	natstest.WaitFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		ent, err := svc2.desired.kv.Get(context.Background(), keyLeader)
		if err != nil {
			return err
		}
		holder, ts, _ := strings.Cut(string(ent.Value()), " ")
		if holder == svc2.instance && !slices.Contains(stamps, ts) {
			stamps = append(stamps, ts)
		}
		if len(stamps) < 3 { // two full passes after taking over
			return errFmt("the second replica has led %d passes", len(stamps))
		}
		return nil
	})
	drifts = 0
	for _, p := range e.posts("", true) {
		if strings.Contains(p.GetText(), "Drift on HAProxy lb1") {
			drifts++
		}
	}
	if drifts != 1 {
		t.Fatalf("after a take-over the drift was reported %d times, want once", drifts)
	}
	// It knew, rather than relying on the stream to drop a copy.
	if got := svc2.said.get("lb1/" + serverKey("production", "www", "web2")); got != "ready" {
		t.Fatalf("the new reconciler's memory of the drift on web2: %q, want what was said (ready)", got)
	}
	svc = svc2

	// status shows the desired state's reason and the live state.
	p, _ := e.run(req{cmd: "lb status", args: map[string]string{"target": "www"}}, 10*time.Second)
	t.Logf("lb status www:\n%s", p.GetText())
	if !strings.Contains(p.GetText(), "web3") || !strings.Contains(p.GetText(), "lb weight by ana") {
		t.Fatalf("status %q", p.GetText())
	}
}

func TestDriftIsRevertedInEnforceMode(t *testing.T) {
	ins, _ := webFleet(t, 1, 0, "web1", "web2")
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2")
	cfg := testConfig(ins...)
	cfg.ReconcileInterval = 200 * time.Millisecond
	cfg.Drift = DriftEnforce
	svc := e.start(cfg)
	if p, _ := e.run(req{cmd: "lb remove", args: map[string]string{"host": "web2", "backend": "www"}}, 10*time.Second); p.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("remove: %q", p.GetText())
	}
	waitSeen(t, svc, "lb1", ins[0])
	ins[0].Query("set server www/web2 state ready")
	e.notice(5*time.Second, "Drift on HAProxy lb1", "Restored the desired state")
	waitState(t, ins[0], "www", "web2", "maint", 5*time.Second)
}

// waitSeen waits until the reconciler has recorded the instance's current
// process, so that what follows is judged against it.
func waitSeen(t *testing.T, svc *Service, name string, in *haproxytest.Instance) {
	t.Helper()
	pid := in.Pid()
	natstest.WaitFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		seen, _, err := get[seenInstance](context.Background(), svc.desired.kv, prefixSeen+name)
		if err != nil || seen == nil || seen.Pid != pid {
			return errFmt("reconciler has not seen %s pid %d yet (%v)", name, pid, err)
		}
		return nil
	})
}

func TestOneInstanceDownGivesAPartialAnswerThenConverges(t *testing.T) {
	ins, _ := webFleet(t, 2, 0, "web1", "web2", "web3")
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2", "web3")
	cfg := testConfig(ins...)
	cfg.ReconcileInterval = 200 * time.Millisecond
	svc := e.start(cfg)
	waitSeen(t, svc, "lb2", ins[1])

	ins[1].Stop()
	p, _ := e.run(req{cmd: "lb remove", args: map[string]string{"host": "web3", "backend": "www"}, text: "disk failing"}, 15*time.Second)
	if p.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(p.GetText(), "Partly applied") ||
		!strings.Contains(p.GetText(), "lb1: done") || !strings.Contains(p.GetText(), "lb2: FAILED") {
		t.Fatalf("answer %v %q, want a partial failure naming lb1 done and lb2 failed", p.GetKind(), p.GetText())
	}
	if st, _ := ins[0].State("www", "web3"); st != "maint" {
		t.Fatalf("web3 on lb1 is %s, want maint", st)
	}
	d, _, err := svc.desired.server(context.Background(), "production", "www", "web3")
	if err != nil || d == nil || d.State != "maint" || len(d.Pending) != 1 || d.Pending[0] != "lb2" {
		t.Fatalf("desired %+v %v, want maint pending on lb2", d, err)
	}
	evs := e.events("server.maint")
	if len(evs) != 1 || evs[0].GetFields()["instances"] != "lb1=ok,lb2=failed" {
		t.Fatalf("events %v, want one saying lb1 ok and lb2 failed", evs)
	}

	ins[1].Start()
	waitState(t, ins[1], "www", "web3", "maint", 10*time.Second)
	e.notice(5*time.Second, "HAProxy lb2", "www/web3 → maint")
	natstest.WaitFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		d, _, err := svc.desired.server(context.Background(), "production", "www", "web3")
		if err != nil || d == nil || len(d.Pending) != 0 {
			return errFmt("still pending: %+v %v", d, err)
		}
		return nil
	})
}

func TestTheSameCommandFromTwoChatReplicasDrainsOnce(t *testing.T) {
	ins, _ := webFleet(t, 1, 0, "web1", "web2", "web3")
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2", "web3")
	cfg := testConfig(ins...)
	e.start(cfg)
	e.start(cfg) // a second lb replica
	senders := []*nats.Conn{e.nc, natstest.ConnectURL(t, e.nc.ConnectedUrl())}
	r := e.request(req{cmd: "lb drain", args: map[string]string{"hosts": "web1", "backend": "www"}, id: "console/ops/drain-once"})
	var mu sync.Mutex
	count := map[commandv1.AckStatus]int{}
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(nc *nats.Conn) {
			defer wg.Done()
			ack := e.sendOn(nc, r)
			mu.Lock()
			count[ack.GetStatus()]++
			mu.Unlock()
		}(senders[i%2])
	}
	wg.Wait()
	if count[commandv1.AckStatus_ACK_STATUS_ACCEPTED] != 1 || count[commandv1.AckStatus_ACK_STATUS_EXISTING] != 5 {
		t.Fatalf("acks %v, want 1 accepted and 5 existing", count)
	}
	p, _ := e.final(r.GetId(), 10*time.Second)
	if p.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("final %q", p.GetText())
	}
	if evs := e.events("server.drain"); len(evs) != 1 {
		t.Fatalf("%d drain events, want 1", len(evs))
	}
	var results int
	for _, p := range e.posts(r.GetId(), false) {
		if p.GetKind() == chatv1.Kind_KIND_RESULT {
			results++
		}
	}
	if results != 1 {
		t.Fatalf("%d results in the thread, want 1", results)
	}
}

func TestBadInputGetsAClearAnswerAndChangesNothing(t *testing.T) {
	ins, _ := webFleet(t, 1, 0, "web1", "web2", "web3")
	in := ins[0]
	// A second environment whose only instance refuses changes (a socket
	// at level user) and a third whose instance is down.
	userLevel := haproxytest.Start(t, haproxytest.Config{Level: "user",
		Backends: []haproxytest.Backend{{Name: "www", Servers: []haproxytest.Server{{Name: "stg1", Addr: "127.0.0.1:1"}, {Name: "stg2", Addr: "127.0.0.1:1"}}}}})
	down := haproxytest.Start(t, haproxytest.Config{Backends: []haproxytest.Backend{{Name: "www", Servers: []haproxytest.Server{{Name: "dev1", Addr: "127.0.0.1:1"}}}}})
	down.Stop()
	e := newTestEnv(t)
	kv := e.seedMany(map[string][]string{"production": {"web1", "web2", "web3", "web9"}, "staging": {"stg1", "stg2"}, "dev": {"dev1"}, "qa": {"qa1"}})
	_ = kv
	cfg := testConfig(ins...)
	cfg.Environments["staging"] = EnvConfig{Instances: []InstanceConfig{{Name: "stg-lb", Address: userLevel.Address()}}}
	cfg.Environments["dev"] = EnvConfig{Instances: []InstanceConfig{{Name: "dev-lb", Address: down.Address()}}}
	e.start(cfg)

	rejected := []struct {
		name string
		r    req
		want string
	}{
		{"a malformed host list", req{cmd: "lb drain", args: map[string]string{"hosts": "web1,,web_2"}}, "hosts"},
		{"a weight out of range", req{cmd: "lb weight", args: map[string]string{"host": "web1", "backend": "www", "weight": "300"}}, "256"},
		{"a limit that is not key=value", req{cmd: "ratelimit set", args: map[string]string{"env": "production", "limits": "free"}}, "key=value"},
		{"a drain timeout that is not positive", req{cmd: "lb drain", args: map[string]string{"hosts": "web1"}, flags: map[string]string{"wait": "true", "timeout": "0s"}}, "--timeout"},
	}
	for _, tt := range rejected {
		t.Run(tt.name, func(t *testing.T) {
			ack := e.sendOn(e.nc, e.request(tt.r))
			if ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_REJECTED || !strings.Contains(ack.GetReason(), tt.want) {
				t.Fatalf("ack %v %q, want rejected mentioning %q", ack.GetStatus(), ack.GetReason(), tt.want)
			}
		})
	}
	answered := []struct {
		name string
		r    req
		want string
	}{
		{"an unknown host", req{cmd: "lb drain", args: map[string]string{"hosts": "web1,nosuch", "backend": "www"}}, "nosuch is not in the inventory"},
		{"a host that is no server of the backend", req{cmd: "lb remove", args: map[string]string{"host": "web9", "backend": "www"}}, "web9 is not a server of backend www on lb1"},
		{"an unknown backend", req{cmd: "lb add", args: map[string]string{"host": "web1", "backend": "nope"}}, "backend nope does not exist on lb1"},
		{"an environment without HAProxy", req{cmd: "lb remove", args: map[string]string{"host": "qa1"}}, `no HAProxy instances are configured for environment "qa"`},
		{"HAProxy unreachable", req{cmd: "lb remove", args: map[string]string{"host": "dev1", "backend": "www"}}, "no HAProxy instance of dev answered, so nothing was changed"},
		{"a Runtime API error", req{cmd: "lb remove", args: map[string]string{"host": "stg1", "backend": "www"}}, "Not applied on any instance"},
		{"a Runtime API error names HAProxy's reply", req{cmd: "lb remove", args: map[string]string{"host": "stg2", "backend": "www"}}, "Permission denied (the stats socket needs level admin)"},
		{"too many servers at once", req{cmd: "lb drain", args: map[string]string{"hosts": "web1,web2", "backend": "www"}}, "2 of 3 servers of backend www out of service; the limit is 1"},
		{"the last ready server", func() req {
			return req{cmd: "lb remove", args: map[string]string{"host": "web3", "backend": "www"}, flags: map[string]string{"force": "true"}}
		}(), "--force needs the role"},
		{"a limit that is not a number", req{cmd: "ratelimit set", args: map[string]string{"env": "production", "limits": "free=lots"}}, "not a whole number"},
		{"a rate limit in an environment without a map", req{cmd: "ratelimit show", args: map[string]string{"env": "staging"}}, "has no rate-limit map"},
	}
	for _, tt := range answered {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := e.run(tt.r, 10*time.Second)
			if p.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(p.GetText(), tt.want) {
				t.Fatalf("answer %v %q, want an error containing %q", p.GetKind(), p.GetText(), tt.want)
			}
		})
	}
	for _, h := range []string{"web1", "web2", "web3"} {
		if st, w := in.State("www", h); st != "ready" || w != 1 {
			t.Fatalf("%s is %s weight %d after refused commands, want ready weight 1", h, st, w)
		}
	}
	if st, _ := userLevel.State("www", "stg1"); st != "ready" {
		t.Fatalf("stg1 is %s, want ready", st)
	}
	if v := in.MapValue("free"); v != "10" {
		t.Fatalf("map free=%q after refused commands, want 10", v)
	}

	// --force with the role goes past the limit and says so; dry run
	// first changes nothing.
	p, _ := e.run(req{cmd: "lb drain", args: map[string]string{"hosts": "web1,web2", "backend": "www"}, flags: map[string]string{"force": "true"}, roles: []string{"admin"}, dry: true}, 10*time.Second)
	if !strings.Contains(p.GetText(), "Dry run") || !strings.Contains(p.GetText(), "forced past a safety check") {
		t.Fatalf("dry run %q", p.GetText())
	}
	if st, _ := in.State("www", "web1"); st != "ready" {
		t.Fatalf("a dry run changed web1 to %s", st)
	}
	p, _ = e.run(req{cmd: "lb drain", args: map[string]string{"hosts": "web1,web2", "backend": "www"}, flags: map[string]string{"force": "true"}, roles: []string{"admin"}}, 10*time.Second)
	if p.GetKind() != chatv1.Kind_KIND_RESULT || !strings.Contains(p.GetText(), "forced past a safety check") {
		t.Fatalf("forced drain %v %q", p.GetKind(), p.GetText())
	}
	// Even forced, the last server of a backend cannot go without saying so.
	p, _ = e.run(req{cmd: "lb remove", args: map[string]string{"host": "web3", "backend": "www"}}, 10*time.Second)
	if p.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(p.GetText(), "last ready server") {
		t.Fatalf("removing the last server: %v %q", p.GetKind(), p.GetText())
	}
}

func errFmt(format string, args ...any) error { return fmtErrorf(format, args...) }

// servedTotal is how many requests the traffic got answered so far.
func servedTotal(tr *haproxytest.Traffic) int64 {
	var n int64
	for _, c := range tr.Served() {
		n += c
	}
	return n
}
