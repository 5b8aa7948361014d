package enc

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Errors of Lookup and Classify.
var (
	// ErrUnknownHost means no host file matches the name.
	ErrUnknownHost = errors.New("unknown host")
	// ErrAmbiguousHost means a short name matches more than one host.
	ErrAmbiguousHost = errors.New("ambiguous host name")
)

// Lookup finds the host Puppet means by a certname: the host whose fqdn is
// exactly the name, else the host of that name. A dotted name none of them
// matches falls back to its first label as the host name, but only for a
// host without an fqdn: a host whose fqdn says otherwise is another machine
// (web1.staging.example.com must never get web1.prod.example.com's
// classes). A name without dots that is no host's name matches the hosts
// whose fqdn starts with it; when several do, Lookup refuses to guess.
func (inv *Inventory) Lookup(certname string) (*Host, error) {
	name := strings.ToLower(strings.TrimSuffix(certname, "."))
	var byFQDN []*Host
	for _, n := range sortedKeys(inv.Hosts) {
		if h := inv.Hosts[n]; h.FQDN != "" && strings.EqualFold(strings.TrimSuffix(h.FQDN, "."), name) {
			byFQDN = append(byFQDN, h)
		}
	}
	if len(byFQDN) > 1 {
		// A retired host may keep the fqdn of its replacement.
		live := slices.DeleteFunc(slices.Clone(byFQDN), func(h *Host) bool { return h.State == StateDecommissioned })
		if len(live) == 1 {
			return live[0], nil
		}
		return nil, fmt.Errorf("%s: %w: hosts %s all have this fqdn; fix the ENC", name, ErrAmbiguousHost, strings.Join(hostNames(byFQDN), ", "))
	}
	if len(byFQDN) == 1 {
		return byFQDN[0], nil
	}
	if h := inv.Hosts[name]; h != nil {
		return h, nil
	}
	short, _, dotted := strings.Cut(name, ".")
	if dotted {
		h := inv.Hosts[short]
		switch {
		case h == nil:
			return nil, fmt.Errorf("%s: %w (no host has this fqdn, and there is no host %s)", name, ErrUnknownHost, short)
		case h.FQDN != "":
			return nil, fmt.Errorf("%s: %w (no host has this fqdn; host %s is %s)", name, ErrUnknownHost, short, h.FQDN)
		}
		return h, nil
	}
	var byLabel []*Host
	for _, n := range sortedKeys(inv.Hosts) {
		if h := inv.Hosts[n]; h.FQDN != "" && strings.EqualFold(strings.SplitN(h.FQDN, ".", 2)[0], name) {
			byLabel = append(byLabel, h)
		}
	}
	switch len(byLabel) {
	case 0:
		return nil, fmt.Errorf("%s: %w", name, ErrUnknownHost)
	case 1:
		return byLabel[0], nil
	}
	var fqdns []string
	for _, h := range byLabel {
		fqdns = append(fqdns, h.Name+" ("+h.FQDN+")")
	}
	return nil, fmt.Errorf("%s: %w: it is the short name of %s; ask with the fqdn or the host name", name, ErrAmbiguousHost, strings.Join(fqdns, ", "))
}

func hostNames(hs []*Host) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Name
	}
	return out
}

// ClassifyResult is the answer Puppet expects from an ENC.
type ClassifyResult struct {
	// Classes in order: the environment's, the role's, the host's.
	Classes []string
	// ClassParams are the parameters of the classes that have any.
	ClassParams map[string]Params
	// Parameters become top-scope variables.
	Parameters  Params
	Environment string
}

// MarshalYAML writes the answer in Puppet's ENC format: classes as a list
// of names, or, when any class has parameters, as a mapping of class name
// to its parameters (empty for the others), the form Puppet requires for
// parameterized classes; parameters with their YAML types.
func (r ClassifyResult) MarshalYAML() (any, error) {
	root := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	add := func(key string, v *yaml.Node) {
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	}
	classes := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	if len(r.ClassParams) > 0 {
		classes = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	for _, c := range r.Classes {
		if classes.Kind == yaml.SequenceNode {
			classes.Content = append(classes.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: c})
			continue
		}
		v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
		if p := r.ClassParams[c]; len(p) > 0 {
			v = &yaml.Node{}
			if err := v.Encode(map[string]any(p)); err != nil {
				return nil, fmt.Errorf("parameters of class %s: %w", c, err)
			}
		}
		classes.Content = append(classes.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: c}, v)
	}
	add("classes", classes)
	ps := &yaml.Node{}
	if err := ps.Encode(map[string]any(r.Parameters)); err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	add("parameters", ps)
	if r.Environment != "" {
		add("environment", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: r.Environment})
	}
	return root, nil
}

// classification is a host's effective classes and parameters: the
// environment's, then the role's, then the host's (for an active host),
// later ones winning, class parameters merged by parameter; then "role",
// "environment" and "<service>_version" for each version pinned on the
// host's role.
func (inv *Inventory) classification(h *Host) ClassifyResult {
	res := ClassifyResult{Classes: []string{}, Parameters: Params{}}
	add := func(classes []string, cps map[string]Params, ps Params) {
		for _, c := range classes {
			if !slices.Contains(res.Classes, c) {
				res.Classes = append(res.Classes, c)
			}
			for k, v := range cps[c] {
				if res.ClassParams == nil {
					res.ClassParams = map[string]Params{}
				}
				if res.ClassParams[c] == nil {
					res.ClassParams[c] = Params{}
				}
				res.ClassParams[c][k] = v
			}
		}
		for k, v := range ps {
			res.Parameters[k] = v
		}
	}
	env := inv.Envs[h.Environment]
	if env != nil && h.State == StateActive {
		add(env.Classes, env.ClassParams, env.Parameters)
		if r := env.Roles[h.Role]; r != nil {
			add(r.Classes, r.ClassParams, r.Parameters)
		}
	}
	add(h.Classes, h.ClassParams, h.Parameters)
	if h.State == StateActive {
		res.Environment = h.Environment
		res.Parameters["role"] = h.Role
		res.Parameters["environment"] = h.Environment
		if env != nil {
			for svc, roles := range env.Pins {
				if v := roles[h.Role]; v != "" {
					res.Parameters[svc+"_version"] = v
				}
			}
		}
	}
	return res
}

// Classify returns the ENC answer, as YAML, for the host Puppet names by
// certname (see Lookup).
func (inv *Inventory) Classify(certname string) ([]byte, error) {
	h, err := inv.Lookup(certname)
	if err != nil {
		return nil, err
	}
	return inv.ClassifyHost(h)
}

// ClassifyHost returns the ENC answer for h as YAML.
func (inv *Inventory) ClassifyHost(h *Host) ([]byte, error) {
	if h.State == StateDecommissioned {
		return nil, fmt.Errorf("%s is decommissioned", h.Name)
	}
	var buf bytes.Buffer
	buf.WriteString("---\n")
	e := yaml.NewEncoder(&buf)
	e.SetIndent(2)
	if err := e.Encode(inv.classification(h)); err != nil {
		return nil, fmt.Errorf("classify %s: %w", h.Name, err)
	}
	if err := e.Close(); err != nil {
		return nil, fmt.Errorf("classify %s: %w", h.Name, err)
	}
	return buf.Bytes(), nil
}

// Classify reads the ENC from src (a checkout: DirSource) and returns the
// answer for the host Puppet names, as Puppet's external_nodes script must
// print it. It refuses an ENC with problems rather than classify from a
// broken one.
func Classify(src Source, certname string) ([]byte, error) {
	inv, probs, err := NewLoader().Load(src)
	if err != nil {
		return nil, err
	}
	if len(probs) > 0 {
		return nil, fmt.Errorf("the ENC has problems:\n%w", probs)
	}
	return inv.Classify(certname)
}
