package chat_test

import (
	"sync"
	"testing"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/services/chat"
)

// TestTheSameMessageOnTwoChatReplicasRunsOnce hands the same message to two
// chat replicas (each with its own connection) at once, several times, as
// a Slack redelivery or an adapter's retry would, with two replicas of the
// service behind them.
func TestTheSameMessageOnTwoChatReplicasRunsOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	h.serveT()
	replicas := []*chat.Service{h.startChat(testConfig()), h.startChat(testConfig())}

	for round, text := range []string{"t add web1 www", "t slow 3"} {
		msg := message(ana, text)
		id := commandID(msg)
		const sends = 10
		replies := make([]*chatv1.ChatReply, sends)
		var wg sync.WaitGroup
		for i := range replies {
			wg.Go(func() { replies[i] = h.handle(replicas[i%2], msg) })
		}
		wg.Wait()

		count := map[chatv1.IngressStatus]int{}
		for _, r := range replies {
			count[r.GetStatus()]++
			if r.GetJobId() != wire.JobID(id) || r.GetCommandId() != id {
				t.Fatalf("round %d: reply %v names job %s of command %s, want job %s of %s", round, r.GetStatus(), r.GetJobId(), r.GetCommandId(), wire.JobID(id), id)
			}
		}
		if count[chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED] != 1 || count[chatv1.IngressStatus_INGRESS_STATUS_EXISTING] != sends-1 {
			t.Fatalf("round %d: replies %v, want 1 accepted and %d existing", round, count, sends-1)
		}
		final, _ := h.waitFinal(thread(msg))

		// Sent again once it ended: still existing, and final.
		late := h.handle(replicas[1], msg)
		if late.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_EXISTING || !late.GetFinal() || late.GetJobState() != "succeeded" {
			t.Fatalf("round %d: late resend %v (final %v, state %q), want a final EXISTING of a succeeded job", round, late.GetStatus(), late.GetFinal(), late.GetJobState())
		}

		if calls := h.rec.calls(id); len(calls) != 1 {
			t.Fatalf("round %d: handler ran %d times, want once", round, len(calls))
		}
		var results int
		ids := map[string]int{}
		for _, p := range h.posts(thread(msg)) {
			ids[p.GetId()]++
			if isFinal(p) {
				results++
			}
		}
		if results != 1 {
			t.Fatalf("round %d: the CHAT stream holds %d final posts for the command, want 1 (%q)", round, results, final.GetText())
		}
		for pid, n := range ids {
			if n != 1 {
				t.Fatalf("round %d: post %s is in the CHAT stream %d times", round, pid, n)
			}
		}
	}
}
