package chat_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
)

// TestBadInputGetsAClearAnswerAndChangesNothing sends what people get
// wrong, and what RBAC refuses, through the ingress: each gets a final
// reply with the right status, a failed answer in the message's thread
// saying exactly what is wrong, a decision in the audit trail, and no job.
func TestBadInputGetsAClearAnswerAndChangesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	svc := h.startChat(testConfig())

	const (
		invalid = chatv1.IngressStatus_INGRESS_STATUS_INVALID
		denied  = chatv1.IngressStatus_INGRESS_STATUS_DENIED
	)
	tests := []struct {
		name    string
		from    *chatv1.Identity
		text    string
		status  chatv1.IngressStatus
		outcome string
		want    []string // in the answer, in this order
	}{
		{"an unknown command gets a did-you-mean", ana, "t ad web1 www", invalid, "unknown",
			[]string{"I don't know", "Did you mean `t add`?"}},
		{"a misspelt one-word command gets a did-you-mean", ana, "pnig", invalid, "unknown",
			[]string{`I don't know "pnig"`, "Did you mean `ping`?"}},
		{"an argument of the wrong type names the argument and the usage", ana, "t add web_1 www", invalid, "invalid",
			[]string{"<host>", `"web_1" is not a host name ('_' is not allowed)`, "usage: t add <host> <backend>"}},
		{"a flag of the wrong type names the flag", ana, "t add web1 www --weight lots", invalid, "invalid",
			[]string{"--weight", `"lots" is not a whole number`}},
		{"a missing argument names it", ana, "t add web1", invalid, "invalid",
			[]string{"missing <backend>", "usage: t add"}},
		{"unbalanced quotes say where the quote starts", ana, `t add "web1 www`, invalid, "invalid",
			[]string{"I could not read that", `unclosed " quote starting at byte 6`}},
		{"over-long input gives the limit", ana, "t add web1 www -- " + strings.Repeat("x", 4000), invalid, "invalid",
			[]string{"message is 4018 bytes; the limit is 4000"}},
		// The audit trail caps the text it keeps at 4000 bytes; the cut must
		// not split a character, or the record cannot be encoded.
		{"over-long input with accents gives the limit", ana, "t add web1 www -- x" + strings.Repeat("é", 2000), invalid, "invalid",
			[]string{"message is 4019 bytes; the limit is 4000"}},
		{"a control character is refused with its position", ana, "t add web1\x07 www", invalid, "invalid",
			[]string{"control character U+0007 at byte 10"}},
		{"an empty message", ana, " \t ", invalid, "invalid",
			[]string{"That is empty. Type `help`"}},
		{"the bot's name alone is empty", ana, "sb:", invalid, "invalid",
			[]string{"That is empty"}},
		{"a role without the command is denied", vic, "t add web1 www", denied, "denied",
			[]string{"Sorry, your roles (viewer) do not include t add", "Ask an admin"}},
		{"a role limited to staging may not name production as an environment", olga, "t deploy 1.2.3 production", denied, "denied",
			[]string{`your roles (operator) may run t deploy, but not on "production"`}},
		{"a role limited to staging may not name production in role@env", olga, "t scale web@production", denied, "denied",
			[]string{`may run t scale, but not on "production"`}},
		{"a command that needs a role nobody has", ana, "t wipe", denied, "denied",
			[]string{`t wipe needs the role "dba"; you have admin`}},
		{"someone without any grant has no roles", &chatv1.Identity{Id: "console:nobody", Name: "nobody"}, "t add web1 www", denied, "denied",
			[]string{"your roles (no roles) do not include t add"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *h
			h.t = t
			msg := message(tt.from, tt.text)
			id := commandID(msg)
			reply := h.handle(svc, msg)

			want := &chatv1.ChatReply{Status: tt.status, CommandId: id, Conversation: thread(msg), Final: true}
			if diff := cmp.Diff(want, reply, protocmp.Transform(),
				protocmp.IgnoreFields(&chatv1.ChatReply{}, "message", "job_id")); diff != "" {
				t.Fatalf("reply (-want +got):\n%s", diff)
			}
			containsInOrder(t, "reply", reply.GetMessage(), tt.want)

			answer := h.chatAnswer(thread(msg))
			if answer.GetKind() != chatv1.Kind_KIND_ERROR || answer.GetReaction() != chatv1.Reaction_REACTION_FAILED {
				t.Fatalf("answer in the thread is %v with reaction %v, want an error marked failed", answer.GetKind(), answer.GetReaction())
			}
			if answer.GetText() != reply.GetMessage() || answer.GetReplyTo() != msg.GetId() || answer.GetCommandId() != id {
				t.Fatalf("answer in the thread %q (reply_to %q, command %q), want the reply's message %q for message %s",
					answer.GetText(), answer.GetReplyTo(), answer.GetCommandId(), reply.GetMessage(), msg.GetId())
			}

			h.noJob(id)
			if calls := h.rec.calls(id); len(calls) != 0 {
				t.Fatalf("the handler ran %d times for a refused message", len(calls))
			}
			recs := h.auditOf(id)
			if got, want := outcomes(recs), []string{"request received", "decision " + tt.outcome}; !cmp.Equal(got, want) {
				t.Fatalf("audit trail %q, want %q", got, want)
			}
			if d := recs[1]; d.GetDetail() != reply.GetMessage() || d.GetIdentity().GetId() != tt.from.GetId() {
				t.Fatalf("decision record detail %q by %q, want %q by %q", d.GetDetail(), d.GetIdentity().GetId(), reply.GetMessage(), tt.from.GetId())
			}
		})
	}
	if n := h.rec.total(); n != 0 {
		t.Fatalf("the test service's handlers ran %d times; bad input must change nothing", n)
	}
}

// TestAMessageWithoutIdConversationOrAuthorIsRefusedAndAudited: an adapter
// that sends an incomplete message gets a final INVALID reply, nothing
// runs, and the refusal is in the audit trail.
func TestAMessageWithoutIdConversationOrAuthorIsRefusedAndAudited(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	svc := h.startChat(testConfig())

	tests := []struct {
		name  string
		strip func(*chatv1.ChatMessage)
	}{
		{"no id", func(m *chatv1.ChatMessage) { m.Id = "" }},
		{"no conversation", func(m *chatv1.ChatMessage) { m.Conversation = nil }},
		{"no channel", func(m *chatv1.ChatMessage) { m.Conversation.Channel = "" }},
		{"no adapter", func(m *chatv1.ChatMessage) { m.Conversation.Adapter = "" }},
		{"no author", func(m *chatv1.ChatMessage) { m.Author = nil }},
		{"an author without an id", func(m *chatv1.ChatMessage) { m.Author.Id = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *h
			h.t = t
			// The text is unique, so the audit record can be found by it.
			msg := message(ana, "t add web1 www -- "+t.Name())
			tt.strip(msg)
			reply := h.handle(svc, msg)
			if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_INVALID || !reply.GetFinal() {
				t.Fatalf("reply %v (final %v), want a final INVALID", reply.GetStatus(), reply.GetFinal())
			}
			if want := "a message needs an id, a conversation (adapter and channel) and an author"; reply.GetMessage() != want {
				t.Fatalf("reply message %q, want %q", reply.GetMessage(), want)
			}
			recs := h.audit(func(r *auditv1.Record) bool { return r.GetRaw() == msg.GetText() })
			if got, want := outcomes(recs), []string{"decision invalid"}; !cmp.Equal(got, want) {
				t.Fatalf("audit records for the message: %q, want %q", got, want)
			}
			if recs[0].GetDetail() != reply.GetMessage() {
				t.Fatalf("decision detail %q, want %q", recs[0].GetDetail(), reply.GetMessage())
			}
		})
	}
	if n := h.rec.total(); n != 0 {
		t.Fatalf("the test service's handlers ran %d times for incomplete messages", n)
	}
}

// containsInOrder fails the test unless s contains every part, in order.
func containsInOrder(t *testing.T, what, s string, parts []string) {
	t.Helper()
	rest := s
	for _, p := range parts {
		i := strings.Index(rest, p)
		if i < 0 {
			t.Fatalf("%s %q does not contain %q (after the parts before it)", what, s, p)
		}
		rest = rest[i+len(p):]
	}
}
