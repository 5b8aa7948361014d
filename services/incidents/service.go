package incidents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/services/incidents/pd"
	"github.com/switchboard-ops/switchboard/services/incidents/statuspage"
)

// BucketSeen remembers the ids of webhook deliveries already published, for
// longer than PagerDuty retries (48 hours): JetStream's own duplicate window
// is 2 minutes.
const BucketSeen = "sb_incidents_seen"

// Config is the incidents service's configuration (the "incidents" key).
type Config struct {
	// HTTP is the listener for webhooks and hooks.
	HTTP HTTPConfig `yaml:"http"`
	// CommandTimeout bounds each run of a command from its start, retries
	// and Retry-After waits included. A request's Deadline only bounds when
	// the run may start.
	CommandTimeout time.Duration `yaml:"command_timeout"`
	// SeenTTL is how long a delivery id is remembered (at least 48h).
	SeenTTL time.Duration `yaml:"seen_ttl"`
	// PagerDuty: REST API, webhooks, services and schedules by name.
	PagerDuty PagerDutyConfig `yaml:"pagerduty"`
	// StatusPage: the public status page (Atlassian Statuspage).
	StatusPage StatusPageConfig `yaml:"statuspage"`
	// Hooks: generic inbound hooks by source.
	Hooks HooksConfig `yaml:"hooks"`
}

// HTTPConfig is the service's HTTP listener.
type HTTPConfig struct {
	// Addr to listen on; "" turns webhooks and hooks off.
	Addr string `yaml:"addr"`
	// MaxBody is the largest body accepted, in bytes (413 above it).
	MaxBody int64 `yaml:"max_body"`
	// ReadHeaderTimeout and ReadTimeout bound slow clients.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	// PublishTimeout bounds the publish of one delivery: PagerDuty gives
	// up on an answer after 5 seconds.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
}

// PagerDutyConfig says how to reach PagerDuty. Without a token the pager
// and incident commands are not served; without webhook secrets the
// webhook endpoint is not.
type PagerDutyConfig struct {
	// APIURL of the REST API (https://api.eu.pagerduty.com in the EU region).
	APIURL string `yaml:"api_url"`
	// EventsURL of the Events API v2.
	EventsURL string `yaml:"events_url"`
	// TokenFile holds a REST API token; Token may be set instead (tests).
	TokenFile string `yaml:"token_file"`
	Token     string `yaml:"-"`
	// From is the e-mail of the PagerDuty user that automation identities
	// act as (people act as themselves, by their chat e-mail).
	From string `yaml:"from"`
	// WebhookSecretFiles hold the secrets of webhook subscriptions; list
	// the old and the new secret while rotating.
	WebhookSecretFiles []string `yaml:"webhook_secret_files"`
	WebhookSecrets     []string `yaml:"-"`
	// Services that "pager trigger" may page, by the name people type.
	Services map[string]PagerService `yaml:"services"`
	// Schedules that "pager oncall" knows by name → schedule id.
	Schedules map[string]string `yaml:"schedules"`
}

// PagerService is one PagerDuty service "pager trigger" can page: by REST
// (POST /incidents on ID) or, with a routing key, through the Events API v2.
type PagerService struct {
	ID             string `yaml:"id"`
	RoutingKeyFile string `yaml:"routing_key_file"`
	RoutingKey     string `yaml:"-"`
}

// StatusPageConfig is one page of a status page provider. Without a page
// id the status commands are not served.
type StatusPageConfig struct {
	// Provider is a key of statusProviders: "statuspage" (Atlassian
	// Statuspage, the default) is the only one so far.
	Provider string `yaml:"provider"`
	// APIURL replaces the provider's own API address ("" keeps it).
	APIURL     string `yaml:"api_url"`
	PageID     string `yaml:"page_id"`
	APIKeyFile string `yaml:"api_key_file"`
	APIKey     string `yaml:"-"`
	// Components by the name people type → component id (optional;
	// components are also found by their name on the page).
	Components map[string]string `yaml:"components"`
}

// DefaultConfig listens on loopback and enables nothing that needs a secret.
func DefaultConfig() Config {
	return Config{
		HTTP: HTTPConfig{
			Addr:              "127.0.0.1:8087",
			MaxBody:           1 << 20,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			PublishTimeout:    3 * time.Second,
		},
		CommandTimeout: time.Minute,
		SeenTTL:        72 * time.Hour,
		PagerDuty: PagerDutyConfig{
			APIURL:    "https://api.pagerduty.com",
			EventsURL: "https://events.pagerduty.com",
		},
		StatusPage: StatusPageConfig{Provider: "statuspage"},
	}
}

// LogValue leaves secrets out.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("http", c.HTTP.Addr),
		slog.Bool("pagerduty", c.PagerDuty.enabled()),
		slog.Int("webhook_secrets", len(c.PagerDuty.WebhookSecretFiles)+len(c.PagerDuty.WebhookSecrets)),
		slog.Bool("statuspage", c.StatusPage.PageID != ""),
		slog.Int("hook_sources", len(c.Hooks.Sources)),
	)
}

func (p PagerDutyConfig) enabled() bool { return p.Token != "" || p.TokenFile != "" }

var pdID = regexp.MustCompile(`^P[A-Z0-9]{5,13}$`)

// Validate names the first wrong key.
func (c Config) Validate() error {
	if c.HTTP.Addr != "" {
		if _, _, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
			return fmt.Errorf("incidents.http.addr: %w", err)
		}
	}
	if c.HTTP.MaxBody < 1024 || c.HTTP.MaxBody > 64<<20 {
		return fmt.Errorf("incidents.http.max_body: %d bytes, want 1 KiB to 64 MiB", c.HTTP.MaxBody)
	}
	if c.HTTP.ReadHeaderTimeout <= 0 || c.HTTP.ReadTimeout <= 0 {
		return errors.New("incidents.http: read_header_timeout and read_timeout must be positive")
	}
	if c.HTTP.PublishTimeout <= 0 || c.HTTP.PublishTimeout > 4*time.Second {
		return fmt.Errorf("incidents.http.publish_timeout: %v, want up to 4s (PagerDuty waits 5s)", c.HTTP.PublishTimeout)
	}
	if c.CommandTimeout < time.Second {
		return fmt.Errorf("incidents.command_timeout: %v is too short", c.CommandTimeout)
	}
	if c.SeenTTL < 48*time.Hour {
		return fmt.Errorf("incidents.seen_ttl: %v is shorter than PagerDuty's 48h of retries", c.SeenTTL)
	}
	for name, svc := range c.PagerDuty.Services {
		if !pdID.MatchString(svc.ID) {
			return fmt.Errorf("incidents.pagerduty.services.%s.id: %q is not a PagerDuty id (PXXXXXX)", name, svc.ID)
		}
	}
	for name, id := range c.PagerDuty.Schedules {
		if !pdID.MatchString(id) {
			return fmt.Errorf("incidents.pagerduty.schedules.%s: %q is not a PagerDuty id (PXXXXXX)", name, id)
		}
	}
	if c.PagerDuty.From != "" && !strings.Contains(c.PagerDuty.From, "@") {
		return fmt.Errorf("incidents.pagerduty.from: %q is not an e-mail address", c.PagerDuty.From)
	}
	if _, ok := statusProviders[c.StatusPage.Provider]; !ok {
		return fmt.Errorf("incidents.statuspage.provider: %q is not a status page provider; known: %s", c.StatusPage.Provider, strings.Join(sortedNames(statusProviders), ", "))
	}
	if c.StatusPage.PageID != "" && c.StatusPage.APIKey == "" && c.StatusPage.APIKeyFile == "" {
		return errors.New("incidents.statuspage.api_key_file: required with page_id")
	}
	return c.Hooks.validate()
}

// load reads every secret file into its field.
func (c *Config) load() error {
	read := func(key, path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("%s: %s is empty", key, path)
		}
		return s, nil
	}
	var err error
	if c.PagerDuty.Token == "" && c.PagerDuty.TokenFile != "" {
		if c.PagerDuty.Token, err = read("incidents.pagerduty.token_file", c.PagerDuty.TokenFile); err != nil {
			return err
		}
	}
	for i, f := range c.PagerDuty.WebhookSecretFiles {
		s, err := read(fmt.Sprintf("incidents.pagerduty.webhook_secret_files[%d]", i), f)
		if err != nil {
			return err
		}
		c.PagerDuty.WebhookSecrets = append(c.PagerDuty.WebhookSecrets, s)
	}
	services := map[string]PagerService{}
	for name, svc := range c.PagerDuty.Services {
		if svc.RoutingKey == "" && svc.RoutingKeyFile != "" {
			if svc.RoutingKey, err = read("incidents.pagerduty.services."+name+".routing_key_file", svc.RoutingKeyFile); err != nil {
				return err
			}
		}
		services[name] = svc
	}
	c.PagerDuty.Services = services
	if c.StatusPage.PageID != "" && c.StatusPage.APIKey == "" {
		if c.StatusPage.APIKey, err = statuspage.ReadKey(c.StatusPage.APIKeyFile); err != nil {
			return fmt.Errorf("incidents.statuspage.api_key_file: %w", err)
		}
	}
	return c.Hooks.load()
}

// Deps are what the service needs from its host process.
type Deps struct {
	NC  *nats.Conn
	Log *slog.Logger
	// Tracing provider; none when nil.
	Tracing trace.TracerProvider
	// Meter for metrics; none when nil.
	Meter metric.Meter
	// Replicas of the service's bucket (3 on a cluster).
	Replicas int
	// DataDir is unused: the service keeps its state in NATS.
	DataDir string
}

// Service is one replica of the incidents service.
type Service struct {
	cfg    Config
	log    *slog.Logger
	deps   Deps
	tracer trace.Tracer
	js     jetstream.JetStream
	seen   jetstream.KeyValue
	pager  Pager      // nil without a PagerDuty token
	status StatusPage // nil without a status page
	hooks  map[string]*hookSource
	users  *userCache

	deliveries metric.Int64Counter

	mu   sync.Mutex
	cmds *command.Server
	srv  *http.Server
	wg   sync.WaitGroup
}

// New prepares a replica: it reads the secret files, declares the
// sb_incidents_seen bucket and builds the PagerDuty and status page clients.
// Start makes it serve.
func New(ctx context.Context, cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.load(); err != nil {
		return nil, err
	}
	if d.NC == nil {
		return nil, errors.New("incidents: no NATS connection")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Tracing == nil {
		d.Tracing = noop.NewTracerProvider()
	}
	if d.Meter == nil {
		d.Meter = metricnoop.NewMeterProvider().Meter("")
	}
	js, err := jetstream.New(d.NC)
	if err != nil {
		return nil, fmt.Errorf("incidents: jetstream: %w", err)
	}
	seen, err := bus.EnsureBucket(ctx, js, d.Replicas, jetstream.KeyValueConfig{
		Bucket:      BucketSeen,
		Description: "Webhook and hook delivery ids already published (PagerDuty retries for 48h).",
		TTL:         cfg.SeenTTL,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("incidents: %w", err)
	}
	hooks, err := cfg.Hooks.compile()
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg:    cfg,
		log:    d.Log.With("service", "incidents"),
		deps:   d,
		tracer: d.Tracing.Tracer("switchboard/incidents"),
		js:     js,
		seen:   seen,
		hooks:  hooks,
		users:  newUserCache(10 * time.Minute),
	}
	if cfg.PagerDuty.enabled() {
		s.pager = pd.New(cfg.PagerDuty.Token, pd.WithAPIEndpoint(cfg.PagerDuty.APIURL), pd.WithEventsEndpoint(cfg.PagerDuty.EventsURL))
	}
	if cfg.StatusPage.PageID != "" {
		s.status = statusProviders[cfg.StatusPage.Provider](cfg.StatusPage)
	}
	s.deliveries, _ = d.Meter.Int64Counter("sb.incidents.deliveries", metric.WithDescription("Webhook and hook deliveries by source and outcome."))
	return s, nil
}

// Commands returns the commands of the configured backends.
func (s *Service) Commands() []command.Command {
	var cmds []command.Command
	if s.pager != nil {
		cmds = append(cmds, s.pagerCommands()...)
		cmds = append(cmds, s.incidentCommands()...)
	}
	if s.status != nil {
		cmds = append(cmds, s.statusCommands()...)
	}
	return cmds
}

// Start serves the commands and, on l (nil: listen on cfg.HTTP.Addr, if
// any), the webhook and hook endpoints.
func (s *Service) Start(ctx context.Context, l net.Listener) error {
	if cmds := s.Commands(); len(cmds) > 0 {
		srv, err := command.Serve(ctx, s.deps.NC, cmds, command.Options{
			Service:     "incidents",
			Description: "PagerDuty, status page and inbound hooks.",
			Log:         s.deps.Log,
			Tracing:     s.deps.Tracing,
			Meter:       s.deps.Meter,
		})
		if err != nil {
			return fmt.Errorf("incidents: serve commands: %w", err)
		}
		s.mu.Lock()
		s.cmds = srv
		s.mu.Unlock()
	}
	if l == nil && s.cfg.HTTP.Addr != "" {
		var err error
		if l, err = net.Listen("tcp", s.cfg.HTTP.Addr); err != nil {
			s.Stop(ctx)
			return fmt.Errorf("incidents: listen on %s: %w", s.cfg.HTTP.Addr, err)
		}
	}
	if l != nil {
		srv := &http.Server{
			Handler:           s.Handler(),
			ReadHeaderTimeout: s.cfg.HTTP.ReadHeaderTimeout,
			ReadTimeout:       s.cfg.HTTP.ReadTimeout,
			WriteTimeout:      s.cfg.HTTP.ReadTimeout + s.cfg.HTTP.PublishTimeout,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		}
		s.mu.Lock()
		s.srv = srv
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("http server stopped", "error", err)
			}
		}()
		s.log.Info("listening for webhooks and hooks", "addr", l.Addr().String(), "pagerduty", len(s.cfg.PagerDuty.WebhookSecrets) > 0, "hook_sources", sortedNames(s.hooks))
	}
	return nil
}

// Stop ends what Start began: the HTTP server finishes the deliveries in
// flight, running commands get the command server's grace period.
func (s *Service) Stop(ctx context.Context) {
	s.mu.Lock()
	srv, cmds := s.srv, s.cmds
	s.srv, s.cmds = nil, nil
	s.mu.Unlock()
	if srv != nil {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		cancel()
	}
	if cmds != nil {
		cmds.Stop(ctx)
	}
	s.wg.Wait()
}

// Handler is the HTTP API: POST /webhooks/pagerduty, POST /hooks/{source},
// GET /healthz.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	if len(s.cfg.PagerDuty.WebhookSecrets) > 0 {
		mux.HandleFunc("POST /webhooks/pagerduty", s.pagerdutyWebhook)
	}
	mux.HandleFunc("POST /hooks/{source}", s.hook)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s.deps.NC.Status() != nats.CONNECTED {
			http.Error(w, "nats "+s.deps.NC.Status().String(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
