package chat_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/testing/protocmp"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
)

// TestACommandRunsEndToEndWithCanonicalArguments dispatches commands to
// the test service: the handler gets the arguments in canonical form, the
// reply names the job, the result arrives in the thread, and the audit
// trail has the whole life of the command.
func TestACommandRunsEndToEndWithCanonicalArguments(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	svc := h.startChat(testConfig())

	tests := []struct {
		name   string
		text   string
		args   map[string]string
		flags  map[string]string
		dryRun bool
		result string
	}{
		{"typed arguments and flags arrive canonical", "sb: t add WEB1.Example.com www --weight=010 --wait 90s",
			map[string]string{"host": "web1.example.com", "backend": "www"}, map[string]string{"weight": "10", "wait": "1m30s"},
			false, "added web1.example.com to www"},
		{"a dry run reaches the handler as one", "t add web2 www --dry-run",
			map[string]string{"host": "web2", "backend": "www"}, map[string]string{},
			true, "would add web2 to www"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *h
			h.t = t
			msg := message(ana, tt.text)
			id := commandID(msg)
			reply := h.handle(svc, msg)
			want := &chatv1.ChatReply{
				Status:       chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED,
				CommandId:    id,
				JobId:        wire.JobID(id),
				Conversation: thread(msg),
				Message:      "accepted as job " + wire.JobID(id),
			}
			if diff := cmp.Diff(want, reply, protocmp.Transform()); diff != "" {
				t.Fatalf("reply (-want +got):\n%s", diff)
			}

			final, _ := h.waitFinal(thread(msg))
			if final.GetKind() != chatv1.Kind_KIND_RESULT || final.GetReaction() != chatv1.Reaction_REACTION_SUCCEEDED || final.GetText() != tt.result {
				t.Fatalf("final post %v %v %q, want a succeeded result %q", final.GetKind(), final.GetReaction(), final.GetText(), tt.result)
			}
			if final.GetJobId() != reply.GetJobId() || final.GetReplyTo() != msg.GetId() {
				t.Fatalf("final post is for job %s replying to %s, want job %s replying to %s", final.GetJobId(), final.GetReplyTo(), reply.GetJobId(), msg.GetId())
			}

			calls := h.rec.calls(id)
			if len(calls) != 1 {
				t.Fatalf("handler ran %d times, want once", len(calls))
			}
			wantReq := &commandv1.CommandRequest{
				Id:           id,
				Requester:    &chatv1.Identity{Id: ana.Id, Name: ana.Name, Roles: []string{"admin"}},
				Source:       "console",
				Conversation: thread(msg),
				Command:      "t add",
				Args:         tt.args,
				Flags:        tt.flags,
				Raw:          strings.TrimSpace(strings.TrimPrefix(tt.text, "sb:")),
				DryRun:       tt.dryRun,
				MessageId:    msg.GetId(),
			}
			if diff := cmp.Diff(wantReq, calls[0], protocmp.Transform(),
				protocmp.IgnoreFields(&commandv1.CommandRequest{}, "deadline", "sent_at")); diff != "" {
				t.Fatalf("request the handler got (-want +got):\n%s", diff)
			}

			j, err := h.job(id)
			if err != nil || j.GetState() != commandv1.JobState_JOB_STATE_SUCCEEDED || j.GetResult() != tt.result {
				t.Fatalf("job %v (err %v), want succeeded with result %q", j, err, tt.result)
			}
			// The chat audits its decision when the service's ack arrives,
			// while the service audits the job it started: those two may be
			// stored in either order, and the service's result record may be
			// stored just after the result post (another stream).
			var got []string
			natstest.WaitFor(t, waitTotal, waitStep, func() error {
				got = outcomes(h.auditOf(id))
				if len(got) < 4 {
					return fmt.Errorf("audit trail so far: %q", got)
				}
				return nil
			})
			if want := []string{"accepted accepted", "decision dispatched", "request received", "result succeeded"}; !cmp.Equal(got, want, cmpopts.SortSlices(func(a, b string) bool { return a < b })) {
				t.Fatalf("audit trail %q, want %q in any order", got, want)
			}
		})
	}
}

// TestACommandWhoseServiceIsGoneIsUnavailableAndChangesNothing stops the
// only replica of a service after the chat discovered its commands.
func TestACommandWhoseServiceIsGoneIsUnavailableAndChangesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	srv := h.serveT()
	svc := h.startChat(testConfig()) // discovers t's commands
	srv.Stop(t.Context())

	msg := message(ana, "t add web1 www")
	id := commandID(msg)
	reply := h.handle(svc, msg)
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_UNAVAILABLE || !reply.GetFinal() {
		t.Fatalf("reply %v (final %v), want a final UNAVAILABLE", reply.GetStatus(), reply.GetFinal())
	}
	if want := "No replica of the t service is running, so t add was not run. Nothing was changed."; reply.GetMessage() != want {
		t.Fatalf("reply %q, want %q", reply.GetMessage(), want)
	}
	answer := h.chatAnswer(thread(msg))
	if answer.GetKind() != chatv1.Kind_KIND_ERROR || answer.GetText() != reply.GetMessage() {
		t.Fatalf("answer in the thread %v %q, want the error %q", answer.GetKind(), answer.GetText(), reply.GetMessage())
	}
	h.noJob(id)
	if n := h.rec.total(); n != 0 {
		t.Fatalf("handler ran %d times", n)
	}
	if got, want := outcomes(h.auditOf(id)), []string{"request received", "decision unavailable"}; !cmp.Equal(got, want) {
		t.Fatalf("audit trail %q, want %q", got, want)
	}
}
