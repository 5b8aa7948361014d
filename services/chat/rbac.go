package chat

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
)

// RBACConfig maps identities to roles and roles to what they may run.
type RBACConfig struct {
	// DefaultRoles are given to identities no grant matches.
	DefaultRoles []string `yaml:"default_roles"`
	// Roles by name.
	Roles map[string]Role `yaml:"roles"`
	// Grants give roles to identities.
	Grants []Grant `yaml:"grants"`
}

// Role is a set of command patterns and environments.
type Role struct {
	// Commands are glob patterns over command names ("lb *", "deploy", "*").
	Commands []string `yaml:"commands"`
	// Environments the role may act on; empty means all. A command whose
	// arguments name an environment ("production", "cop@production") is
	// allowed only when every named environment matches.
	Environments []string `yaml:"environments"`
}

// Grant gives roles to identities matched by id, e-mail or chat group. Users
// are glob patterns over identity ids ("slack:U024BE7LH", "console:*",
// "automation:watcher") and e-mail addresses.
type Grant struct {
	Users  []string `yaml:"users"`
	Groups []string `yaml:"groups"`
	Roles  []string `yaml:"roles"`
}

// DefaultRBAC lets everyone do everything: right for the all-in-one binary
// on loopback, wrong anywhere else. Serve logs a warning while it is in use.
func DefaultRBAC() RBACConfig {
	return RBACConfig{
		DefaultRoles: []string{"admin"},
		Roles:        map[string]Role{"admin": {Commands: []string{"*"}}},
	}
}

// Validate checks that every role referred to exists and patterns parse.
func (c RBACConfig) Validate() error {
	for _, r := range c.DefaultRoles {
		if _, ok := c.Roles[r]; !ok {
			return fmt.Errorf("chat.rbac.default_roles: role %q is not defined under chat.rbac.roles", r)
		}
	}
	for name, r := range c.Roles {
		for _, p := range append(slices.Clone(r.Commands), r.Environments...) {
			if _, err := path.Match(p, ""); err != nil {
				return fmt.Errorf("chat.rbac.roles.%s: bad pattern %q: %w", name, p, err)
			}
		}
	}
	for i, g := range c.Grants {
		if len(g.Users) == 0 && len(g.Groups) == 0 {
			return fmt.Errorf("chat.rbac.grants[%d]: needs users or groups", i)
		}
		for _, r := range g.Roles {
			if _, ok := c.Roles[r]; !ok {
				return fmt.Errorf("chat.rbac.grants[%d].roles: role %q is not defined", i, r)
			}
		}
	}
	return nil
}

// RolesOf returns the roles of an identity, sorted.
func (c RBACConfig) RolesOf(id *chatv1.Identity) []string {
	set := map[string]bool{}
	for _, g := range c.Grants {
		if grantMatches(g, id) {
			for _, r := range g.Roles {
				set[r] = true
			}
		}
	}
	if len(set) == 0 {
		for _, r := range c.DefaultRoles {
			set[r] = true
		}
	}
	roles := make([]string, 0, len(set))
	for r := range set {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	return roles
}

func grantMatches(g Grant, id *chatv1.Identity) bool {
	for _, u := range g.Users {
		if globMatch(u, id.GetId()) || (id.GetEmail() != "" && globMatch(strings.ToLower(u), strings.ToLower(id.GetEmail()))) {
			return true
		}
	}
	for _, want := range g.Groups {
		if slices.Contains(id.GetGroups(), want) {
			return true
		}
	}
	return false
}

func globMatch(pattern, s string) bool {
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

// Authorize decides whether roles may run the command on what it touches.
// The reason is a sentence for the person when it is denied.
func (c RBACConfig) Authorize(roles []string, sp *commandv1.CommandSpec, sc scope) (bool, string) {
	if req := sp.GetRequiredRole(); req != "" && !slices.Contains(roles, req) {
		return false, fmt.Sprintf("%s needs the role %q; you have %s", sp.GetName(), req, rolesText(roles))
	}
	var envDenied string
	for _, name := range roles {
		r, ok := c.Roles[name]
		if !ok || !matchesAny(r.Commands, sp.GetName()) {
			continue
		}
		if len(r.Environments) > 0 {
			if len(sc.unknown) > 0 {
				envDenied = fmt.Sprintf("%s, which the inventory does not know, so its environment cannot be checked", sc.unknown[0])
				continue
			}
			if bad := firstUnmatched(r.Environments, sc.envs); bad != "" {
				envDenied = fmt.Sprintf("%q", bad)
				if h := sc.via[bad]; h != "" {
					envDenied += fmt.Sprintf(" (%s is there)", h)
				}
				continue
			}
		}
		return true, ""
	}
	if envDenied != "" {
		return false, fmt.Sprintf("your roles (%s) may run %s, but not on %s", strings.Join(roles, ", "), sp.GetName(), envDenied)
	}
	return false, fmt.Sprintf("your roles (%s) do not include %s", rolesText(roles), sp.GetName())
}

func rolesText(roles []string) string {
	if len(roles) == 0 {
		return "no roles"
	}
	return strings.Join(roles, ", ")
}

func matchesAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if p == "*" || globMatch(p, name) {
			return true
		}
	}
	return false
}

func firstUnmatched(patterns, envs []string) string {
	for _, e := range envs {
		if !matchesAny(patterns, e) {
			return e
		}
	}
	return ""
}

// scope is what a request touches, for roles limited to environments: the
// environments it names, and those of the hosts it names.
type scope struct {
	envs    []string
	via     map[string]string // environment → a named host that is in it
	unknown []string          // named hosts the inventory does not know
}

// hostEnv finds a host's environment in the inventory.
type hostEnv func(host string) (env string, ok bool)

// requestScope reads the scope from the arguments and flags typed
// ENVIRONMENT or ROLE_ENV (the environment itself) and HOST or HOST_LIST
// (each host's environment, from the inventory): `lb drain web1` touches
// production when web1 is there, though no argument says so.
func requestScope(sp *commandv1.CommandSpec, args, flags map[string]string, lookup hostEnv) scope {
	sc := scope{via: map[string]string{}}
	addEnv := func(e string) {
		if !slices.Contains(sc.envs, e) {
			sc.envs = append(sc.envs, e)
		}
	}
	add := func(t commandv1.ArgType, v string) {
		switch t {
		case commandv1.ArgType_ARG_TYPE_ENVIRONMENT:
			addEnv(v)
		case commandv1.ArgType_ARG_TYPE_ROLE_ENV:
			if i := strings.LastIndexByte(v, '@'); i >= 0 {
				addEnv(v[i+1:])
			}
		case commandv1.ArgType_ARG_TYPE_HOST, commandv1.ArgType_ARG_TYPE_HOST_LIST:
			for _, h := range strings.Split(v, ",") {
				if h = strings.TrimSpace(h); h == "" {
					continue
				}
				e, ok := "", false
				if lookup != nil {
					e, ok = lookup(h)
				}
				if !ok {
					sc.unknown = append(sc.unknown, h)
					continue
				}
				addEnv(e)
				if sc.via[e] == "" {
					sc.via[e] = h
				}
			}
		}
	}
	for _, a := range sp.GetArgs() {
		if v, ok := args[a.GetName()]; ok && v != "" {
			add(a.GetType(), v)
		}
	}
	for _, f := range sp.GetFlags() {
		if v, ok := flags[f.GetName()]; ok && v != "" {
			add(f.GetType(), v)
		}
	}
	return sc
}
