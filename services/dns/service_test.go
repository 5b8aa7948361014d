package dns_test

import (
	"context"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/services/dns"
	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

var applyRe = regexp.MustCompile("`dns apply ([0-9a-f]+)`")

func planID(t *testing.T, p *chatv1.ChatPost) string {
	t.Helper()
	m := applyRe.FindStringSubmatch(p.GetText())
	if m == nil {
		t.Fatalf("no `dns apply <id>` in %q", p.GetText())
	}
	return m[1]
}

func mustResult(t *testing.T, p *chatv1.ChatPost, what string) {
	t.Helper()
	if p.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("%s: got %s %q, want a result", what, p.GetKind(), p.GetText())
	}
}

func mustError(t *testing.T, p *chatv1.ChatPost, what, contains string) {
	t.Helper()
	if p.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(p.GetText(), contains) {
		t.Fatalf("%s: got %s %q, want an error containing %q", what, p.GetKind(), p.GetText(), contains)
	}
}

func TestPlanThenApplyMakesKnotServeWhatThePlanSaid(t *testing.T) {
	e := newEnv(t)
	e.start(e.config())
	before, err := e.rfc().Read(context.Background(), fwd)
	if err != nil {
		t.Fatal(err)
	}

	plan := e.run("ana", "dns plan", nil, false)
	mustResult(t, plan, "dns plan")
	id := planID(t, plan)
	if len(plan.GetAttachments()) != 1 || !strings.Contains(string(plan.GetAttachments()[0].GetData()), "+ web1.prod.example.test.\t300\tIN\tA\t192.0.2.11") {
		t.Fatalf("plan attachment lacks the full diff: %+v", plan.GetAttachments())
	}
	diff := string(plan.GetAttachments()[0].GetData())

	res := e.run("bob", "dns apply", map[string]string{"plan": id}, false)
	mustResult(t, res, "dns apply")

	// The zone now is the hand-made records plus exactly the plan's "+" lines.
	after, err := e.rfc().Read(context.Background(), fwd)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(before.Records)
	for line := range strings.SplitSeq(diff, "\n") {
		if strings.HasPrefix(line, "+ ") && strings.Contains(line, fwd+"\t") && !strings.Contains(line, "in-addr.arpa.\t") {
			f := strings.SplitN(strings.TrimPrefix(line, "+ "), "\t", 5)
			var ttl uint32
			for _, c := range f[1] {
				ttl = ttl*10 + uint32(c-'0')
			}
			want = append(want, zone.Record{Name: f[0], TTL: ttl, Type: f[3], Data: f[4]})
		}
	}
	if !zone.SameSet(after.Records, want) {
		t.Fatalf("zone after apply:\n%v\nwant (hand-made + plan):\n%v", after.Records, want)
	}

	// kdig sees it too: the round-robin set, the CNAME, the PTR, and the
	// hand-made MX untouched.
	if out := e.knot.Short(t, "www.example.test.", "A"); !slices.Equal(sortedCopy(out), []string{"192.0.2.11", "192.0.2.12"}) {
		t.Fatalf("kdig www A: %q, want both web addresses", out)
	}
	if out := e.knot.Short(t, "web1.example.test.", "CNAME"); !slices.Equal(out, []string{"web1.prod.example.test."}) {
		t.Fatalf("kdig web1 CNAME: %q", out)
	}
	if out := e.knot.Short(t, "-x", "192.0.2.21"); !slices.Equal(out, []string{"db1.prod.example.test."}) {
		t.Fatalf("kdig -x 192.0.2.21: %q", out)
	}
	if out := e.knot.Kdig(t, fwd, "AXFR"); !strings.Contains(out, "MX") || !strings.Contains(out, "v=spf1 -all") {
		t.Fatalf("hand-made MX/TXT gone after apply:\n%s", out)
	}

	// An event says so.
	natstest.WaitFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, ev := range e.events(wire.EventSubject("dns", "applied")) {
			if ev.GetFields()["plan"] == id && ev.GetFields()["failed"] == "0" {
				return nil
			}
		}
		return errString("no sb.event.dns.applied for plan " + id)
	})

	mustError(t, e.run("bob", "dns apply", map[string]string{"plan": id}, false), "second apply", "already applied by bob")
	again := e.run("ana", "dns plan", nil, false)
	mustResult(t, again, "plan after apply")
	if !strings.Contains(again.GetText(), "nothing to change") {
		t.Fatalf("plan after apply: %q, want nothing to change", again.GetText())
	}

	// A host leaves: its records and its ownership marker go, the rest stay.
	e.publish("rev2", testHosts()[:2])
	plan = e.run("ana", "dns plan", map[string]string{"zone": "example.test"}, false)
	mustResult(t, plan, "plan after db1 left")
	if !strings.Contains(plan.GetText(), "example.test. +0 ~0 -4") {
		t.Fatalf("plan after db1 left: %q, want 4 deletes (A, CNAME and the markers of both names)", plan.GetText())
	}
	mustResult(t, e.run("bob", "dns apply", map[string]string{"plan": planID(t, plan)}, false), "apply db1 removal")
	if out := e.knot.Short(t, "db1.prod.example.test.", "A"); len(out) != 0 {
		t.Fatalf("db1 still resolves: %q", out)
	}
	if out := e.knot.Short(t, "mail.example.test.", "A"); !slices.Equal(out, []string{"192.0.2.25"}) {
		t.Fatalf("hand-made mail A changed: %q", out)
	}
}

func sortedCopy(xs []string) []string {
	out := slices.Clone(xs)
	slices.Sort(out)
	return out
}

type errString string

func (e errString) Error() string { return string(e) }

func TestApplyRefusesWhenTheZoneChangedBehindThePlan(t *testing.T) {
	e := newEnv(t)
	e.start(e.config())
	plan := e.run("ana", "dns plan", nil, false)
	mustResult(t, plan, "dns plan")

	// Someone edits the zone by hand after the plan was made.
	ctx := context.Background()
	snap, err := e.rfc().Read(ctx, fwd)
	if err != nil {
		t.Fatal(err)
	}
	hand := zone.Record{Name: "handmade.example.test.", Type: "A", TTL: 300, Data: "192.0.2.99"}
	if _, err := e.rfc().Apply(ctx, fwd, snap.State, []zone.Change{{Name: hand.Name, Type: "A", New: []zone.Record{hand}}}); err != nil {
		t.Fatal(err)
	}
	edited, _ := e.rfc().Read(ctx, fwd)

	dry := e.run("bob", "dns apply", map[string]string{"plan": planID(t, plan)}, true)
	mustError(t, dry, "dry-run apply of a stale plan", "changed since plan")
	res := e.run("bob", "dns apply", map[string]string{"plan": planID(t, plan)}, false)
	mustError(t, res, "apply of a stale plan", "nothing applied")

	now, _ := e.rfc().Read(ctx, fwd)
	if now.State != edited.State || !zone.SameSet(now.Records, edited.Records) {
		t.Fatalf("a refused apply changed the zone:\n%v\nwas:\n%v", now.Records, edited.Records)
	}
	mustError(t, e.run("bob", "dns apply", map[string]string{"plan": planID(t, plan)}, false), "apply of a plan found stale", "stale")
}

func TestBadInputGetsAClearAnswerAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.FourEyes = true
	e.start(cfg)
	ctx := context.Background()
	before, _ := e.rfc().Read(ctx, fwd)

	mustError(t, e.run("ana", "dns plan", map[string]string{"zone": "nosuch.test"}, false), "unknown zone", `unknown zone "nosuch.test"`)
	mustError(t, e.run("ana", "dns apply", map[string]string{"plan": "0123456789ab"}, false), "unknown plan", "never existed or expired")
	mustError(t, e.run("ana", "dns show", map[string]string{"name": "www.elsewhere.org"}, false), "name outside the zones", "outside the zones")
	mustError(t, e.run("ana", "dns show", map[string]string{"name": "bad..name"}, false), "bad name", "not a DNS name")

	plan := e.run("ana", "dns plan", nil, false)
	mustResult(t, plan, "dns plan")
	id := planID(t, plan)
	mustError(t, e.run("ana", "dns apply", map[string]string{"plan": id}, false), "four eyes", "four eyes")
	dry := e.run("bob", "dns apply", map[string]string{"plan": id}, true)
	mustResult(t, dry, "dry run")
	if !strings.Contains(dry.GetText(), "dry run") {
		t.Fatalf("dry run answer: %q", dry.GetText())
	}
	e.clock.advance(2 * time.Hour)
	mustError(t, e.run("bob", "dns apply", map[string]string{"plan": id}, false), "expired plan", "expired")

	// A role that cannot be a DNS label makes a name DNS cannot hold.
	hosts := testHosts()
	hosts[2].Environment = "prod_eu"
	e.publish("rev-bad", hosts)
	mustError(t, e.run("ana", "dns plan", nil, false), "invalid name", `"db1.prod_eu.example.test."`)

	after, _ := e.rfc().Read(ctx, fwd)
	if after.State != before.State {
		t.Fatalf("bad input changed the zone (state %q → %q)", before.State, after.State)
	}
}

func TestRecordsSwitchboardDoesNotOwnAreLeftAlone(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// A person made web1.prod by hand before switchboard came.
	snap, _ := e.rfc().Read(ctx, fwd)
	hand := zone.Record{Name: "web1.prod.example.test.", Type: "A", TTL: 300, Data: "198.51.100.1"}
	if _, err := e.rfc().Apply(ctx, fwd, snap.State, []zone.Change{{Name: hand.Name, Type: "A", New: []zone.Record{hand}}}); err != nil {
		t.Fatal(err)
	}
	e.start(e.config())
	plan := e.run("ana", "dns plan", map[string]string{"zone": fwd}, false)
	mustResult(t, plan, "dns plan")
	if !strings.Contains(plan.GetText(), "web1.prod.example.test. A: the name has A records switchboard does not own") {
		t.Fatalf("plan does not say it left web1.prod alone: %q", plan.GetText())
	}
	mustResult(t, e.run("bob", "dns apply", map[string]string{"plan": planID(t, plan)}, false), "apply")
	if out := e.knot.Short(t, "web1.prod.example.test.", "A"); !slices.Equal(out, []string{"198.51.100.1"}) {
		t.Fatalf("hand-made web1.prod changed: %q", out)
	}
	show := e.run("ana", "dns show", map[string]string{"name": "web1.prod.example.test"}, false)
	mustResult(t, show, "dns show")
	if !strings.Contains(show.GetText(), "not owned") || !strings.Contains(show.GetText(), "192.0.2.11") {
		t.Fatalf("dns show: %q", show.GetText())
	}

	// Adopting it by pattern lets the next plan take it over.
	cfg := e.config()
	cfg.OwnedNames = []string{"*.prod.example.test."}
	e.svc.Stop(ctx)
	e.start(cfg)
	plan = e.run("ana", "dns plan", map[string]string{"zone": fwd}, false)
	mustResult(t, plan, "plan with owned_names")
	mustResult(t, e.run("bob", "dns apply", map[string]string{"plan": planID(t, plan)}, false), "apply with owned_names")
	if out := e.knot.Short(t, "web1.prod.example.test.", "A"); !slices.Equal(out, []string{"192.0.2.11"}) {
		t.Fatalf("adopted web1.prod: %q", out)
	}
}

func TestAWrongTSIGKeyIsAClearAnswer(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.RFC2136.TSIGSecret = "d3Jvbmcgc2VjcmV0IGZvciB0aGUga2V5IQ=="
	e.start(cfg)
	mustError(t, e.run("ana", "dns plan", nil, false), "wrong key", `refused TSIG key "switchboard-test"`)
}

func TestAnInventoryChangeMakesAPlanThatIsPosted(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.AutoPlan.Enabled = true
	cfg.AutoPlan.Adapter, cfg.AutoPlan.Channel = "console", "dns-plans"
	e.start(cfg)
	// Two replicas share the durable consumer: one plan per event.
	e.start(cfg)

	ev := &eventv1.Event{Id: "inv-rev1", Source: "inventory", Type: "changed", Title: "inventory rev1"}
	if _, err := emit.Event(natstest.Context(t, 5*time.Second), e.js, ev); err != nil {
		t.Fatal(err)
	}
	var notice *chatv1.ChatPost
	natstest.WaitFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, p := range e.posts("console", "dns-plans") {
			if strings.HasPrefix(p.GetText(), "DNS plan ready: ") {
				notice = p
				return nil
			}
		}
		return errString("no auto-plan post yet")
	})
	if len(notice.GetAttachments()) != 1 || notice.GetKind() != chatv1.Kind_KIND_NOTICE {
		t.Fatalf("auto-plan post: %v", notice)
	}
	mustResult(t, e.run("bob", "dns apply", map[string]string{"plan": planID(t, notice)}, false), "apply auto plan")
	list := e.run("bob", "dns plans", nil, false)
	mustResult(t, list, "dns plans")
	if !strings.Contains(list.GetText(), "applied by bob") || !strings.Contains(list.GetText(), "dns auto-plan") {
		t.Fatalf("dns plans: %q", list.GetText())
	}
	time.Sleep(500 * time.Millisecond) // let the other replica have its chance at a duplicate
	n := 0
	for _, p := range e.posts("console", "dns-plans") {
		if strings.HasPrefix(p.GetText(), "DNS plan ready") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d auto-plan posts for one event, want 1", n)
	}
}

func TestZoneFileProviderIsTheDefault(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Provider = "zonefile"
	cfg.ZoneFile.Dir = t.TempDir()
	cfg.ZoneFile.NameServer = "ns1.example.test."
	e.start(cfg)
	plan := e.run("ana", "dns plan", nil, false)
	mustResult(t, plan, "plan on zone files")
	mustResult(t, e.run("bob", "dns apply", map[string]string{"plan": planID(t, plan)}, false), "apply to zone files")
	hosts := append(testHosts(), &inventoryv1.Host{Name: "web3", Environment: "prod", Ipv4: "192.0.2.13", Backends: []string{"www"}, State: inventoryv1.HostState_HOST_STATE_ACTIVE})
	e.publish("rev2", hosts)
	plan = e.run("ana", "dns plan", nil, false)
	mustResult(t, plan, "second plan on zone files")
	if !strings.Contains(plan.GetText(), "example.test. +4 ~1 -0") || !strings.Contains(plan.GetText(), "in-addr.arpa. +2 ~0 -0") {
		// forward: web3's A and CNAME and a marker for each, www updated;
		// reverse: web3's PTR and its marker.
		t.Fatalf("second plan: %q", plan.GetText())
	}
}

func TestPlanRefusesARuleThatMakesANameOutsideTheZonesAndStoresNoPlan(t *testing.T) {
	e := newBusEnv(t, testHosts())
	cfg := e.zoneFileConfig()
	// A typo in a rule: example.tset. is none of the configured zones.
	cfg.Rules = append(cfg.Rules, dns.Rule{Type: "A", Per: "backend", Name: "{backend}.example.tset."})
	e.start(cfg)

	mustError(t, e.run("ana", "dns plan", nil, false), "plan with a name outside the zones",
		"no plan made: the inventory or the rules give records DNS cannot hold:\n"+
			`• rule 6 (A) gives backend www the name "www.example.tset.", which is outside the configured zones (2.0.192.in-addr.arpa., example.test.)`)

	kv, err := e.js.KeyValue(natstest.Context(t, 5*time.Second), wire.BucketDNSPlans)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(natstest.Context(t, 5*time.Second))
	if !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatalf("plans stored after a refused plan: %v (%v), want none", keys, err)
	}
	list := e.run("ana", "dns plans", nil, false)
	mustResult(t, list, "dns plans")
	if !strings.Contains(list.GetText(), "no DNS plans") {
		t.Fatalf("dns plans after a refused plan: %q", list.GetText())
	}
	if files, _ := os.ReadDir(cfg.ZoneFile.Dir); len(files) != 0 {
		t.Fatalf("a refused plan wrote to the zone directory: %v", files)
	}
}
