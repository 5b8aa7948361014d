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
		"as they fall and sets maint when none is left, or when --timeout passes (saying so, with the sessions left)." + safetyHelp,
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
	res, err := s.execute(ctx, job, p)
	if err != nil {
		return err
	}
	text, err := s.answer(job, p, res, "Draining: "+p.what()+".")
	if err != nil || !wait {
		if err != nil {
			return err
		}
		return job.Done(ctx, text)
	}
	job.Progress(ctx, text)
	return s.waitDrained(ctx, job, p, timeout)
}

// waitDrained polls the sessions of the plan's servers on every reachable
// instance, says when they change, and sets maint at zero or at the
// timeout.
func (s *Service) waitDrained(ctx context.Context, job *command.Job, p *plan, timeout time.Duration) error {
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
	mp := &plan{op: serverOp{verb: "maint", hosts: p.op.hosts, backend: p.op.backend, state: haproxy.StateMaint}, env: p.env, view: p.view, targets: p.targets}
	for _, t := range p.targets {
		mp.changes = append(mp.changes, haproxy.Change{Kind: haproxy.SetState, Backend: t.backend, Server: t.server, State: haproxy.StateMaint})
	}
	res, err := s.execute(ctx, job, mp)
	if err != nil {
		return err
	}
	done := fmt.Sprintf("Drained after %s, now in maint: %s.", roundDur(time.Since(start)), mp.what())
	if timedOut {
		done = fmt.Sprintf("The --timeout of %v passed with sessions still open (%s); put into maint anyway: %s.", timeout, sessionsText(left), mp.what())
	}
	text, err := s.answer(job, mp, res, done)
	if err != nil {
		return err
	}
	return job.Done(ctx, text)
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
