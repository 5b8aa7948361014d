package watcher

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the watcher's configuration (the "watcher" key).
type Config struct {
	Graphite GraphiteConfig `yaml:"graphite"`
	// Ops is the conversation where findings, notices and the watcher's
	// commands go (the team's ops channel).
	Ops Conversation `yaml:"ops"`
	// Identity is the chat identity the watcher's commands carry; grant it
	// the roles it needs (lb remove) in chat.rbac, as for a person.
	Identity string `yaml:"identity"`
	// ModeRole is the role a person needs for `watcher mode`.
	ModeRole string `yaml:"mode_role"`
	// Action is the command sent in enforce mode; {host}, {backend} and
	// {reason} are filled in.
	Action string `yaml:"action"`
	// ActionTimeout bounds the wait for the action's job to end.
	ActionTimeout time.Duration `yaml:"action_timeout"`
	// Lease is how long a leader holds the evaluation lease without renewing.
	Lease time.Duration `yaml:"lease"`
	// MaxMute is the longest `watcher mute`.
	MaxMute time.Duration `yaml:"max_mute"`
	Checks  []Check       `yaml:"checks"`
}

// GraphiteConfig says where graphite-web is.
type GraphiteConfig struct {
	// URL of graphite-web ("http://graphite:8080"), used for render queries.
	URL string `yaml:"url"`
	// GraphURL is the graphite-web people open graph links on (default URL).
	GraphURL string `yaml:"graph_url"`
	// Timeout of one render request.
	Timeout time.Duration `yaml:"timeout"`
	// MaxBody and MaxTargets bound one render request; more targets are
	// split into several.
	MaxBody    int `yaml:"max_body"`
	MaxTargets int `yaml:"max_targets"`
	// Parallel render requests of one cycle.
	Parallel int `yaml:"parallel"`
}

// Conversation is a channel of a chat adapter.
type Conversation struct {
	Adapter string `yaml:"adapter"`
	Channel string `yaml:"channel"`
}

// Check is one canary check over a backend.
type Check struct {
	// Name is how commands refer to it ("superagg-canary").
	Name string `yaml:"name"`
	// Environment is the inventory environment whose hosts are checked. It
	// may be left out only while the inventory has the backend in a single
	// environment; the check does not run (and says why) otherwise.
	Environment string `yaml:"environment"`
	// Backend is the load balancer backend whose active hosts (in
	// Environment) are checked, and from which a sick host is removed.
	Backend string `yaml:"backend"`
	// Target is the Graphite target of one host, with {host} where the host
	// name goes (dots in host names become underscores).
	Target string `yaml:"target"`
	// Batch is list (default), wildcard or alias; see BatchList.
	Batch string `yaml:"batch"`
	// Interval between evaluations.
	Interval time.Duration `yaml:"interval"`
	// Window, Settle, Aggregate, Expected, MinRatio, Quorum, MaxLag: see Rule.
	Window    time.Duration `yaml:"window"`
	Settle    time.Duration `yaml:"settle"`
	Aggregate string        `yaml:"aggregate"`
	Expected  float64       `yaml:"expected"`
	MinRatio  float64       `yaml:"min_ratio"`
	Quorum    float64       `yaml:"quorum"`
	MaxLag    time.Duration `yaml:"max_lag"`
	// Hysteresis: consecutive bad evaluations make a host sick, good ones
	// healthy again.
	Hysteresis `yaml:",inline"`
	Safety     Safety `yaml:"safety"`
	// Mode is the mode until someone runs `watcher mode` (which is kept in KV
	// and wins from then on).
	Mode string `yaml:"mode"`
}

// DefaultConfig has no checks; the other values are the safe defaults.
func DefaultConfig() Config {
	return Config{
		Graphite:      GraphiteConfig{Timeout: 10 * time.Second, MaxBody: 256 << 10, MaxTargets: 2000, Parallel: 4},
		Ops:           Conversation{Adapter: "console", Channel: "ops"},
		Identity:      "automation:watcher",
		ModeRole:      "admin",
		Action:        "lb remove {host} {backend} -- {reason}",
		ActionTimeout: 5 * time.Minute,
		Lease:         15 * time.Second,
		MaxMute:       7 * 24 * time.Hour,
	}
}

// DefaultCheck is a check with every default filled in; config entries
// override what they set.
func DefaultCheck() Check {
	return Check{
		Batch: BatchList, Interval: time.Minute, Window: 5 * time.Minute, Settle: 30 * time.Second,
		Aggregate: AggCount, MinRatio: 0.95, Quorum: 0.5, MaxLag: 5 * time.Minute,
		Hysteresis: Hysteresis{SickAfter: 3, RecoverAfter: 2},
		Safety:     Safety{MaxRemovalsPerHour: 2, MinHealthyFraction: 0.75, Cooldown: time.Hour},
		Mode:       ModeAdvisory,
	}
}

var checkName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,47}$`)

// Validate names the first wrong key.
func (c Config) Validate() error {
	if c.Graphite.URL == "" && len(c.Checks) > 0 {
		return errors.New("watcher.graphite.url: required with checks (graphite-web, e.g. http://graphite:8080)")
	}
	for k, v := range map[string]string{"url": c.Graphite.URL, "graph_url": c.Graphite.GraphURL} {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("watcher.graphite.%s: %q is not an http(s) URL", k, v)
		}
	}
	if c.Graphite.Timeout <= 0 || c.Graphite.MaxBody < 1024 || c.Graphite.MaxTargets < 1 || c.Graphite.Parallel < 1 {
		return errors.New("watcher.graphite: timeout, max_body (≥1024), max_targets and parallel must be positive")
	}
	if c.Ops.Adapter == "" || c.Ops.Channel == "" {
		return errors.New("watcher.ops: adapter and channel are required")
	}
	if !strings.Contains(c.Identity, ":") {
		return fmt.Errorf("watcher.identity: %q should look like automation:watcher", c.Identity)
	}
	if c.ModeRole == "" {
		return errors.New("watcher.mode_role: required (who may change a check's mode)")
	}
	for _, k := range []string{"{host}", "{backend}"} {
		if !strings.Contains(c.Action, k) {
			return fmt.Errorf("watcher.action: %q must contain %s", c.Action, k)
		}
	}
	if c.ActionTimeout < time.Second || c.Lease < time.Second || c.MaxMute <= 0 {
		return errors.New("watcher: action_timeout and lease must be at least 1s, max_mute positive")
	}
	seen := map[string]bool{}
	for i, ch := range c.Checks {
		if err := ch.validate(); err != nil {
			return fmt.Errorf("watcher.checks[%d]: %w", i, err)
		}
		if seen[ch.Name] {
			return fmt.Errorf("watcher.checks[%d].name: %q is used twice", i, ch.Name)
		}
		seen[ch.Name] = true
	}
	return nil
}

func (ch Check) validate() error {
	switch {
	case !checkName.MatchString(ch.Name):
		return fmt.Errorf("name: %q must be lower case letters, digits, - and _", ch.Name)
	case ch.Environment != strings.TrimSpace(ch.Environment):
		return fmt.Errorf("environment: %q has spaces around it", ch.Environment)
	case ch.Backend == "":
		return errors.New("backend: required")
	case !slices.Contains([]string{BatchList, BatchWildcard, BatchAlias}, ch.Batch):
		return fmt.Errorf("batch: %q is not list, wildcard or alias", ch.Batch)
	case ch.Interval < time.Second:
		return errors.New("interval: at least 1s")
	case ch.Window < ch.Interval/2 || ch.Window <= 0:
		return errors.New("window: must be positive and not much shorter than the interval")
	case ch.Settle < 0 || ch.MaxLag < 0:
		return errors.New("settle, max_lag: must not be negative")
	case ch.Aggregate != AggCount && ch.Aggregate != AggSum:
		return fmt.Errorf("aggregate: %q is not count or sum", ch.Aggregate)
	case ch.Aggregate == AggSum && ch.Expected <= 0:
		return errors.New("expected: required and positive with aggregate sum")
	case ch.MinRatio <= 0 || ch.MinRatio > 1:
		return errors.New("min_ratio: between 0 (excluded) and 1")
	case ch.Quorum <= 0 || ch.Quorum > 1:
		return errors.New("quorum: between 0 (excluded) and 1")
	case ch.SickAfter < 1 || ch.RecoverAfter < 1:
		return errors.New("sick_after, recover_after: at least 1")
	case ch.Safety.MaxRemovalsPerHour < 0:
		return errors.New("safety.max_removals_per_hour: not negative")
	case ch.Safety.MinHealthyFraction < 0 || ch.Safety.MinHealthyFraction > 1:
		return errors.New("safety.min_healthy_fraction: between 0 and 1")
	case ch.Safety.Cooldown < 0:
		return errors.New("safety.cooldown: not negative")
	case !slices.Contains(Modes, ch.Mode):
		return fmt.Errorf("mode: %q is not off, advisory or enforce", ch.Mode)
	}
	_, err := parseTemplate(ch.Target)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	return nil
}

// rule is the check's pure evaluation rule.
func (ch Check) rule() Rule {
	return Rule{Window: ch.Window, Settle: ch.Settle, Aggregate: ch.Aggregate, Expected: ch.Expected,
		MinRatio: ch.MinRatio, Quorum: ch.Quorum, MaxLag: ch.MaxLag}
}

// span is how far back a cycle reads: the window, the settle time, the lag
// allowed and a margin.
func (ch Check) span() time.Duration { return ch.Window + ch.Settle + ch.MaxLag + 2*time.Minute }

// UnmarshalYAML starts every check from DefaultCheck, so a config entry
// names only what differs.
// Node.Decode does not inherit the file decoder's strictness, so unknown
// keys are refused here, naming the key and its line.
func (ch *Check) UnmarshalYAML(n *yaml.Node) error {
	type plain Check
	c := plain(DefaultCheck())
	if n.Kind == yaml.MappingNode {
		known := yamlKeys(reflect.TypeFor[Check]())
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; !known[k.Value] {
				return fmt.Errorf("line %d: unknown key %q in a check", k.Line, k.Value)
			}
		}
	}
	if err := n.Decode(&c); err != nil {
		return err
	}
	*ch = Check(c)
	return nil
}

// yamlKeys lists the keys a struct accepts, inline structs included.
func yamlKeys(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case strings.Contains(","+opts+",", ",inline,"):
			maps.Copy(out, yamlKeys(f.Type))
		case name == "-":
		case name == "":
			out[strings.ToLower(f.Name)] = true
		default:
			out[name] = true
		}
	}
	return out
}
