package dns

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

var applySpec = &commandv1.CommandSpec{
	Name:    "dns apply",
	Usage:   "dns apply <plan-id> [--dry-run]",
	Summary: "Apply exactly a stored DNS plan, if the zones are still what it saw.",
	Help: "Checks that the plan exists, has not expired or been applied, and (with dns.four_eyes) that you did not make it; " +
		"then checks every zone's state against the plan and refuses, changing nothing, if a zone changed since. The " +
		"changes go out with prerequisites on each changed RRset, so even a change racing the apply is not overwritten. " +
		"Reports per-record results and publishes sb.event.dns.applied.",
	Example:        "dns apply 3fa9c1e2b7d4",
	Args:           []*commandv1.ArgSpec{{Name: "plan", Type: commandv1.ArgType_ARG_TYPE_STRING, Required: true, Help: "the plan id from dns plan"}},
	SupportsDryRun: true,
	Mutating:       true,
	Confirm:        commandv1.ConfirmPolicy_CONFIRM_POLICY_NEVER,
}

// applyCmd applies a plan.
func (s *Service) applyCmd(ctx context.Context, job *command.Job) error {
	id := strings.TrimSpace(job.Arg("plan"))
	applier := person(job.Requester())
	p, rev, err := s.plans.get(ctx, id)
	if errors.Is(err, errPlanNotFound) {
		return command.UserErrorf("no plan %q: it never existed or expired (plans live %v) — run `dns plan`", id, s.cfg.PlanTTL)
	}
	if err != nil {
		return err
	}
	if err := s.applicable(p, applier); err != nil {
		return err
	}
	// Check every zone before changing any, so a plan over several zones is
	// refused whole rather than applied in part.
	for _, z := range p.Zones {
		st, err := s.provider.State(ctx, z.Zone)
		if err != nil {
			return providerErr("check zone "+z.Zone, err)
		}
		if st != z.State {
			if !job.DryRun() {
				p.Status, p.Outcome = StatusStale, "zone "+z.Zone+" changed since the plan"
				s.plans.update(ctx, p, rev) // best effort: the refusal stands either way
			}
			return command.UserErrorf("zone %s changed since plan %s was made (it saw serial %d); nothing applied — run `dns plan %s` again", z.Zone, p.ID, z.Serial, strings.TrimSuffix(z.Zone, "."))
		}
	}
	if job.DryRun() {
		return job.Done(ctx, fmt.Sprintf("dry run: plan %s would apply %s; every zone is still as the plan saw it.\n%s", p.ID, plural(p.Count(), "change"), summary(p)))
	}
	// Claim the plan: a compare-and-set, so two appliers cannot both run it.
	p.Status, p.AppliedBy, p.AppliedAt = StatusApplying, &applier, s.now()
	if rev, err = s.plans.update(ctx, p, rev); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return command.UserErrorf("plan %s is being applied or was changed by someone else just now; see `dns plans`", p.ID)
		}
		return err
	}
	applied, failed, lines := 0, 0, []string{}
	var firstErr error
	for _, z := range p.Zones {
		if len(z.Changes) == 0 {
			continue
		}
		job.Progressf(ctx, "applying %s to %s…", plural(len(z.Changes), "change"), z.Zone)
		res, err := s.applyZone(ctx, z)
		for _, r := range res {
			if r.Err == nil {
				applied++
				continue
			}
			failed++
			if len(lines) < 20 {
				lines = append(lines, fmt.Sprintf("✗ %s %s %s: %v", r.Change.Op(), r.Change.Name, r.Change.Type, r.Err))
			}
		}
		if err != nil {
			firstErr = err
			break // later zones are not attempted
		}
	}
	p.Status, p.Outcome = StatusApplied, fmt.Sprintf("%d applied, %d failed", applied, failed)
	if firstErr != nil {
		p.Status = StatusFailed
	}
	if _, err := s.plans.update(ctx, p, rev); err != nil {
		s.log.Error("record plan outcome", "plan", p.ID, "error", err)
	}
	s.publishApplied(ctx, job, p, applied, failed)
	if firstErr != nil {
		msg := fmt.Sprintf("plan %s: %d of %s applied, %d failed", p.ID, applied, plural(p.Count(), "change"), failed)
		if errors.Is(firstErr, zone.ErrConflict) {
			msg += " — a zone changed while applying; run `dns plan` again"
		}
		return command.UserErrorf("%s\n%s", msg, strings.Join(lines, "\n"))
	}
	return job.DoneWith(&chatv1.ChatPost{
		Text: fmt.Sprintf("plan %s applied by %s: %s.\n%s", p.ID, applier, plural(applied, "change"), summary(p)),
	})
}

// applicable refuses plans that cannot be applied now, with the reason.
func (s *Service) applicable(p *Plan, applier Person) error {
	switch p.Status {
	case StatusApplied:
		return command.UserErrorf("plan %s was already applied by %s at %s", p.ID, who(p.AppliedBy), p.AppliedAt.UTC().Format("15:04 MST"))
	case StatusApplying:
		return command.UserErrorf("plan %s is being applied by %s (since %s)", p.ID, who(p.AppliedBy), p.AppliedAt.UTC().Format("15:04:05 MST"))
	case StatusFailed:
		return command.UserErrorf("plan %s was partly applied (%s); run `dns plan` for what remains", p.ID, p.Outcome)
	case StatusStale:
		return command.UserErrorf("plan %s is stale: %s — run `dns plan` again", p.ID, p.Outcome)
	}
	if !s.now().Before(p.ExpiresAt) {
		return command.UserErrorf("plan %s expired at %s — run `dns plan` again", p.ID, p.ExpiresAt.UTC().Format("15:04 MST"))
	}
	if s.cfg.FourEyes && applier.ID != "" && applier.ID == p.Planner.ID {
		return command.UserErrorf("four eyes: %s made plan %s, so someone else must apply it", applier, p.ID)
	}
	return nil
}

func (s *Service) applyZone(ctx context.Context, z ZonePlan) ([]zone.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	return s.provider.Apply(ctx, z.Zone, z.State, z.Changes)
}

func summary(p *Plan) string {
	var parts []string
	for _, z := range p.Zones {
		a, u, d := counts(z.Changes)
		parts = append(parts, fmt.Sprintf("%s +%d ~%d -%d", z.Zone, a, u, d))
	}
	return strings.Join(parts, "; ")
}

func who(p *Person) string {
	if p == nil {
		return "someone"
	}
	return p.String()
}
