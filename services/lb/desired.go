package lb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
)

// Keys of sb_lb_desired. Every variable part goes through wire.Token.
//
//	srv.<env>.<backend>.<server>  desiredServer
//	rl.<env>                      desiredLimits
//	seen.<instance>               seenInstance (pid and uptime at the last reconcile)
//	reconciler                    which replica reconciles (a lease)
//
// Values are JSON: lb has no payload on the bus, so its private state has
// no protobuf schema (a proto in sb/lb/v1 would be the place if another
// service ever reads it).
const (
	prefixServer = "srv."
	prefixLimits = "rl."
	prefixSeen   = "seen."
	keyLeader    = "reconciler"
)

// desiredServer is what a command asked for one server of one backend.
type desiredServer struct {
	Env     string        `json:"env"`
	Backend string        `json:"backend"`
	Server  string        `json:"server"`
	State   haproxy.State `json:"state,omitempty"` // empty: not managed
	Weight  *int          `json:"weight,omitempty"`
	Reason  string        `json:"reason,omitempty"`
	By      string        `json:"by,omitempty"`
	Command string        `json:"command,omitempty"`
	// CommandID and JobID of the change, for the trail.
	CommandID string    `json:"command_id,omitempty"`
	JobID     string    `json:"job_id,omitempty"`
	At        time.Time `json:"at"`
	// Pending lists the instances where the change is not confirmed yet
	// (unreachable, or the command is still applying it): reconciliation
	// catches them up instead of calling the difference drift.
	Pending []string `json:"pending,omitempty"`
}

func serverKey(env, backend, server string) string {
	return prefixServer + wire.Token(env) + "." + wire.Token(backend) + "." + wire.Token(server)
}

func (d *desiredServer) key() string { return serverKey(d.Env, d.Backend, d.Server) }

// changes are the Runtime API changes that make actual match d.
func (d *desiredServer) changes(actual haproxy.Server) []haproxy.Change {
	var out []haproxy.Change
	if d.State != "" && actual.State != d.State {
		out = append(out, haproxy.Change{Kind: haproxy.SetState, Backend: d.Backend, Server: d.Server, State: d.State})
	}
	if d.Weight != nil && actual.Weight != *d.Weight {
		out = append(out, haproxy.Change{Kind: haproxy.SetWeight, Backend: d.Backend, Server: d.Server, Weight: *d.Weight})
	}
	return out
}

// String is "drain, weight 10".
func (d *desiredServer) String() string {
	var parts []string
	if d.State != "" {
		parts = append(parts, string(d.State))
	}
	if d.Weight != nil {
		parts = append(parts, fmt.Sprintf("weight %d", *d.Weight))
	}
	return strings.Join(parts, ", ")
}

// desiredLimits are an environment's rate limits.
type desiredLimits struct {
	Env       string            `json:"env"`
	Limits    map[string]string `json:"limits"`
	By        string            `json:"by,omitempty"`
	CommandID string            `json:"command_id,omitempty"`
	At        time.Time         `json:"at"`
	Pending   []string          `json:"pending,omitempty"`
}

func limitsKey(env string) string { return prefixLimits + wire.Token(env) }

// seenInstance is what reconciliation last saw of an instance's process.
type seenInstance struct {
	Pid       int       `json:"pid"`
	UptimeSec int64     `json:"uptime_sec"`
	At        time.Time `json:"at"`
}

// desiredStore reads and writes sb_lb_desired.
type desiredStore struct {
	kv jetstream.KeyValue
}

// entry is a decoded value with its revision, for compare-and-set.
type entry[T any] struct {
	v   *T
	rev uint64
}

// retryTransient runs op until it succeeds or fails for good, trying again
// while the bucket cannot answer: a NATS node died and the client
// reconnects, or the bucket elects a leader (or was just created). Each
// attempt has its own 3 s; all stay within ctx.
func retryTransient(ctx context.Context, op func(ctx context.Context) error) error {
	var err error
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = op(actx)
		cancel()
		if !transient(err) || ctx.Err() != nil || attempt >= 10 {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
}

func get[T any](ctx context.Context, kv jetstream.KeyValue, key string) (*T, uint64, error) {
	var e jetstream.KeyValueEntry
	err := retryTransient(ctx, func(ctx context.Context) (err error) {
		e, err = kv.Get(ctx, key)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %s/%s: %w", wire.BucketLBDesired, key, err)
	}
	v := new(T)
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return nil, 0, fmt.Errorf("decode %s/%s: %w", wire.BucketLBDesired, key, err)
	}
	return v, e.Revision(), nil
}

// put writes v; with rev > 0 only if the key is still at rev. It returns
// the revision written, or 0 when the key was no longer at rev. A retried
// Update that had in fact landed comes back as a conflict, which callers
// already handle by reading again.
func put(ctx context.Context, kv jetstream.KeyValue, key string, v any, rev uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", key, err)
	}
	var written uint64
	err = retryTransient(ctx, func(ctx context.Context) (err error) {
		if rev == 0 {
			written, err = kv.Put(ctx, key, b)
		} else {
			written, err = kv.Update(ctx, key, b, rev)
		}
		return err
	})
	if conflict(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("write %s/%s: %w", wire.BucketLBDesired, key, err)
	}
	return written, nil
}

// conflict reports whether a compare-and-set write found the key at another
// revision.
func conflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence)
}

// restore puts prev back under key (deletes the key when prev is nil) if
// the key is still at rev, the revision the caller wrote. It reports
// whether it did: false means a newer write owns the key now.
func restore[T any](ctx context.Context, kv jetstream.KeyValue, key string, prev *T, rev uint64) (bool, error) {
	if prev != nil {
		written, err := put(ctx, kv, key, prev, rev)
		return written != 0, err
	}
	err := kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if conflict(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete %s/%s: %w", wire.BucketLBDesired, key, err)
	}
	return true, nil
}

// list returns every value under prefix with its revision.
func list[T any](ctx context.Context, kv jetstream.KeyValue, prefix string) (map[string]entry[T], error) {
	w, err := kv.Watch(ctx, prefix+">", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list %s/%s: %w", wire.BucketLBDesired, prefix, err)
	}
	defer w.Stop()
	out := map[string]entry[T]{}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list %s/%s: %w", wire.BucketLBDesired, prefix, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("list: watcher closed")
			}
			if e == nil {
				return out, nil
			}
			v := new(T)
			if err := json.Unmarshal(e.Value(), v); err != nil {
				return nil, fmt.Errorf("decode %s/%s: %w", wire.BucketLBDesired, e.Key(), err)
			}
			out[e.Key()] = entry[T]{v: v, rev: e.Revision()}
		}
	}
}

func (s *desiredStore) server(ctx context.Context, env, backend, server string) (*desiredServer, uint64, error) {
	return get[desiredServer](ctx, s.kv, serverKey(env, backend, server))
}

// putServer writes d and returns the revision written.
func (s *desiredStore) putServer(ctx context.Context, d *desiredServer) (uint64, error) {
	return put(ctx, s.kv, d.key(), d, 0)
}

func (s *desiredStore) servers(ctx context.Context, env string) (map[string]entry[desiredServer], error) {
	return list[desiredServer](ctx, s.kv, prefixServer+wire.Token(env)+".")
}

func (s *desiredStore) limits(ctx context.Context, env string) (*desiredLimits, uint64, error) {
	return get[desiredLimits](ctx, s.kv, limitsKey(env))
}

// settle removes instances from the Pending list of a desired entry, unless
// the entry changed since rev (a newer command owns it then).
func settle[T any](ctx context.Context, kv jetstream.KeyValue, key string, rev uint64, pending func(*T) *[]string, done []string) error {
	v, cur, err := get[T](ctx, kv, key)
	if err != nil || v == nil || cur != rev {
		return err
	}
	p := pending(v)
	*p = slices.DeleteFunc(*p, func(n string) bool { return slices.Contains(done, n) })
	_, err = put(ctx, kv, key, v, cur)
	return err
}

// transient reports whether a bus error may go away by itself: a timeout or
// no stream answering, as during a leader election.
func transient(err error) bool {
	return err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse))
}
