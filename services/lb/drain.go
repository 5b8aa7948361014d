package lb

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
)

var drainSpec = &commandv1.CommandSpec{
	Name:    "lb drain",
	Usage:   "lb drain <host,host,…> [backend] [--wait] [--timeout 10m] [--force] [--dry-run] [-- reason]",
	Summary: "Drain servers on every HAProxy instance; with --wait, put them into maint once their sessions end.",
	Help: "Sets the servers to drain (no new sessions; existing ones continue). With --wait it reports the sessions " +
		"as they fall and sets maint when none is left, or when --timeout passes (saying so, with the sessions left). " +
		"On an instance that missed the drain it sets nothing (that would cut its sessions): reconciliation sets maint there later, as the answer says." + safetyHelp,
	Example: "lb drain web3,web4 www --wait -- kernel update",
	Args: []*commandv1.ArgSpec{
		{Name: "hosts", Type: commandv1.ArgType_ARG_TYPE_HOST_LIST, Required: true, Help: "inventory hosts, comma-separated"},
		backendArg(false, "the HAProxy backend (default: every backend each host is in)"),
	},
	Flags: []*commandv1.FlagSpec{
		{Name: "wait", Type: commandv1.ArgType_ARG_TYPE_BOOL, Help: "wait for the sessions to end, then set maint"},
		{Name: "timeout", Type: commandv1.ArgType_ARG_TYPE_DURATION, Default: "10m", Help: "how long --wait waits before setting maint anyway"},
		forceFlag,
	},
	Mutating:       true,
	SupportsDryRun: true,
	// Every step sets a desired state, so running it again after a replica
	// died is safe.
	Resumable: true,
	TextName:  "reason",
}

// parseHosts splits a host list and checks every name.
func parseHosts(list string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, h := range strings.Split(list, ",") {
		h = strings.ToLower(strings.TrimSpace(h))
		if !inventory.ValidHostName(h) {
			return nil, command.UserErrorf("%q in the host list %q is not a host name (separate hosts with commas: web1,web2)", h, list)
		}
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out, nil
}

func (s *Service) drain(ctx context.Context, job *command.Job) error {
	hosts, err := parseHosts(job.Arg("hosts"))
	if err != nil {
		return err
	}
	wait := job.Flag("wait") == "true"
	timeout := s.cfg.DrainTimeout
	if v := job.Flag("timeout"); v != "" {
		if timeout, err = time.ParseDuration(v); err != nil || timeout <= 0 {
			return command.UserErrorf("--timeout %q is not a positive duration (try 90s or 10m)", v)
		}
	}
	p, err := s.plan(ctx, job, serverOp{verb: "drain", hosts: hosts, backend: job.Arg("backend"), state: haproxy.StateDrain})
	if err != nil {
		return err
	}
	if job.DryRun() {
		text := dryRunText(p)
		if wait {
			text = strings.Replace(text, "\nNothing was changed.", fmt.Sprintf("\nThen wait up to %v for their sessions to end and set maint.\nNothing was changed.", timeout), 1)
		}
		return job.Done(ctx, text)
	}
	a, err := s.execute(ctx, job, p)
	if err != nil {
		return err
	}
	text, err := s.answer(job, p, a, "Draining: "+p.what()+".")
	if !wait {
		if err != nil {
			return err
		}
		return job.Done(ctx, text)
	}
	// With --wait, a drain that some instances took goes on there: their
	// sessions still have to end before maint. Only a drain no instance
	// took ends here.
	if err != nil {
		if len(a.res.failedInstances()) == len(a.res) {
			return err
		}
		ok, _ := a.res.accepted(func(int) bool { return true })
		text += fmt.Sprintf("\nGoing on where the drain holds (%s): maint there once the sessions end.", strings.Join(ok, ", "))
	}
	job.Progress(ctx, text)
	return s.waitDrained(ctx, job, p, a.res, timeout)
}

// waitDrained polls the sessions of the plan's servers on the instances
// that took the drain, says when they change, and sets maint there at zero
// or at the timeout. An instance that missed the drain is not changed now:
// putting it into maint at once would cut its sessions, so it stays pending
// and reconciliation catches it up, which the answer says.
func (s *Service) waitDrained(ctx context.Context, job *command.Job, p *plan, drained results, timeout time.Duration) error {
	took := map[string]bool{}
	skip := map[string]string{}
	for _, o := range drained {
		switch {
		case !o.failed():
			took[o.instance] = true
		case o.err != nil:
			skip[o.instance] = fmt.Sprintf("it was unreachable when the drain was sent (%v); reconciliation catches it up with maint", o.err)
		default:
			skip[o.instance] = "it did not take the drain (see above); reconciliation retries maint there"
		}
	}
	start := time.Now()
	deadline := start.Add(timeout)
	tick := time.NewTicker(s.cfg.DrainPoll)
	defer tick.Stop()
	last := -1
	var left map[string]int
	timedOut := false
	for {
		v := s.fleet.view(ctx, p.env)
		left = map[string]int{}
		total := 0
		for _, n := range v.reachable() {
			if !took[n] {
				if !drainingAll(v.snaps[n], p.targets) {
					continue
				}
				// Reconciliation caught it up with the drain meanwhile:
				// wait for its sessions too, and set maint there with
				// the others.
				took[n] = true
				delete(skip, n)
			}
			for _, t := range p.targets {
				if sv, ok := v.snaps[n].Server(t.backend, t.server); ok && sv.Sessions > 0 {
					left[t.server] += sv.Sessions
					total += sv.Sessions
				}
			}
		}
		if total == 0 {
			break
		}
		if total != last {
			job.Progressf(ctx, "Waiting for sessions to end: %s (%s so far).", sessionsText(left), roundDur(time.Since(start)))
			last = total
		}
		if time.Now().After(deadline) {
			timedOut = true
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	mp := &plan{op: serverOp{verb: "maint", hosts: p.op.hosts, backend: p.op.backend, state: haproxy.StateMaint}, env: p.env, view: p.view,
		targets: p.targets, skip: skip}
	for _, t := range p.targets {
		mp.changes = append(mp.changes, haproxy.Change{Kind: haproxy.SetState, Backend: t.backend, Server: t.server, State: haproxy.StateMaint})
	}
	a, err := s.execute(ctx, job, mp)
	if err != nil {
		return err
	}
	done := fmt.Sprintf("Drained after %s, now in maint: %s.", roundDur(time.Since(start)), mp.what())
	if timedOut {
		done = fmt.Sprintf("The --timeout of %v passed with sessions still open (%s); put into maint anyway: %s.", timeout, sessionsText(left), mp.what())
	}
	text, err := s.answer(job, mp, a, done)
	if err != nil {
		return err
	}
	return job.Done(ctx, text)
}

// drainingAll reports whether every target is in drain on one instance.
func drainingAll(snap *haproxy.Snapshot, targets []target) bool {
	for _, t := range targets {
		if sv, ok := snap.Server(t.backend, t.server); !ok || sv.State != haproxy.StateDrain {
			return false
		}
	}
	return true
}

func sessionsText(m map[string]int) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %d", n, m[n])
	}
	return strings.Join(parts, ", ")
}

// roundDur keeps tenths of a second for short waits, whole seconds after.
func roundDur(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
