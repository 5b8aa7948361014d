package chat_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
)

// TestAServiceStartedAfterTheChatIsDiscoveredWithoutRestart starts the
// chat before any service: a service that starts later appears in help
// and takes its commands, with no restart of the chat.
func TestAServiceStartedAfterTheChatIsDiscoveredWithoutRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := testConfig()
	cfg.DiscoveryInterval = time.Second
	svc := h.startChat(cfg)

	const tAdd = "t add <host> <backend>"
	if list := h.ask(svc, vic, "help"); strings.Contains(list, tAdd) {
		t.Fatalf("help lists %q before service t started:\n%s", tAdd, list)
	}

	h.serveT()
	// Discovery runs on its own schedule: wait for it, within a bound.
	natstest.WaitFor(t, waitTotal, 100*time.Millisecond, func() error {
		if list := h.ask(svc, vic, "help"); !strings.Contains(list, tAdd) {
			return errors.New("help does not list the t commands yet")
		}
		return nil
	})
	if one := h.ask(svc, vic, "help t add"); !strings.Contains(one, "usage: t add <host> <backend>") {
		t.Fatalf("help t add: %q, want its usage", one)
	}

	msg := message(ana, "t add web1 www")
	reply := h.handle(svc, msg)
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
		t.Fatalf("t add: reply %v %q, want ACCEPTED", reply.GetStatus(), reply.GetMessage())
	}
	final, _ := h.waitFinal(thread(msg))
	if final.GetKind() != chatv1.Kind_KIND_RESULT || final.GetText() != "added web1 to www" || final.GetJobId() != wire.JobID(commandID(msg)) {
		t.Fatalf("final post %v %q of job %s, want the result of t add", final.GetKind(), final.GetText(), final.GetJobId())
	}
	if calls := h.rec.calls(commandID(msg)); len(calls) != 1 {
		t.Fatalf("the handler ran %d times, want once", len(calls))
	}
}
