package watcher

import (
	"fmt"
	"strings"
)

// Batch strategies: how one check's hosts become render targets.
const (
	// BatchList names the hosts in brace lists, aliasByNode(a.{h1,h2,…}.b, n):
	// exact, and a few targets for thousands of hosts. Plain paths only.
	BatchList = "list"
	// BatchWildcard asks for a.*.b once and keeps the hosts of the check:
	// one target whatever the fleet size, but Graphite reads every host
	// that matches. Plain paths only.
	BatchWildcard = "wildcard"
	// BatchAlias sends one alias(<expr>, "host") target per host, for
	// templates with functions (sumSeries(canary.{host}.*.points)).
	BatchAlias = "alias"
)

// hostsPerBrace bounds one brace list: graphite-web expands braces into one
// glob per alternative, and a few hundred keep each target's find cheap.
const hostsPerBrace = 500

// metricNode is how a host name appears as one node of a Graphite path:
// Graphite separates nodes with dots, so dots in names become underscores
// (the convention of collectd, diamond and carbon's own metrics).
func metricNode(host string) string { return strings.ReplaceAll(host, ".", "_") }

// template is a parsed target template with exactly one {host}.
type template struct {
	raw    string
	prefix string
	suffix string
	plain  bool // a bare metric path, so {host} is one node
	node   int  // index of the {host} node in a plain path
}

func parseTemplate(s string) (template, error) {
	if strings.Count(s, "{host}") != 1 {
		return template{}, fmt.Errorf("target %q must contain {host} exactly once", s)
	}
	i := strings.Index(s, "{host}")
	t := template{raw: s, prefix: s[:i], suffix: s[i+len("{host}"):]}
	t.plain = !strings.ContainsAny(s, "(),'\" ") &&
		(t.prefix == "" || strings.HasSuffix(t.prefix, ".")) &&
		(t.suffix == "" || strings.HasPrefix(t.suffix, "."))
	t.node = strings.Count(t.prefix, ".")
	return t, nil
}

// forHost is the template's target for one host.
func (t template) forHost(host string) string { return t.prefix + metricNode(host) + t.suffix }

// targets are the render targets for hosts with a strategy; every returned
// series is named by its host's metric node.
func (t template) targets(strategy string, hosts []string) []string {
	if !t.plain {
		strategy = BatchAlias
	}
	switch strategy {
	case BatchWildcard:
		return []string{fmt.Sprintf("aliasByNode(%s*%s,%d)", t.prefix, t.suffix, t.node)}
	case BatchAlias:
		out := make([]string, len(hosts))
		for i, h := range hosts {
			out[i] = fmt.Sprintf("alias(%s,'%s')", t.forHost(h), metricNode(h))
		}
		return out
	default:
		var out []string
		for i := 0; i < len(hosts); i += hostsPerBrace {
			part := hosts[i:min(i+hostsPerBrace, len(hosts))]
			nodes := make([]string, len(part))
			for j, h := range part {
				nodes[j] = metricNode(h)
			}
			sel := nodes[0]
			if len(nodes) > 1 {
				sel = "{" + strings.Join(nodes, ",") + "}"
			}
			out = append(out, fmt.Sprintf("aliasByNode(%s%s%s,%d)", t.prefix, sel, t.suffix, t.node))
		}
		return out
	}
}
