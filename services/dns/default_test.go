package dns_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"

	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/dns"
	"github.com/switchboard-ops/switchboard/services/dns/knottest"
)

// exampleInventory is the deployer's example inventory as the deployer
// publishes it. It must match the hosts of Example() in
// services/deployer/enc/example.go, which dns.DefaultConfig's zones and
// rules are written for; it is copied because importing the deployer would
// make it a dependency of the dns module.
func exampleInventory() []*inventoryv1.Host {
	active, spare := inventoryv1.HostState_HOST_STATE_ACTIVE, inventoryv1.HostState_HOST_STATE_SPARE
	return []*inventoryv1.Host{
		{Name: "web-0001", Environment: "production", Role: "web", Fqdn: "web-0001.example.com", Ipv4: "10.0.1.1", Backends: []string{"www"}, State: active},
		{Name: "web-0002", Environment: "production", Role: "web", Fqdn: "web-0002.example.com", Ipv4: "10.0.1.2", Backends: []string{"www"}, State: active},
		{Name: "api-0001", Environment: "production", Role: "api", Fqdn: "api-0001.example.com", Ipv4: "10.0.2.1", Backends: []string{"api"}, State: active},
		{Name: "stg-web-0001", Environment: "staging", Role: "web", Fqdn: "stg-web-0001.example.com", Ipv4: "10.1.1.1", Backends: []string{"www"}, State: active},
		{Name: "spare-0001", Fqdn: "spare-0001.example.com", Ipv4: "10.9.0.1", State: spare},
		{Name: "spare-0002", Fqdn: "spare-0002.example.com", Ipv4: "10.9.0.2", State: spare},
	}
}

// `go run ./cmd/switchboard` starts dns with DefaultConfig and the
// deployer's example inventory: plans (by hand and automatic) must be real
// ones, and applying one writes the zone files into the data dir.
func TestTheDefaultConfigPlansTheDeployersExampleInventory(t *testing.T) {
	e := newBusEnv(t, exampleInventory())
	e.start(dns.DefaultConfig())

	// An inventory change makes a plan by itself, posted in the console's ops channel.
	ev := &eventv1.Event{Id: "inv-example", Source: "inventory", Type: "changed", Title: "inventory at example"}
	if _, err := emit.Event(natstest.Context(t, 5*time.Second), e.js, ev); err != nil {
		t.Fatal(err)
	}
	var notice *chatv1.ChatPost
	natstest.WaitFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, p := range e.posts("console", "ops") {
			if strings.HasPrefix(p.GetText(), "DNS plan ready: ") {
				notice = p
				return nil
			}
		}
		return errString("no automatic plan in console/ops yet")
	})
	if !strings.HasPrefix(notice.GetText(), "DNS plan ready: 34 changes") {
		t.Fatalf("automatic plan: %q, want 34 changes", notice.GetText())
	}

	plan := e.run("ana", "dns plan", nil, false)
	mustResult(t, plan, "dns plan with the default config")
	// example.com.: 11 names (6 hosts, web and api in production, web in
	// staging, www and api) and their ownership markers; 10.in-addr.arpa.:
	// 6 PTRs and their markers.
	if !strings.Contains(plan.GetText(), ": 34 changes (10.in-addr.arpa. +12 ~0 -0; example.com. +22 ~0 -0)") {
		t.Fatalf("default plan: %q", plan.GetText())
	}
	diff := string(plan.GetAttachments()[0].GetData())
	mustHaveLines(t, "default plan's diff", diff,
		"+ web-0001.example.com.\t300\tIN\tA\t10.0.1.1",
		"+ spare-0002.example.com.\t300\tIN\tA\t10.9.0.2",
		"+ web.production.example.com.\t300\tIN\tA\t10.0.1.1",
		"+ web.production.example.com.\t300\tIN\tA\t10.0.1.2",
		"+ web.staging.example.com.\t300\tIN\tA\t10.1.1.1",
		"+ api.production.example.com.\t300\tIN\tA\t10.0.2.1",
		"+ www.example.com.\t60\tIN\tA\t10.0.1.1",
		"+ www.example.com.\t60\tIN\tA\t10.0.1.2",
		"+ api.example.com.\t60\tIN\tA\t10.0.2.1",
		"+ 1.1.0.10.in-addr.arpa.\t300\tIN\tPTR\tweb-0001.example.com.",
		"+ 1.1.1.10.in-addr.arpa.\t300\tIN\tPTR\tstg-web-0001.example.com.",
	)
	if strings.Contains(diff, "+ www.example.com.\t60\tIN\tA\t10.1.1.1") {
		t.Fatalf("a staging host answers for production's www:\n%s", diff)
	}

	mustResult(t, e.run("bob", "dns apply", map[string]string{"plan": planID(t, plan)}, false), "apply the default plan")
	zones := filepath.Join(e.dataDir, "dns", "zones")
	for _, f := range []string{"example.com.zone", "10.in-addr.arpa.zone"} {
		if _, err := os.Stat(filepath.Join(zones, f)); err != nil {
			t.Fatalf("zone file in the data dir: %v", err)
		}
	}
	again := e.run("ana", "dns plan", nil, false)
	mustResult(t, again, "plan after apply")
	if !strings.Contains(again.GetText(), "nothing to change") {
		t.Fatalf("plan after apply: %q, want nothing to change", again.GetText())
	}

	t.Run("the zone files load in Knot", func(t *testing.T) {
		knottest.Binaries(t, "kzonecheck")
		for z, f := range map[string]string{"example.com.": "example.com.zone", "10.in-addr.arpa.": "10.in-addr.arpa.zone"} {
			if out, err := exec.Command("kzonecheck", "-o", z, filepath.Join(zones, f)).CombinedOutput(); err != nil {
				t.Fatalf("kzonecheck %s: %v\n%s", z, err, out)
			}
		}
	})
}
