// Package enc reads, validates and edits the inventory kept as a Puppet
// external node classifier (ENC): a tree of YAML files, one per host and one
// per environment.
//
//	environments/<env>.yaml   backends, roles (their backends, classes and
//	                          parameters), environment-wide classes and
//	                          parameters, and version pins: service → role → version
//	hosts/<name>.yaml         one host: environment, role, state, fqdn, ipv4,
//	                          ipv6, backends, classes, parameters
//
// Classify produces what Puppet asks an ENC for (classes, parameters,
// environment), so a Puppet server can use a checkout of the repository
// directly as its external_nodes script. Edits go through yaml.v3 nodes so
// that comments and key order survive.
package enc

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
)

// Directories of the repository.
const (
	HostsDir = "hosts"
	EnvsDir  = "environments"
)

// Host states as written in a host file.
const (
	StateActive         = "active"
	StateSpare          = "spare"
	StateDecommissioned = "decommissioned"
)

// HostPath is the file of a host.
func HostPath(name string) string { return HostsDir + "/" + name + ".yaml" }

// EnvPath is the file of an environment.
func EnvPath(name string) string { return EnvsDir + "/" + name + ".yaml" }

var (
	hostName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	word     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,99}$`)
)

// ValidHostName reports whether name can be a host (a DNS label).
func ValidHostName(name string) bool { return hostName.MatchString(name) }

// Host is one host file.
type Host struct {
	Name        string
	Environment string
	Role        string
	State       string
	FQDN        string
	IPv4        string
	IPv6        string
	Backends    []string
	Classes     []string
	// ClassParams are the parameters of the classes given any (classes
	// written as a mapping of class → parameters).
	ClassParams map[string]Params
	Parameters  Params
}

// Role is a role of an environment.
type Role struct {
	Backends    []string
	Classes     []string
	ClassParams map[string]Params
	Parameters  Params
}

// Environment is one environment file.
type Environment struct {
	Name        string
	Backends    []string
	Classes     []string
	ClassParams map[string]Params
	Parameters  Params
	Roles       map[string]*Role
	// Pins: service → role → version. An empty version declares that the
	// service runs on the role without pinning it yet.
	Pins map[string]map[string]string
}

// Problem is one thing wrong with the repository.
type Problem struct {
	File string
	Line int
	Msg  string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	}
	if p.File != "" {
		return p.File + ": " + p.Msg
	}
	return p.Msg
}

// Problems is a list of problems; as an error it names the first few.
type Problems []Problem

func (ps Problems) Error() string {
	var b strings.Builder
	for i, p := range ps {
		if i == 10 {
			fmt.Fprintf(&b, "\n… and %d more", len(ps)-10)
			break
		}
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Inventory is the whole ENC as parsed.
type Inventory struct {
	Hosts map[string]*Host
	Envs  map[string]*Environment
}

// Entry is one file of a directory of a Source; Key is a content hash
// (equal keys, equal contents) or "" when the source has none.
type Entry struct {
	Name string
	Key  string
}

// Source is a tree of ENC files: a git commit or a directory.
type Source interface {
	List(dir string) ([]Entry, error)
	ReadFile(path string) ([]byte, error)
}

// KeyReader is a Source that can read a file by its content key, which
// spares a lookup by path (a git tree of thousands of files).
type KeyReader interface {
	ReadKey(key string) ([]byte, error)
}

func read(src Source, file, key string) ([]byte, error) {
	if kr, ok := src.(KeyReader); ok && key != "" {
		if data, err := kr.ReadKey(key); err == nil {
			return data, nil
		}
	}
	return src.ReadFile(file)
}

// Loader parses a Source into an Inventory, keeping parsed files by content
// key so a revision that changed one file of thousands parses one file.
type Loader struct {
	mu    sync.Mutex
	hosts map[string]parsedHost
	envs  map[string]parsedEnv
}

type parsedHost struct {
	h     *Host
	probs Problems
}

type parsedEnv struct {
	e     *Environment
	probs Problems
}

// NewLoader returns a Loader with an empty cache.
func NewLoader() *Loader {
	return &Loader{hosts: map[string]parsedHost{}, envs: map[string]parsedEnv{}}
}

// Load parses and validates every file. It returns the inventory even when
// there are problems; callers publish it only when there are none.
func (l *Loader) Load(src Source) (*Inventory, Problems, error) {
	inv := &Inventory{Hosts: map[string]*Host{}, Envs: map[string]*Environment{}}
	var probs Problems
	envs, err := src.List(EnvsDir)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", EnvsDir, err)
	}
	hosts, err := src.List(HostsDir)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", HostsDir, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	seenEnv, seenHost := map[string]bool{}, map[string]bool{}
	for _, e := range envs {
		name, ok := strings.CutSuffix(e.Name, ".yaml")
		file := EnvsDir + "/" + e.Name
		if !ok {
			probs = append(probs, Problem{File: file, Msg: "not a .yaml file"})
			continue
		}
		key := file + "@" + e.Key
		p, hit := l.envs[key]
		if !hit || e.Key == "" {
			data, err := read(src, file, e.Key)
			if err != nil {
				return nil, nil, err
			}
			env, ps := ParseEnvironment(name, data)
			p = parsedEnv{env, ps}
			if e.Key != "" {
				l.envs[key] = p
			}
		}
		seenEnv[key] = true
		probs = append(probs, p.probs...)
		if p.e != nil {
			inv.Envs[name] = p.e
		}
	}
	for _, e := range hosts {
		name, ok := strings.CutSuffix(e.Name, ".yaml")
		file := HostsDir + "/" + e.Name
		if !ok {
			probs = append(probs, Problem{File: file, Msg: "not a .yaml file"})
			continue
		}
		key := file + "@" + e.Key
		p, hit := l.hosts[key]
		if !hit || e.Key == "" {
			data, err := read(src, file, e.Key)
			if err != nil {
				return nil, nil, err
			}
			h, ps := ParseHost(name, data)
			p = parsedHost{h, ps}
			if e.Key != "" {
				l.hosts[key] = p
			}
		}
		seenHost[key] = true
		probs = append(probs, p.probs...)
		if p.h != nil {
			inv.Hosts[name] = p.h
		}
	}
	// Keep only what this revision uses: the cache never outgrows the repo.
	for k := range l.hosts {
		if !seenHost[k] {
			delete(l.hosts, k)
		}
	}
	for k := range l.envs {
		if !seenEnv[k] {
			delete(l.envs, k)
		}
	}
	probs = append(probs, inv.Validate()...)
	return inv, probs, nil
}

// Validate checks what no single file can: environments, roles and
// backends that hosts name exist, and no IP address or fqdn is used twice.
func (inv *Inventory) Validate() Problems {
	var probs Problems
	for _, name := range sortedKeys(inv.Envs) {
		env := inv.Envs[name]
		for _, rn := range sortedKeys(env.Roles) {
			for _, b := range env.Roles[rn].Backends {
				if !slices.Contains(env.Backends, b) {
					probs = append(probs, Problem{File: EnvPath(name), Msg: fmt.Sprintf("role %s names backend %s, which environment %s does not have (backends: %s)", rn, b, name, list(env.Backends))})
				}
			}
		}
		for _, svc := range sortedKeys(env.Pins) {
			for _, rn := range sortedKeys(env.Pins[svc]) {
				if env.Roles[rn] == nil {
					probs = append(probs, Problem{File: EnvPath(name), Msg: fmt.Sprintf("pin %s → %s: environment %s has no role %s", svc, rn, name, rn)})
				}
			}
		}
	}
	ips, fqdns := map[string]string{}, map[string]string{}
	for _, name := range sortedKeys(inv.Hosts) {
		h := inv.Hosts[name]
		file := HostPath(name)
		if h.State == StateDecommissioned {
			continue
		}
		// Puppet asks the ENC by fqdn: two hosts with one would make the
		// answer a guess.
		if f := strings.ToLower(strings.TrimSuffix(h.FQDN, ".")); f != "" {
			if other, ok := fqdns[f]; ok {
				probs = append(probs, Problem{File: file, Msg: fmt.Sprintf("fqdn %s is also %s's", h.FQDN, other)})
			}
			fqdns[f] = name
		}
		for _, ip := range []string{h.IPv4, h.IPv6} {
			if ip == "" {
				continue
			}
			if other, ok := ips[ip]; ok {
				probs = append(probs, Problem{File: file, Msg: fmt.Sprintf("IP address %s is also %s's", ip, other)})
			}
			ips[ip] = name
		}
		if h.State != StateActive {
			continue
		}
		env := inv.Envs[h.Environment]
		if env == nil {
			probs = append(probs, Problem{File: file, Msg: fmt.Sprintf("environment %s does not exist (no %s)", h.Environment, EnvPath(h.Environment))})
			continue
		}
		if env.Roles[h.Role] == nil {
			probs = append(probs, Problem{File: file, Msg: fmt.Sprintf("environment %s has no role %s (roles: %s)", h.Environment, h.Role, list(sortedKeys(env.Roles)))})
		}
		for _, b := range h.Backends {
			if !slices.Contains(env.Backends, b) {
				probs = append(probs, Problem{File: file, Msg: fmt.Sprintf("backend %s does not exist in environment %s (backends: %s)", b, h.Environment, list(env.Backends))})
			}
		}
	}
	return probs
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// ParseHost parses one host file; name is its file name without .yaml.
func ParseHost(name string, data []byte) (*Host, Problems) {
	file := HostPath(name)
	var probs Problems
	bad := func(line int, format string, args ...any) {
		probs = append(probs, Problem{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	if !ValidHostName(name) {
		bad(0, "%q is not a host name (a DNS label: a-z, 0-9 and -)", name)
		return nil, probs
	}
	root, err := mapping(data)
	if err != nil {
		bad(0, "%v", err)
		return nil, probs
	}
	h := &Host{Name: name, State: StateActive}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "name":
			if v.Value != name {
				bad(k.Line, "name %q does not match the file name %s", v.Value, name)
			}
		case "environment":
			h.Environment = scalar(v, bad)
		case "role":
			h.Role = scalar(v, bad)
		case "state":
			h.State = scalar(v, bad)
			if h.State != StateActive && h.State != StateSpare && h.State != StateDecommissioned {
				bad(v.Line, "state %q is not active, spare or decommissioned", h.State)
			}
		case "fqdn":
			h.FQDN = scalar(v, bad)
		case "ipv4":
			h.IPv4 = scalar(v, bad)
			if a, err := netip.ParseAddr(h.IPv4); err != nil || !a.Is4() {
				bad(v.Line, "ipv4 %q is not an IPv4 address", h.IPv4)
			}
		case "ipv6":
			h.IPv6 = scalar(v, bad)
			if a, err := netip.ParseAddr(h.IPv6); err != nil || !a.Is6() {
				bad(v.Line, "ipv6 %q is not an IPv6 address", h.IPv6)
			}
		case "backends":
			h.Backends = strList(v, bad)
		case "classes":
			h.Classes, h.ClassParams = classList(v, bad)
		case "parameters":
			h.Parameters = params(v, bad)
		default:
			bad(k.Line, "unknown key %q (known: environment, role, state, fqdn, ipv4, ipv6, backends, classes, parameters)", k.Value)
		}
	}
	if h.State == StateActive {
		if h.Environment == "" {
			bad(0, "an active host needs an environment")
		}
		if h.Role == "" {
			bad(0, "an active host needs a role")
		}
	}
	for _, s := range []string{h.Environment, h.Role} {
		if s != "" && !word.MatchString(s) {
			bad(0, "%q is not a valid environment or role name", s)
		}
	}
	return h, probs
}

// ParseEnvironment parses one environment file.
func ParseEnvironment(name string, data []byte) (*Environment, Problems) {
	file := EnvPath(name)
	var probs Problems
	bad := func(line int, format string, args ...any) {
		probs = append(probs, Problem{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	if !word.MatchString(name) {
		bad(0, "%q is not an environment name", name)
		return nil, probs
	}
	root, err := mapping(data)
	if err != nil {
		bad(0, "%v", err)
		return nil, probs
	}
	env := &Environment{Name: name, Roles: map[string]*Role{}, Pins: map[string]map[string]string{}}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "backends":
			env.Backends = strList(v, bad)
		case "classes":
			env.Classes, env.ClassParams = classList(v, bad)
		case "parameters":
			env.Parameters = params(v, bad)
		case "roles":
			if v.Kind != yaml.MappingNode {
				bad(v.Line, "roles must be a mapping of role name to its backends, classes and parameters")
				continue
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				rk, rv := v.Content[j], v.Content[j+1]
				role := &Role{}
				if !word.MatchString(rk.Value) {
					bad(rk.Line, "%q is not a role name", rk.Value)
				}
				if rv.Kind == yaml.MappingNode {
					for m := 0; m+1 < len(rv.Content); m += 2 {
						fk, fv := rv.Content[m], rv.Content[m+1]
						switch fk.Value {
						case "backends":
							role.Backends = strList(fv, bad)
						case "classes":
							role.Classes, role.ClassParams = classList(fv, bad)
						case "parameters":
							role.Parameters = params(fv, bad)
						default:
							bad(fk.Line, "unknown key %q in role %s (known: backends, classes, parameters)", fk.Value, rk.Value)
						}
					}
				} else if rv.Tag != "!!null" {
					bad(rv.Line, "role %s must be a mapping (backends, classes, parameters) or empty", rk.Value)
				}
				env.Roles[rk.Value] = role
			}
		case "pins":
			if v.Kind != yaml.MappingNode {
				bad(v.Line, "pins must be a mapping: service → role → version")
				continue
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				sk, sv := v.Content[j], v.Content[j+1]
				if sv.Kind != yaml.MappingNode {
					bad(sv.Line, "pins of %s must be a mapping: role → version", sk.Value)
					continue
				}
				m := map[string]string{}
				for r := 0; r+1 < len(sv.Content); r += 2 {
					ver := ""
					if sv.Content[r+1].Tag != "!!null" {
						ver = scalar(sv.Content[r+1], bad)
					}
					m[sv.Content[r].Value] = ver
				}
				env.Pins[sk.Value] = m
			}
		default:
			bad(k.Line, "unknown key %q (known: backends, classes, parameters, roles, pins)", k.Value)
		}
	}
	return env, probs
}

func mapping(data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %v", err)
	}
	if doc.Kind == 0 {
		return &yaml.Node{Kind: yaml.MappingNode}, nil // an empty file
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("must be a YAML mapping")
	}
	return doc.Content[0], nil
}

func scalar(v *yaml.Node, bad func(int, string, ...any)) string {
	if v.Kind != yaml.ScalarNode {
		bad(v.Line, "expected a single value")
		return ""
	}
	return v.Value
}

func strList(v *yaml.Node, bad func(int, string, ...any)) []string {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		bad(v.Line, "expected a list")
		return nil
	}
	var out []string
	for _, e := range v.Content {
		if s := scalar(e, bad); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Proto returns the hosts as published to the inventory bucket, sorted,
// with their effective classes and parameters.
func (inv *Inventory) Proto() []*inventoryv1.Host {
	out := make([]*inventoryv1.Host, 0, len(inv.Hosts))
	for _, name := range sortedKeys(inv.Hosts) {
		h := inv.Hosts[name]
		c := inv.classification(h)
		st := map[string]inventoryv1.HostState{
			StateActive: inventoryv1.HostState_HOST_STATE_ACTIVE, StateSpare: inventoryv1.HostState_HOST_STATE_SPARE,
			StateDecommissioned: inventoryv1.HostState_HOST_STATE_DECOMMISSIONED,
		}[h.State]
		out = append(out, &inventoryv1.Host{
			Name: h.Name, Fqdn: h.FQDN, Environment: h.Environment, Role: h.Role, Ipv4: h.IPv4, Ipv6: h.IPv6,
			Backends: slices.Clone(h.Backends), Classes: c.Classes, Parameters: c.Parameters.Texts(), State: st,
		})
	}
	return out
}

// Pins returns every non-empty pin as "<env>/<service>/<role>" → version.
func (inv *Inventory) Pins() map[string]string {
	out := map[string]string{}
	for en, env := range inv.Envs {
		for svc, roles := range env.Pins {
			for r, v := range roles {
				if v != "" {
					out[en+"/"+svc+"/"+r] = v
				}
			}
		}
	}
	return out
}

// HostsOf returns the active hosts of a role in an environment, by name.
func (inv *Inventory) HostsOf(role, env string) []*Host {
	var out []*Host
	for _, n := range sortedKeys(inv.Hosts) {
		h := inv.Hosts[n]
		if h.State == StateActive && h.Role == role && h.Environment == env {
			out = append(out, h)
		}
	}
	return out
}

// Spares returns the hosts in the spare pool, by name.
func (inv *Inventory) Spares() []*Host {
	var out []*Host
	for _, n := range sortedKeys(inv.Hosts) {
		if h := inv.Hosts[n]; h.State == StateSpare {
			out = append(out, h)
		}
	}
	return out
}

// EnvNames returns the environments, sorted.
func (inv *Inventory) EnvNames() []string { return sortedKeys(inv.Envs) }
