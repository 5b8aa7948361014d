package dns

import (
	"fmt"
	"strings"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"

	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

// How many per-record lines an answer shows inline; the rest are in the
// attached file. The event carries a few more, since it has no file.
const (
	inlineResultLines = 30
	eventResultLines  = 50
	eventTextBytes    = 8 << 10
)

// errEarlierZoneFailed marks changes of the zones after one whose apply
// failed: they are not attempted, so a plan is never applied out of order.
var errEarlierZoneFailed = fmt.Errorf("%w: an earlier zone of the plan failed", zone.ErrNotAttempted)

// outcomeStatus is what became of one change of a plan.
type outcomeStatus int

const (
	// outcomeApplied: this apply made the change.
	outcomeApplied outcomeStatus = iota
	// outcomeAlready: a resumed apply found it made before the take-over.
	outcomeAlready
	// outcomeConflict: a resumed apply found the RRset changed by someone
	// else and left it alone.
	outcomeConflict
	// outcomeFailed: the change was refused, failed or not attempted.
	outcomeFailed
)

// outcome is what an apply did with one change of a plan.
type outcome struct {
	zone   string
	change zone.Change
	status outcomeStatus
	err    error // why it failed (outcomeFailed only)
}

// fromResults turns a provider's results for a zone into outcomes.
func fromResults(zoneName string, res []zone.Result) []outcome {
	out := make([]outcome, 0, len(res))
	for _, r := range res {
		o := outcome{zone: zoneName, change: r.Change, status: outcomeApplied}
		if r.Err != nil {
			o.status, o.err = outcomeFailed, r.Err
		}
		out = append(out, o)
	}
	return out
}

// failedAll is every change of the zones as failed with err.
func failedAll(zones []ZonePlan, err error) []outcome {
	var out []outcome
	for _, z := range zones {
		for _, c := range z.Changes {
			out = append(out, outcome{zone: z.Zone, change: c, status: outcomeFailed, err: err})
		}
	}
	return out
}

// tally counts outcomes, of one zone or of all ("").
func tally(outs []outcome, zoneName string) Tally {
	var t Tally
	for _, o := range outs {
		if zoneName != "" && o.zone != zoneName {
			continue
		}
		switch o.status {
		case outcomeApplied:
			t.Applied++
		case outcomeAlready:
			t.Already++
		case outcomeConflict:
			t.Conflicts++
		default:
			t.Failed++
		}
	}
	return t
}

// recordLines are the per-record results of the outcomes, one line per
// record added, deleted or changed, marked with what happened to it:
// ✓ done, = done before a take-over, ≠ changed by someone else, ✗ failed.
func recordLines(outs []outcome) []string {
	var lines []string
	for _, o := range outs {
		mark, note := "✓", ""
		switch o.status {
		case outcomeAlready:
			mark, note = "=", ": already applied before the take-over"
		case outcomeConflict:
			mark, note = "≠", ": changed by someone else since the plan; left as it is"
		case outcomeFailed:
			mark, note = "✗", ": "+o.err.Error()
		}
		for _, r := range recordDiff(o.change) {
			lines = append(lines, mark+" "+r+note)
		}
	}
	return lines
}

// recordDiff spells out an RRset change record by record: "add <name>
// <type> <value>", "delete …", and "change …" for a record that keeps its
// place but gets another value or TTL.
func recordDiff(c zone.Change) []string {
	if len(c.Old) == 1 && len(c.New) == 1 {
		// A one-record RRset that gets another value reads best as one change.
		o, n := c.Old[0], c.New[0]
		var was []string
		if o.Data != n.Data {
			was = append(was, "was "+o.Data)
		}
		if o.TTL != n.TTL {
			was = append(was, fmt.Sprintf("ttl %d → %d", o.TTL, n.TTL))
		}
		return []string{fmt.Sprintf("change %s %s %s (%s)", c.Name, c.Type, n.Data, strings.Join(was, ", "))}
	}
	old := make(map[string]zone.Record, len(c.Old))
	for _, r := range c.Old {
		old[r.Data] = r
	}
	kept := make(map[string]bool, len(c.New))
	for _, r := range c.New {
		kept[r.Data] = true
	}
	var lines []string
	for _, r := range c.Old {
		if !kept[r.Data] {
			lines = append(lines, fmt.Sprintf("delete %s %s %s", r.Name, r.Type, r.Data))
		}
	}
	for _, r := range c.New {
		o, had := old[r.Data]
		switch {
		case !had:
			lines = append(lines, fmt.Sprintf("add %s %s %s", r.Name, r.Type, r.Data))
		case o.TTL != r.TTL:
			lines = append(lines, fmt.Sprintf("change %s %s %s (ttl %d → %d)", r.Name, r.Type, r.Data, o.TTL, r.TTL))
		}
	}
	return lines
}

// zoneTotals is, per zone of the plan, its changes by kind and what became
// of them ("example.com. +3 ~1 -0: 4 applied").
func zoneTotals(p *Plan, outs []outcome) []string {
	var lines []string
	for _, z := range p.Zones {
		a, u, d := counts(z.Changes)
		lines = append(lines, fmt.Sprintf("%s +%d ~%d -%d: %s", z.Zone, a, u, d, tally(outs, z.Zone).brief()))
	}
	return lines
}

// brief is a tally without the counts that are zero (applied excepted).
func (t Tally) brief() string {
	parts := []string{fmt.Sprintf("%d applied", t.Applied)}
	if t.Already > 0 {
		parts = append(parts, fmt.Sprintf("%d already applied before the take-over", t.Already))
	}
	if t.Conflicts > 0 {
		parts = append(parts, fmt.Sprintf("%d changed by someone else", t.Conflicts))
	}
	if t.Failed > 0 {
		parts = append(parts, fmt.Sprintf("%d failed", t.Failed))
	}
	return strings.Join(parts, ", ")
}

// appliedPost is the answer of a successful apply, built like planPost:
// the headline and per-zone totals, then the per-record results, all of
// them inline when few, otherwise the first ones inline and every one in
// the attached file.
func appliedPost(p *Plan, headline string, outs []outcome, lines []string) *chatv1.ChatPost {
	totals := zoneTotals(p, outs)
	var fields []*chatv1.Field
	for i, z := range p.Zones {
		fields = append(fields, &chatv1.Field{Title: z.Zone, Value: strings.TrimPrefix(totals[i], z.Zone+" "), Short: true})
	}
	shown := lines
	var attachments []*chatv1.Attachment
	if len(lines) > inlineResultLines {
		shown = append(lines[:inlineResultLines:inlineResultLines], fmt.Sprintf("… %d more in %s", len(lines)-inlineResultLines, resultsName(p)))
		attachments = []*chatv1.Attachment{{
			Name: resultsName(p), ContentType: "text/plain", Title: "DNS apply of plan " + p.ID,
			Data: capBytes(renderResults(p, outs), 512<<10),
		}}
	}
	head := headline + "\n" + strings.Join(totals, "\n")
	return &chatv1.ChatPost{
		Text: head + "\n" + strings.Join(shown, "\n"),
		Blocks: []*chatv1.Block{
			{Content: &chatv1.Block_Markdown{Markdown: headline}},
			{Content: &chatv1.Block_Fields{Fields: &chatv1.Fields{Items: fields}}},
			{Content: &chatv1.Block_Code{Code: strings.Join(shown, "\n") + "\n"}},
		},
		Attachments: attachments,
	}
}

func resultsName(p *Plan) string { return "dns-apply-" + p.ID + ".txt" }

// renderResults is the full per-record list, grouped by zone with its
// totals.
func renderResults(p *Plan, outs []outcome) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# DNS apply of plan %s by %s at %s\n", p.ID, who(p.AppliedBy), p.AppliedAt.UTC().Format(time.RFC3339))
	totals := zoneTotals(p, outs)
	for i, z := range p.Zones {
		b.WriteString("## zone " + totals[i] + "\n")
		var inZone []outcome
		for _, o := range outs {
			if o.zone == z.Zone {
				inZone = append(inZone, o)
			}
		}
		for _, l := range recordLines(inZone) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// eventText is the applied event's text: the plan's summary and the first
// per-record results, bounded so the event stays small however big the plan.
func eventText(p *Plan, lines []string) string {
	text := summary(p)
	if len(lines) > 0 {
		text += "\n" + strings.Join(limit(lines, eventResultLines), "\n")
	}
	if len(text) <= eventTextBytes {
		return text
	}
	cut := strings.LastIndexByte(text[:eventTextBytes], '\n')
	if cut < 0 {
		cut = eventTextBytes
	}
	return text[:cut] + "\n… cut; the apply's answer lists every record"
}
