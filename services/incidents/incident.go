package incidents

import (
	"context"
	"fmt"
	"strings"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/services/incidents/pd"
)

var incidentArg = &commandv1.ArgSpec{Name: "incident", Type: commandv1.ArgType_ARG_TYPE_STRING, Required: true,
	Help: "Incident number (765 or #765), id or link."}

var noteSpec = &commandv1.CommandSpec{
	Name:    "incident note",
	Usage:   "incident note <incident> [--dry-run] -- text",
	Summary: "Add a note to a PagerDuty incident, as you.",
	Help: "Adds the text as a note on the incident in PagerDuty, written by your PagerDuty user (matched by e-mail). " +
		"The note is also in switchboard's audit trail with the command.",
	Example:        "incident note 765 -- restarted carbon-relay on cop3, points flowing again",
	Args:           []*commandv1.ArgSpec{incidentArg},
	Mutating:       true,
	SupportsDryRun: true,
	TextRequired:   true,
	TextName:       "text",
	Resumable:      true, // a take-over first looks for the note
}

var showSpec = &commandv1.CommandSpec{
	Name:    "incident show",
	Usage:   "incident show <incident>",
	Summary: "Show a PagerDuty incident: status, who has it, its last notes.",
	Example: "incident show 765",
	Args:    []*commandv1.ArgSpec{incidentArg},
}

func (s *Service) incidentCommands() []command.Command {
	return []command.Command{
		{Spec: noteSpec, Run: s.note},
		{Spec: showSpec, Run: s.show},
	}
}

func (s *Service) oneIncident(ctx context.Context, job *command.Job) (pd.Incident, error) {
	refs, err := parseRefs(job.Arg("incident"))
	if err != nil {
		return pd.Incident{}, err
	}
	if len(refs) != 1 {
		return pd.Incident{}, command.UserErrorf("name one incident, e.g. %s", showSpec.Example)
	}
	incs, err := s.findIncidents(ctx, refs, true)
	if err != nil {
		return pd.Incident{}, err
	}
	return incs[0], nil
}

// note adds a PagerDuty note.
func (s *Service) note(ctx context.Context, job *command.Job) error {
	ctx, cancel := s.jobContext(ctx, job)
	defer cancel()
	text := strings.TrimSpace(job.Text())
	if text == "" {
		return command.UserErrorf("write the note after --, e.g. %s", noteSpec.Example)
	}
	inc, err := s.oneIncident(ctx, job)
	if err != nil {
		return err
	}
	who, err := s.requester(ctx, job)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("incident #%d", inc.Number)
	if job.DryRun() {
		return job.Done(ctx, fmt.Sprintf("Would add a note to %s (%s) as %s: %s", name, inc.Title, who.user.Name, text))
	}
	if job.Attempt() > 1 {
		// The replica that died may have added it already.
		if notes, err := s.pager.Notes(ctx, inc.ID); err == nil {
			for _, n := range notes {
				if n.Content == text {
					return job.Done(ctx, fmt.Sprintf("Annotation for %s added.", name))
				}
			}
		}
	}
	if _, err := s.pager.AddNote(ctx, who.from, inc.ID, text); err != nil {
		return pdFailure(err, "add the note to "+name)
	}
	return job.Done(ctx, fmt.Sprintf("Annotation for %s added.", name))
}

// show describes an incident.
func (s *Service) show(ctx context.Context, job *command.Job) error {
	ctx, cancel := s.jobContext(ctx, job)
	defer cancel()
	inc, err := s.oneIncident(ctx, job)
	if err != nil {
		return err
	}
	notes, nerr := s.pager.Notes(ctx, inc.ID)
	fields := []*chatv1.Field{
		{Title: "Status", Value: inc.Status, Short: true},
		{Title: "Urgency", Value: inc.Urgency, Short: true},
		{Title: "Service", Value: inc.Service.Name, Short: true},
		{Title: "Assigned to", Value: orNone(names(inc.Assignees)), Short: true},
		{Title: "Opened", Value: since(inc.CreatedAt), Short: true},
	}
	if inc.Priority != "" {
		fields = append(fields, &chatv1.Field{Title: "Priority", Value: inc.Priority, Short: true})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Incident #%d — %s\n", inc.Number, inc.Title)
	for _, f := range fields {
		fmt.Fprintf(&b, "%s: %s\n", f.Title, f.Value)
	}
	blocks := []*chatv1.Block{
		{Content: &chatv1.Block_Markdown{Markdown: fmt.Sprintf("*Incident #%d* — %s", inc.Number, inc.Title)}},
		{Content: &chatv1.Block_Fields{Fields: &chatv1.Fields{Items: fields}}},
	}
	switch {
	case nerr != nil:
		b.WriteString("Notes: could not be read (" + nerr.Error() + ")\n")
	case len(notes) > 0:
		var nb strings.Builder
		for _, n := range notes[max(0, len(notes)-3):] {
			fmt.Fprintf(&nb, "%s (%s): %s\n", n.User.Name, since(n.CreatedAt), n.Content)
		}
		fmt.Fprintf(&b, "Last notes:\n%s", nb.String())
		blocks = append(blocks, &chatv1.Block{Content: &chatv1.Block_Code{Code: strings.TrimRight(nb.String(), "\n")}})
	}
	if inc.URL != "" {
		b.WriteString(inc.URL)
		blocks = append(blocks, &chatv1.Block{Content: &chatv1.Block_Link{Link: &chatv1.Link{Label: "Open in PagerDuty", Url: inc.URL}}})
	}
	return job.DoneWith(&chatv1.ChatPost{Text: strings.TrimRight(b.String(), "\n"), Blocks: blocks})
}

func orNone(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}
