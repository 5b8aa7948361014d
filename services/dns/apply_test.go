package dns_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
)

// manyHosts are n hosts in prod, h01 and h02 behind the www backend.
func manyHosts(n int) []*inventoryv1.Host {
	var hosts []*inventoryv1.Host
	for i := 1; i <= n; i++ {
		h := &inventoryv1.Host{Name: fmt.Sprintf("h%02d", i), Environment: "prod", Ipv4: fmt.Sprintf("192.0.2.%d", 100+i), State: inventoryv1.HostState_HOST_STATE_ACTIVE}
		if i <= 2 {
			h.Backends = []string{"www"}
		}
		hosts = append(hosts, h)
	}
	return hosts
}

// appliedEvent waits for the sb.event.dns.applied of a plan.
func (e *env) appliedEvent(plan string) *eventv1.Event {
	e.t.Helper()
	var found *eventv1.Event
	natstest.WaitFor(e.t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, ev := range e.events(wire.EventSubject("dns", "applied")) {
			if ev.GetFields()["plan"] == plan {
				found = ev
				return nil
			}
		}
		return errString("no sb.event.dns.applied for plan " + plan)
	})
	return found
}

func countPrefix(text, prefix string) int {
	n := 0
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	return n
}

// mustHaveLines fails unless every want is a whole line of text.
func mustHaveLines(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	lines := strings.Split(text, "\n")
	for _, want := range wants {
		if !slices.Contains(lines, want) {
			t.Fatalf("%s lacks the line %q:\n%s", what, want, text)
		}
	}
}

func TestApplyReportsPerRecordResults(t *testing.T) {
	e := newBusEnv(t, manyHosts(40))
	e.start(e.zoneFileConfig())

	// 40 hosts: an A, a CNAME and a PTR each, an ownership marker for each
	// of those names, and www's two addresses and marker.
	const records = 40*6 + 3
	plan := e.run("ana", "dns plan", nil, false)
	mustResult(t, plan, "dns plan")
	id := planID(t, plan)
	res := e.run("bob", "dns apply", map[string]string{"plan": id}, false)
	mustResult(t, res, "dns apply")

	// The answer: per-zone totals and the first records inline, every
	// record in the attached file.
	file := "dns-apply-" + id + ".txt"
	mustHaveLines(t, "apply answer", res.GetText(),
		"plan "+id+" applied by bob: 242 changes.",
		"example.test. +162 ~0 -0: 162 applied",
		"2.0.192.in-addr.arpa. +80 ~0 -0: 80 applied",
		fmt.Sprintf("… %d more in %s", records-30, file),
	)
	if n := countPrefix(res.GetText(), "✓ "); n != 30 {
		t.Fatalf("apply answer shows %d records inline, want 30:\n%s", n, res.GetText())
	}
	if len(res.GetAttachments()) != 1 || res.GetAttachments()[0].GetName() != file {
		t.Fatalf("apply answer attachments: %v, want %s", res.GetAttachments(), file)
	}
	all := string(res.GetAttachments()[0].GetData())
	if n := countPrefix(all, "✓ "); n != records {
		t.Fatalf("%s lists %d records, want %d:\n%s", file, n, records, all)
	}
	mustHaveLines(t, file, all,
		"## zone example.test. +162 ~0 -0: 162 applied",
		"✓ add h40.prod.example.test. A 192.0.2.140",
		"✓ add h40.example.test. CNAME h40.prod.example.test.",
		`✓ add _sb-owner.h40.prod.example.test. TXT "heritage=switchboard,owner=test"`,
		"✓ add www.example.test. A 192.0.2.101",
		"✓ add www.example.test. A 192.0.2.102",
		"## zone 2.0.192.in-addr.arpa. +80 ~0 -0: 80 applied",
		"✓ add 140.2.0.192.in-addr.arpa. PTR h40.prod.example.test.",
	)

	// The event carries the records too, a bounded number of them.
	ev := e.appliedEvent(id)
	if got := ev.GetFields()["records"]; got != fmt.Sprint(records) {
		t.Fatalf("applied event records field = %q, want %d", got, records)
	}
	if n := countPrefix(ev.GetText(), "✓ add "); n != 50 || !strings.Contains(ev.GetText(), fmt.Sprintf("… and %d more", records-50)) {
		t.Fatalf("applied event text has %d records, want the first 50 and a count of the rest:\n%s", n, ev.GetText())
	}

	// h01 moves, h02 leaves: changes and deletes, few enough to show inline.
	hosts := manyHosts(40)
	hosts[0].Ipv4 = "192.0.2.250"
	e.publish("rev2", append(hosts[:1], hosts[2:]...))
	plan = e.run("ana", "dns plan", nil, false)
	mustResult(t, plan, "second plan")
	id = planID(t, plan)
	res = e.run("bob", "dns apply", map[string]string{"plan": id}, false)
	mustResult(t, res, "second apply")
	if len(res.GetAttachments()) != 0 {
		t.Fatalf("a short apply has an attachment: %v", res.GetAttachments())
	}
	mustHaveLines(t, "second apply answer", res.GetText(),
		"example.test. +0 ~2 -4: 6 applied",
		"2.0.192.in-addr.arpa. +2 ~0 -4: 6 applied",
		"✓ change h01.prod.example.test. A 192.0.2.250 (was 192.0.2.101)",
		"✓ delete www.example.test. A 192.0.2.101",
		"✓ delete www.example.test. A 192.0.2.102",
		"✓ add www.example.test. A 192.0.2.250",
		"✓ delete h02.prod.example.test. A 192.0.2.102",
		"✓ delete h02.example.test. CNAME h02.prod.example.test.",
		`✓ delete _sb-owner.h02.example.test. TXT "heritage=switchboard,owner=test"`,
		"✓ delete 102.2.0.192.in-addr.arpa. PTR h02.prod.example.test.",
		"✓ add 250.2.0.192.in-addr.arpa. PTR h01.prod.example.test.",
	)
	var code string
	for _, b := range res.GetBlocks() {
		if c, ok := b.GetContent().(*chatv1.Block_Code); ok {
			code = c.Code
		}
	}
	mustHaveLines(t, "second apply's code block", code, "✓ change h01.prod.example.test. A 192.0.2.250 (was 192.0.2.101)")
	ev = e.appliedEvent(id)
	mustHaveLines(t, "second applied event", ev.GetText(), "✓ delete h02.prod.example.test. A 192.0.2.102")
}
