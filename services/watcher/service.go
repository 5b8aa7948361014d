// Package watcher is the watcher service: it reads canary metrics of every
// host of a load balancer backend from Graphite, finds the hosts that stopped
// receiving their canary traffic, says so in the ops channel, and — for the
// checks someone switched to enforce — sends the same `lb remove` a person
// would, under its own identity, within safety limits.
//
// One replica at a time evaluates (a lease in KV sb_watcher); every decision
// is recorded in KV before it is said or done, so a replica that dies
// mid-cycle leaves nothing lost and nothing to be done twice.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/kit/jobs"
	"github.com/switchboard-ops/switchboard/services/watcher/graphite"
)

// Renderer is what the watcher needs from Graphite. *graphite.Client
// implements it.
type Renderer interface {
	// Render fetches the series of every target of q, in as few requests
	// as it can.
	Render(ctx context.Context, q graphite.Query) ([]graphite.Series, error)
}

var _ Renderer = (*graphite.Client)(nil)

// Deps are what the watcher needs from its host process.
type Deps struct {
	NC  *nats.Conn
	Log *slog.Logger
	// Tracing provider; none when nil.
	Tracing trace.TracerProvider
	// Meter for metrics; none when nil.
	Meter metric.Meter
	// Replicas of the sb_watcher bucket (1 on one server, 3 on a cluster).
	Replicas int
	// DataDir is unused: all state is in KV, so any replica can lead.
	DataDir string
	// Instance id of this replica; random when empty.
	Instance string
	// Now is the clock (tests); time.Now when nil.
	Now func() time.Time
	// Graphite replaces the render client built from the config (tests).
	Graphite Renderer
}

// Service is one watcher replica.
type Service struct {
	cfg      Config
	checks   map[string]Check
	checkKey map[string]string // check name → "watcher.checks[i]", for errors
	log      *slog.Logger
	baseLog  *slog.Logger
	tracing  trace.TracerProvider
	meter    metric.Meter
	wouldAct metric.Int64Counter
	nc       *nats.Conn
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	jobs     *jobs.Store
	invKV    jetstream.KeyValue
	inv      atomic.Pointer[inventory.Snapshot]
	gr       Renderer
	now      func() time.Time
	instance string
	lease    *lease

	mu        sync.Mutex
	srv       *command.Server
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	inflight  map[string]bool // message ids being followed by this replica
	cycleMu   map[string]*sync.Mutex
	backendMu map[string]*sync.Mutex // by scope.key()
	lbKV      jetstream.KeyValue     // sb_lb_desired, once it could be opened
	stopCh    chan struct{}
}

// New prepares a watcher replica; Start makes it work.
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
	if d.Meter == nil {
		d.Meter = metricnoop.NewMeterProvider().Meter("")
	}
	if d.Instance == "" {
		d.Instance = emit.NewID()[:12]
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Graphite == nil {
		g := cfg.Graphite
		d.Graphite = graphite.NewClient(g.URL, graphite.WithTimeout(g.Timeout), graphite.WithMaxBody(g.MaxBody),
			graphite.WithMaxTargets(g.MaxTargets), graphite.WithParallel(g.Parallel))
	}
	js, err := jetstream.New(d.NC)
	if err != nil {
		return nil, fmt.Errorf("watcher: jetstream: %w", err)
	}
	kv, err := bus.EnsureBucket(ctx, js, d.Replicas, jetstream.KeyValueConfig{
		Bucket:      wire.BucketWatcher,
		Description: "The watcher's modes, mutes, per-check state and leader lease.",
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("watcher: declare bucket %s: %w", wire.BucketWatcher, err)
	}
	store, err := jobs.Open(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	invKV, err := inventory.Bucket(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	s := &Service{
		cfg:       cfg,
		checks:    map[string]Check{},
		checkKey:  map[string]string{},
		baseLog:   d.Log,
		log:       d.Log.With("service", "watcher", "instance", d.Instance),
		tracing:   d.Tracing,
		meter:     d.Meter,
		nc:        d.NC,
		js:        js,
		kv:        kv,
		jobs:      store,
		invKV:     invKV,
		gr:        d.Graphite,
		now:       d.Now,
		instance:  d.Instance,
		inflight:  map[string]bool{},
		cycleMu:   map[string]*sync.Mutex{},
		backendMu: map[string]*sync.Mutex{},
	}
	for i, ch := range cfg.Checks {
		s.checks[ch.Name] = ch
		s.checkKey[ch.Name] = fmt.Sprintf("watcher.checks[%d]", i)
		s.cycleMu[ch.Name] = &sync.Mutex{}
	}
	s.lease = &lease{kv: kv, me: d.Instance, ttl: cfg.Lease, now: d.Now}
	s.wouldAct, _ = d.Meter.Int64Counter("sb.watcher.would_act",
		metric.WithDescription("Times the watcher would have removed a host (advisory mode), by check and backend."))
	return s, nil
}

// Start serves the watcher commands and starts the leader election and the
// evaluation loops.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return errors.New("watcher: already started")
	}
	srv, err := command.Serve(ctx, s.nc, s.Commands(), command.Options{
		Service:     "watcher",
		Description: "Canary checks over Graphite: status, modes, mutes and explanations.",
		Instance:    s.instance,
		Log:         s.baseLog,
		Tracing:     s.tracing,
		Meter:       s.meter,
	})
	if err != nil {
		return fmt.Errorf("watcher: serve commands: %w", err)
	}
	s.srv = srv
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.goRun(func() { s.watchInventory(run) })
	s.goRun(func() { s.lease.run(run, s.log) })
	for _, ch := range s.cfg.Checks {
		s.goRun(func() { s.loop(run, ch) })
	}
	return nil
}

// Stop ends the loops, gives up the lease so another replica takes over at
// once, and stops serving commands.
func (s *Service) Stop(ctx context.Context) {
	s.mu.Lock()
	cancel, srv := s.cancel, s.srv
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.stopping()
	s.mu.Lock()
	select {
	case <-s.stopCh:
	default:
		close(s.stopCh)
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.lease.release(ctx)
	if srv != nil {
		srv.Stop(ctx)
	}
}

func (s *Service) goRun(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// watchInventory keeps the latest inventory snapshot.
func (s *Service) watchInventory(ctx context.Context) {
	for ctx.Err() == nil {
		err := inventory.Watch(ctx, s.invKV, func(snap *inventory.Snapshot) { s.inv.Store(snap) })
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("watch inventory; retrying", "error", err)
		sleep(ctx, 2*time.Second)
	}
}

// snapshot is the latest inventory, loading it when the watch has not
// delivered one yet.
func (s *Service) snapshot(ctx context.Context) (*inventory.Snapshot, error) {
	if snap := s.inv.Load(); snap != nil {
		return snap, nil
	}
	snap, err := inventory.Load(ctx, s.invKV)
	if err != nil {
		return nil, err
	}
	s.inv.CompareAndSwap(nil, snap)
	return snap, nil
}

// loop evaluates a check every interval while this replica leads.
func (s *Service) loop(ctx context.Context, ch Check) {
	t := time.NewTicker(ch.Interval)
	defer t.Stop()
	for {
		if s.lease.held() {
			cctx, cancel := context.WithTimeout(ctx, max(ch.Interval, 30*time.Second))
			if err := s.Cycle(cctx, ch.Name); err != nil && ctx.Err() == nil {
				s.log.Error("evaluation cycle", "check", ch.Name, "error", err)
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
