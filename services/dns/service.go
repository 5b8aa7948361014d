package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/services/dns/rfc2136"
	"github.com/switchboard-ops/switchboard/services/dns/zone"
	"github.com/switchboard-ops/switchboard/services/dns/zonefile"
)

// ServiceName is the <service> of sb.cmd.dns.<verb>.
const ServiceName = "dns"

// Provider is what the dns service needs from a DNS backend. rfc2136 and
// zonefile implement it; every implementation passes providertest.
type Provider interface {
	// Read returns the zone's records (without the SOA) and its state.
	Read(ctx context.Context, zone string) (*zone.Snapshot, error)
	// State returns the zone's current state token, cheaply.
	State(ctx context.Context, zone string) (string, error)
	// Apply applies the changes if the zone is still at state and every
	// changed RRset is still what the change says; one result per change.
	Apply(ctx context.Context, zone, state string, changes []zone.Change) ([]zone.Result, error)
}

var (
	_ Provider = (*rfc2136.Client)(nil)
	_ Provider = (*zonefile.Provider)(nil)
)

// Config is the dns service's configuration (the "dns" key).
type Config struct {
	// Provider is "zonefile" (default) or "rfc2136".
	Provider string         `yaml:"provider"`
	RFC2136  RFC2136Config  `yaml:"rfc2136"`
	ZoneFile ZoneFileConfig `yaml:"zonefile"`
	// Zones the service manages, forward and reverse ("example.com.",
	// "2.0.192.in-addr.arpa.").
	Zones []string `yaml:"zones"`
	// Rules make the desired records from the inventory.
	Rules []Rule `yaml:"rules"`
	// DefaultTTL of records whose rule sets none, and of ownership markers.
	DefaultTTL uint32 `yaml:"default_ttl"`
	// Owner is written in the ownership TXT records; two switchboards that
	// share a zone must use different owners.
	Owner string `yaml:"owner"`
	// OwnedNames are glob patterns ("*.hosts.example.com.") of names that
	// switchboard owns without a marker, to adopt records made before it.
	OwnedNames []string `yaml:"owned_names"`
	// PlanTTL is how long a plan can be applied (and the bucket's TTL).
	PlanTTL time.Duration `yaml:"plan_ttl"`
	// FourEyes refuses an apply by the person who made the plan.
	FourEyes bool `yaml:"four_eyes"`
	// AutoPlan makes a plan on every inventory change and posts it.
	AutoPlan AutoPlanConfig `yaml:"auto_plan"`
	// Timeout bounds one plan or apply's DNS work.
	Timeout time.Duration `yaml:"timeout"`
}

// RFC2136Config is a primary server that allows AXFR and UPDATE for a key.
type RFC2136Config struct {
	// Server is host:port of the primary.
	Server string `yaml:"server"`
	// TSIGKey is the key name, TSIGAlgorithm its algorithm (hmac-sha256).
	TSIGKey       string `yaml:"tsig_key"`
	TSIGAlgorithm string `yaml:"tsig_algorithm"`
	// TSIGSecret is the base64 secret; set it with SB_DNS_RFC2136_TSIG_SECRET
	// or TSIGSecretFile, never in the file.
	TSIGSecret     string `yaml:"tsig_secret"`
	TSIGSecretFile string `yaml:"tsig_secret_file"`
	// Timeout of one exchange.
	Timeout time.Duration `yaml:"timeout"`
	// BatchSize is the most changes in one UPDATE message.
	BatchSize int `yaml:"batch_size"`
}

// ZoneFileConfig is a directory of BIND zone files.
type ZoneFileConfig struct {
	// Dir holds <zone>.zone files (default: <data dir>/dns/zones).
	Dir string `yaml:"dir"`
	// NameServer is named by the SOA and NS of zones the service creates.
	NameServer string `yaml:"name_server"`
}

// AutoPlanConfig says whether and where automatic plans are posted.
type AutoPlanConfig struct {
	Enabled bool   `yaml:"enabled"`
	Adapter string `yaml:"adapter"`
	Channel string `yaml:"channel"`
}

// DefaultConfig is the embedded default: zone files in the data dir
// (<data dir>/dns/zones), with example zones and rules made for the
// deployer's example inventory (services/deployer/enc/example.go: hosts
// named in example.com with addresses in 10.0.0.0/8), so that `dns plan`
// shows a real plan out of the box. Set zones and rules for your own
// inventory: a rule whose names fall outside the zones refuses every plan,
// saying which. Automatic plans are posted to the console's ops channel on
// every inventory change; applying one stays a person's decision.
func DefaultConfig() Config {
	return Config{
		Provider: "zonefile",
		RFC2136:  RFC2136Config{TSIGAlgorithm: "hmac-sha256", Timeout: 10 * time.Second, BatchSize: 500},
		ZoneFile: ZoneFileConfig{NameServer: "localhost."},
		Zones:    []string{"example.com.", "10.in-addr.arpa."},
		Rules: []Rule{
			// Every host by its own name, and the name back from its address.
			{Type: "A", Name: "{fqdn}."},
			{Type: "AAAA", Name: "{fqdn}."},
			{Type: "PTR", Target: "{fqdn}."},
			// A round-robin name per role and environment (web.production.example.com.).
			{Type: "A", Per: "role", Name: "{role}.{env}.example.com."},
			// A round-robin name per backend of production (www.example.com.):
			// staging hosts serve the same backends but must not answer for them.
			{Type: "A", Per: "backend", Name: "{backend}.example.com.", Environments: []string{"production"}, TTL: 60},
		},
		DefaultTTL: 300,
		Owner:      "switchboard",
		PlanTTL:    time.Hour,
		AutoPlan:   AutoPlanConfig{Enabled: true, Adapter: "console", Channel: "ops"},
		Timeout:    2 * time.Minute,
	}
}

// LogValue keeps the TSIG secret out of logs.
func (c Config) LogValue() slog.Value {
	r := c.RFC2136
	if r.TSIGSecret != "" {
		r.TSIGSecret = "REDACTED"
	}
	return slog.GroupValue(
		slog.String("provider", c.Provider), slog.Any("zones", c.Zones), slog.Int("rules", len(c.Rules)),
		slog.String("rfc2136.server", r.Server), slog.String("rfc2136.tsig_key", r.TSIGKey),
		slog.String("rfc2136.tsig_secret", r.TSIGSecret), slog.Duration("plan_ttl", c.PlanTTL),
	)
}

// Validate names the first wrong key.
func (c Config) Validate() error {
	switch c.Provider {
	case "zonefile":
	case "rfc2136":
		if c.RFC2136.Server == "" {
			return errors.New("dns.rfc2136.server: required")
		}
		if c.RFC2136.TSIGKey != "" && c.RFC2136.TSIGSecret == "" && c.RFC2136.TSIGSecretFile == "" {
			return errors.New("dns.rfc2136.tsig_secret: required with tsig_key (set SB_DNS_RFC2136_TSIG_SECRET or tsig_secret_file)")
		}
		if c.RFC2136.Timeout <= 0 {
			return errors.New("dns.rfc2136.timeout: must be positive")
		}
	default:
		return fmt.Errorf("dns.provider: %q is not zonefile or rfc2136", c.Provider)
	}
	for i, z := range c.Zones {
		if why := zone.NameProblem(zone.Canonical(z)); why != "" {
			return fmt.Errorf("dns.zones[%d]: %q: %s", i, z, why)
		}
	}
	for i, r := range c.Rules {
		if err := r.validate(i); err != nil {
			return err
		}
	}
	if len(c.Rules) > 0 && len(c.Zones) == 0 {
		return errors.New("dns.zones: required when there are rules")
	}
	if c.Owner == "" || strings.ContainsAny(c.Owner, "\",\\ ") {
		return fmt.Errorf("dns.owner: %q must be a non-empty word without quotes, commas or spaces", c.Owner)
	}
	if c.PlanTTL < time.Minute {
		return fmt.Errorf("dns.plan_ttl: %v is too short (at least 1m)", c.PlanTTL)
	}
	if c.Timeout <= 0 {
		return errors.New("dns.timeout: must be positive")
	}
	if c.AutoPlan.Enabled && (c.AutoPlan.Adapter == "" || c.AutoPlan.Channel == "") {
		return errors.New("dns.auto_plan: adapter and channel are required when enabled")
	}
	for i, p := range c.OwnedNames {
		if _, err := path.Match(p, "x"); err != nil {
			return fmt.Errorf("dns.owned_names[%d]: %q: %w", i, p, err)
		}
	}
	return nil
}

// Deps are what the dns service needs from its host process.
type Deps struct {
	NC      *nats.Conn
	Log     *slog.Logger
	Tracing trace.TracerProvider
	Meter   metric.Meter
	// Replicas of the plans bucket (1, or 3 on a cluster).
	Replicas int
	// DataDir is where the zone file provider keeps zones by default.
	DataDir string
	// Now is the clock (tests); time.Now when nil.
	Now func() time.Time
	// Lease of the replica; must match bus.StreamOptions.ReplicaLease
	// (tests shorten both). The default is bus.ReplicaLease.
	Lease time.Duration
	// WrapProvider, when set, wraps the configured provider (tests use it
	// to stop an apply halfway).
	WrapProvider func(Provider) Provider
}

// Service is one replica of the dns service.
type Service struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	js       jetstream.JetStream
	provider Provider
	zones    []string // canonical, sorted
	now      func() time.Time

	mu     sync.Mutex
	plans  *store
	invKV  jetstream.KeyValue
	srv    *command.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New prepares a dns replica; Start makes it serve.
func New(ctx context.Context, cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.NC == nil {
		return nil, errors.New("dns: a NATS connection is required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	js, err := jetstream.New(d.NC)
	if err != nil {
		return nil, fmt.Errorf("dns: jetstream: %w", err)
	}
	s := &Service{cfg: cfg, deps: d, log: d.Log.With("service", ServiceName), js: js, now: d.Now}
	for _, z := range cfg.Zones {
		s.zones = append(s.zones, zone.Canonical(z))
	}
	slices.Sort(s.zones)
	s.zones = slices.Compact(s.zones)
	p, err := s.newProvider()
	if err != nil {
		return nil, err
	}
	if d.WrapProvider != nil {
		p = d.WrapProvider(p)
	}
	s.provider = p
	return s, nil
}

func (s *Service) newProvider() (Provider, error) {
	switch s.cfg.Provider {
	case "rfc2136":
		r := s.cfg.RFC2136
		secret := r.TSIGSecret
		if secret == "" && r.TSIGSecretFile != "" {
			b, err := os.ReadFile(r.TSIGSecretFile)
			if err != nil {
				return nil, fmt.Errorf("dns.rfc2136.tsig_secret_file: %w", err)
			}
			secret = strings.TrimSpace(string(b))
		}
		opts := []rfc2136.Option{rfc2136.WithTimeout(r.Timeout), rfc2136.WithBatchSize(r.BatchSize)}
		if r.TSIGKey != "" {
			opts = append(opts, rfc2136.WithTSIG(r.TSIGKey, r.TSIGAlgorithm, secret))
		}
		return rfc2136.New(r.Server, opts...), nil
	default:
		dir := s.cfg.ZoneFile.Dir
		if dir == "" {
			if s.deps.DataDir == "" {
				return nil, errors.New("dns.zonefile.dir: required when the process has no data dir")
			}
			dir = filepath.Join(s.deps.DataDir, "dns", "zones")
		}
		return zonefile.New(dir, s.zones, zonefile.WithNameServer(s.cfg.ZoneFile.NameServer), zonefile.WithNow(s.now)), nil
	}
}

// Commands returns the dns commands; kit/command serves them as micro
// endpoints on sb.cmd.dns.<verb>.
func (s *Service) Commands() []command.Command {
	return []command.Command{
		{Spec: planSpec, Run: s.planCmd},
		{Spec: applySpec, Run: s.applyCmd},
		{Spec: showSpec, Run: s.showCmd},
		{Spec: plansSpec, Run: s.plansCmd},
	}
}

// Start declares the plans bucket, serves the commands and, when enabled,
// starts the automatic planner.
func (s *Service) Start(ctx context.Context) error {
	kv, err := bus.EnsureBucket(ctx, s.js, s.deps.Replicas, jetstream.KeyValueConfig{
		Bucket: wire.BucketDNSPlans, Description: "DNS plans by id (plan.<id>), kept until they expire.",
		TTL: s.cfg.PlanTTL, History: 1,
	})
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	inv, err := s.js.KeyValue(ctx, wire.BucketInventory)
	if err != nil {
		return fmt.Errorf("dns: open %s (bus.EnsureStreams declares it): %w", wire.BucketInventory, err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.plans, s.invKV, s.cancel = &store{kv: kv}, inv, cancel
	s.mu.Unlock()
	if s.cfg.AutoPlan.Enabled {
		if err := s.startAutoPlan(ctx, rctx); err != nil {
			cancel()
			return err
		}
	}
	srv, err := command.Serve(ctx, s.deps.NC, s.Commands(), command.Options{
		Service: ServiceName, Description: "DNS records from the inventory: plan, then apply.",
		Log: s.deps.Log, Tracing: s.deps.Tracing, Meter: s.deps.Meter, Lease: s.deps.Lease,
	})
	if err != nil {
		cancel()
		s.wg.Wait()
		return fmt.Errorf("dns: serve commands: %w", err)
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	s.log.Info("dns service started", "config", s.cfg)
	return nil
}

// Stop stops serving and waits for the automatic planner.
func (s *Service) Stop(ctx context.Context) {
	s.mu.Lock()
	srv, cancel := s.srv, s.cancel
	s.mu.Unlock()
	if srv != nil {
		srv.Stop(ctx)
	}
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
}
