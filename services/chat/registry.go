package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/command"
)

// registry knows every command served on the bus, discovered from the
// $SRV.INFO answers of nats micro services: a new service's commands appear
// at the next refresh, without restarting the chat.
type registry struct {
	nc  *nats.Conn
	log *slog.Logger
	// forget is how long a command stays known after its service stopped
	// answering INFO (a missed refresh must not make commands vanish).
	forget time.Duration

	mu        sync.RWMutex
	specs     map[string]entry // by name and by alias
	refreshed time.Time
	refreshMu sync.Mutex
}

type entry struct {
	spec *commandv1.CommandSpec
	seen time.Time
}

func newRegistry(nc *nats.Conn, log *slog.Logger) *registry {
	return &registry{nc: nc, log: log, forget: time.Minute, specs: map[string]entry{}}
}

// add registers in-process commands (the built-ins), which never expire.
func (r *registry) add(sp *commandv1.CommandSpec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := entry{spec: sp}
	r.specs[sp.GetName()] = e
	for _, a := range sp.GetAliases() {
		r.specs[a] = e
	}
}

// refresh asks every micro service for its INFO and records the specs in
// the endpoints' metadata. Answers are collected until none has come for
// a short while.
func (r *registry) refresh(ctx context.Context) error {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	inbox := r.nc.NewRespInbox()
	sub, err := r.nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("discover commands: subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	if err := r.nc.PublishRequest("$SRV.INFO", inbox, nil); err != nil {
		return fmt.Errorf("discover commands: %w", err)
	}
	now := time.Now()
	found := map[string]*commandv1.CommandSpec{}
	wait := 500 * time.Millisecond
	for {
		wctx, cancel := context.WithTimeout(ctx, wait)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			break
		}
		wait = 75 * time.Millisecond
		var info micro.Info
		if err := json.Unmarshal(m.Data, &info); err != nil {
			r.log.Warn("discover commands: bad INFO answer", "error", err)
			continue
		}
		for _, ep := range info.Endpoints {
			raw := ep.Metadata[command.MetadataSpec]
			if raw == "" {
				continue
			}
			var sp commandv1.CommandSpec
			if err := wire.Unmarshal([]byte(raw), &sp); err != nil {
				r.log.Warn("discover commands: bad spec", "service", info.Name, "endpoint", ep.Name, "error", err)
				continue
			}
			if sp.Subject == "" {
				sp.Subject = ep.Subject
			}
			found[sp.GetName()] = &sp
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sp := range found {
		e := entry{spec: sp, seen: now}
		r.specs[sp.GetName()] = e
		for _, a := range sp.GetAliases() {
			r.specs[a] = e
		}
	}
	for k, e := range r.specs {
		if !e.seen.IsZero() && now.Sub(e.seen) > r.forget {
			delete(r.specs, k)
		}
	}
	r.refreshed = now
	return nil
}

// lookup finds the command the words start with: two-word names ("lb
// drain") before one-word ones ("deploy"). It returns the spec and how many
// words the name took.
func (r *registry) lookup(words []string) (*commandv1.CommandSpec, int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(words) >= 2 {
		if e, ok := r.specs[strings.ToLower(words[0]+" "+words[1])]; ok {
			return e.spec, 2
		}
	}
	if len(words) >= 1 {
		if e, ok := r.specs[strings.ToLower(words[0])]; ok {
			return e.spec, 1
		}
	}
	return nil, 0
}

// names lists every command name and alias, for suggestions.
func (r *registry) names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.specs))
	for k := range r.specs {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// all returns every spec once, sorted by name.
func (r *registry) all() []*commandv1.CommandSpec {
	r.mu.RLock()
	defer r.mu.RUnlock()
	seen := map[string]bool{}
	var out []*commandv1.CommandSpec
	for _, e := range r.specs {
		if !seen[e.spec.GetName()] {
			seen[e.spec.GetName()] = true
			out = append(out, e.spec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// lastRefresh is when discovery last ran.
func (r *registry) lastRefresh() time.Time {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.refreshed
}
