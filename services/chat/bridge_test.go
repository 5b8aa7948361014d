package chat_test

import (
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/kit/chatin"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/services/chat"
)

// A bridge on sb.chat.in.<bridge> speaks only for the identities
// chat.bridges allows it, and only a bridge trusted with every identity
// passes on the e-mail and groups RBAC grants by.
func TestABridgeSpeaksOnlyForTheIdentitiesItMay(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	cfg.RBAC.Grants = append(cfg.RBAC.Grants, chat.Grant{Users: []string{"cli:ana"}, Roles: []string{"admin"}})
	h.startChat(cfg)
	nc := natstest.ConnectURL(t, h.url)
	ctx := natstest.Context(t, time.Minute)
	send := func(bridge string, who *chatv1.Identity) (*chatv1.ChatMessage, *chatv1.ChatReply) {
		t.Helper()
		m := messageIn("cli", "ops", who, "ping")
		reply, err := chatin.Send(ctx, nc, bridge, m)
		if err != nil {
			t.Fatalf("send through %s: %v", bridge, err)
		}
		return m, reply
	}
	denied := func(bridge string, who *chatv1.Identity, want string) {
		t.Helper()
		m, reply := send(bridge, who)
		if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_DENIED || !strings.Contains(reply.GetMessage(), want) {
			t.Fatalf("%s as %s: %v %q, want denied saying %q", bridge, who.GetId(), reply.GetStatus(), reply.GetMessage(), want)
		}
		h.noJob(commandID(m))
	}

	// The CLI's credentials cannot borrow an admin's console identity…
	denied("cli", ana, `the cli bridge may not speak for "console:ana"`)
	recs := h.audit(func(r *auditv1.Record) bool {
		return r.GetOutcome() == "denied" && r.GetIdentity().GetId() == "console:ana" && r.GetStage() == auditv1.Stage_STAGE_DECISION
	})
	if len(recs) != 1 {
		t.Fatalf("%d audit records of the refused bridge message, want 1", len(recs))
	}
	// …nor claim an e-mail or a group that a grant names: a cli identity
	// with bob's e-mail and the oncall group has no role.
	forged := &chatv1.Identity{Id: "cli:mallory", Name: "mallory", Email: "bob@example.com", Groups: []string{"oncall"}}
	m, reply := send("cli", forged)
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_DENIED {
		t.Fatalf("cli as mallory with a claimed e-mail and group: %v %q, want denied by RBAC", reply.GetStatus(), reply.GetMessage())
	}
	h.noJob(commandID(m))
	// A bridge the chat does not know is refused.
	denied("evil", forged, `"evil" is not a bridge`)
	// The watcher speaks for automation only.
	denied("watcher", &chatv1.Identity{Id: "console:ana"}, "the watcher bridge may not speak for")

	// The deployer carries on a person's command as that person, e-mail
	// and groups included.
	_, reply = send("deployer", forged)
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ANSWERED && reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
		t.Fatalf("deployer as bob's e-mail: %v %q, want ping to run", reply.GetStatus(), reply.GetMessage())
	}
	// A cli identity granted by id runs, and the audit says which bridge
	// it came through.
	m, reply = send("cli", &chatv1.Identity{Id: "cli:ana", Name: "ana"})
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ANSWERED && reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
		t.Fatalf("cli as cli:ana: %v %q, want ping to run", reply.GetStatus(), reply.GetMessage())
	}
	var via string
	for _, r := range h.auditOf(commandID(m)) {
		if r.GetStage() == auditv1.Stage_STAGE_REQUEST {
			via = r.GetDetail()
		}
	}
	if via != "via the cli bridge" {
		t.Fatalf("request audit detail %q, want \"via the cli bridge\"", via)
	}
}

func TestBridgesAreValidated(t *testing.T) {
	for _, tc := range []struct {
		bridges map[string][]string
		want    string
	}{
		{map[string][]string{"cli": nil}, "chat.bridges.cli: list the identities"},
		{map[string][]string{"a.b": {"*"}}, "chat.bridges.a.b: a bridge name is one subject token"},
		{map[string][]string{"cli": {"cli:["}}, "chat.bridges.cli: bad pattern"},
	} {
		cfg := chat.DefaultConfig()
		cfg.Bridges = tc.bridges
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bridges %v: %v, want an error saying %q", tc.bridges, err, tc.want)
		}
	}
}
