package chat_test

import (
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
)

// seedInventory publishes hosts (name → environment) as the deployer would.
func (h *harness) seedInventory(hosts map[string]string) {
	h.t.Helper()
	ctx := natstest.Context(h.t, 10*time.Second)
	kv, err := inventory.Bucket(ctx, h.js)
	if err != nil {
		h.t.Fatal(err)
	}
	var hs []*inventoryv1.Host
	for name, env := range hosts {
		hs = append(hs, &inventoryv1.Host{Name: name, Environment: env, Role: "web", Backends: []string{"www"}, State: inventoryv1.HostState_HOST_STATE_ACTIVE})
	}
	if _, err := inventory.Publish(ctx, kv, "test", hs, nil); err != nil {
		h.t.Fatal(err)
	}
}

// A role limited to some environments is limited on the hosts a command
// names too: `lb drain web1` touches production when web1 is there, though
// no argument says "production".
func TestARoleLimitedToEnvironmentsIsLimitedOnTheHostsItNames(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	h.seedInventory(map[string]string{"web1": "production", "web2": "staging"})
	svc := h.startChat(testConfig())

	// olga's operator role may run t on staging and dev-* only.
	got := h.refused(svc, olga, "t add web1 www", chatv1.IngressStatus_INGRESS_STATUS_DENIED)
	if !strings.Contains(got, `may run t add, but not on "production" (web1 is there)`) {
		t.Fatalf("olga adding a production host: %q", got)
	}
	got = h.refused(svc, olga, "t add web9 www", chatv1.IngressStatus_INGRESS_STATUS_DENIED)
	if !strings.Contains(got, "web9, which the inventory does not know") {
		t.Fatalf("olga naming an unknown host: %q", got)
	}
	if n := h.rec.total(); n != 0 {
		t.Fatalf("%d commands ran, want none", n)
	}
	msg := message(olga, "t add web2 www")
	if st := h.handle(svc, msg).GetStatus(); st != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
		t.Fatalf("olga adding a staging host: %v, want accepted", st)
	}
	h.waitFinal(thread(msg))
	// A role without limits is not held back by what the inventory knows:
	// the service answers about an unknown host itself.
	msg = message(ana, "t add web9 www")
	if st := h.handle(svc, msg).GetStatus(); st != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
		t.Fatalf("ana adding an unknown host: %v, want accepted", st)
	}
	h.waitFinal(thread(msg))

	// A host moved to production since is refused from then on.
	h.seedInventory(map[string]string{"web1": "production", "web2": "production"})
	deadline := time.Now().Add(20 * time.Second)
	for {
		reply := h.handle(svc, message(olga, "t add web2 www --dry-run"))
		if reply.GetStatus() == chatv1.IngressStatus_INGRESS_STATUS_DENIED {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web2 moved to production, but olga is still allowed: %v", reply.GetStatus())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
