// Package inventory reads and writes the inventory in KV sb_inventory: one
// key per host (host.<name>, an inventory.v1.Host) and a meta key written
// after the hosts of a revision. The deployer publishes it; lb, dns and the
// watcher read it through Load or Watch and never parse the ENC themselves.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

const (
	hostPrefix = "host."
	metaKey    = "meta"
)

// validName is what a host name may be: a DNS label (RFC 1123), which is also
// safe in a KV key.
var validName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidHostName reports whether name can be a host of the inventory.
func ValidHostName(name string) bool { return validName.MatchString(name) }

// Snapshot is one consistent revision of the inventory.
type Snapshot struct {
	Meta  *inventoryv1.Meta
	Hosts map[string]*inventoryv1.Host
}

// Host returns the named host, or nil.
func (s *Snapshot) Host(name string) *inventoryv1.Host {
	if s == nil {
		return nil
	}
	return s.Hosts[name]
}

// Names returns every host name, sorted.
func (s *Snapshot) Names() []string {
	names := make([]string, 0, len(s.Hosts))
	for n := range s.Hosts {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Select returns the hosts for which keep is true, sorted by name.
func (s *Snapshot) Select(keep func(*inventoryv1.Host) bool) []*inventoryv1.Host {
	var out []*inventoryv1.Host
	for _, n := range s.Names() {
		if h := s.Hosts[n]; keep(h) {
			out = append(out, h)
		}
	}
	return out
}

// InBackend returns the active hosts of a load balancer backend, sorted.
func (s *Snapshot) InBackend(backend string) []*inventoryv1.Host {
	return s.Select(func(h *inventoryv1.Host) bool {
		return h.GetState() == inventoryv1.HostState_HOST_STATE_ACTIVE && slices.Contains(h.GetBackends(), backend)
	})
}

// ByRole returns the active hosts of a role in an environment, sorted.
func (s *Snapshot) ByRole(role, env string) []*inventoryv1.Host {
	return s.Select(func(h *inventoryv1.Host) bool {
		return h.GetState() == inventoryv1.HostState_HOST_STATE_ACTIVE && h.GetRole() == role && h.GetEnvironment() == env
	})
}

// HasBackend reports whether the inventory names the backend.
func (s *Snapshot) HasBackend(b string) bool { return slices.Contains(s.Meta.GetBackends(), b) }

// ErrEmpty means nothing has been published yet.
var ErrEmpty = errors.New("inventory: nothing published yet (is the deployer running?)")

// Bucket opens the sb_inventory bucket (bus.EnsureStreams declares it).
func Bucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, wire.BucketInventory)
	if err != nil {
		return nil, fmt.Errorf("inventory: open bucket %s: %w", wire.BucketInventory, err)
	}
	return kv, nil
}

// Load reads the current revision. A reader racing a publisher retries until
// the meta key is the same before and after it read the hosts.
func Load(ctx context.Context, kv jetstream.KeyValue) (*Snapshot, error) {
	for attempt := 0; ; attempt++ {
		before, err := kv.Get(ctx, metaKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, ErrEmpty
		}
		if err != nil {
			return nil, fmt.Errorf("inventory: read meta: %w", err)
		}
		snap, err := readHosts(ctx, kv)
		if err != nil {
			return nil, err
		}
		after, err := kv.Get(ctx, metaKey)
		if err != nil {
			return nil, fmt.Errorf("inventory: read meta: %w", err)
		}
		if after.Revision() != before.Revision() && attempt < 5 {
			continue
		}
		snap.Meta = &inventoryv1.Meta{}
		if err := wire.Unmarshal(after.Value(), snap.Meta); err != nil {
			return nil, fmt.Errorf("inventory: decode meta: %w", err)
		}
		return snap, nil
	}
}

func readHosts(ctx context.Context, kv jetstream.KeyValue) (*Snapshot, error) {
	w, err := kv.Watch(ctx, hostPrefix+">", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("inventory: read hosts: %w", err)
	}
	defer w.Stop()
	snap := &Snapshot{Hosts: map[string]*inventoryv1.Host{}}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("inventory: read hosts: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("inventory: read hosts: watcher closed")
			}
			if e == nil { // every current value has been delivered
				return snap, nil
			}
			h := &inventoryv1.Host{}
			if err := wire.Unmarshal(e.Value(), h); err != nil {
				return nil, fmt.Errorf("inventory: decode %s: %w", e.Key(), err)
			}
			snap.Hosts[h.GetName()] = h
		}
	}
}

// Publish makes hosts the current inventory at revision: it writes the hosts
// that changed, deletes those that went away, and then the meta key, which
// readers take as the sign that the revision is complete. Only the deployer
// calls it (and tests that seed an inventory).
func Publish(ctx context.Context, kv jetstream.KeyValue, revision string, hosts []*inventoryv1.Host, pins map[string]string) (*inventoryv1.Meta, error) {
	old, err := readHosts(ctx, kv)
	if err != nil {
		return nil, err
	}
	meta := &inventoryv1.Meta{Revision: revision, PublishedAt: timestamppb.Now(), Pins: pins, HostCount: int32(len(hosts))}
	seen := map[string]bool{}
	envs, roles, backends := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, h := range hosts {
		if !ValidHostName(h.GetName()) {
			return nil, fmt.Errorf("inventory: host name %q is not a DNS label", h.GetName())
		}
		if seen[h.GetName()] {
			return nil, fmt.Errorf("inventory: host %s twice", h.GetName())
		}
		seen[h.GetName()] = true
		if h.GetEnvironment() != "" {
			envs[h.GetEnvironment()] = true
		}
		if h.GetRole() != "" {
			roles[h.GetRole()] = true
		}
		for _, b := range h.GetBackends() {
			backends[b] = true
		}
		if proto.Equal(old.Hosts[h.GetName()], h) {
			continue
		}
		b, err := wire.Marshal(h)
		if err != nil {
			return nil, fmt.Errorf("inventory: encode %s: %w", h.GetName(), err)
		}
		if _, err := kv.Put(ctx, hostPrefix+h.GetName(), b); err != nil {
			return nil, fmt.Errorf("inventory: write %s: %w", h.GetName(), err)
		}
	}
	for name := range old.Hosts {
		if !seen[name] {
			if err := kv.Delete(ctx, hostPrefix+name); err != nil {
				return nil, fmt.Errorf("inventory: delete %s: %w", name, err)
			}
		}
	}
	meta.Environments, meta.Roles, meta.Backends = sorted(envs), sorted(roles), sorted(backends)
	b, err := wire.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("inventory: encode meta: %w", err)
	}
	if _, err := kv.Put(ctx, metaKey, b); err != nil {
		return nil, fmt.Errorf("inventory: write meta: %w", err)
	}
	return meta, nil
}

func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Watch calls f with every new revision (the current one first, when there
// is one) until ctx ends. f runs on Watch's goroutine; a slow f delays the
// next revision, and revisions published meanwhile are coalesced.
func Watch(ctx context.Context, kv jetstream.KeyValue, f func(*Snapshot)) error {
	w, err := kv.Watch(ctx, metaKey, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("inventory: watch: %w", err)
	}
	defer w.Stop()
	load := func() {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if snap, err := Load(lctx, kv); err == nil {
			f(snap)
		}
	}
	load()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("inventory: watcher closed")
			}
			if e == nil {
				continue
			}
			// Coalesce a burst of revisions into one load.
		drain:
			for {
				select {
				case _, ok := <-w.Updates():
					if !ok {
						break drain
					}
				default:
					break drain
				}
			}
			load()
		}
	}
}

// Diff says what changed from a to b (either may be nil).
func Diff(a, b *Snapshot) *inventoryv1.Diff {
	d := &inventoryv1.Diff{}
	var ah, bh map[string]*inventoryv1.Host
	if a != nil {
		d.FromRevision, ah = a.Meta.GetRevision(), a.Hosts
	}
	if b != nil {
		d.ToRevision, bh = b.Meta.GetRevision(), b.Hosts
	}
	for _, n := range sortedKeys(bh) {
		nh, oh := bh[n], ah[n]
		switch {
		case oh == nil:
			d.Added = append(d.Added, n)
		case oh.GetRole() != nh.GetRole() || oh.GetEnvironment() != nh.GetEnvironment() || !slices.Equal(oh.GetBackends(), nh.GetBackends()):
			d.Moved = append(d.Moved, &inventoryv1.Move{
				Host: n, FromRole: oh.GetRole(), ToRole: nh.GetRole(),
				FromEnvironment: oh.GetEnvironment(), ToEnvironment: nh.GetEnvironment(),
				FromBackends: oh.GetBackends(), ToBackends: nh.GetBackends(),
			})
		case !proto.Equal(oh, nh):
			d.Changed = append(d.Changed, n)
		}
	}
	for _, n := range sortedKeys(ah) {
		if bh[n] == nil {
			d.Removed = append(d.Removed, n)
		}
	}
	return d
}

func sortedKeys(m map[string]*inventoryv1.Host) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Cache keeps the latest revision in memory, fed by one long-lived watch, so
// a command reads the inventory without a round trip per host, and keeps
// working on the last revision it saw while the bus recovers from a lost node.
type Cache struct {
	kv   jetstream.KeyValue
	mu   sync.Mutex
	snap *Snapshot
}

// NewCache returns a cache over the bucket; Run feeds it.
func NewCache(kv jetstream.KeyValue) *Cache { return &Cache{kv: kv} }

// Run watches the bucket until ctx ends, starting the watch again when it
// fails.
func (c *Cache) Run(ctx context.Context) {
	for ctx.Err() == nil {
		Watch(ctx, c.kv, func(s *Snapshot) {
			c.mu.Lock()
			c.snap = s
			c.mu.Unlock()
		})
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Get returns the latest revision seen, or loads it when none has been seen
// yet (ErrEmpty when nothing is published).
func (c *Cache) Get(ctx context.Context) (*Snapshot, error) {
	c.mu.Lock()
	s := c.snap
	c.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s, err := Load(ctx, c.kv)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.snap == nil {
		c.snap = s
	}
	c.mu.Unlock()
	return s, nil
}
