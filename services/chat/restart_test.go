package chat_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/natstest"
)

// TestEgressDeliversEveryPostInOrderAcrossANATSRestart stops the NATS
// server while the adapter is in the middle of a post and the egress holds
// the posts behind it, publishes more while it is down, and starts it
// again. Every post reaches the adapter, in order per conversation, none
// lost.
func TestEgressDeliversEveryPostInOrderAcrossANATSRestart(t *testing.T) {
	t.Parallel()
	node := natstest.RunNode(t)
	h := newHarnessAt(t, node.URL())
	svc := h.startChat(testConfig())
	a := newRecAdapter("rec")
	// The adapter is delivering p-040 when the server goes down, and
	// finishes it while the server is down.
	inFlight, serverDown := make(chan struct{}), make(chan struct{})
	var once sync.Once
	a.hold = func(p *chatv1.ChatPost) {
		if p.GetId() == "p-040" {
			once.Do(func() {
				close(inFlight)
				<-serverDown
			})
		}
	}
	if err := svc.AddAdapter(t.Context(), a, fastRetries); err != nil {
		t.Fatal(err)
	}

	// Published one after the other, as a service does: each publish is
	// retried until the stream has it, under the same id (so a retry of a
	// publish that was stored is dropped as a duplicate).
	posts := interleaved("rec", "p", 200, 5)
	publish := func(posts []*chatv1.ChatPost) {
		ctx := natstest.Context(t, 2*waitTotal)
		for _, p := range posts {
			if _, err := emit.Post(ctx, h.js, p); err != nil {
				t.Errorf("publish post %s: %v", p.GetId(), err)
				return
			}
		}
	}
	publish(posts[:100])
	select {
	case <-inFlight:
	case <-time.After(waitTotal):
		t.Fatalf("p-040 did not reach the adapter in %v", waitTotal)
	}
	node.Stop()
	// The second half is published while the server is down, and the
	// adapter finishes p-040 (whose ack cannot reach the server yet).
	published := make(chan struct{})
	go func() {
		defer close(published)
		publish(posts[100:])
	}()
	close(serverDown)
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		if !slices.ContainsFunc(a.got(), func(p *chatv1.ChatPost) bool { return p.GetId() == "p-040" }) {
			return fmt.Errorf("p-040 not delivered yet")
		}
		return nil
	})
	node.Restart()
	<-published
	if t.Failed() {
		t.FailNow()
	}

	// At least once: a post whose ack the stopped server never processed
	// may come again; the first delivery of each counts.
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		if n := len(firstDeliveries(a.got())); n < len(posts) {
			return fmt.Errorf("%d of %d posts delivered", n, len(posts))
		}
		return nil
	})
	got := firstDeliveries(a.got())
	if diff := cmp.Diff(sortedIDs(posts), sortedIDs(got)); diff != "" {
		t.Fatalf("posts delivered (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(byChannel(posts), byChannel(got)); diff != "" {
		t.Fatalf("delivered posts per conversation, in order (-want +got):\n%s", diff)
	}
	if n := len(a.got()) - len(got); n > 0 {
		t.Logf("%d posts were delivered twice (allowed: delivery is at least once)", n)
	}
}

// TestNATSRestartWhileCommandsAreInFlightLosesNothingAndRunsEachOnce
// restarts the NATS server while jobs run and while messages arrive. An
// adapter re-sends a message with the same id while the ingress answers
// UNAVAILABLE or REJECTED (the bus was down); in the end every command ran
// once, every thread has its posts once and in order, the audit trail has
// every stage of every command, and nothing stored before the restart is
// gone.
func TestNATSRestartWhileCommandsAreInFlightLosesNothingAndRunsEachOnce(t *testing.T) {
	t.Parallel()
	node := natstest.RunNode(t)
	h := newHarnessAt(t, node.URL())
	h.serveT()
	cfg := testConfig()
	cfg.DispatchTimeout = 2 * time.Second
	svc := h.startChat(cfg)

	ctx := natstest.Context(t, 10*time.Second)
	event := &eventv1.Event{Id: "build-42", Source: "ci", Type: "build.failed", Title: "build 42 failed"}
	if _, err := emit.Event(ctx, h.js, event); err != nil {
		t.Fatal(err)
	}

	const n, steps = 30, 20
	msgs := make([]*chatv1.ChatMessage, n)
	for i := range msgs {
		msgs[i] = messageIn("console", fmt.Sprintf("ops%d", i%3), ana, fmt.Sprintf("t slow %d", steps))
	}
	replies := make([]*chatv1.ChatReply, n)
	send := func(i int) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			r := h.handle(svc, msgs[i])
			switch r.GetStatus() {
			case chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED, chatv1.IngressStatus_INGRESS_STATUS_EXISTING:
				replies[i] = r
				return
			case chatv1.IngressStatus_INGRESS_STATUS_UNAVAILABLE, chatv1.IngressStatus_INGRESS_STATUS_REJECTED:
				if time.Now().After(deadline) {
					t.Errorf("message %d still refused after 60s: %v %q", i, r.GetStatus(), r.GetMessage())
					return
				}
				time.Sleep(100 * time.Millisecond) // an adapter's back-off, not an assertion
			default:
				t.Errorf("message %d: %v %q, want it accepted", i, r.GetStatus(), r.GetMessage())
				return
			}
		}
	}

	// The first half is accepted and running when the server goes down;
	// the second half arrives while it is down.
	var wg sync.WaitGroup
	for i := range n / 2 {
		wg.Go(func() { send(i) })
	}
	wg.Wait()
	node.Stop()
	var arrived sync.WaitGroup
	for i := n / 2; i < n; i++ {
		arrived.Add(1)
		wg.Go(func() {
			arrived.Done()
			send(i)
		})
	}
	arrived.Wait()
	node.Restart()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	for _, m := range msgs {
		h.waitFinal(thread(m))
	}
	// A job's result is audited after its result is posted.
	var records map[string][]*auditv1.Record
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		records = map[string][]*auditv1.Record{}
		results := 0
		for _, r := range h.audit(func(*auditv1.Record) bool { return true }) {
			records[r.GetCommandId()] = append(records[r.GetCommandId()], r)
			if r.GetStage() == auditv1.Stage_STAGE_RESULT {
				results++
			}
		}
		if results < n {
			return fmt.Errorf("%d of %d results audited", results, n)
		}
		return nil
	})
	for i, m := range msgs {
		id := commandID(m)
		final, all := h.waitFinal(thread(m))
		if final.GetKind() != chatv1.Kind_KIND_RESULT || final.GetText() != fmt.Sprintf("did %d steps", steps) {
			t.Errorf("message %d: final post %v %q, want the result", i, final.GetKind(), final.GetText())
		}
		if calls := h.rec.calls(id); len(calls) != 1 {
			t.Errorf("message %d: handler ran %d times, want once", i, len(calls))
		}
		// The job's posts: each once, in order of their sequence, the
		// progress steps 1…n and then the one result.
		seen := map[string]bool{}
		var seqs []uint32
		var texts []string
		for _, p := range all {
			if seen[p.GetId()] {
				t.Errorf("message %d: post %s is in the CHAT stream twice", i, p.GetId())
			}
			seen[p.GetId()] = true
			if p.GetJobId() == wire.JobID(id) {
				seqs = append(seqs, p.GetSeq())
				texts = append(texts, p.GetText())
			}
		}
		var want []string
		for s := 1; s <= steps; s++ {
			want = append(want, fmt.Sprintf("step %d of %d", s, steps))
		}
		want = append(want, fmt.Sprintf("did %d steps", steps))
		if fmt.Sprint(texts) != fmt.Sprint(want) {
			t.Errorf("message %d: job posts %q, want %q", i, texts, want)
		}
		for j := 1; j < len(seqs); j++ {
			if seqs[j] <= seqs[j-1] {
				t.Errorf("message %d: post sequences %v are not increasing", i, seqs)
				break
			}
		}
		stages := map[auditv1.Stage]bool{}
		for _, r := range records[id] {
			stages[r.GetStage()] = true
		}
		for _, st := range []auditv1.Stage{auditv1.Stage_STAGE_REQUEST, auditv1.Stage_STAGE_DECISION, auditv1.Stage_STAGE_ACCEPTED, auditv1.Stage_STAGE_RESULT} {
			if !stages[st] {
				t.Errorf("message %d: no %v record in the audit trail (%q)", i, st, outcomes(records[id]))
			}
		}
	}
	if n := h.rec.total(); n != len(msgs) {
		t.Errorf("handlers ran %d times in all, want %d", n, len(msgs))
	}

	var found bool
	for _, m := range h.readAll(wire.StreamEvents) {
		var e eventv1.Event
		if err := wire.Unmarshal(m.Data(), &e); err != nil {
			t.Fatal(err)
		}
		found = found || (e.GetId() == event.GetId() && e.GetTitle() == event.GetTitle())
	}
	if !found {
		t.Errorf("the event published before the restart is gone")
	}
}
