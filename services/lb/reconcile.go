package lb

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
)

// reconcileLoop compares the desired state with every instance on a timer.
// One replica at a time does it (a lease in sb_lb_desired), so a drift is
// reported once and two replicas never fight over a server.
func (s *Service) reconcileLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTimer(s.cfg.ReconcileInterval / 4)
	defer t.Stop()
	leading := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.lead(ctx) {
			// Another replica leads; when this one leads again, what was
			// said meanwhile is in the bucket.
			leading = false
		} else {
			rctx, cancel := context.WithTimeout(ctx, max(s.cfg.ReconcileInterval, 10*time.Second))
			if !leading {
				// Taking over: start from what earlier leaders said.
				if err := s.said.load(rctx); err != nil {
					s.log.Warn("load what the reconciler said", "error", err)
				}
			}
			leading = true
			s.reconcile(rctx)
			cancel()
		}
		t.Reset(s.cfg.ReconcileInterval)
	}
}

// lead takes or renews the reconciler lease; it lapses after three
// intervals without renewal.
func (s *Service) lead(ctx context.Context) bool {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	val := []byte(s.instance + " " + strconv.FormatInt(time.Now().UnixNano(), 10))
	e, err := s.desired.kv.Get(lctx, keyLeader)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		_, err := s.desired.kv.Create(lctx, keyLeader, val)
		return err == nil
	}
	if err != nil {
		s.log.Warn("reconciler lease", "error", err)
		return false
	}
	holder, ts, _ := strings.Cut(string(e.Value()), " ")
	n, _ := strconv.ParseInt(ts, 10, 64)
	if holder != s.instance && time.Since(time.Unix(0, n)) < 3*s.cfg.ReconcileInterval {
		return false
	}
	_, err = s.desired.kv.Update(lctx, keyLeader, val, e.Revision())
	return err == nil
}

// item is one server (or map key) whose instance differs from the desired
// state.
type item struct {
	key     string
	rev     uint64
	what    string // "www/web3 → drain"
	actual  string // "ready"
	changes []haproxy.Change
	pending bool
	by      string
}

// reconcile runs one pass over every environment.
func (s *Service) reconcile(ctx context.Context) {
	envs := make([]string, 0, len(s.fleet.envs))
	for env := range s.fleet.envs {
		envs = append(envs, env)
	}
	sort.Strings(envs)
	for _, env := range envs {
		if err := s.reconcileEnv(ctx, env); err != nil {
			s.log.Warn("reconcile", "env", env, "error", err)
		}
	}
}

func (s *Service) reconcileEnv(ctx context.Context, env string) error {
	before, err := s.desired.servers(ctx, env)
	if err != nil {
		return err
	}
	limBefore, limRevBefore, err := s.desired.limits(ctx, env)
	if err != nil {
		return err
	}
	v := s.fleet.view(ctx, env)
	mapFile := s.cfg.Environments[env].MapFile
	maps := map[string]map[string]string{}
	if limBefore != nil && mapFile != "" {
		for _, in := range s.fleet.envs[env] {
			if v.snaps[in.name] == nil {
				continue
			}
			entries, err := in.rt.Map(ctx, mapFile)
			if err != nil {
				s.log.Warn("reconcile: read map", "instance", in.name, "error", err)
				continue
			}
			m := map[string]string{}
			for _, e := range entries {
				m[e.Key] = e.Value
			}
			maps[in.name] = m
		}
	}
	// Read the desired state again: an entry a command changed meanwhile
	// is that command's business this round, not drift.
	after, err := s.desired.servers(ctx, env)
	if err != nil {
		return err
	}
	lim, limRev, err := s.desired.limits(ctx, env)
	if err != nil {
		return err
	}
	for _, in := range s.fleet.envs[env] {
		snap := v.snaps[in.name]
		if snap == nil {
			continue // unreachable: its pending changes wait
		}
		seenKey := prefixSeen + wire.Token(in.name)
		seen, _, err := get[seenInstance](ctx, s.desired.kv, seenKey)
		if err != nil {
			return err
		}
		restarted := seen == nil || seen.Pid != snap.Info.Pid || snap.Info.UptimeSec < seen.UptimeSec
		var items []item
		var confirmed []item // pending entries that already match
		for key, e := range after {
			if b, ok := before[key]; !ok || b.rev != e.rev {
				continue
			}
			d := e.v
			sv, ok := snap.Server(d.Backend, d.Server)
			if !ok {
				continue
			}
			it := item{key: key, rev: e.rev, what: fmt.Sprintf("%s/%s → %s", d.Backend, d.Server, d), changes: d.changes(sv),
				pending: slices.Contains(d.Pending, in.name), by: fmt.Sprintf("%s by %s", d.Command, d.By)}
			it.actual = string(sv.State)
			if d.Weight != nil {
				it.actual += fmt.Sprintf(", weight %d", sv.Weight)
			}
			if d.Reason != "" {
				it.by += ": " + d.Reason
			}
			if len(it.changes) == 0 {
				if it.pending {
					confirmed = append(confirmed, it)
				}
				s.said.del(ctx, in.name+"/"+key)
				continue
			}
			items = append(items, it)
		}
		if lim != nil && limBefore != nil && limRev == limRevBefore && maps[in.name] != nil {
			it := item{key: limitsKey(env), rev: limRev, pending: slices.Contains(lim.Pending, in.name), by: "ratelimit set by " + lim.By}
			var diffs, actual []string
			keys := make([]string, 0, len(lim.Limits))
			for k := range lim.Limits {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if got := maps[in.name][k]; got != lim.Limits[k] {
					it.changes = append(it.changes, haproxy.Change{Kind: haproxy.SetMap, Map: mapFile, Key: k, Value: lim.Limits[k]})
					diffs = append(diffs, k+"="+lim.Limits[k])
					if got == "" {
						got = "(none)"
					}
					actual = append(actual, k+"="+got)
				}
			}
			it.what, it.actual = "rate limits "+strings.Join(diffs, " "), strings.Join(actual, " ")
			switch {
			case len(it.changes) > 0:
				items = append(items, it)
			case it.pending:
				confirmed = append(confirmed, it)
			default:
				s.said.del(ctx, in.name+"/"+it.key)
			}
		}
		sort.Slice(items, func(i, j int) bool { return items[i].key < items[j].key })
		s.settleItems(ctx, in.name, confirmed)

		var apply, restore, catchup, drift []item
		for _, it := range items {
			switch {
			case restarted:
				restore = append(restore, it)
				apply = append(apply, it)
			case it.pending:
				catchup = append(catchup, it)
				apply = append(apply, it)
			default:
				drift = append(drift, it)
				if s.cfg.Drift == DriftEnforce {
					apply = append(apply, it)
				}
			}
		}
		failed := s.applyItems(ctx, in, apply)
		restore, catchup = s.unsaid(ctx, in.name, restore, failed), s.unsaid(ctx, in.name, catchup, failed)
		s.tell(ctx, env, in.name, snap, seen, restore, catchup, drift, failed)
		if _, err := put(ctx, s.desired.kv, seenKey, &seenInstance{Pid: snap.Info.Pid, UptimeSec: snap.Info.UptimeSec, At: time.Now().UTC()}, 0); err != nil {
			return err
		}
	}
	return nil
}

// applyItems applies the items' changes on one connection and settles the
// pending ones that succeeded; it returns the keys that failed.
func (s *Service) applyItems(ctx context.Context, in *instance, items []item) map[string]error {
	failed := map[string]error{}
	if len(items) == 0 {
		return failed
	}
	var changes []haproxy.Change
	var owner []int
	for i, it := range items {
		for _, c := range it.changes {
			changes = append(changes, c)
			owner = append(owner, i)
		}
	}
	errs, err := in.rt.Apply(ctx, changes)
	for i, it := range items {
		if err != nil {
			failed[it.key] = err
			continue
		}
		for k, e := range errs {
			if owner[k] == i && e != nil {
				failed[it.key] = e
			}
		}
	}
	var ok []item
	for _, it := range items {
		if failed[it.key] == nil && it.pending {
			ok = append(ok, it)
		}
	}
	s.settleItems(ctx, in.name, ok)
	return failed
}

func (s *Service) settleItems(ctx context.Context, instance string, items []item) {
	for _, it := range items {
		var err error
		if strings.HasPrefix(it.key, prefixLimits) {
			err = settle(ctx, s.desired.kv, it.key, it.rev, func(d *desiredLimits) *[]string { return &d.Pending }, []string{instance})
		} else {
			err = settle(ctx, s.desired.kv, it.key, it.rev, func(d *desiredServer) *[]string { return &d.Pending }, []string{instance})
		}
		if err != nil {
			s.log.Warn("reconcile: settle", "key", it.key, "instance", instance, "error", err)
		}
	}
}

// unsaid drops the items whose change failed exactly as it was already
// said: an instance that keeps refusing a change is retried every interval,
// but told about once per distinct failure.
func (s *Service) unsaid(ctx context.Context, instance string, items []item, failed map[string]error) []item {
	var out []item
	for _, it := range items {
		k := instance + "/" + it.key
		e := failed[it.key]
		if e == nil {
			s.said.del(ctx, k)
			out = append(out, it)
			continue
		}
		said := it.what + " | " + e.Error()
		if s.said.get(k) == said {
			continue
		}
		s.said.set(ctx, k, said)
		out = append(out, it)
	}
	return out
}

// tell posts what reconciliation did or found in the ops conversation and
// publishes the matching events, with ids derived from what is said, so a
// second replica or a restart saying the same is stored once. Drift in
// report mode, and a failure to restore, are said once per difference, not
// every interval; rounds that change nothing say nothing.
func (s *Service) tell(ctx context.Context, env, name string, snap *haproxy.Snapshot, seen *seenInstance, restore, catchup, drift []item, failed map[string]error) {
	lines := func(items []item, withActual bool) string {
		var out []string
		for _, it := range items {
			l := "• " + it.what
			if withActual {
				l = fmt.Sprintf("• %s is %s, desired %s (%s)", strings.SplitN(it.what, " → ", 2)[0], it.actual, lastPart(it.what), it.by)
			}
			if e := failed[it.key]; e != nil {
				l += fmt.Sprintf(" — FAILED: %v", e)
			}
			out = append(out, l)
		}
		return strings.Join(out, "\n")
	}
	// split separates the items applied from those that failed.
	split := func(items []item) (done, bad []item) {
		for _, it := range items {
			if failed[it.key] != nil {
				bad = append(bad, it)
			} else {
				done = append(done, it)
			}
		}
		return done, bad
	}
	if len(restore) > 0 {
		why := "first seen by switchboard"
		if seen != nil {
			why = fmt.Sprintf("restarted or reloaded: pid %d → %d", seen.Pid, snap.Info.Pid)
		}
		text := lines(restore, false)
		id := fmt.Sprintf("restore-%s-%d-%s", name, snap.Info.Pid, digest(text))
		s.notify(ctx, id, fmt.Sprintf("HAProxy %s (%s) %s; restored the desired state:\n%s", name, env, why, text))
		done, bad := split(restore)
		if len(done) > 0 {
			s.event(ctx, id, env, name, "reconciled", eventv1.Severity_SEVERITY_INFO, fmt.Sprintf("%s (%s) restored after a restart", name, env), lines(done, false))
		}
		if len(bad) > 0 {
			s.event(ctx, id+"-failed", env, name, "reconcile.failed", eventv1.Severity_SEVERITY_WARNING, fmt.Sprintf("%s (%s) refused part of the desired state after a restart", name, env), lines(bad, false))
		}
	}
	done, bad := split(catchup)
	if len(done) > 0 {
		text := lines(done, false)
		revs := make([]string, len(done))
		for i, it := range done {
			revs[i] = fmt.Sprintf("%s@%d", it.key, it.rev)
		}
		id := fmt.Sprintf("catchup-%s-%s", name, digest(strings.Join(revs, ",")))
		s.notify(ctx, id, fmt.Sprintf("HAProxy %s (%s) was caught up with the desired state:\n%s", name, env, text))
		s.event(ctx, id, env, name, "reconciled", eventv1.Severity_SEVERITY_INFO, fmt.Sprintf("%s (%s) caught up", name, env), text)
	}
	if len(bad) > 0 {
		text := lines(bad, false)
		// Stable per (instance, server, desired state, failure): the
		// same refusal seen again by another replica is stored once.
		id := fmt.Sprintf("failed-%s-%s", name, digest(text))
		s.notify(ctx, id, fmt.Sprintf("HAProxy %s (%s) did not take the desired state:\n%s\nReconciliation retries every %v and says so again only if the failure changes. "+
			"Run the lb or ratelimit command for the state you want, or fix the instance.", name, env, text, s.cfg.ReconcileInterval))
		s.event(ctx, id, env, name, "reconcile.failed", eventv1.Severity_SEVERITY_WARNING, fmt.Sprintf("%s (%s) did not take the desired state", name, env), text)
	}
	var fresh []item
	for _, it := range drift {
		k := name + "/" + it.key
		said := it.actual
		if e := failed[it.key]; e != nil {
			said += " | " + e.Error()
		}
		if s.said.get(k) == said {
			continue
		}
		// Reverted drift (enforce) is said each time a person makes it;
		// drift left alone, or a revert that failed, once.
		if s.cfg.Drift == DriftReport || failed[it.key] != nil {
			s.said.set(ctx, k, said)
		} else {
			s.said.del(ctx, k)
		}
		fresh = append(fresh, it)
	}
	if len(fresh) > 0 {
		text := lines(fresh, true)
		msg := fmt.Sprintf("Drift on HAProxy %s (%s): changed by hand, not by switchboard.\n%s\n", name, env, text)
		if s.cfg.Drift == DriftEnforce {
			msg += "Restored the desired state (lb.drift: enforce)."
		} else {
			msg += "Left as it is (lb.drift: report). Run the lb or ratelimit command for the state you want; it then becomes the desired state."
		}
		// Drift left alone is said once: a replica that takes the
		// reconciler over loads what was said (said.go), and the id comes
		// from what is said, so a copy posted anyway (what was said could
		// not be stored) is dropped by the stream. A revert in enforce
		// mode is news each time.
		id := fmt.Sprintf("drift-%s-%s-%s", name, s.cfg.Drift, digest(text))
		if s.cfg.Drift == DriftEnforce {
			id = fmt.Sprintf("drift-%s-%d-%s", name, time.Now().UnixNano(), s.cfg.Drift)
		}
		s.notify(ctx, id, msg)
		s.event(ctx, "", env, name, "drift", eventv1.Severity_SEVERITY_WARNING, fmt.Sprintf("drift on %s (%s)", name, env), text)
	}
}

// digest is a short hex hash of s, for ids derived from content.
func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

func lastPart(what string) string {
	if _, after, ok := strings.Cut(what, " → "); ok {
		return after
	}
	return what
}

// event publishes a reconciliation event; id (when not empty) makes the
// same event published again stored once.
func (s *Service) event(ctx context.Context, id, env, inst, typ string, sev eventv1.Severity, title, text string) {
	e := &eventv1.Event{Id: id, Source: "lb", Type: typ, Severity: sev, Title: title, Text: text,
		Fields: map[string]string{"env": env, "instance": inst, "by": "lb reconciler " + s.instance}}
	if _, err := emit.Event(ctx, s.js, e); err != nil {
		s.log.Warn("publish lb event", "type", typ, "error", err)
	}
}
