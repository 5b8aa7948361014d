package watcher

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// keyLeader holds the evaluation lease.
const keyLeader = "leader"

// leaseValue is the lease record: who holds it and until when.
type leaseValue struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

// lease is a leader lease over one KV key: taken with Create, renewed and
// taken over with a compare-and-set on the revision, so two replicas can
// never both win the same revision. It relies on replica clocks agreeing
// to within a fraction of the TTL (NTP), which is the case for everything
// else that runs on these machines too.
type lease struct {
	kv  jetstream.KeyValue
	me  string
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	until time.Time // our lease ends then (zero: not ours)
}

// held reports whether this replica leads now.
func (l *lease) held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.now().Before(l.until)
}

// run renews or takes the lease every third of its TTL until ctx ends.
func (l *lease) run(ctx context.Context, log *slog.Logger) {
	for {
		was := l.held()
		ok, err := l.try(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("leader lease", "error", err)
		}
		if ok != was {
			log.Info("leader lease", "leader", ok)
		}
		sleep(ctx, l.ttl/3)
		if ctx.Err() != nil {
			return
		}
	}
}

// try takes or renews the lease once.
func (l *lease) try(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	start := l.now()
	val, _ := json.Marshal(leaseValue{Holder: l.me, Until: start.Add(l.ttl)})
	e, err := l.kv.Get(ctx, keyLeader)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		_, err = l.kv.Create(ctx, keyLeader, val)
	case err != nil:
	default:
		var cur leaseValue
		if json.Unmarshal(e.Value(), &cur) == nil && cur.Holder != l.me && start.Before(cur.Until) {
			l.set(time.Time{})
			return false, nil
		}
		_, err = l.kv.Update(ctx, keyLeader, val, e.Revision())
	}
	if err != nil {
		l.set(time.Time{})
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil // another replica won this round
		}
		return false, err
	}
	// Count the lease from before the write, so it ends here no later
	// than in the other replicas' eyes.
	l.set(start.Add(l.ttl))
	return true, nil
}

func (l *lease) set(until time.Time) {
	l.mu.Lock()
	l.until = until
	l.mu.Unlock()
}

// release gives the lease up if this replica holds it, so a stopping
// replica hands over at once rather than after the TTL.
func (l *lease) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	l.set(time.Time{})
	e, err := l.kv.Get(ctx, keyLeader)
	if err != nil {
		return
	}
	var cur leaseValue
	if json.Unmarshal(e.Value(), &cur) == nil && cur.Holder == l.me {
		_ = l.kv.Delete(ctx, keyLeader, jetstream.LastRevision(e.Revision()))
	}
}

// leader returns the current holder ("" when none).
func (l *lease) leader(ctx context.Context) string {
	e, err := l.kv.Get(ctx, keyLeader)
	if err != nil {
		return ""
	}
	var cur leaseValue
	if json.Unmarshal(e.Value(), &cur) != nil || !l.now().Before(cur.Until) {
		return ""
	}
	return cur.Holder
}
