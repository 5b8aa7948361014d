package chat_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat"
)

var confirmCode = regexp.MustCompile("Reply `confirm ([0-9a-f]{6})` within ")

// askToConfirm sends a command that needs confirmation and returns the
// message and the code, checking that nothing ran yet.
func (h *harness) askToConfirm(svc *chat.Service, from *chatv1.Identity, text string) (*chatv1.ChatMessage, string) {
	h.t.Helper()
	msg := message(from, text)
	reply := h.handle(svc, msg)
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_NEEDS_CONFIRMATION {
		h.t.Fatalf("%s: reply %v %q, want NEEDS_CONFIRMATION", text, reply.GetStatus(), reply.GetMessage())
	}
	m := confirmCode.FindStringSubmatch(reply.GetMessage())
	if m == nil {
		h.t.Fatalf("%s: reply %q gives no code", text, reply.GetMessage())
	}
	p := h.chatAnswer(thread(msg))
	if p.GetKind() != chatv1.Kind_KIND_NOTICE || p.GetText() != reply.GetMessage() {
		h.t.Fatalf("%s: answer in the thread %v %q, want the question as a notice", text, p.GetKind(), p.GetText())
	}
	h.noJob(commandID(msg))
	if got := outcomes(h.auditOf(commandID(msg))); !cmp.Equal(got, []string{"request received", "decision confirm"}) {
		h.t.Fatalf("%s: audit trail %q, want the request and a confirm decision", text, got)
	}
	return msg, m[1]
}

func TestACommandThatNeedsConfirmationRunsOnceWhenItsRequesterConfirms(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	svc := h.startChat(testConfig())

	msg, code := h.askToConfirm(svc, ana, "t nuke web1")

	other := h.refused(svc, olga, "confirm "+code, chatv1.IngressStatus_INGRESS_STATUS_REJECTED)
	if want := "confirmation " + code + " belongs to ana; only they can confirm it"; other != want {
		t.Fatalf("confirm by olga: %q, want %q", other, want)
	}
	h.noJob(commandID(msg))

	jobID := wire.JobID(commandID(msg))
	if got, want := h.ask(svc, ana, "confirm "+code), "Confirmed: t nuke web1 (accepted as job "+jobID+")."; got != want {
		t.Fatalf("confirm by ana: %q, want %q", got, want)
	}
	// The command runs under its own id and answers in its own thread.
	final, _ := h.waitFinal(thread(msg))
	if final.GetKind() != chatv1.Kind_KIND_RESULT || final.GetText() != "ran t nuke" || final.GetJobId() != jobID {
		t.Fatalf("final post %v %q of job %s, want the result of job %s", final.GetKind(), final.GetText(), final.GetJobId(), jobID)
	}

	again := h.refused(svc, ana, "confirm "+code, chatv1.IngressStatus_INGRESS_STATUS_REJECTED)
	if !strings.HasPrefix(again, `there is no pending confirmation "`+code+`"`) {
		t.Fatalf("second confirm: %q, want it refused as no longer pending", again)
	}
	if calls := h.rec.calls(commandID(msg)); len(calls) != 1 || calls[0].GetDryRun() {
		t.Fatalf("handler ran %d times (%v), want once for real", len(calls), calls)
	}
	if n := h.rec.total(); n != 1 {
		t.Fatalf("handlers ran %d times in all, want 1", n)
	}
}

func TestADryRunNeedsNoConfirmation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	svc := h.startChat(testConfig())

	msg := message(ana, "t nuke web1 --dry-run")
	if reply := h.handle(svc, msg); reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
		t.Fatalf("reply %v %q, want ACCEPTED without confirmation", reply.GetStatus(), reply.GetMessage())
	}
	if final, _ := h.waitFinal(thread(msg)); final.GetText() != "would run t nuke" {
		t.Fatalf("result %q, want the dry run's", final.GetText())
	}
	if calls := h.rec.calls(commandID(msg)); len(calls) != 1 || !calls[0].GetDryRun() {
		t.Fatalf("handler calls %v, want one dry run", calls)
	}
}

// TestTwoReplicasConfirmingTheSameCodeRunItOnce confirms one code on two
// chat replicas at the same time, as a double click on two consoles would.
func TestTwoReplicasConfirmingTheSameCodeRunItOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	replicas := []*chat.Service{h.startChat(testConfig()), h.startChat(testConfig())}

	msg, code := h.askToConfirm(replicas[0], ana, "t nuke web1")
	var wg sync.WaitGroup
	replies := make([]*chatv1.ChatReply, 6)
	for i := range replies {
		wg.Go(func() { replies[i] = h.handle(replicas[i%2], message(ana, "confirm "+code)) })
	}
	wg.Wait()
	count := map[chatv1.IngressStatus]int{}
	for _, r := range replies {
		count[r.GetStatus()]++
	}
	if count[chatv1.IngressStatus_INGRESS_STATUS_ANSWERED] != 1 || count[chatv1.IngressStatus_INGRESS_STATUS_REJECTED] != 5 {
		t.Fatalf("confirm replies %v, want 1 answered and 5 rejected", count)
	}
	h.waitFinal(thread(msg))
	if calls := h.rec.calls(commandID(msg)); len(calls) != 1 {
		t.Fatalf("handler ran %d times, want once", len(calls))
	}
}

// TestAConfirmedCommandWhoseServiceIsGoneSaysSo: the confirmation is used
// up, so the person must hear, in the confirm's reply and in the command's
// own thread, that nothing ran.
func TestAConfirmedCommandWhoseServiceIsGoneSaysSo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	srv := h.serveT()
	svc := h.startChat(testConfig())

	msg, code := h.askToConfirm(svc, ana, "t nuke web1")
	srv.Stop(t.Context())

	want := "No replica of the t service is running, so t nuke was not run. Nothing was changed."
	got := h.refused(svc, ana, "confirm "+code, chatv1.IngressStatus_INGRESS_STATUS_REJECTED)
	if !strings.Contains(got, want) {
		t.Fatalf("confirm reply %q, want it to say %q", got, want)
	}
	var errs []string
	for _, p := range h.posts(thread(msg)) {
		if p.GetKind() == chatv1.Kind_KIND_ERROR {
			errs = append(errs, p.GetText())
		}
	}
	if !cmp.Equal(errs, []string{want}) {
		t.Fatalf("errors in the command's thread %q, want %q", errs, want)
	}
	h.noJob(commandID(msg))
}

// TestAConfirmationAfterItsTimeLimitIsRefusedAndRunsNothing lets a
// confirmation expire (with the shortest time limit the configuration
// allows): confirming it then is refused with the reason, and the command
// never runs.
func TestAConfirmationAfterItsTimeLimitIsRefusedAndRunsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	cfg := testConfig()
	cfg.ConfirmTTL = 10 * time.Second
	svc := h.startChat(cfg)

	asked := time.Now() // before the code exists, so before its time starts
	msg, code := h.askToConfirm(svc, ana, "t nuke web1")
	// Expiry is the server's (the bucket's TTL): wait for the code to be
	// gone rather than for a time that a slow machine might not honour.
	kv, err := h.js.KeyValue(natstest.Context(t, 10*time.Second), chat.BucketConfirm)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, cfg.ConfirmTTL+waitTotal, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := kv.Get(ctx, code); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("confirmation %s still pending (%v)", code, err)
		}
		return nil
	})
	if waited := time.Since(asked); waited < cfg.ConfirmTTL {
		t.Fatalf("confirmation %s was gone after %v, before its time limit of %v", code, waited, cfg.ConfirmTTL)
	}

	got := h.refused(svc, ana, "confirm "+code, chatv1.IngressStatus_INGRESS_STATUS_REJECTED)
	if want := `there is no pending confirmation "` + code + `" (they expire after 10s)`; got != want {
		t.Fatalf("late confirm: %q, want %q", got, want)
	}
	h.noJob(commandID(msg))
	if n := h.rec.total(); n != 0 {
		t.Fatalf("handlers ran %d times, want none", n)
	}
	// The command's own trail ends at the question, and its thread has
	// no job's post, result or error.
	if got := outcomes(h.auditOf(commandID(msg))); !cmp.Equal(got, []string{"request received", "decision confirm"}) {
		t.Fatalf("audit trail of the command %q, want only the request and the confirm decision", got)
	}
	for _, p := range h.posts(thread(msg)) {
		if p.GetJobId() != "" || p.GetKind() == chatv1.Kind_KIND_RESULT || p.GetKind() == chatv1.Kind_KIND_ERROR {
			t.Fatalf("the command's thread has %v %q (job %q); nothing should have run", p.GetKind(), p.GetText(), p.GetJobId())
		}
	}
}
