package lb

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// prefixSaid keys what the reconciler last said about a difference, in
// sb_lb_desired: said.<digest of instance/key> → saidEntry.
const prefixSaid = "said."

type saidEntry struct {
	Key  string `json:"key"`
	Said string `json:"said"`
}

// saidStore remembers, per instance/key, the drift or the failure last
// said in the ops conversation, so each is said once rather than every
// reconcile interval. It writes through to sb_lb_desired, and a replica
// that takes the reconciler over loads it, so a take-over does not say
// again what was already said. Only the reconcile loop changes it.
type saidStore struct {
	kv  jetstream.KeyValue
	log *slog.Logger
	mu  sync.Mutex // for readers outside the loop (status, tests)
	m   map[string]string
}

func (st *saidStore) get(k string) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.m[k]
}

func (st *saidStore) set(ctx context.Context, k, said string) {
	st.mu.Lock()
	st.m[k] = said
	st.mu.Unlock()
	if _, err := put(ctx, st.kv, prefixSaid+digest(k), saidEntry{Key: k, Said: said}, 0); err != nil {
		// Memory still holds it: at worst a take-over says it again.
		st.log.Warn("remember what the reconciler said", "key", k, "error", err)
	}
}

func (st *saidStore) del(ctx context.Context, k string) {
	st.mu.Lock()
	_, ok := st.m[k]
	delete(st.m, k)
	st.mu.Unlock()
	if !ok {
		return
	}
	if err := st.kv.Delete(ctx, prefixSaid+digest(k)); err != nil {
		st.log.Warn("forget what the reconciler said", "key", k, "error", err)
	}
}

// load replaces memory with what the bucket holds: what earlier leaders said.
func (st *saidStore) load(ctx context.Context) error {
	all, err := list[saidEntry](ctx, st.kv, prefixSaid)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return err
	}
	m := make(map[string]string, len(all))
	for _, e := range all {
		m[e.v.Key] = e.v.Said
	}
	st.mu.Lock()
	st.m = m
	st.mu.Unlock()
	return nil
}
