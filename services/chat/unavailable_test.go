package chat_test

import (
	"context"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
)

// A service whose replicas are re-subscribing (a NATS reconnect) or
// restarting has no responders for a moment: the chat asks again before it
// says no replica is running, and a replica back within that moment runs
// the command, once.
func TestACommandWaitsAMomentForAServiceComingBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	first := h.serveT()
	svc := h.startChat(testConfig())
	if st := h.handle(svc, message(ana, "ping")).GetStatus(); st != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED && st != chatv1.IngressStatus_INGRESS_STATUS_ANSWERED {
		t.Fatalf("ping: %v", st)
	}
	first.Stop(context.Background())

	msg := message(ana, "t add web1 www")
	replies := make(chan *chatv1.ChatReply, 1)
	go func() { replies <- h.handle(svc, msg) }()
	time.Sleep(200 * time.Millisecond) // the service is away while the chat asks
	h.serveT()
	reply := <-replies
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
		t.Fatalf("a command sent while the service was coming back: %v %q, want accepted", reply.GetStatus(), reply.GetMessage())
	}
	if final, _ := h.waitFinal(thread(msg)); final.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("final %v %q", final.GetKind(), final.GetText())
	}
	if n := len(h.rec.calls(commandID(msg))); n != 1 {
		t.Fatalf("the command ran %d times, want once", n)
	}
}

// With no replica at all, the answer still comes, and says so.
func TestACommandToAServiceThatIsNotRunningIsAnsweredSo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	first := h.serveT()
	svc := h.startChat(testConfig())
	h.handle(svc, message(ana, "ping"))
	first.Stop(context.Background())
	got := h.refused(svc, ana, "t add web1 www", chatv1.IngressStatus_INGRESS_STATUS_UNAVAILABLE)
	if !strings.Contains(got, "No replica of the t service is running, so t add was not run. Nothing was changed.") {
		t.Fatalf("answer %q", got)
	}
}
