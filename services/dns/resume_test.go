package dns_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/dns"
	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

// halting is a provider whose first Apply (of all the replicas sharing
// tripped) sends only the first batch of changes, says which replica it
// is on halted, and then hangs until the replica is stopped: the replica
// dies in the middle of an apply.
type halting struct {
	dns.Provider
	replica int
	batch   int
	tripped *atomic.Bool
	halted  chan<- int
}

func (h *halting) Apply(ctx context.Context, name, state string, changes []zone.Change) ([]zone.Result, error) {
	if !h.tripped.CompareAndSwap(false, true) {
		return h.Provider.Apply(ctx, name, state, changes)
	}
	n := min(h.batch, len(changes))
	res, err := h.Provider.Apply(ctx, name, state, changes[:n])
	for _, c := range changes[n:] {
		res = append(res, zone.Result{Change: c, Err: zone.ErrNotAttempted})
	}
	if err != nil {
		return res, err
	}
	h.halted <- h.replica
	<-ctx.Done()
	return res, ctx.Err()
}

func TestAnApplyWhoseReplicaStopsIsFinishedByAnotherReplica(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.RFC2136.BatchSize = 2
	var tripped atomic.Bool
	halted := make(chan int, 1)
	var replicas []*dns.Service
	for i := range 2 {
		replicas = append(replicas, e.startWrapped(cfg, func(p dns.Provider) dns.Provider {
			return &halting{Provider: p, replica: i, batch: 2, tripped: &tripped, halted: halted}
		}))
	}
	ctx := natstest.Context(t, 2*time.Minute)
	before := map[string]*zone.Snapshot{}
	for _, z := range []string{fwd, rev} {
		snap, err := e.rfc().Read(ctx, z)
		if err != nil {
			t.Fatal(err)
		}
		before[z] = snap
	}

	plan := e.run("ana", "dns plan", nil, false)
	mustResult(t, plan, "dns plan")
	id := planID(t, plan)
	thread := e.send("bob", "dns apply", map[string]string{"plan": id}, false)

	// The replica running the apply sends its first UPDATE and dies.
	var dying int
	select {
	case dying = <-halted:
	case <-time.After(30 * time.Second):
		t.Fatal("the apply never reached the provider")
	}
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	replicas[dying].Stop(sctx)
	cancel()

	// It left the plan applying, claimed by the job, and the zones half done.
	kv, err := e.js.KeyValue(ctx, wire.BucketDNSPlans)
	if err != nil {
		t.Fatal(err)
	}
	readPlan := func() *dns.Plan {
		t.Helper()
		ent, err := kv.Get(ctx, "plan."+id)
		if err != nil {
			t.Fatal(err)
		}
		var p dns.Plan
		if err := json.Unmarshal(ent.Value(), &p); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	p := readPlan()
	if p.Status != dns.StatusApplying || p.ApplyJob != wire.JobID(thread) {
		t.Fatalf("plan after the replica stopped: status %q, claimed by job %q; want applying by %q", p.Status, p.ApplyJob, wire.JobID(thread))
	}
	if p.Zones[0].Zone != rev || len(p.Zones[0].Changes) <= 2 {
		t.Fatalf("want %s first with more than one batch of changes: %+v", rev, p.Zones[0])
	}
	if n := len(natstest.InThread(e.posts("console", "ops"), thread)); n == 0 {
		t.Fatal("no progress post from the first attempt")
	}

	// The other replica takes the job over and finishes the plan.
	final, posts := natstest.FinalPost(t, e.js, wire.ChatPostSubject("console", "ops"), thread, 60*time.Second)
	mustResult(t, final, "resumed apply")
	for _, want := range []string{
		"plan " + id + " applied by bob",
		"resumed after a take-over (2 already applied before it, ",
		"already applied before the take-over",
		"✓ add ",
	} {
		if !strings.Contains(final.GetText(), want) {
			t.Fatalf("resumed answer lacks %q:\n%s", want, final.GetText())
		}
	}
	resumed := false
	for _, q := range posts {
		if strings.Contains(q.GetText(), "is resuming it (attempt 2)") {
			resumed = true
		}
	}
	if !resumed {
		t.Fatal("no post says another replica resumed the job")
	}

	// Every zone is what it was with exactly the plan's changes made.
	for _, z := range p.Zones {
		want := zone.Group(before[z.Zone].Records)
		for _, c := range z.Changes {
			want[c.Key()] = c.New
		}
		var wantRecs []zone.Record
		for _, rs := range want {
			wantRecs = append(wantRecs, rs...)
		}
		after, err := e.rfc().Read(ctx, z.Zone)
		if err != nil {
			t.Fatal(err)
		}
		if !zone.SameSet(after.Records, wantRecs) {
			t.Fatalf("zone %s after the resumed apply:\n%v\nwant:\n%v", z.Zone, after.Records, wantRecs)
		}
	}
	if p := readPlan(); p.Status != dns.StatusApplied || p.Tally == nil || p.Tally.Already != 2 || p.Tally.Applied != p.Count()-2 {
		t.Fatalf("plan after the resumed apply: status %q, outcome %q", p.Status, p.Outcome)
	}

	// One event, one final answer.
	natstest.WaitFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, ev := range e.events(wire.EventSubject("dns", "applied")) {
			if ev.GetFields()["plan"] == id {
				return nil
			}
		}
		return errString("no sb.event.dns.applied for plan " + id)
	})
	time.Sleep(time.Second) // give a duplicate the time to show
	var events int
	for _, ev := range e.events(wire.EventSubject("dns", "applied")) {
		if ev.GetFields()["plan"] != id {
			continue
		}
		events++
		if f := ev.GetFields(); f["failed"] != "0" || f["conflicts"] != "0" || f["already_applied"] != "2" || f["resumed"] != "true" {
			t.Fatalf("applied event fields: %v", f)
		}
	}
	if events != 1 {
		t.Fatalf("%d sb.event.dns.applied for plan %s, want 1", events, id)
	}
	finals := 0
	for _, q := range natstest.InThread(e.posts("console", "ops"), thread) {
		if natstest.IsFinal(q) {
			finals++
		}
	}
	if finals != 1 {
		t.Fatalf("%d final posts in the apply's thread, want 1", finals)
	}

	// A first attempt still refuses a plan that is not open, and nothing is left to do.
	mustError(t, e.run("bob", "dns apply", map[string]string{"plan": id}, false), "apply again", "already applied by bob")
	again := e.run("ana", "dns plan", nil, false)
	if !strings.Contains(again.GetText(), "nothing to change") {
		t.Fatalf("plan after the resumed apply: %q, want nothing to change", again.GetText())
	}
}
