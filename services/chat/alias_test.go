package chat_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
)

// TestAnAliasRunsTheCommandItStandsFor uses the configured alias
// "addtolb: t add {host} {backend}".
func TestAnAliasRunsTheCommandItStandsFor(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	svc := h.startChat(testConfig())

	tests := []struct {
		name   string
		text   string
		want   *commandv1.CommandRequest // what the handler gets (command, args, flags, dry run)
		result string
	}{
		{"the words fill the template", "addtolb web1 www",
			&commandv1.CommandRequest{Command: "t add", Args: map[string]string{"host": "web1", "backend": "www"}},
			"added web1 to www"},
		{"extra flags pass through", "addtolb web2 www --dry-run",
			&commandv1.CommandRequest{Command: "t add", Args: map[string]string{"host": "web2", "backend": "www"}, DryRun: true},
			"would add web2 to www"},
		{"flags with values pass through", "AddToLB --weight=5 web3 www --wait 90s",
			&commandv1.CommandRequest{Command: "t add", Args: map[string]string{"host": "web3", "backend": "www"}, Flags: map[string]string{"weight": "5", "wait": "1m30s"}},
			"added web3 to www"},
		{"a flag's value in the next word is not taken for a placeholder", "addtolb --weight 5 web4 www",
			&commandv1.CommandRequest{Command: "t add", Args: map[string]string{"host": "web4", "backend": "www"}, Flags: map[string]string{"weight": "5"}},
			"added web4 to www"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *h
			h.t = t
			msg := message(ana, tt.text)
			reply := h.handle(svc, msg)
			if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
				t.Fatalf("reply %v %q, want ACCEPTED", reply.GetStatus(), reply.GetMessage())
			}
			final, _ := h.waitFinal(thread(msg))
			if final.GetText() != tt.result {
				t.Fatalf("result %q, want %q", final.GetText(), tt.result)
			}
			calls := h.rec.calls(commandID(msg))
			if len(calls) != 1 {
				t.Fatalf("handler ran %d times, want once", len(calls))
			}
			if diff := cmp.Diff(tt.want, calls[0], protocmp.Transform(),
				protocmp.IgnoreFields(&commandv1.CommandRequest{}, "id", "requester", "source", "conversation", "raw", "deadline", "message_id", "sent_at")); diff != "" {
				t.Fatalf("request (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("missing alias arguments are a clear error", func(t *testing.T) {
		h := *h
		h.t = t
		reply := h.refused(svc, ana, "addtolb web1", chatv1.IngressStatus_INGRESS_STATUS_INVALID)
		if want := `addtolb needs <host> <backend> (it stands for "t add {host} {backend}")`; reply != want {
			t.Fatalf("reply %q, want %q", reply, want)
		}
	})
	if n := h.rec.total(); n != len(tests) {
		t.Fatalf("handlers ran %d times, want %d", n, len(tests))
	}
}
