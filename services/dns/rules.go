package dns

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"

	"github.com/miekg/dns"

	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"

	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

// Rule makes records from the inventory. Names and targets are templates
// with the placeholders {host}, {fqdn}, {role}, {env} and {backend}; a host
// that lacks a value a template needs (no role, no fqdn) gets no record
// from that rule.
type Rule struct {
	// Type is A, AAAA, CNAME or PTR.
	Type string `yaml:"type"`
	// Per is what one name is made for: "host" (default), "role" (one name
	// per role and environment) or "backend". A and AAAA rules per role or
	// backend make round-robin sets of every active member's address.
	Per string `yaml:"per"`
	// Name is the owner name template ("{host}.{env}.example.com."). PTR
	// rules take the name from the host's address and ignore it.
	Name string `yaml:"name"`
	// Target is the CNAME or PTR target template ("{fqdn}.").
	Target string `yaml:"target"`
	// Family of the address a PTR rule reverses: "ipv4" (default) or "ipv6".
	Family string `yaml:"family"`
	// Roles and Environments limit the rule to those hosts (empty: all).
	Roles        []string `yaml:"roles"`
	Environments []string `yaml:"environments"`
	// TTL of the records (0: the service's default_ttl).
	TTL uint32 `yaml:"ttl"`
}

var placeholders = map[string][]string{
	"host":    {"{host}", "{fqdn}", "{role}", "{env}"},
	"role":    {"{role}", "{env}"},
	"backend": {"{backend}"},
}

func (r Rule) per() string {
	if r.Per == "" {
		return "host"
	}
	return r.Per
}

// validate names the first problem of rule i.
func (r Rule) validate(i int) error {
	key := fmt.Sprintf("dns.rules[%d]", i)
	switch r.Type {
	case "A", "AAAA", "CNAME", "PTR":
	default:
		return fmt.Errorf("%s.type: %q is not one of A, AAAA, CNAME, PTR", key, r.Type)
	}
	allowed, ok := placeholders[r.per()]
	if !ok {
		return fmt.Errorf("%s.per: %q is not one of host, role, backend", key, r.Per)
	}
	if r.Type == "PTR" && r.per() != "host" {
		return fmt.Errorf("%s.per: PTR rules are per host", key)
	}
	if r.Type != "PTR" && r.Name == "" {
		return fmt.Errorf("%s.name: required", key)
	}
	if (r.Type == "CNAME" || r.Type == "PTR") && r.Target == "" {
		return fmt.Errorf("%s.target: required for %s", key, r.Type)
	}
	if r.Type != "CNAME" && r.Type != "PTR" && r.Target != "" {
		return fmt.Errorf("%s.target: only CNAME and PTR rules have a target", key)
	}
	switch r.Family {
	case "", "ipv4", "ipv6":
	default:
		return fmt.Errorf("%s.family: %q is not ipv4 or ipv6", key, r.Family)
	}
	for field, tmpl := range map[string]string{"name": r.Name, "target": r.Target} {
		rest := tmpl
		for _, p := range allowed {
			rest = strings.ReplaceAll(rest, p, "")
		}
		if i := strings.IndexAny(rest, "{}"); i >= 0 {
			return fmt.Errorf("%s.%s: %q uses a placeholder a per-%s rule does not have (allowed: %s)", key, field, tmpl, r.per(), strings.Join(allowed, " "))
		}
	}
	return nil
}

// vars are the values a template's placeholders take.
type vars struct{ host, fqdn, role, env, backend string }

func (v vars) get(name string) string {
	switch name {
	case "host":
		return v.host
	case "fqdn":
		return v.fqdn
	case "role":
		return v.role
	case "env":
		return v.env
	case "backend":
		return v.backend
	}
	return ""
}

// render fills a template; ok is false when a value it needs is empty.
// It runs once per host and rule, so it scans the template rather than
// allocating a replacer.
func render(tmpl string, v vars) (string, bool) {
	var b strings.Builder
	b.Grow(len(tmpl) + 32)
	for {
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			b.WriteString(tmpl)
			break
		}
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			b.WriteString(tmpl)
			break
		}
		val := v.get(tmpl[i+1 : i+j])
		if val == "" {
			return "", false
		}
		b.WriteString(tmpl[:i])
		b.WriteString(val)
		tmpl = tmpl[i+j+1:]
	}
	return zone.Canonical(b.String()), true
}

// desired is what the inventory implies, by zone and RRset.
type desired struct {
	sets map[string]map[zone.Key][]zone.Record // zone → RRset → records
}

// build computes the desired records of every configured zone. It returns
// every problem found, so one plan shows them all.
func (s *Service) build(snap *inventory.Snapshot) (*desired, []string) {
	d := &desired{sets: map[string]map[zone.Key][]zone.Record{}}
	for _, z := range s.zones {
		d.sets[z] = map[zone.Key][]zone.Record{}
	}
	var problems []string
	add := func(rule int, source string, rec zone.Record) {
		if why := zone.NameProblem(rec.Name); why != "" {
			problems = append(problems, fmt.Sprintf("rule %d (%s) gives %s the name %q: %s", rule+1, s.cfg.Rules[rule].Type, source, rec.Name, why))
			return
		}
		z := s.zoneOf(rec.Name)
		if z == "" {
			problems = append(problems, fmt.Sprintf("rule %d (%s) gives %s the name %q, which is outside the configured zones (%s)", rule+1, rec.Type, source, rec.Name, strings.Join(s.zones, ", ")))
			return
		}
		if rec.Type == "CNAME" || rec.Type == "PTR" {
			if why := zone.NameProblem(rec.Data); why != "" {
				problems = append(problems, fmt.Sprintf("rule %d (%s) gives %s the target %q: %s", rule+1, rec.Type, source, rec.Data, why))
				return
			}
		}
		k := rec.Key()
		if !slices.Contains(d.sets[z][k], rec) {
			d.sets[z][k] = append(d.sets[z][k], rec)
		}
	}
	// Map order is fine: records are sorted when diffed, problems below.
	hosts := make([]*inventoryv1.Host, 0, len(snap.Hosts))
	for _, h := range snap.Hosts {
		if h.GetState() != inventoryv1.HostState_HOST_STATE_DECOMMISSIONED {
			hosts = append(hosts, h)
		}
	}
	for i, r := range s.cfg.Rules {
		ttl := r.TTL
		if ttl == 0 {
			ttl = s.cfg.DefaultTTL
		}
		match := func(h *inventoryv1.Host) bool {
			return (len(r.Roles) == 0 || slices.Contains(r.Roles, h.GetRole())) &&
				(len(r.Environments) == 0 || slices.Contains(r.Environments, h.GetEnvironment()))
		}
		switch r.per() {
		case "host":
			for _, h := range hosts {
				if !match(h) {
					continue
				}
				vals := vars{host: h.GetName(), fqdn: strings.TrimSuffix(h.GetFqdn(), "."), role: h.GetRole(), env: h.GetEnvironment()}
				src := "host " + h.GetName()
				switch r.Type {
				case "A", "AAAA":
					ip, err := addrOf(h, r.Type)
					if err != nil {
						problems = append(problems, fmt.Sprintf("rule %d (%s): host %s: %v", i+1, r.Type, h.GetName(), err))
						continue
					}
					if ip == "" {
						continue
					}
					if name, ok := render(r.Name, vals); ok {
						add(i, src, zone.Record{Name: name, Type: r.Type, TTL: ttl, Data: ip})
					}
				case "CNAME":
					name, ok1 := render(r.Name, vals)
					target, ok2 := render(r.Target, vals)
					if ok1 && ok2 {
						add(i, src, zone.Record{Name: name, Type: "CNAME", TTL: ttl, Data: target})
					}
				case "PTR":
					typ := "A"
					if r.Family == "ipv6" {
						typ = "AAAA"
					}
					ip, _ := addrOf(h, typ) // a bad address is reported by the A/AAAA rules
					if ip == "" {
						continue
					}
					rev, err := dns.ReverseAddr(ip)
					if err != nil {
						continue
					}
					if s.zoneOf(rev) == "" {
						continue // no reverse zone configured for this address
					}
					if target, ok := render(r.Target, vals); ok {
						add(i, src, zone.Record{Name: rev, Type: "PTR", TTL: ttl, Data: target})
					}
				}
			}
		case "role", "backend":
			groups := map[string][]*inventoryv1.Host{}
			vals := map[string]vars{}
			for _, h := range hosts {
				if h.GetState() != inventoryv1.HostState_HOST_STATE_ACTIVE || !match(h) {
					continue
				}
				if r.per() == "role" {
					if h.GetRole() == "" {
						continue
					}
					g := h.GetRole() + "@" + h.GetEnvironment()
					groups[g] = append(groups[g], h)
					vals[g] = vars{role: h.GetRole(), env: h.GetEnvironment()}
					continue
				}
				for _, b := range h.GetBackends() {
					groups[b] = append(groups[b], h)
					vals[b] = vars{backend: b}
				}
			}
			keys := make([]string, 0, len(groups))
			for g := range groups {
				keys = append(keys, g)
			}
			slices.Sort(keys)
			for _, g := range keys {
				src := r.per() + " " + g
				name, ok := render(r.Name, vals[g])
				if !ok {
					continue
				}
				if r.Type == "CNAME" {
					if target, ok := render(r.Target, vals[g]); ok {
						add(i, src, zone.Record{Name: name, Type: "CNAME", TTL: ttl, Data: target})
					}
					continue
				}
				for _, h := range groups[g] {
					if ip, _ := addrOf(h, r.Type); ip != "" {
						add(i, src, zone.Record{Name: name, Type: r.Type, TTL: ttl, Data: ip})
					}
				}
			}
		}
	}
	// A CNAME must be alone at its name (RFC 1034 3.6.2) and have one target.
	// Rules only make managed types, so only those need checking.
	for z, sets := range d.sets {
		for k, rs := range sets {
			if k.Type != "CNAME" {
				continue
			}
			if len(rs) > 1 {
				problems = append(problems, fmt.Sprintf("%s would be a CNAME to %d targets (%s, %s, …) in zone %s; a CNAME has one", k.Name, len(rs), rs[0].Data, rs[1].Data, z))
			}
			var others []string
			for _, t := range managedTypes {
				if _, ok := sets[zone.Key{Name: k.Name, Type: t}]; ok && t != "CNAME" {
					others = append(others, t)
				}
			}
			if len(others) > 0 {
				problems = append(problems, fmt.Sprintf("%s would have a CNAME beside %s records; a CNAME must be alone", k.Name, strings.Join(others, ", ")))
			}
		}
	}
	slices.Sort(problems)
	return d, problems
}

// addrOf is the host's address for an A or AAAA record in canonical form,
// "" when the host has none, or an error when it is not an address.
func addrOf(h *inventoryv1.Host, typ string) (string, error) {
	raw, field := h.GetIpv4(), "ipv4"
	if typ == "AAAA" {
		raw, field = h.GetIpv6(), "ipv6"
	}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", nil
	}
	ip, err := netip.ParseAddr(raw)
	if err != nil || typ == "A" && !ip.Unmap().Is4() || typ == "AAAA" && (!ip.Is6() || ip.Is4In6()) {
		return "", fmt.Errorf("%s %q is not an %s address", field, raw, map[string]string{"A": "IPv4", "AAAA": "IPv6"}[typ])
	}
	return ip.Unmap().String(), nil
}

// zoneOf is the configured zone that holds name (the longest match), or "".
func (s *Service) zoneOf(name string) string {
	best := ""
	for _, z := range s.zones {
		if zone.InZone(name, z) && len(z) > len(best) {
			best = z
		}
	}
	return best
}

// ownedByPattern reports whether a configured pattern owns the name.
func (s *Service) ownedByPattern(name string) bool {
	for _, p := range s.cfg.OwnedNames {
		if ok, _ := path.Match(zone.Canonical(p), name); ok {
			return true
		}
	}
	return false
}
