package dns

import (
	"slices"
	"strings"
	"testing"

	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"

	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

func TestConfigValidateNamesTheKey(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"an unknown provider", func(c *Config) { c.Provider = "route66" }, "dns.provider"},
		{"rfc2136 without a server", func(c *Config) { c.Provider = "rfc2136" }, "dns.rfc2136.server"},
		{"a key without a secret", func(c *Config) {
			c.Provider, c.RFC2136.Server, c.RFC2136.TSIGKey = "rfc2136", "127.0.0.1:53", "k"
		}, "dns.rfc2136.tsig_secret"},
		{"a rule of an unknown type", func(c *Config) { c.Rules = []Rule{{Type: "MX", Name: "{host}.x."}} }, "dns.rules[0].type"},
		{"a placeholder the rule does not have", func(c *Config) { c.Rules = []Rule{{Type: "A", Per: "backend", Name: "{host}.x."}} }, "dns.rules[0].name"},
		{"a CNAME without a target", func(c *Config) { c.Rules = []Rule{{Type: "CNAME", Name: "{host}.x."}} }, "dns.rules[0].target"},
		{"a PTR per role", func(c *Config) { c.Rules = []Rule{{Type: "PTR", Per: "role", Target: "{role}.x."}} }, "dns.rules[0].per"},
		{"rules without zones", func(c *Config) { c.Zones, c.Rules = nil, []Rule{{Type: "A", Name: "{host}.x."}} }, "dns.zones"},
		{"a plan TTL of seconds", func(c *Config) { c.PlanTTL = 5e9 }, "dns.plan_ttl"},
		{"auto plans with nowhere to post", func(c *Config) { c.AutoPlan = AutoPlanConfig{Enabled: true} }, "dns.auto_plan"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tc.want)
			}
		})
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
}

func TestRulesMakeTheRecordsTheInventoryImplies(t *testing.T) {
	s := &Service{zones: []string{"example.test.", "2.0.192.in-addr.arpa."}}
	s.cfg = DefaultConfig()
	s.cfg.Rules = []Rule{
		{Type: "A", Name: "{host}.{env}.example.test."},
		{Type: "A", Per: "role", Name: "{role}.{env}.example.test.", Roles: []string{"web"}},
		{Type: "CNAME", Per: "backend", Name: "{backend}.example.test.", Target: "lb.example.test."},
		{Type: "PTR", Target: "{fqdn}."},
	}
	snap := &inventory.Snapshot{Hosts: map[string]*inventoryv1.Host{
		"web1":  {Name: "web1", Fqdn: "web1.example.test", Environment: "prod", Role: "web", Ipv4: "192.0.2.1", Backends: []string{"www"}, State: inventoryv1.HostState_HOST_STATE_ACTIVE},
		"web2":  {Name: "web2", Environment: "prod", Role: "web", Ipv4: "192.0.2.2", State: inventoryv1.HostState_HOST_STATE_ACTIVE},
		"spare": {Name: "spare", Environment: "prod", Role: "web", Ipv4: "198.51.100.9", State: inventoryv1.HostState_HOST_STATE_SPARE},
		"gone":  {Name: "gone", Environment: "prod", Ipv4: "192.0.2.3", State: inventoryv1.HostState_HOST_STATE_DECOMMISSIONED},
	}}
	d, problems := s.build(snap)
	if len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
	got := d.sets["example.test."]
	check := func(name, typ string, data ...string) {
		t.Helper()
		rs := got[zone.Key{Name: name, Type: typ}]
		var have []string
		for _, r := range rs {
			have = append(have, r.Data)
		}
		if strings.Join(sortStrings(have), ",") != strings.Join(sortStrings(data), ",") {
			t.Fatalf("%s %s = %v, want %v", name, typ, have, data)
		}
	}
	check("web1.prod.example.test.", "A", "192.0.2.1")
	check("spare.prod.example.test.", "A", "198.51.100.9") // spare hosts keep their own name
	check("gone.prod.example.test.", "A")                  // decommissioned hosts get nothing
	check("web.prod.example.test.", "A", "192.0.2.1", "192.0.2.2")
	check("www.example.test.", "CNAME", "lb.example.test.")
	ptr := d.sets["2.0.192.in-addr.arpa."]
	if rs := ptr[zone.Key{Name: "1.2.0.192.in-addr.arpa.", Type: "PTR"}]; len(rs) != 1 || rs[0].Data != "web1.example.test." {
		t.Fatalf("PTR of web1: %v", rs)
	}
	if _, ok := ptr[zone.Key{Name: "2.2.0.192.in-addr.arpa.", Type: "PTR"}]; ok {
		t.Fatal("web2 has no fqdn, so its PTR rule makes nothing")
	}
}

func TestRulesReportNamesDNSCannotHold(t *testing.T) {
	s := &Service{zones: []string{"example.test."}}
	s.cfg = DefaultConfig()
	s.cfg.Rules = []Rule{{Type: "A", Name: "{host}.{env}.example.test."}, {Type: "A", Name: "{host}.elsewhere.org."}}
	snap := &inventory.Snapshot{Hosts: map[string]*inventoryv1.Host{
		"db1": {Name: "db1", Environment: "prod eu", Ipv4: "192.0.2.1", State: inventoryv1.HostState_HOST_STATE_ACTIVE},
		"db2": {Name: "db2", Environment: "prod", Ipv4: "192.0.2.300", State: inventoryv1.HostState_HOST_STATE_ACTIVE},
	}}
	_, problems := s.build(snap)
	all := strings.Join(problems, "\n")
	for _, want := range []string{`"db1.prod eu.example.test."`, "outside the configured zones", `ipv4 "192.0.2.300" is not an IPv4 address`} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
}

func TestNameProblem(t *testing.T) {
	for name, bad := range map[string]bool{
		"web1.example.test.": false, "_sb-owner.web1.example.test.": false, "*.example.test.": false,
		"web_1.example.test.": true, "web1..example.test.": true, "-web.example.test.": true,
		"web1.example.test": true, strings.Repeat("a", 64) + ".test.": true,
	} {
		if got := zone.NameProblem(name) != ""; got != bad {
			t.Errorf("NameProblem(%q) = %q, want bad=%v", name, zone.NameProblem(name), bad)
		}
	}
}

func sortStrings(xs []string) []string { return slices.Sorted(slices.Values(xs)) }
