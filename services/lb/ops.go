package lb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
)

// serverOp is what lb add, remove, drain and weight ask for.
type serverOp struct {
	verb    string // "add", "remove", "drain", "weight", "maint" (end of a drain)
	hosts   []string
	backend string // empty: every backend the hosts serve in
	state   haproxy.State
	weight  *int
}

// target is one server of one backend.
type target struct{ backend, server string }

func (t target) String() string { return t.backend + "/" + t.server }

// plan is a checked serverOp: the environment, the servers and the changes
// every instance of the environment gets.
type plan struct {
	op       serverOp
	env      string
	view     *view
	targets  []target
	changes  []haproxy.Change
	warnings []string
	// skip are the instances not to change now (name → why); they stay
	// pending in the desired state and reconciliation catches them up.
	skip map[string]string
}

func (p *plan) what() string {
	ts := make([]string, len(p.targets))
	for i, t := range p.targets {
		ts[i] = t.String()
	}
	var to string
	switch {
	case p.op.state != "" && p.op.weight != nil:
		to = fmt.Sprintf("%s, weight %d", p.op.state, *p.op.weight)
	case p.op.state != "":
		to = string(p.op.state)
	default:
		to = fmt.Sprintf("weight %d", *p.op.weight)
	}
	var on []string
	for _, n := range p.view.names {
		if _, skipped := p.skip[n]; !skipped {
			on = append(on, n)
		}
	}
	return fmt.Sprintf("%s → %s on %s (%s)", strings.Join(ts, ", "), to, strings.Join(on, ", "), p.env)
}

// takesOut reports whether the op takes servers out of service.
func (op serverOp) takesOut() bool {
	return op.state == haproxy.StateDrain || op.state == haproxy.StateMaint || (op.weight != nil && *op.weight == 0)
}

// forced checks --force against the configured role.
func (s *Service) forced(job *command.Job) (bool, error) {
	if job.Flag("force") != "true" {
		return false, nil
	}
	if s.cfg.ForceRole == "" {
		return false, command.UserErrorf("--force is turned off here (lb.force_role is not set)")
	}
	if !slices.Contains(job.Requester().GetRoles(), s.cfg.ForceRole) {
		return false, command.UserErrorf("--force needs the role %q, which you do not have", s.cfg.ForceRole)
	}
	return true, nil
}

// plan checks an op against the inventory, every instance and the safety
// limits. Every refusal is a UserError and nothing has changed.
func (s *Service) plan(ctx context.Context, job *command.Job, op serverOp) (*plan, error) {
	force, err := s.forced(job)
	if err != nil {
		return nil, err
	}
	snap, err := s.inv.Get(ctx)
	if errors.Is(err, inventory.ErrEmpty) {
		return nil, command.UserErrorf("the inventory is empty, so no host can be checked (is the deployer running?); nothing was changed")
	}
	if err != nil {
		return nil, fmt.Errorf("load inventory: %w", err)
	}
	env := ""
	for _, h := range op.hosts {
		host := snap.Host(h)
		if host == nil {
			return nil, command.UserErrorf("%s is not in the inventory; nothing was changed", h)
		}
		if op.state == haproxy.StateReady && host.GetState() != inventoryv1.HostState_HOST_STATE_ACTIVE {
			return nil, command.UserErrorf("%s is %s in the inventory, not active: it cannot be put into service; nothing was changed",
				h, strings.ToLower(strings.TrimPrefix(host.GetState().String(), "HOST_STATE_")))
		}
		switch {
		case env == "":
			env = host.GetEnvironment()
		case env != host.GetEnvironment():
			return nil, command.UserErrorf("%s is in %s but %s is in %s: change one environment at a time; nothing was changed",
				op.hosts[0], env, h, host.GetEnvironment())
		}
	}
	if _, ok := s.cfg.Environments[env]; !ok || env == "" {
		return nil, command.UserErrorf("no HAProxy instances are configured for environment %q (lb.environments); nothing was changed", env)
	}
	v := s.fleet.view(ctx, env)
	if len(v.reachable()) == 0 {
		return nil, command.UserErrorf("no HAProxy instance of %s answered, so nothing was changed: %s", env, v.unreachableText())
	}
	p := &plan{op: op, env: env, view: v}
	for _, h := range op.hosts {
		backends := []string{op.backend}
		if op.backend == "" {
			backends = v.backendsOf(h)
			if len(backends) == 0 {
				return nil, command.UserErrorf("%s is a server of no backend on the HAProxy instances of %s; nothing was changed", h, env)
			}
		}
		for _, be := range backends {
			for _, n := range v.reachable() {
				if !v.snaps[n].HasBackend(be) {
					return nil, command.UserErrorf("backend %s does not exist on %s (%s); nothing was changed", be, n, env)
				}
				if _, ok := v.snaps[n].Server(be, h); !ok {
					return nil, command.UserErrorf("%s is not a server of backend %s on %s; nothing was changed", h, be, n)
				}
			}
			p.targets = append(p.targets, target{backend: be, server: h})
			if op.state != "" {
				p.changes = append(p.changes, haproxy.Change{Kind: haproxy.SetState, Backend: be, Server: h, State: op.state})
			}
			if op.weight != nil {
				p.changes = append(p.changes, haproxy.Change{Kind: haproxy.SetWeight, Backend: be, Server: h, Weight: *op.weight})
			}
		}
	}
	if op.takesOut() {
		byBackend := map[string][]string{}
		var order []string
		for _, t := range p.targets {
			if _, ok := byBackend[t.backend]; !ok {
				order = append(order, t.backend)
			}
			byBackend[t.backend] = append(byBackend[t.backend], t.server)
		}
		for _, be := range order {
			all, ready := backendServers(v, be)
			if err := checkSafety(be, all, ready, byBackend[be], s.cfg.MaxOutFraction); err != nil {
				if !force {
					return nil, command.UserErrorf("refused: %v. Nothing was changed; someone with the role %q can add --force", err, s.cfg.ForceRole)
				}
				p.warnings = append(p.warnings, "forced past a safety check: "+err.Error())
			}
		}
	}
	return p, nil
}

// applied is what execute did.
type applied struct {
	res results
	// rolledBack are the servers whose change no instance took and at
	// least one refused: their desired entry is back to what it was, so
	// reconciliation does not retry, forever, a change HAProxy rejects.
	rolledBack []target
}

// execute saves the desired state, applies the changes on every instance of
// the environment (but p.skip), settles what was confirmed, rolls back what
// every instance refused and publishes the events.
func (s *Service) execute(ctx context.Context, job *command.Job, p *plan) (*applied, error) {
	by := job.Requester().GetName()
	if by == "" {
		by = job.Requester().GetId()
	}
	now := time.Now().UTC()
	// What each target's desired entry was, and the revision this command
	// wrote, to roll back to if HAProxy refuses the change.
	prev := make([]*desiredServer, len(p.targets))
	written := make([]uint64, len(p.targets))
	for i, t := range p.targets {
		old, _, err := s.desired.server(ctx, p.env, t.backend, t.server)
		if err != nil {
			return nil, err
		}
		d := &desiredServer{Env: p.env, Backend: t.backend, Server: t.server}
		if old != nil {
			cp := *old
			d = &cp
		}
		if p.op.state != "" {
			d.State = p.op.state
		}
		if p.op.weight != nil {
			w := *p.op.weight
			d.Weight = &w
		}
		if job.Text() != "" || p.op.verb != "maint" {
			d.Reason = job.Text()
		}
		d.By, d.Command, d.CommandID, d.JobID, d.At = by, job.Request().GetCommand(), job.Request().GetId(), job.ID(), now
		d.Pending = slices.Clone(p.view.names)
		rev, err := s.desired.putServer(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("save desired state of %s: %w", t, err)
		}
		prev[i], written[i] = old, rev
	}
	a := &applied{res: s.fleet.apply(ctx, p.env, p.changes, p.skip)}
	for i, t := range p.targets {
		ok, refused := a.res.accepted(func(k int) bool { return p.changes[k].Backend == t.backend && p.changes[k].Server == t.server })
		if len(ok) == 0 && refused {
			done, err := restore(ctx, s.desired.kv, serverKey(p.env, t.backend, t.server), prev[i], written[i])
			if err != nil {
				s.log.Warn("roll back desired state", "server", t.String(), "error", err)
			}
			if done {
				a.rolledBack = append(a.rolledBack, t)
			}
			s.serverEvent(ctx, job, p, t, a.res, by, done)
			continue
		}
		d, rev, err := s.desired.server(ctx, p.env, t.backend, t.server)
		if err == nil && d != nil {
			err = settle(ctx, s.desired.kv, d.key(), rev, func(d *desiredServer) *[]string { return &d.Pending }, ok)
		}
		if err != nil {
			s.log.Warn("settle desired state", "server", t.String(), "error", err)
		}
		s.serverEvent(ctx, job, p, t, a.res, by, false)
	}
	return a, nil
}

// serverEvent publishes sb.event.lb.server.<state|weight> for one server;
// rolledBack says the desired state went back to what it was.
func (s *Service) serverEvent(ctx context.Context, job *command.Job, p *plan, t target, res results, by string, rolledBack bool) {
	typ := "server.weight"
	if p.op.state != "" {
		typ = "server." + string(p.op.state)
	}
	var inst []string
	sev := eventv1.Severity_SEVERITY_INFO
	for _, o := range res {
		st := "ok"
		if o.failed() {
			st, sev = "failed", eventv1.Severity_SEVERITY_WARNING
		}
		inst = append(inst, o.instance+"="+st)
	}
	fields := map[string]string{
		"env": p.env, "backend": t.backend, "server": t.server, "by": by, "reason": job.Text(),
		"instances": strings.Join(inst, ","), "command": job.Request().GetCommand(), "job_id": job.ID(),
	}
	if p.op.state != "" {
		fields["state"] = string(p.op.state)
	}
	if p.op.weight != nil {
		fields["weight"] = fmt.Sprint(*p.op.weight)
	}
	if rolledBack {
		fields["rolled_back"] = "true"
	}
	e := &eventv1.Event{
		Id:            fmt.Sprintf("%s-%d-%s-%s-%s", job.ID(), job.Attempt(), typ, wireSafe(t.backend), wireSafe(t.server)),
		Source:        "lb",
		Type:          typ,
		Severity:      sev,
		Title:         fmt.Sprintf("%s %s → %s (%s)", by, t, strings.TrimPrefix(typ, "server."), p.env),
		Text:          job.Text(),
		Fields:        fields,
		CorrelationId: t.String(),
		CommandId:     job.Request().GetId(),
	}
	if _, err := emit.Event(ctx, s.js, e); err != nil {
		s.log.Warn("publish lb event", "type", typ, "error", err)
	}
}

func wireSafe(s string) string { return strings.NewReplacer(".", "_", "/", "_").Replace(s) }

// answer is the per-instance report. A change that did not reach every
// instance is an error saying what happens next; its text is returned too,
// for a command that goes on (lb drain --wait).
func (s *Service) answer(job *command.Job, p *plan, a *applied, done string) (string, error) {
	var b strings.Builder
	b.WriteString(done)
	if r := job.Text(); r != "" {
		fmt.Fprintf(&b, " Reason: %s.", r)
	}
	for _, w := range p.warnings {
		fmt.Fprintf(&b, "\n⚠ %s", w)
	}
	b.WriteString("\n")
	b.WriteString(a.res.summary(p.changes))
	failed := a.res.failedInstances()
	if len(failed) == 0 {
		return b.String(), nil
	}
	head := "Partly applied"
	if len(failed) == len(a.res) {
		head = "Not applied on any instance"
	}
	var next []string
	if len(a.rolledBack) > 0 {
		ts := make([]string, len(a.rolledBack))
		for i, t := range a.rolledBack {
			ts[i] = t.String()
		}
		next = append(next, fmt.Sprintf("HAProxy refused the change of %s and no instance took it, so its desired state was left as it was: nothing will retry it.",
			strings.Join(ts, ", ")))
	}
	if len(a.rolledBack) < len(p.targets) {
		next = append(next, fmt.Sprintf("The desired state is saved: reconciliation retries %s every %v and reports in %s/%s.",
			strings.Join(failed, ", "), s.cfg.ReconcileInterval, s.cfg.Ops.Adapter, s.cfg.Ops.Channel))
	}
	msg := fmt.Sprintf("%s: %s\n%s", head, b.String(), strings.Join(next, " "))
	return msg, command.UserErrorf("%s", msg)
}
