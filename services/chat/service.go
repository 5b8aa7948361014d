package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/kit/jobs"
	"github.com/switchboard-ops/switchboard/services/chat/console"
	"github.com/switchboard-ops/switchboard/services/chat/route"
	"github.com/switchboard-ops/switchboard/services/chat/slack"
)

// Config is the chat service's configuration (the "chat" key).
type Config struct {
	// Prefixes that address the bot at the start of a message ("sb:"). They
	// are stripped; in the console and the CLI every message is a command.
	Prefixes []string `yaml:"prefixes"`
	// Aliases: name → command template ("addtolb": "lb add {host} {backend}").
	Aliases map[string]string `yaml:"aliases"`
	// RBAC: roles, grants, default roles.
	RBAC RBACConfig `yaml:"rbac"`
	// ConfirmTTL is how long a "confirm <code>" stays valid.
	ConfirmTTL time.Duration `yaml:"confirm_ttl"`
	// DispatchTimeout bounds the wait for a service's acknowledgement.
	DispatchTimeout time.Duration `yaml:"dispatch_timeout"`
	// DiscoveryInterval is how often the registry asks services for their
	// commands (an unknown command also triggers a refresh).
	DiscoveryInterval time.Duration `yaml:"discovery_interval"`
	// Console is the web console; an empty addr turns it off.
	Console console.Config `yaml:"console"`
	// Slack is the Slack adapter; it runs when a bot token is set
	// (SB_CHAT_SLACK_BOT_TOKEN).
	Slack slack.Config `yaml:"slack"`
	// Route sends events from the EVENTS stream to channels: rules, one
	// thread per incident, digests when they come faster than a channel takes.
	Route route.Config `yaml:"route"`
	// Bridges: the programs that hand messages to the chat over NATS
	// (sb.chat.in.<bridge>) → the identities (id globs) each may speak for.
	// NATS permissions bind a bridge's subject to one NATS user, so a holder
	// of the CLI's credentials can be "cli:ana" but never an admin's Slack
	// id. Only a bridge allowed "*" passes e-mail and groups on: elsewhere
	// they are the sender's claim, and RBAC grants by them would be forged.
	Bridges map[string][]string `yaml:"bridges"`
}

// DefaultBridges: the CLI speaks for cli:* people, the watcher for
// automation, and the deployer for the person whose command it carries on
// (a host retire drains through the chat as that person, who needs the
// right to drain).
func DefaultBridges() map[string][]string {
	return map[string][]string{
		"cli":      {"cli:*"},
		"watcher":  {"automation:*"},
		"deployer": {"*"},
	}
}

// DefaultConfig is the configuration of a fresh all-in-one switchboard.
func DefaultConfig() Config {
	return Config{
		Prefixes:          []string{"sb:", "@switchboard"},
		RBAC:              DefaultRBAC(),
		ConfirmTTL:        5 * time.Minute,
		DispatchTimeout:   5 * time.Second,
		DiscoveryInterval: 10 * time.Second,
		Console:           console.DefaultConfig(),
		Slack:             slack.DefaultConfig(),
		Route:             route.DefaultConfig(),
		Bridges:           DefaultBridges(),
	}
}

// Validate names the first wrong key.
func (c Config) Validate() error {
	if err := c.RBAC.Validate(); err != nil {
		return err
	}
	if _, err := parseAliases(c.Aliases); err != nil {
		return err
	}
	if c.ConfirmTTL < 10*time.Second {
		return fmt.Errorf("chat.confirm_ttl: %v is too short (at least 10s)", c.ConfirmTTL)
	}
	if c.DispatchTimeout <= 0 {
		return errors.New("chat.dispatch_timeout: must be positive")
	}
	if c.DiscoveryInterval < time.Second {
		return fmt.Errorf("chat.discovery_interval: %v is too short (at least 1s)", c.DiscoveryInterval)
	}
	if c.Console.Addr != "" {
		if err := c.Console.Validate(); err != nil {
			return fmt.Errorf("chat.console: %w", err)
		}
	}
	if err := c.Route.Validate(); err != nil {
		return fmt.Errorf("chat.%w", err)
	}
	for b, ids := range c.Bridges {
		if wire.Token(b) != b {
			return fmt.Errorf("chat.bridges.%s: a bridge name is one subject token (letters, digits, - and _)", b)
		}
		if len(ids) == 0 {
			return fmt.Errorf("chat.bridges.%s: list the identities it may speak for (\"cli:*\"), or remove it", b)
		}
		for _, p := range ids {
			if _, err := path.Match(p, ""); err != nil {
				return fmt.Errorf("chat.bridges.%s: bad pattern %q: %w", b, p, err)
			}
		}
	}
	return c.Slack.Validate()
}

// Deps are what the chat service needs from its host process.
type Deps struct {
	NC  *nats.Conn
	Log *slog.Logger
	// Tracing provider; none when nil.
	Tracing trace.TracerProvider
	// Meter for metrics; none when nil.
	Meter metric.Meter
	// Instance id of this replica; random when empty.
	Instance string
	// Replicas of the chat's own buckets (nats.replicas).
	Replicas int
}

// Service is one replica of the chat core.
type Service struct {
	cfg      Config
	baseLog  *slog.Logger
	log      *slog.Logger
	tracer   trace.Tracer
	tracing  trace.TracerProvider
	meter    metric.Meter
	messages metric.Int64Counter
	nc       *nats.Conn
	js       jetstream.JetStream
	jobs     *jobs.Store
	confirms jetstream.KeyValue
	reg      *registry
	aliases  map[string]alias
	builtins map[string]builtin
	instance string
	replicas int // of the chat's own buckets

	mu      sync.Mutex
	sys     *command.Server
	bridge  *nats.Subscription
	console *console.Console
	slack   *slack.Adapter
	router  *route.Router
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	sem     chan struct{}
	egress  []*egress

	inv *inventory.Cache // hosts' environments, for roles limited to some
}

// BucketConfirm holds pending confirmations, one key per code.
const BucketConfirm = "sb_confirm"

// New prepares a chat replica; Start makes it serve.
func New(ctx context.Context, cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Tracing == nil {
		d.Tracing = noop.NewTracerProvider()
	}
	if d.Instance == "" {
		d.Instance = emit.NewID()[:12]
	}
	if d.Meter == nil {
		d.Meter = metricnoop.NewMeterProvider().Meter("")
	}
	js, err := jetstream.New(d.NC)
	if err != nil {
		return nil, fmt.Errorf("chat: jetstream: %w", err)
	}
	store, err := jobs.Open(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	confirms, err := bus.EnsureBucket(ctx, js, d.Replicas, jetstream.KeyValueConfig{
		Bucket:      BucketConfirm,
		Description: "Commands waiting for \"confirm <code>\".",
		TTL:         cfg.ConfirmTTL,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	router, err := route.New(ctx, js, cfg.Route, route.Options{Log: d.Log.With("service", "chat"), Replicas: d.Replicas})
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	invKV, err := inventory.Bucket(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	aliases, _ := parseAliases(cfg.Aliases)
	s := &Service{
		cfg:      cfg,
		baseLog:  d.Log,
		log:      d.Log.With("service", "chat", "instance", d.Instance),
		tracer:   d.Tracing.Tracer("switchboard/chat"),
		tracing:  d.Tracing,
		meter:    d.Meter,
		nc:       d.NC,
		js:       js,
		jobs:     store,
		confirms: confirms,
		reg:      newRegistry(d.NC, d.Log.With("service", "chat")),
		aliases:  aliases,
		instance: d.Instance,
		replicas: d.Replicas,
		sem:      make(chan struct{}, 512),
		router:   router,
		inv:      inventory.NewCache(invKV),
	}
	s.messages, _ = d.Meter.Int64Counter("sb.chat.messages", metric.WithDescription("Messages handled by the chat ingress, by adapter and verdict."))
	s.builtins = s.builtinCommands()
	for _, b := range s.builtins {
		s.reg.add(b.spec)
	}
	if len(cfg.RBAC.Grants) == 0 && len(cfg.RBAC.DefaultRoles) > 0 {
		s.log.Warn("rbac: no grants configured; every identity gets the default roles", "default_roles", cfg.RBAC.DefaultRoles)
	}
	return s, nil
}

// Start serves the sys commands (ping), the bridges on sb.chat.in.<bridge>, the
// discovery loop and, when configured, the web console on l (nil: listen on
// cfg.Console.Addr).
func (s *Service) Start(ctx context.Context, l net.Listener) error {
	sys, err := command.Serve(ctx, s.nc, s.sysCommands(), command.Options{
		Service:     "sys",
		Description: "Switchboard's own commands: ping.",
		Instance:    s.instance,
		Log:         s.baseLog,
		Tracing:     s.tracing,
		Meter:       s.meter,
	})
	if err != nil {
		return fmt.Errorf("chat: serve sys commands: %w", err)
	}
	s.sys = sys
	bridge, err := s.nc.QueueSubscribe(wire.SubjectChatInAll, "chat", s.onChatIn)
	if err != nil {
		return fmt.Errorf("chat: subscribe %s: %w", wire.SubjectChatInAll, err)
	}
	s.bridge = bridge
	if err := s.router.Start(ctx); err != nil {
		return fmt.Errorf("chat: %w", err)
	}
	if err := s.reg.refresh(ctx); err != nil {
		s.log.Warn("initial command discovery", "error", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go s.discover(rctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.inv.Run(rctx)
	}()
	if s.cfg.Console.Addr != "" {
		c, err := console.New(s.cfg.Console, s, s.js, s.baseLog.With("service", "chat", "adapter", "console"))
		if err != nil {
			return fmt.Errorf("chat: console: %w", err)
		}
		if l == nil {
			l, err = net.Listen("tcp", s.cfg.Console.Addr)
			if err != nil {
				return fmt.Errorf("chat: console: listen on %s: %w", s.cfg.Console.Addr, err)
			}
		}
		s.console = c
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := c.Serve(rctx, l); err != nil {
				s.log.Error("console stopped", "error", err)
			}
		}()
	}
	if s.cfg.Slack.Enabled() {
		if err := s.startSlack(ctx, nil); err != nil {
			return err
		}
	}
	return nil
}

// startSlack connects the Slack adapter (events mode serves on l, or
// listens on chat.slack.events_addr when l is nil) and delivers its posts
// through the shared egress.
func (s *Service) startSlack(ctx context.Context, l net.Listener) error {
	// The shared post-id → ts bucket lets any replica thread a post under
	// one another replica delivered (an incident's later events).
	a, err := slack.New(s.cfg.Slack, s, s.baseLog.With("service", "chat"), slack.WithJetStream(s.js, s.replicas))
	if err != nil {
		return fmt.Errorf("chat: slack: %w", err)
	}
	if err := a.Start(ctx, l); err != nil {
		return fmt.Errorf("chat: %w", err)
	}
	if err := s.AddAdapter(ctx, a, EgressOptions{}); err != nil {
		a.Stop(ctx)
		return fmt.Errorf("chat: slack: %w", err)
	}
	s.mu.Lock()
	s.slack = a
	s.mu.Unlock()
	return nil
}

// AddAdapter starts delivering the posts addressed to an adapter through
// the shared durable egress. The web console needs none: every replica
// streams the console's posts to its own browsers.
func (s *Service) AddAdapter(ctx context.Context, a Adapter, o EgressOptions) error {
	e, err := startEgress(ctx, s.js, a, o, s.baseLog.With("service", "chat"), s.tracer)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.egress = append(s.egress, e)
	s.mu.Unlock()
	return nil
}

// Stop ends everything Start began.
func (s *Service) Stop(ctx context.Context) {
	if s.bridge != nil {
		s.bridge.Drain()
	}
	s.mu.Lock()
	for _, e := range s.egress {
		e.stop()
	}
	s.egress = nil
	a := s.slack
	s.slack = nil
	s.mu.Unlock()
	if a != nil {
		a.Stop(ctx)
	}
	s.router.Stop(ctx)
	if s.cancel != nil {
		s.cancel()
	}
	if s.sys != nil {
		s.sys.Stop(ctx)
	}
	s.wg.Wait()
}

func (s *Service) discover(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.DiscoveryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := s.reg.refresh(rctx); err != nil {
				s.log.Warn("command discovery", "error", err)
			}
			cancel()
		}
	}
}

// onChatIn is the CLI bridge: remote adapters send a ChatMessage and get
// the ingress's ChatReply. Each message is handled in its own goroutine
// (bounded), because a subscription delivers one message at a time.
func (s *Service) onChatIn(m *nats.Msg) {
	s.sem <- struct{}{}
	s.wg.Add(1)
	go func() {
		defer func() {
			<-s.sem
			s.wg.Done()
			if p := recover(); p != nil {
				s.log.Error("panic in chat bridge", "panic", p, "stack", string(debug.Stack()))
			}
		}()
		var msg chatv1.ChatMessage
		var reply *chatv1.ChatReply
		bridge := strings.TrimPrefix(m.Subject, wire.SubjectChatIn+".")
		if err := wire.Unmarshal(m.Data, &msg); err != nil {
			reply = &chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_INVALID, Message: "the message could not be decoded: " + err.Error(), Final: true}
		} else if refusal := s.checkBridge(bridge, &msg); refusal != "" {
			s.log.Warn("chat bridge: message refused", "bridge", bridge, "identity", msg.GetAuthor().GetId(), "reason", refusal)
			rec := &auditv1.Record{Stage: auditv1.Stage_STAGE_DECISION, Identity: msg.GetAuthor(), Conversation: msg.GetConversation(),
				Raw: msg.GetText(), Outcome: "denied", Detail: refusal, Service: "chat", Instance: s.instance}
			actx, cancel := context.WithTimeout(context.Background(), s.cfg.DispatchTimeout+5*time.Second)
			if _, err := emit.Audit(actx, s.js, rec); err != nil {
				s.log.Error("write audit record", "error", err)
			}
			cancel()
			reply = &chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_DENIED, Message: refusal, Final: true}
		} else {
			ctx := extract(context.Background(), m.Header)
			ctx, cancel := context.WithTimeout(ctx, s.cfg.DispatchTimeout+5*time.Second)
			reply = s.handle(ctx, &msg, bridge)
			cancel()
		}
		data, err := wire.Marshal(reply)
		if err == nil {
			err = m.Respond(data)
		}
		if err != nil {
			s.log.Warn("answer on chat bridge", "error", err)
		}
	}()
}

// Discover asks every service for its commands now, rather than at the next
// discovery interval: the all-in-one binary calls it once every service has
// started, so the first command typed is known.
func (s *Service) Discover(ctx context.Context) error {
	return s.reg.refresh(ctx)
}

// hostEnv looks hosts up in the inventory. Without one (none published, or
// the bus unavailable) every host is unknown: roles limited to environments
// are then refused, the others unaffected.
func (s *Service) hostEnv(ctx context.Context) hostEnv {
	return func(host string) (string, bool) {
		snap, err := s.inv.Get(ctx)
		if err != nil {
			return "", false
		}
		h := snap.Host(host)
		if h == nil {
			return "", false
		}
		return h.GetEnvironment(), true
	}
}

// checkBridge says why a bridge may not send msg as its author, or "". It
// drops the e-mail and groups a bridge that is not trusted with every
// identity claims, so RBAC sees only the id the bridge may speak for.
func (s *Service) checkBridge(bridge string, msg *chatv1.ChatMessage) string {
	ids, ok := s.cfg.Bridges[bridge]
	if !ok {
		return fmt.Sprintf("%q is not a bridge this chat knows (chat.bridges)", bridge)
	}
	who := msg.GetAuthor().GetId()
	if !matchesAny(ids, who) {
		return fmt.Sprintf("the %s bridge may not speak for %q (it may for %s; chat.bridges)", bridge, who, strings.Join(ids, ", "))
	}
	if !slices.Contains(ids, "*") && msg.GetAuthor() != nil {
		msg.Author.Email, msg.Author.Groups = "", nil
	}
	return ""
}

// stripPrefix removes a leading bot address ("sb:", "@switchboard").
func (s *Service) stripPrefix(text string) string {
	t := strings.TrimSpace(text)
	for _, p := range s.cfg.Prefixes {
		if len(t) >= len(p) && strings.EqualFold(t[:len(p)], p) {
			return strings.TrimSpace(t[len(p):])
		}
	}
	return t
}
