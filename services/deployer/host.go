package deployer

import (
	"context"
	"fmt"
	"strings"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/chatin"
	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/services/deployer/enc"
	"github.com/switchboard-ops/switchboard/services/deployer/gitrepo"
)

var provisionSpec = &commandv1.CommandSpec{
	Name:    "host provision",
	Usage:   "host provision <role> <env> [--count=1] [--dry-run] [-- reason]",
	Summary: "Take hosts from the spare pool, assign them to a role and commit.",
	Help: "Takes the first --count hosts of the spare pool (state: spare, by name), gives them the environment, the role and " +
		"the role's backends, and commits. DNS and the load balancers follow from the inventory.changed event.",
	Example: "host provision web production --count=2",
	Args: []*commandv1.ArgSpec{
		{Name: "role", Type: commandv1.ArgType_ARG_TYPE_STRING, Required: true, Help: "the role"},
		{Name: "env", Type: commandv1.ArgType_ARG_TYPE_ENVIRONMENT, Required: true, Help: "the environment"},
	},
	Flags:          []*commandv1.FlagSpec{{Name: "count", Type: commandv1.ArgType_ARG_TYPE_INT, Default: "1", Min: 1, Max: 100, Help: "how many hosts"}},
	SupportsDryRun: true,
	Mutating:       true,
}

var retireSpec = &commandv1.CommandSpec{
	Name:    "host retire",
	Usage:   "host retire <host,…> [--decommission] [--timeout=15m] [--dry-run] [-- reason]",
	Summary: "Drain hosts from their load balancers, then return them to the spare pool (or decommission them) and commit.",
	Help: "Drains the hosts with `lb drain <hosts> --wait`, the command a person would run, in this thread; when the drain " +
		"succeeded, sets them to spare (environment, role and backends removed) or, with --decommission, to decommissioned, " +
		"and commits. If the drain fails nothing is committed. If the replica running it stops, another one resumes it: " +
		"it joins the same drain and commits what is not committed yet.",
	Example: "host retire web-0007,web-0008 -- hardware refresh",
	Args: []*commandv1.ArgSpec{
		{Name: "hosts", Type: commandv1.ArgType_ARG_TYPE_HOST_LIST, Required: true, Help: "hosts to retire"},
	},
	Flags: []*commandv1.FlagSpec{
		{Name: "decommission", Type: commandv1.ArgType_ARG_TYPE_BOOL, Help: "retire for good instead of returning to the spare pool"},
		{Name: "timeout", Type: commandv1.ArgType_ARG_TYPE_DURATION, Help: "how long to wait for the drain", Default: "15m"},
	},
	Confirm:        commandv1.ConfirmPolicy_CONFIRM_POLICY_ALWAYS,
	SupportsDryRun: true,
	Mutating:       true,
	// Safe to run again: the drain's message id is derived from this
	// command's, so a second attempt joins the same drain job, and hosts the
	// first attempt already committed are recognised below.
	Resumable: true,
}

func (s *Service) provision(ctx context.Context, job *command.Job) error {
	role, env := job.Arg("role"), job.Arg("env")
	count := intFlag(job, "count", 1)
	// The choice is made again on the head each attempt; chosen is what
	// the attempt that committed chose.
	var chosen []string
	e := func(inv *enc.Inventory, t *gitrepo.Tree) ([]gitrepo.Change, error) {
		ev := inv.Envs[env]
		if ev == nil {
			return nil, command.UserErrorf("unknown environment %q (environments: %s); nothing was changed", env, strings.Join(inv.EnvNames(), ", "))
		}
		r := ev.Roles[role]
		if r == nil {
			return nil, command.UserErrorf("environment %s has no role %q; nothing was changed", env, role)
		}
		spares := inv.Spares()
		if len(spares) < count {
			return nil, command.UserErrorf("the spare pool is too small: %d spare host(s) (%s), %d asked for; nothing was changed",
				len(spares), strings.Join(names(spares), ", "), count)
		}
		chosen = names(spares[:count])
		var changes []gitrepo.Change
		for _, h := range chosen {
			data, err := t.ReadFile(enc.HostPath(h))
			if err != nil {
				return nil, err
			}
			out, err := enc.SetHost(data, enc.Set{Key: "state", Value: enc.StateActive}, enc.Set{Key: "environment", Value: env},
				enc.Set{Key: "role", Value: role}, enc.Set{Key: "backends", Value: nonEmpty(strings.Join(r.Backends, ","), "~")})
			if err != nil {
				return nil, command.UserErrorf("%s: %v", enc.HostPath(h), err)
			}
			changes = append(changes, gitrepo.Change{Path: enc.HostPath(h), Data: out})
		}
		return changes, nil
	}
	if job.DryRun() {
		inv, _, err := s.current(ctx)
		if err != nil {
			return err
		}
		t, err := s.repo.TreeAt(s.repo.Head())
		if err != nil {
			return err
		}
		if _, err := e(inv, t); err != nil {
			return err
		}
		return job.Done(ctx, fmt.Sprintf("Dry run: would take %s from the spare pool as %s@%s.", strings.Join(chosen, ", "), role, env))
	}
	res, err := s.commit(ctx, job, fmt.Sprintf("host provision %s %s --count=%d", role, env, count), e)
	if err != nil {
		return err
	}
	return job.Done(ctx, fmt.Sprintf("Provisioned %s as %s@%s in commit %s%s.", strings.Join(chosen, ", "), role, env, res.Commit.String()[:12], retried(res)))
}

func names(hs []*enc.Host) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Name
	}
	return out
}

func (s *Service) retire(ctx context.Context, job *command.Job) error {
	hosts := strings.Split(job.Arg("hosts"), ",")
	decommission := job.Flag("decommission") == "true"
	timeout := s.cfg.DrainTimeout
	if v := job.Flag("timeout"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			timeout = d
		}
	}
	inv, _, err := s.current(ctx)
	if err != nil {
		return err
	}
	to, target := "the spare pool", enc.StateSpare
	if decommission {
		to, target = "decommissioned", enc.StateDecommissioned
	}
	var drain, todo []string
	for _, h := range hosts {
		hh := inv.Hosts[h]
		switch {
		case hh == nil:
			return command.UserErrorf("%s is not in the inventory; nothing was changed", h)
		case job.Attempt() > 1 && hh.State == target:
			continue // committed by the attempt that stopped
		case hh.State == enc.StateDecommissioned:
			return command.UserErrorf("%s is decommissioned already; nothing was changed", h)
		case hh.State == enc.StateSpare && !decommission:
			return command.UserErrorf("%s is in the spare pool already; nothing was changed", h)
		}
		todo = append(todo, h)
		if len(hh.Backends) > 0 {
			drain = append(drain, h)
		}
	}
	if len(todo) == 0 {
		return job.Done(ctx, fmt.Sprintf("Retired %s to %s: the first attempt committed it before its replica stopped.", strings.Join(hosts, ", "), to))
	}
	hosts = todo
	if job.DryRun() {
		d := "no host is in a backend, so no drain"
		if len(drain) > 0 {
			d = "would run `lb drain " + strings.Join(drain, ",") + " --wait`"
		}
		return job.Done(ctx, fmt.Sprintf("Dry run: %s, then set %s to %s and commit.", d, strings.Join(hosts, ", "), to))
	}
	if len(drain) > 0 {
		job.Progressf(ctx, "Draining %s through the lb service…", strings.Join(drain, ", "))
		if err := s.drainViaLB(ctx, job, drain, timeout); err != nil {
			return err
		}
		job.Progressf(ctx, "Drained %s.", strings.Join(drain, ", "))
	}
	e := func(inv *enc.Inventory, t *gitrepo.Tree) ([]gitrepo.Change, error) {
		var changes []gitrepo.Change
		for _, h := range hosts {
			if inv.Hosts[h] == nil {
				return nil, command.UserErrorf("%s disappeared from the inventory meanwhile; nothing was committed", h)
			}
			data, err := t.ReadFile(enc.HostPath(h))
			if err != nil {
				return nil, err
			}
			sets := []enc.Set{{Key: "state", Value: enc.StateSpare}, {Key: "environment", Value: "~"}, {Key: "role", Value: "~"}, {Key: "backends", Value: "~"}}
			if decommission {
				sets[0].Value = enc.StateDecommissioned
			}
			out, err := enc.SetHost(data, sets...)
			if err != nil {
				return nil, command.UserErrorf("%s: %v", enc.HostPath(h), err)
			}
			changes = append(changes, gitrepo.Change{Path: enc.HostPath(h), Data: out})
		}
		return changes, nil
	}
	verb := "return to spare pool"
	if decommission {
		verb = "decommission"
	}
	res, err := s.commit(ctx, job, fmt.Sprintf("host retire %s (%s)", strings.Join(hosts, ","), verb), e)
	if err != nil {
		return err
	}
	return job.Done(ctx, fmt.Sprintf("Retired %s to %s in commit %s%s.", strings.Join(hosts, ", "), to, res.Commit.String()[:12], retried(res)))
}

// drainViaLB sends `lb drain <hosts> --wait` through the chat ingress
// (sb.chat.in.deployer) as the person who asked for the retire, in the same thread:
// only the chat publishes on sb.cmd.>, and it checks the person's RBAC for
// lb drain and validates the command against the lb service's own spec.
// It then waits for that job to end.
func (s *Service) drainViaLB(ctx context.Context, job *command.Job, hosts []string, timeout time.Duration) error {
	list := strings.Join(hosts, ",")
	msg := &chatv1.ChatMessage{
		// Derived from this job's command id: a take-over or a retry sends
		// the same message, which the chat recognises, so it finds the same
		// drain job instead of starting another.
		Id:           job.Request().GetId() + "/lb-drain",
		Conversation: job.Request().GetConversation(),
		Author:       job.Requester(),
		Text:         fmt.Sprintf("lb drain %s --wait --timeout=%s -- host retire (job %s)", list, timeout, job.ID()),
	}
	reply, err := chatin.Send(ctx, s.deps.NC, "deployer", msg)
	if err != nil {
		return command.UserErrorf("cannot drain %s: the chat service did not answer (%v); nothing was changed", list, err)
	}
	jobID := chatin.JobID(reply)
	why := strings.TrimRight(strings.TrimSpace(reply.GetMessage()), ".")
	switch reply.GetStatus() {
	case chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED, chatv1.IngressStatus_INGRESS_STATUS_EXISTING:
	case chatv1.IngressStatus_INGRESS_STATUS_UNAVAILABLE:
		// The lb service did not acknowledge in time but may have received
		// the command: if its job exists, follow it rather than claim
		// nothing was changed.
		if jobID != "" {
			if j, _, err := s.jobs.Get(ctx, jobID); err == nil && j != nil {
				break
			}
		}
		return command.UserErrorf("cannot drain %s: %s; nothing was changed", list, why)
	default:
		return command.UserErrorf("cannot drain %s: %s; nothing was changed", list, why)
	}
	wctx, wcancel := context.WithTimeout(ctx, timeout+time.Minute)
	defer wcancel()
	j, err := s.jobs.Wait(wctx, jobID, 250*time.Millisecond)
	switch {
	case ctx.Err() != nil:
		return ctx.Err() // cancelled or shutting down: kit/command decides
	case err != nil:
		return command.UserErrorf("lb drain (job %s) did not end within %s; the hosts were not retired", jobID, timeout)
	case j.GetState() != commandv1.JobState_JOB_STATE_SUCCEEDED:
		return command.UserErrorf("lb drain (job %s) ended %s: %s; the hosts were not retired", j.GetId(),
			strings.ToLower(strings.TrimPrefix(j.GetState().String(), "JOB_STATE_")), j.GetResult())
	}
	return nil
}
