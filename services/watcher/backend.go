package watcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/inventory"
)

// scope is what a check covers: its backend in one environment, and the
// active hosts of the backend there.
type scope struct {
	env     string
	backend string
	hosts   []string
}

// key names the backend in KV sb_watcher (its shared removals) and in the
// replica's backend locks.
func (sc scope) key() string { return "backend." + wire.Token(sc.env) + "." + wire.Token(sc.backend) }

// scopeError says why the inventory does not tell which hosts a check
// covers. The check evaluates nothing until the config or the inventory
// changes.
type scopeError struct {
	key     string // the config key to fix: watcher.checks[0].environment
	problem string
}

func (e *scopeError) Error() string { return e.key + ": " + e.problem }

// selectHosts chooses a check's hosts from the inventory: the active hosts
// of its backend in its environment. A check without an environment takes
// the backend's only one; configKey ("watcher.checks[0]") names the check
// in errors.
func selectHosts(snap *inventory.Snapshot, ch Check, configKey string) (scope, error) {
	sc := scope{env: ch.Environment, backend: ch.Backend}
	byEnv := map[string][]string{}
	for _, h := range snap.InBackend(ch.Backend) {
		byEnv[h.GetEnvironment()] = append(byEnv[h.GetEnvironment()], h.GetName())
	}
	if sc.env == "" {
		envs := sortedHosts(byEnv)
		switch len(envs) {
		case 0:
			return sc, nil
		case 1:
			sc.env = envs[0]
		default:
			return sc, &scopeError{key: configKey + ".environment", problem: fmt.Sprintf(
				"required: backend %s has hosts in %d environments of the inventory (%s); name the one this check watches",
				ch.Backend, len(envs), strings.Join(envs, ", "))}
		}
	} else if !slices.Contains(snap.Meta.GetEnvironments(), sc.env) {
		return sc, &scopeError{key: configKey + ".environment", problem: fmt.Sprintf(
			"%q is not an environment of the inventory (%s)", sc.env, strings.Join(snap.Meta.GetEnvironments(), ", "))}
	}
	sc.hosts = byEnv[sc.env]
	return sc, nil
}

// scopeOf is a check's scope in the latest inventory.
func (s *Service) scopeOf(ctx context.Context, ch Check) (scope, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return scope{}, fmt.Errorf("read inventory: %w", err)
	}
	return selectHosts(snap, ch, s.checkKey[ch.Name])
}

// lbServer is the part of the lb service's desired state of one server that
// says whether it is in service: the JSON value services/lb writes under
// srv.<env>.<backend>.<server> in KV sb_lb_desired. lb owns it; the
// watcher only reads it.
type lbServer struct {
	Env     string `json:"env"`
	Backend string `json:"backend"`
	Server  string `json:"server"`
	// State is ready, drain or maint; empty when no command set it (the
	// HAProxy config's state, in service).
	State  string `json:"state,omitempty"`
	Weight *int   `json:"weight,omitempty"`
}

// outOfService is lb's own notion of out: drain, maint or weight 0.
func (d lbServer) outOfService() bool {
	return d.State == "drain" || d.State == "maint" || (d.Weight != nil && *d.Weight == 0)
}

// lbOutOfService returns the hosts of sc that the load balancer's desired
// state has out of service, whoever put them there (a person's lb drain,
// the watcher's lb remove).
func (s *Service) lbOutOfService(ctx context.Context, sc scope) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := s.lbDesired(ctx)
	if err != nil {
		return nil, err
	}
	w, err := kv.Watch(ctx, "srv."+wire.Token(sc.env)+"."+wire.Token(sc.backend)+".>", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read KV %s: %w", wire.BucketLBDesired, err)
	}
	defer func() { _ = w.Stop() }()
	ours := make(map[string]bool, len(sc.hosts))
	for _, h := range sc.hosts {
		ours[h] = true
	}
	out := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read KV %s: %w", wire.BucketLBDesired, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("read KV %s: the watch ended early", wire.BucketLBDesired)
			}
			if e == nil {
				return out, nil // every current value has been delivered
			}
			var d lbServer
			if err := json.Unmarshal(e.Value(), &d); err != nil {
				return nil, fmt.Errorf("decode KV %s/%s: %w", wire.BucketLBDesired, e.Key(), err)
			}
			// Tokens of long or odd names are hashes: the value says
			// which server it really is.
			if d.Env == sc.env && d.Backend == sc.backend && ours[d.Server] && d.outOfService() {
				out[d.Server] = true
			}
		}
	}
}

// lbDesired opens the lb service's bucket, read-only: it is lb's to create.
func (s *Service) lbDesired(ctx context.Context) (jetstream.KeyValue, error) {
	s.mu.Lock()
	kv := s.lbKV
	s.mu.Unlock()
	if kv != nil {
		return kv, nil
	}
	kv, err := s.js.KeyValue(ctx, wire.BucketLBDesired)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("KV %s does not exist: is the lb service running?", wire.BucketLBDesired)
	}
	if err != nil {
		return nil, fmt.Errorf("open KV %s: %w", wire.BucketLBDesired, err)
	}
	s.mu.Lock()
	s.lbKV = kv
	s.mu.Unlock()
	return kv, nil
}

// lockBackend serialises this replica's cycles over one backend, so that
// two checks over it never count the same hour of removals apart. Replicas
// are kept apart by the lease and by the compare-and-set on the record.
func (s *Service) lockBackend(sc scope) (unlock func()) {
	s.mu.Lock()
	mu := s.backendMu[sc.key()]
	if mu == nil {
		mu = &sync.Mutex{}
		s.backendMu[sc.key()] = mu
	}
	s.mu.Unlock()
	mu.Lock()
	return mu.Unlock
}

// loadBackend reads the removals shared by a backend's checks and the
// record's revision (0: none yet).
func (s *Service) loadBackend(ctx context.Context, sc scope) (*BackendState, uint64, error) {
	e, err := s.kv.Get(ctx, sc.key())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &BackendState{}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read removals of backend %s in %s: %w", sc.backend, sc.env, err)
	}
	var bs BackendState
	if err := json.Unmarshal(e.Value(), &bs); err != nil {
		return nil, 0, fmt.Errorf("decode removals of backend %s in %s: %w", sc.backend, sc.env, err)
	}
	return &bs, e.Revision(), nil
}

// saveBackend writes the shared removals if the record is still at rev;
// errConflict otherwise.
func (s *Service) saveBackend(ctx context.Context, sc scope, bs *BackendState, rev uint64) error {
	b, err := json.Marshal(bs)
	if err != nil {
		return fmt.Errorf("encode removals of backend %s in %s: %w", sc.backend, sc.env, err)
	}
	if rev == 0 {
		_, err = s.kv.Create(ctx, sc.key(), b)
	} else {
		_, err = s.kv.Update(ctx, sc.key(), b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return errConflict
	}
	if err != nil {
		return fmt.Errorf("save removals of backend %s in %s: %w", sc.backend, sc.env, err)
	}
	return nil
}

// forgetRemovals takes back what a check recorded at `at` in the shared
// removals, when the state that goes with them could not be saved: the
// next cycle decides again and records them again.
func (s *Service) forgetRemovals(ctx context.Context, sc scope, check string, at time.Time) error {
	mine := func(r Removal) bool { return r.Check == check && r.At.Equal(at) }
	for {
		bs, rev, err := s.loadBackend(ctx, sc)
		if err != nil || rev == 0 {
			return err
		}
		bs.Removals = slices.DeleteFunc(bs.Removals, mine)
		bs.Would = slices.DeleteFunc(bs.Would, mine)
		if err := s.saveBackend(ctx, sc, bs, rev); !errors.Is(err, errConflict) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
