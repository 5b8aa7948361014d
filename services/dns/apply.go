package dns

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
		"Reports per-record results and publishes sb.event.dns.applied. Resumable: when the replica running it stops, the one " +
		"that takes the job over reads the zones again, skips the changes already in place, reports the ones someone else " +
		"changed, and applies the rest.",
	Example:        "dns apply 3fa9c1e2b7d4",
	Args:           []*commandv1.ArgSpec{{Name: "plan", Type: commandv1.ArgType_ARG_TYPE_STRING, Required: true, Help: "the plan id from dns plan"}},
	SupportsDryRun: true,
	Mutating:       true,
	Resumable:      true,
	Confirm:        commandv1.ConfirmPolicy_CONFIRM_POLICY_NEVER,
}

// applyCmd applies a plan. A replica that takes the job over from one that
// stopped (Attempt() > 1) finds the plan claimed by this job and resumes it.
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
	if job.Attempt() > 1 && !job.DryRun() && p.ApplyJob == job.ID() {
		return s.resumeApply(ctx, job, p, rev)
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
	// The job id lets a replica that takes this job over resume it.
	p.Status, p.AppliedBy, p.AppliedAt, p.ApplyJob = StatusApplying, &applier, s.now(), job.ID()
	if rev, err = s.plans.update(ctx, p, rev); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return command.UserErrorf("plan %s is being applied or was changed by someone else just now; see `dns plans`", p.ID)
		}
		return err
	}
	var outs []outcome
	var firstErr error
	for i, z := range p.Zones {
		if len(z.Changes) == 0 {
			continue
		}
		job.Progressf(ctx, "applying %s to %s…", plural(len(z.Changes), "change"), z.Zone)
		res, err := s.applyZone(ctx, z.Zone, z.State, z.Changes)
		if err != nil && interrupted(ctx) {
			return leftForTakeOver(p, err)
		}
		outs = append(outs, fromResults(z.Zone, res)...)
		if err != nil {
			firstErr = err
			outs = append(outs, failedAll(p.Zones[i+1:], errEarlierZoneFailed)...)
			break
		}
	}
	return s.finishApply(ctx, job, p, rev, outs, firstErr, false)
}

// resumeApply finishes a plan this job claimed before its replica stopped.
// The first attempt may have sent some UPDATEs and not others, so every
// zone is read again and each change sorted: already applied (the RRset is
// the change's New), still to do (it is still the plan's Old), or changed by
// someone else (neither). Only the changes still to do are applied, with
// prerequisites on what was just read.
func (s *Service) resumeApply(ctx context.Context, job *command.Job, p *Plan, rev uint64) error {
	switch p.Status {
	case StatusApplying:
	case StatusApplied, StatusFailed:
		// The first attempt recorded the outcome and stopped before it
		// answered: answer from the record (the event id is the plan's, so
		// publishing it again is dropped as a duplicate).
		return s.answerRecorded(ctx, job, p)
	default:
		return fmt.Errorf("plan %s claimed by job %s is %q, not applying", p.ID, job.ID(), p.Status)
	}
	job.Progressf(ctx, "resuming plan %s after a take-over: reading the zones again to see what was applied…", p.ID)
	var outs []outcome
	var firstErr error
	for i, z := range p.Zones {
		if len(z.Changes) == 0 {
			continue
		}
		snap, err := s.readZone(ctx, z.Zone)
		if err != nil {
			if interrupted(ctx) {
				return leftForTakeOver(p, err)
			}
			firstErr = providerErr("read zone "+z.Zone, err)
			outs = append(outs, failedAll(p.Zones[i:], fmt.Errorf("not checked: %w", firstErr))...)
			break
		}
		sets := zone.Group(snap.Records)
		var todo []zone.Change
		for _, c := range z.Changes {
			cur := sets[c.Key()]
			switch {
			case zone.SameSet(cur, c.New):
				outs = append(outs, outcome{zone: z.Zone, change: c, status: outcomeAlready})
			case zone.SameSet(cur, c.Old):
				todo = append(todo, c)
			default:
				outs = append(outs, outcome{zone: z.Zone, change: c, status: outcomeConflict})
			}
		}
		if len(todo) == 0 {
			continue
		}
		job.Progressf(ctx, "%s: %d of %s already in place; applying the other %d…", z.Zone, len(z.Changes)-len(todo), plural(len(z.Changes), "change"), len(todo))
		res, err := s.applyZone(ctx, z.Zone, snap.State, todo)
		if err != nil && interrupted(ctx) {
			return leftForTakeOver(p, err)
		}
		outs = append(outs, fromResults(z.Zone, res)...)
		if err != nil {
			firstErr = err
			outs = append(outs, failedAll(p.Zones[i+1:], errEarlierZoneFailed)...)
			break
		}
	}
	return s.finishApply(ctx, job, p, rev, outs, firstErr, true)
}

// interrupted reports whether the job was stopped by its replica shutting
// down rather than on request: the plan then stays "applying" for the
// replica that takes the job over.
func interrupted(ctx context.Context) bool {
	return ctx.Err() != nil && !errors.Is(context.Cause(ctx), command.ErrCancelled)
}

func leftForTakeOver(p *Plan, err error) error {
	return fmt.Errorf("apply plan %s stopped with its replica; the plan stays applying for the replica that takes the job over: %w", p.ID, err)
}

// finishApply records the plan's final state, publishes the event and
// answers. The record and the event are written even when the job context
// ended, so a cancelled apply still says how far it got.
func (s *Service) finishApply(ctx context.Context, job *command.Job, p *Plan, rev uint64, outs []outcome, firstErr error, resumed bool) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	t := tally(outs, "")
	p.Status, p.Outcome, p.Tally = StatusApplied, t.String(), &t
	if firstErr != nil || t.Failed > 0 || t.Conflicts > 0 {
		p.Status = StatusFailed
	}
	if _, err := s.plans.update(wctx, p, rev); err != nil {
		s.log.Error("record plan outcome", "plan", p.ID, "error", err)
	}
	return s.answerApply(wctx, job, p, t, outs, "", firstErr, resumed)
}

// answerRecorded answers for an apply whose outcome the plan recorded
// before its replica stopped. Only the tally was recorded, so the record
// lines say what is known: after a successful apply every change is in
// place.
func (s *Service) answerRecorded(ctx context.Context, job *command.Job, p *Plan) error {
	var t Tally
	if p.Tally != nil {
		t = *p.Tally
	}
	var outs []outcome
	if p.Status == StatusApplied {
		for _, z := range p.Zones {
			for _, c := range z.Changes {
				outs = append(outs, outcome{zone: z.Zone, change: c, status: outcomeApplied})
			}
		}
	}
	return s.answerApply(ctx, job, p, t, outs, "(the outcome was recorded before the take-over)", nil, true)
}

// answerApply publishes sb.event.dns.applied (once per plan: its id is the
// plan's) and returns the job's answer: the tally, the totals per zone and
// the per-record results, after the note if there is one.
func (s *Service) answerApply(ctx context.Context, job *command.Job, p *Plan, t Tally, outs []outcome, note string, firstErr error, resumed bool) error {
	lines := recordLines(outs)
	s.publishApplied(ctx, job, p, t, lines, resumed)
	if note != "" {
		lines = append([]string{note}, lines...)
	}
	inPlace := t.Applied + t.Already
	if p.Status != StatusApplied {
		msg := fmt.Sprintf("plan %s: %d of %s applied, %d failed", p.ID, inPlace, plural(p.Count(), "change"), t.Failed)
		if t.Conflicts > 0 {
			msg += fmt.Sprintf(", %d changed by someone else", t.Conflicts)
		}
		if resumed {
			msg += fmt.Sprintf(" (resumed after a take-over; %d applied before it)", t.Already)
		}
		if errors.Is(firstErr, zone.ErrConflict) || t.Conflicts > 0 {
			msg += " — a zone changed while applying; run `dns plan` again"
		}
		if len(outs) > 0 {
			msg += "\n" + strings.Join(zoneTotals(p, outs), "\n")
		}
		return command.UserErrorf("%s\n%s", msg, strings.Join(limit(lines, inlineResultLines), "\n"))
	}
	headline := fmt.Sprintf("plan %s applied by %s: %s.", p.ID, who(p.AppliedBy), plural(inPlace, "change"))
	if resumed {
		headline = fmt.Sprintf("plan %s applied by %s: %s, resumed after a take-over (%d already applied before it, %d applied now).",
			p.ID, who(p.AppliedBy), plural(inPlace, "change"), t.Already, t.Applied)
	}
	return job.DoneWith(appliedPost(p, headline, outs, lines))
}

// String is the outcome recorded in the plan.
func (t Tally) String() string {
	parts := []string{fmt.Sprintf("%d applied", t.Applied+t.Already)}
	if t.Already > 0 {
		parts = append(parts, fmt.Sprintf("%d of them before a take-over", t.Already))
	}
	if t.Conflicts > 0 {
		parts = append(parts, fmt.Sprintf("%d changed by someone else", t.Conflicts))
	}
	parts = append(parts, fmt.Sprintf("%d failed", t.Failed))
	return strings.Join(parts, ", ")
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

func (s *Service) applyZone(ctx context.Context, name, state string, changes []zone.Change) ([]zone.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	return s.provider.Apply(ctx, name, state, changes)
}

func (s *Service) readZone(ctx context.Context, name string) (*zone.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	return s.provider.Read(ctx, name)
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
