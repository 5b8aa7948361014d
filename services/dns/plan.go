package dns

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

var planSpec = &commandv1.CommandSpec{
	Name:    "dns plan",
	Usage:   "dns plan [zone]",
	Summary: "Compute the DNS changes the inventory implies and store them as a plan to apply.",
	Help: "Reads the inventory and the zone (every configured zone when none is named), computes the records the rules " +
		"make, and diffs them with what the zone holds, touching only records switchboard owns. The plan is stored for " +
		"dns.plan_ttl with the zone state it saw; `dns apply <id>` applies exactly it. Changes nothing in DNS.",
	Example: "dns plan example.com",
	Args:    []*commandv1.ArgSpec{{Name: "zone", Type: commandv1.ArgType_ARG_TYPE_STRING, Help: "a configured zone (default: all)"}},
}

// planCmd makes a plan and posts its summary with the full diff attached.
func (s *Service) planCmd(ctx context.Context, job *command.Job) error {
	zones, err := s.zonesArg(job.Arg("zone"))
	if err != nil {
		return err
	}
	job.Progressf(ctx, "reading the inventory and %s from %s…", plural(len(zones), "zone"), s.cfg.Provider)
	p, err := s.makePlan(ctx, job.ID(), zones, person(job.Requester()), job.Request().GetId())
	if err != nil {
		return err
	}
	if p.Count() == 0 {
		return job.Done(ctx, "DNS is in step with the inventory ("+revText(p)+"): nothing to change."+skippedText(p))
	}
	if err := s.plans.create(ctx, p); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		// A retried command: show the plan the first attempt stored.
		if old, _, gerr := s.plans.get(ctx, p.ID); gerr == nil {
			p = old
		}
	}
	return job.DoneWith(planPost(p))
}

// zonesArg resolves the zone argument: "" is every zone.
func (s *Service) zonesArg(arg string) ([]string, error) {
	if len(s.zones) == 0 {
		return nil, command.UserErrorf("no zones are configured (dns.zones)")
	}
	if arg == "" {
		return s.zones, nil
	}
	z := zone.Canonical(arg)
	for _, known := range s.zones {
		if known == z {
			return []string{z}, nil
		}
	}
	return nil, command.UserErrorf("unknown zone %q: the zones are %s", arg, strings.Join(s.zones, ", "))
}

// makePlan reads the inventory and the zones and diffs them. Problems with
// the rules or the inventory refuse the whole plan, since skipping a record
// would read as "delete it".
func (s *Service) makePlan(ctx context.Context, id string, zones []string, planner Person, commandID string) (*Plan, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	snap, err := inventory.Load(ctx, s.invKV)
	if errors.Is(err, inventory.ErrEmpty) {
		return nil, command.UserError(err)
	}
	if err != nil {
		return nil, fmt.Errorf("load inventory: %w", err)
	}
	return s.planFrom(ctx, id, zones, planner, commandID, snap)
}

// planFrom is makePlan with the inventory already loaded.
func (s *Service) planFrom(ctx context.Context, id string, zones []string, planner Person, commandID string, snap *inventory.Snapshot) (*Plan, error) {
	// The desired records do not depend on the zones: compute them while
	// the zones are read.
	type built struct {
		want     *desired
		problems []string
	}
	bc := make(chan built, 1)
	go func() {
		w, p := s.build(snap)
		bc <- built{w, p}
	}()
	snaps := make([]*zone.Snapshot, len(zones))
	var readErr error
	for i, z := range zones {
		zs, err := s.provider.Read(ctx, z)
		if err != nil {
			readErr = providerErr("read zone "+z, err)
			break
		}
		snaps[i] = zs
	}
	b := <-bc
	if len(b.problems) > 0 {
		return nil, command.UserErrorf("no plan made: the inventory or the rules give records DNS cannot hold:\n• %s", strings.Join(limit(b.problems, 20), "\n• "))
	}
	if readErr != nil {
		return nil, readErr
	}
	now := s.now()
	p := &Plan{
		ID: id, Planner: planner, CommandID: commandID, CreatedAt: now, ExpiresAt: now.Add(s.cfg.PlanTTL),
		InventoryRevision: snap.Meta.GetRevision(), Status: StatusOpen,
	}
	for i, z := range zones {
		changes, skipped := s.diffZone(snaps[i], b.want.sets[z])
		p.Zones = append(p.Zones, ZonePlan{Zone: z, State: snaps[i].State, Serial: snaps[i].Serial, Changes: changes})
		p.Skipped = append(p.Skipped, skipped...)
	}
	return p, nil
}

// providerErr turns the errors a person can act on into user errors.
func providerErr(what string, err error) error {
	switch {
	case errors.Is(err, zone.ErrAuth), errors.Is(err, zone.ErrUnknownZone):
		return command.UserErrorf("%s: %v", what, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// planPost is the chat answer for a plan: a compact summary, the counts per
// zone, and the full diff as a file.
func planPost(p *Plan) *chatv1.ChatPost {
	var fields []*chatv1.Field
	for _, z := range p.Zones {
		a, u, d := counts(z.Changes)
		fields = append(fields, &chatv1.Field{Title: z.Zone, Value: fmt.Sprintf("+%d ~%d -%d (serial %d)", a, u, d, z.Serial), Short: true})
	}
	text := fmt.Sprintf("DNS plan %s: %s (%s), from %s by %s; expires %s — `dns apply %s`",
		p.ID, plural(p.Count(), "change"), summary(p), revText(p), p.Planner, p.ExpiresAt.UTC().Format("15:04 MST"), p.ID)
	diff := renderDiff(p)
	preview := diff
	if lines := strings.SplitAfter(diff, "\n"); len(lines) > 15 {
		preview = strings.Join(lines[:15], "") + fmt.Sprintf("… %d more lines in %s\n", len(lines)-15, diffName(p))
	}
	return &chatv1.ChatPost{
		Text: text + skippedText(p),
		Blocks: []*chatv1.Block{
			{Content: &chatv1.Block_Markdown{Markdown: text}},
			{Content: &chatv1.Block_Fields{Fields: &chatv1.Fields{Items: fields}}},
			{Content: &chatv1.Block_Code{Code: preview}},
		},
		Attachments: []*chatv1.Attachment{{Name: diffName(p), ContentType: "text/plain", Title: "DNS plan " + p.ID, Data: capBytes(diff, 512<<10)}},
	}
}

func diffName(p *Plan) string { return "dns-plan-" + p.ID + ".diff" }

// renderDiff is the full diff: one line per record, "+" added, "-" removed,
// grouped by zone with the state the plan saw.
func renderDiff(p *Plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# DNS plan %s by %s at %s, inventory %s\n", p.ID, p.Planner, p.CreatedAt.UTC().Format(time.RFC3339), p.InventoryRevision)
	for _, z := range p.Zones {
		a, u, d := counts(z.Changes)
		fmt.Fprintf(&b, "## zone %s serial %d: %d to add, %d to change, %d to delete\n", z.Zone, z.Serial, a, u, d)
		for _, c := range z.Changes {
			fmt.Fprintf(&b, "# %s %s %s\n", c.Op(), c.Name, c.Type)
			for _, r := range c.Old {
				b.WriteString("- " + r.String() + "\n")
			}
			for _, r := range c.New {
				b.WriteString("+ " + r.String() + "\n")
			}
		}
	}
	for _, s := range p.Skipped {
		b.WriteString("# left alone: " + s + "\n")
	}
	return b.String()
}

func capBytes(s string, n int) []byte {
	if len(s) <= n {
		return []byte(s)
	}
	return []byte(s[:n] + "\n# … cut: the full plan is in KV sb_dns_plans\n")
}

func revText(p *Plan) string {
	if p.InventoryRevision == "" {
		return "inventory"
	}
	r := p.InventoryRevision
	if len(r) > 12 {
		r = r[:12]
	}
	return "inventory " + r
}

func skippedText(p *Plan) string {
	if len(p.Skipped) == 0 {
		return ""
	}
	return fmt.Sprintf("\nLeft alone (not owned by switchboard):\n• %s", strings.Join(limit(p.Skipped, 10), "\n• "))
}

func limit(xs []string, n int) []string {
	if len(xs) <= n {
		return xs
	}
	return append(xs[:n:n], fmt.Sprintf("… and %d more", len(xs)-n))
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func person(id *chatv1.Identity) Person {
	return Person{ID: id.GetId(), Name: id.GetName(), Automation: id.GetAutomation()}
}
