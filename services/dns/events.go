package dns

import (
	"context"
	"fmt"
	"strings"

	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
)

// publishApplied announces an apply on sb.event.dns.applied, with the
// per-record results in its text (the first eventResultLines of them; the
// "records" field counts them all). Its id is the plan's, so a resumed
// apply that publishes it again is dropped as a duplicate.
func (s *Service) publishApplied(ctx context.Context, job *command.Job, p *Plan, t Tally, lines []string, resumed bool) {
	sev := eventv1.Severity_SEVERITY_INFO
	if t.Failed+t.Conflicts > 0 {
		sev = eventv1.Severity_SEVERITY_ERROR
	}
	applied, failed := t.Applied+t.Already, t.Failed
	title := fmt.Sprintf("DNS plan %s applied by %s: %d applied, %d failed", p.ID, who(p.AppliedBy), applied, failed)
	if t.Conflicts > 0 {
		title += fmt.Sprintf(", %d changed by someone else", t.Conflicts)
	}
	if resumed {
		title += " (resumed after a take-over)"
	}
	var zones []string
	for _, z := range p.Zones {
		zones = append(zones, z.Zone)
	}
	ev := &eventv1.Event{
		Id:     "applied-" + p.ID,
		Source: ServiceName, Type: "applied", Severity: sev,
		Title: title,
		Text:  eventText(p, lines),
		Fields: map[string]string{
			"plan": p.ID, "zones": strings.Join(zones, ","), "applied": fmt.Sprint(applied), "failed": fmt.Sprint(failed),
			"already_applied": fmt.Sprint(t.Already), "conflicts": fmt.Sprint(t.Conflicts), "resumed": fmt.Sprint(resumed),
			"records": fmt.Sprint(len(lines)),
			"planner": p.Planner.ID, "applier": p.AppliedBy.ID, "inventory_revision": p.InventoryRevision,
		},
		CorrelationId: "dns/" + p.ID,
		CommandId:     job.Request().GetId(),
	}
	if _, err := emit.Event(ctx, s.js, ev); err != nil {
		s.log.Error("publish dns.applied", "plan", p.ID, "error", err)
	}
}
