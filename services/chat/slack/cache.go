package slack

import (
	"sync"
	"time"
)

// cache is a small map with expiry and a size bound, safe for concurrent
// use. It holds profiles, seen events, progress messages and delivered
// posts; none of them is worth a dependency.
type cache[V any] struct {
	mu  sync.Mutex
	ttl time.Duration
	max int
	now func() time.Time
	m   map[string]entry[V]
}

type entry[V any] struct {
	v   V
	exp time.Time
}

func newCache[V any](ttl time.Duration, max int, now func() time.Time) *cache[V] {
	return &cache[V]{ttl: ttl, max: max, now: now, m: map[string]entry[V]{}}
}

func (c *cache[V]) get(k string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || c.now().After(e.exp) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *cache[V]) put(k string, v V) { c.putTTL(k, v, c.ttl) }

func (c *cache[V]) putTTL(k string, v V, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(k, v, ttl)
}

func (c *cache[V]) putLocked(k string, v V, ttl time.Duration) {
	now := c.now()
	if len(c.m) >= c.max {
		for k2, e := range c.m {
			if now.After(e.exp) {
				delete(c.m, k2)
			}
		}
		// Still full of live entries: forget an arbitrary half rather
		// than grow without bound; every user of cache tolerates a miss.
		for k2 := range c.m {
			if len(c.m) < c.max/2 {
				break
			}
			delete(c.m, k2)
		}
	}
	c.m[k] = entry[V]{v: v, exp: now.Add(ttl)}
}

// add stores k unless a live entry exists, and reports whether it did.
func (c *cache[V]) add(k string, v V) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok && !c.now().After(e.exp) {
		return false
	}
	c.putLocked(k, v, c.ttl)
	return true
}

func (c *cache[V]) del(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}
