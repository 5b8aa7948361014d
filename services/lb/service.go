package lb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
)

// Service names: the commands are served as sb.cmd.lb.<verb> and
// sb.cmd.ratelimit.<verb> by the same process.
const (
	ServiceLB        = "lb"
	ServiceRateLimit = "ratelimit"
)

// Drift modes.
const (
	DriftReport  = "report"
	DriftEnforce = "enforce"
)

// Config is the lb service's configuration (the "lb" key).
type Config struct {
	// Environments: name (as in the inventory) → its HAProxy instances.
	Environments map[string]EnvConfig `yaml:"environments"`
	// Timeout bounds each Runtime API call to one instance.
	Timeout time.Duration `yaml:"timeout"`
	// ReconcileInterval is how often desired state is compared with every
	// instance and re-applied after a restart or a failed change.
	ReconcileInterval time.Duration `yaml:"reconcile_interval"`
	// Drift says what reconciliation does when a person changed a server by
	// hand: "report" (say so in the ops conversation) or "enforce" (restore
	// the desired state, and say so).
	Drift string `yaml:"drift"`
	// Ops is where reconciliation and drift reports are posted.
	Ops Conversation `yaml:"ops"`
	// MaxOutFraction is the largest fraction of a backend's servers that may
	// be out of service (drain, maint, weight 0 or failing checks) after a
	// change, unless --force.
	MaxOutFraction float64 `yaml:"max_out_fraction"`
	// ForceRole is the role --force needs; empty turns --force off.
	ForceRole string `yaml:"force_role"`
	// DrainTimeout is the default of lb drain --timeout.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// DrainPoll is how often lb drain --wait reads the sessions.
	DrainPoll time.Duration `yaml:"drain_poll"`
}

// EnvConfig is one environment's HAProxy fleet.
type EnvConfig struct {
	Instances []InstanceConfig `yaml:"instances"`
	// MapFile is the rate-limit map as HAProxy names it (the file in the
	// configuration, e.g. /etc/haproxy/ratelimit.map). Empty: no ratelimit
	// commands for this environment.
	MapFile string `yaml:"map_file"`
	// WriteMapFile also rewrites MapFile on this machine after each
	// ratelimit set, for a switchboard running next to HAProxy: a restart
	// then starts with the limits even before reconciliation runs.
	WriteMapFile bool `yaml:"write_map_file"`
}

// InstanceConfig is one HAProxy instance.
type InstanceConfig struct {
	// Name is how answers refer to it ("lb1").
	Name string `yaml:"name"`
	// Address of its admin socket: "unix:/run/haproxy/admin.sock" or
	// "tcp:10.0.0.1:9999" (a "stats socket … level admin").
	Address string `yaml:"address"`
}

// Conversation is a chat place.
type Conversation struct {
	Adapter string `yaml:"adapter"`
	Channel string `yaml:"channel"`
}

// DefaultConfig has no instances: lb serves its commands and says that
// nothing is configured.
func DefaultConfig() Config {
	return Config{
		Environments:      map[string]EnvConfig{},
		Timeout:           5 * time.Second,
		ReconcileInterval: 30 * time.Second,
		Drift:             DriftReport,
		Ops:               Conversation{Adapter: "console", Channel: "ops"},
		MaxOutFraction:    0.5,
		ForceRole:         "admin",
		DrainTimeout:      10 * time.Minute,
		DrainPoll:         2 * time.Second,
	}
}

// Validate names the first wrong key.
func (c Config) Validate() error {
	names := map[string]string{}
	for env, ec := range c.Environments {
		if env == "" {
			return errors.New("lb.environments: empty environment name")
		}
		if len(ec.Instances) == 0 {
			return fmt.Errorf("lb.environments.%s.instances: at least one instance", env)
		}
		for i, in := range ec.Instances {
			if in.Name == "" {
				return fmt.Errorf("lb.environments.%s.instances[%d].name: required", env, i)
			}
			if other, dup := names[in.Name]; dup {
				return fmt.Errorf("lb.environments.%s.instances[%d].name: %q is also an instance of %s", env, i, in.Name, other)
			}
			names[in.Name] = env
			if _, _, err := haproxy.ParseAddress(in.Address); err != nil {
				return fmt.Errorf("lb.environments.%s.instances[%d].address: %w", env, i, err)
			}
		}
		if ec.MapFile != "" {
			if _, err := (haproxy.Change{Kind: haproxy.DelMap, Map: ec.MapFile, Key: "k"}).Command(); err != nil {
				return fmt.Errorf("lb.environments.%s.map_file: %w", env, err)
			}
		}
	}
	switch {
	case c.Timeout <= 0:
		return errors.New("lb.timeout: must be positive")
	case c.ReconcileInterval < 100*time.Millisecond:
		return fmt.Errorf("lb.reconcile_interval: %v is too short", c.ReconcileInterval)
	case c.Drift != DriftReport && c.Drift != DriftEnforce:
		return fmt.Errorf("lb.drift: %q is not report or enforce", c.Drift)
	case c.Ops.Adapter == "" || c.Ops.Channel == "":
		return errors.New("lb.ops: adapter and channel are required")
	case c.MaxOutFraction <= 0 || c.MaxOutFraction > 1:
		return fmt.Errorf("lb.max_out_fraction: %v is not in (0, 1]", c.MaxOutFraction)
	case c.DrainTimeout <= 0:
		return errors.New("lb.drain_timeout: must be positive")
	case c.DrainPoll <= 0:
		return errors.New("lb.drain_poll: must be positive")
	}
	return nil
}

// Deps are what the lb service needs from its host process.
type Deps struct {
	NC  *nats.Conn
	Log *slog.Logger
	// Tracing provider; none when nil.
	Tracing trace.TracerProvider
	// Meter for metrics; none when nil.
	Meter metric.Meter
	// Replicas of the sb_lb_desired bucket (3 on a JetStream cluster).
	Replicas int
	// DataDir is unused by lb today.
	DataDir string
	// Instance id of this replica; random when empty.
	Instance string
	// NewRuntime builds the client of one instance; haproxy.NewClient
	// when nil. Tests and the benchmark replace it.
	NewRuntime func(InstanceConfig, time.Duration) (Runtime, error)
}

// Service is one replica of the lb service.
type Service struct {
	cfg      Config
	log      *slog.Logger
	deps     Deps
	js       jetstream.JetStream
	desired  *desiredStore
	inv      *inventory.Cache
	fleet    *fleet
	instance string

	mu      sync.Mutex
	servers []*command.Server
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// said is what the reconciler last said per difference (said.go).
	said *saidStore
}

// New prepares an lb replica: it declares sb_lb_desired and builds the
// Runtime API clients; Start makes it serve.
func New(ctx context.Context, cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.NC == nil {
		return nil, errors.New("lb: no NATS connection")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Instance == "" {
		d.Instance = emit.NewID()[:12]
	}
	if d.NewRuntime == nil {
		d.NewRuntime = func(ic InstanceConfig, timeout time.Duration) (Runtime, error) {
			network, addr, err := haproxy.ParseAddress(ic.Address)
			if err != nil {
				return nil, err
			}
			return haproxy.NewClient(network, addr, haproxy.WithTimeout(timeout)), nil
		}
	}
	js, err := jetstream.New(d.NC)
	if err != nil {
		return nil, fmt.Errorf("lb: jetstream: %w", err)
	}
	kv, err := bus.EnsureBucket(ctx, js, d.Replicas, jetstream.KeyValueConfig{
		Bucket:      wire.BucketLBDesired,
		Description: "lb: desired state of servers and rate limits, reconciliation bookkeeping",
		History:     5,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("lb: %w", err)
	}
	inv, err := inventory.Bucket(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("lb: %w (declare the shared buckets with bus.EnsureStreams first)", err)
	}
	f := &fleet{envs: map[string][]*instance{}}
	envs := make([]string, 0, len(cfg.Environments))
	for env := range cfg.Environments {
		envs = append(envs, env)
	}
	sort.Strings(envs)
	for _, env := range envs {
		for _, ic := range cfg.Environments[env].Instances {
			rt, err := d.NewRuntime(ic, cfg.Timeout)
			if err != nil {
				return nil, fmt.Errorf("lb: instance %s: %w", ic.Name, err)
			}
			f.envs[env] = append(f.envs[env], &instance{name: ic.Name, env: env, rt: rt})
		}
	}
	return &Service{
		cfg:      cfg,
		log:      d.Log.With("service", ServiceLB, "instance", d.Instance),
		deps:     d,
		js:       js,
		desired:  &desiredStore{kv: kv},
		inv:      inventory.NewCache(inv),
		fleet:    f,
		instance: d.Instance,
		said:     &saidStore{kv: kv, log: d.Log.With("service", ServiceLB, "instance", d.Instance), m: map[string]string{}},
	}, nil
}

// Commands returns the lb commands (served as sb.cmd.lb.<verb>).
func (s *Service) Commands() []command.Command {
	return []command.Command{
		{Spec: statusSpec, Run: s.status},
		{Spec: addSpec, Run: s.add},
		{Spec: removeSpec, Run: s.remove},
		{Spec: drainSpec, Run: s.drain},
		{Spec: weightSpec, Run: s.weight},
	}
}

// RateLimitCommands returns the ratelimit commands (sb.cmd.ratelimit.<verb>).
func (s *Service) RateLimitCommands() []command.Command {
	return []command.Command{
		{Spec: rateSetSpec, Run: s.rateSet},
		{Spec: rateShowSpec, Run: s.rateShow},
	}
}

// Start serves the commands and starts the reconcile loop.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return errors.New("lb: already started")
	}
	for _, g := range []struct {
		name string
		cmds []command.Command
		desc string
	}{
		{ServiceLB, s.Commands(), "HAProxy servers in and out of service"},
		{ServiceRateLimit, s.RateLimitCommands(), "HAProxy rate limits (map file)"},
	} {
		srv, err := command.Serve(ctx, s.deps.NC, g.cmds, command.Options{
			Service: g.name, Description: g.desc, Instance: s.instance, Log: s.deps.Log,
			Tracing: s.deps.Tracing, Meter: s.deps.Meter,
		})
		if err != nil {
			for _, started := range s.servers {
				started.Stop(ctx)
			}
			s.servers = nil
			return fmt.Errorf("lb: %w", err)
		}
		s.servers = append(s.servers, srv)
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.inv.Run(rctx) }()
	go s.reconcileLoop(rctx)
	return nil
}

// Stop stops serving and reconciling; running jobs get the command
// server's grace to finish.
func (s *Service) Stop(ctx context.Context) {
	s.mu.Lock()
	servers, cancel := s.servers, s.cancel
	s.servers, s.cancel = nil, nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); srv.Stop(ctx) }()
	}
	wg.Wait()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
}

// notify posts a notice in the ops conversation. id makes a retried or
// repeated notice (two replicas, a restart) stored once by the CHAT stream.
func (s *Service) notify(ctx context.Context, id, text string) {
	p := &chatv1.ChatPost{
		Id:           "lb-" + id,
		Conversation: &chatv1.Conversation{Adapter: s.cfg.Ops.Adapter, Channel: s.cfg.Ops.Channel},
		Kind:         chatv1.Kind_KIND_NOTICE,
		Text:         text,
		Author:       &chatv1.Identity{Id: "service:lb", Name: "lb", Automation: true},
	}
	if _, err := emit.Post(ctx, s.js, p); err != nil {
		s.log.Warn("post to the ops conversation", "error", err)
	}
}
