package lb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
)

// Runtime is the part of one HAProxy instance's Runtime API that lb uses.
// *haproxy.Client implements it.
type Runtime interface {
	// Snapshot returns the process info (to tell a restart) and every
	// server of every backend with its admin state, health, sessions and
	// weight.
	Snapshot(ctx context.Context) (*haproxy.Snapshot, error)
	// Apply sends all changes on one connection, in order, and returns one
	// error per change (nil where it succeeded); the second result is set
	// when the instance could not be reached at all.
	Apply(ctx context.Context, changes []haproxy.Change) ([]error, error)
	// Map returns the entries of a map file.
	Map(ctx context.Context, file string) ([]haproxy.MapEntry, error)
}

var _ Runtime = (*haproxy.Client)(nil)

// instance is one configured HAProxy.
type instance struct {
	name, env string
	rt        Runtime
}

// fleet is every configured instance, by environment.
type fleet struct {
	envs map[string][]*instance
}

// outcome is what happened on one instance.
type outcome struct {
	instance string
	// err is set when the instance could not be reached; errs holds one
	// entry per change otherwise.
	err  error
	errs []error
	// skipped says why nothing was sent to this instance (it missed an
	// earlier step of the command); reconciliation brings it there later.
	skipped string
}

// failed reports whether any change failed on this instance.
func (o outcome) failed() bool {
	if o.err != nil || o.skipped != "" {
		return true
	}
	for _, e := range o.errs {
		if e != nil {
			return true
		}
	}
	return false
}

// summary is one line for the answer: "lb1: done" or the errors.
func (o outcome) summary(changes []haproxy.Change) string {
	if o.skipped != "" {
		return fmt.Sprintf("%s: SKIPPED, %s", o.instance, o.skipped)
	}
	if o.err != nil {
		return fmt.Sprintf("%s: FAILED, %v", o.instance, o.err)
	}
	var bad []string
	for i, e := range o.errs {
		if e != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", changes[i], e))
		}
	}
	if len(bad) == 0 {
		return fmt.Sprintf("%s: done (%d change%s)", o.instance, len(changes), plural(len(changes)))
	}
	return fmt.Sprintf("%s: FAILED %d of %d: %s", o.instance, len(bad), len(changes), strings.Join(bad, "; "))
}

// results are the outcomes of one change on every instance of an
// environment, in configuration order.
type results []outcome

func (r results) failed() bool {
	for _, o := range r {
		if o.failed() {
			return true
		}
	}
	return false
}

func (r results) failedInstances() []string {
	var out []string
	for _, o := range r {
		if o.failed() {
			out = append(out, o.instance)
		}
	}
	return out
}

// accepted lists the instances that took every change selected by which,
// and reports whether an instance that answered refused one of them.
func (r results) accepted(which func(change int) bool) (ok []string, refused bool) {
	for _, o := range r {
		if o.err != nil || o.skipped != "" {
			continue
		}
		took := true
		for i, e := range o.errs {
			if e == nil || !which(i) {
				continue
			}
			took = false
			refused = refused || isRefusal(e)
		}
		if took {
			ok = append(ok, o.instance)
		}
	}
	return ok, refused
}

// isRefusal reports whether a change's error says it will not hold: HAProxy
// answered no (or the change could not even be written as a command). A
// change whose reply never came may have held, so it is not a refusal.
func isRefusal(err error) bool {
	return err != nil && !errors.Is(err, haproxy.ErrNoReply)
}

func (r results) summary(changes []haproxy.Change) string {
	lines := make([]string, len(r))
	for i, o := range r {
		lines[i] = o.summary(changes)
	}
	return strings.Join(lines, "\n")
}

// apply sends changes to every instance of env in parallel, except those
// in skip (instance name → why), which get an outcome saying so.
func (f *fleet) apply(ctx context.Context, env string, changes []haproxy.Change, skip map[string]string) results {
	ins := f.envs[env]
	out := make(results, len(ins))
	var wg sync.WaitGroup
	for i, in := range ins {
		if why, ok := skip[in.name]; ok {
			out[i] = outcome{instance: in.name, skipped: why}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs, err := in.rt.Apply(ctx, changes)
			out[i] = outcome{instance: in.name, err: err, errs: errs}
		}()
	}
	wg.Wait()
	return out
}

// view is every instance's snapshot of one environment, read in parallel.
type view struct {
	env   string
	names []string
	snaps map[string]*haproxy.Snapshot
	errs  map[string]error
}

func (f *fleet) view(ctx context.Context, env string) *view {
	ins := f.envs[env]
	v := &view{env: env, snaps: map[string]*haproxy.Snapshot{}, errs: map[string]error{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, in := range ins {
		v.names = append(v.names, in.name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := in.rt.Snapshot(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				v.errs[in.name] = err
				return
			}
			v.snaps[in.name] = s
		}()
	}
	wg.Wait()
	return v
}

// reachable lists the instances that answered, in configuration order.
func (v *view) reachable() []string {
	var out []string
	for _, n := range v.names {
		if v.snaps[n] != nil {
			out = append(out, n)
		}
	}
	return out
}

// unreachableText is "lb2: <error>; lb3: <error>".
func (v *view) unreachableText() string {
	var out []string
	for _, n := range v.names {
		if err := v.errs[n]; err != nil {
			out = append(out, fmt.Sprintf("%s: %v", n, err))
		}
	}
	return strings.Join(out, "; ")
}

// backendsOf lists the backends that have a server named host on any
// reachable instance, sorted as first seen.
func (v *view) backendsOf(host string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range v.reachable() {
		for _, sv := range v.snaps[n].Servers {
			if sv.Name == host && !seen[sv.Backend] {
				seen[sv.Backend] = true
				out = append(out, sv.Backend)
			}
		}
	}
	return out
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
