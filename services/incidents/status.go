package incidents

import (
	"context"
	"errors"
	"fmt"
	"strings"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/services/incidents/statuspage"
)

// StatusPage is what the status commands need from a public status page.
// *statuspage.Client implements it for Atlassian Statuspage. Another
// provider (Instatus, a self-hosted page) is a package implementing these
// three methods with package statuspage's types, and an entry in
// statusProviders. The commands rely on each method retrying within ctx's
// deadline what is safe to retry, and on HTTP failures being returned as
// *statuspage.Error, which statusFailure words for people (README.md, "Another
// status page provider").
type StatusPage interface {
	// Components lists the page's components with their current status.
	Components(ctx context.Context) ([]statuspage.Component, error)
	// SetComponentStatus changes one component's status.
	SetComponentStatus(ctx context.Context, id string, st statuspage.Status) (statuspage.Component, error)
	// CreateIncident opens an incident, optionally setting the status of
	// the components it affects.
	CreateIncident(ctx context.Context, n statuspage.NewIncident) (statuspage.Incident, error)
}

var _ StatusPage = (*statuspage.Client)(nil)

// statusProviders build the client of each status page provider, by the
// name incidents.statuspage.provider gives. Validate refuses other names.
var statusProviders = map[string]func(StatusPageConfig) StatusPage{
	"statuspage": func(c StatusPageConfig) StatusPage {
		var opts []statuspage.Option
		if c.APIURL != "" {
			opts = append(opts, statuspage.WithBaseURL(c.APIURL))
		}
		return statuspage.New(c.PageID, c.APIKey, opts...)
	},
}

// states are what people type → the provider's status.
var states = map[string]statuspage.Status{
	"operational":       statuspage.Operational,
	"degraded":          statuspage.DegradedPerformance,
	"partial_outage":    statuspage.PartialOutage,
	"major_outage":      statuspage.MajorOutage,
	"under_maintenance": statuspage.UnderMaintenance,
}

var statusSetSpec = &commandv1.CommandSpec{
	Name:    "status set",
	Usage:   "status set <component> <operational|degraded|partial_outage|major_outage|under_maintenance> [--dry-run] [-- message]",
	Summary: "Set a component's status on the public status page; with a message, also open an incident about it.",
	Help: "Components are found by the names in incidents.statuspage.components, or by their name on the page (quote names with spaces). " +
		"A message after -- opens a status page incident that names the component, so customers read why.",
	Example: "status set api degraded -- elevated error rates on metric writes, investigating",
	Args: []*commandv1.ArgSpec{
		{Name: "component", Type: commandv1.ArgType_ARG_TYPE_STRING, Required: true, Help: "Component name or id."},
		{Name: "state", Type: commandv1.ArgType_ARG_TYPE_ENUM, Required: true, Choices: []string{"operational", "degraded", "partial_outage", "major_outage", "under_maintenance"}},
	},
	Mutating:       true,
	SupportsDryRun: true,
	TextName:       "message",
}

var statusIncidentSpec = &commandv1.CommandSpec{
	Name:    "status incident",
	Usage:   "status incident <title> [--status=investigating|identified|monitoring|resolved] [--dry-run] -- message",
	Summary: "Open an incident on the public status page.",
	Example: "status incident Delayed metrics -- some graphs lag by up to 10 minutes; we are on it",
	Args: []*commandv1.ArgSpec{
		{Name: "title", Type: commandv1.ArgType_ARG_TYPE_TEXT, Required: true, Variadic: true},
	},
	Flags: []*commandv1.FlagSpec{
		{Name: "status", Type: commandv1.ArgType_ARG_TYPE_ENUM, Choices: []string{"investigating", "identified", "monitoring", "resolved"}, Default: "investigating"},
	},
	Mutating:       true,
	SupportsDryRun: true,
	TextRequired:   true,
	TextName:       "message",
}

func (s *Service) statusCommands() []command.Command {
	return []command.Command{
		{Spec: statusSetSpec, Run: s.statusSet},
		{Spec: statusIncidentSpec, Run: s.statusIncident},
	}
}

func words(st statuspage.Status) string { return strings.ReplaceAll(string(st), "_", " ") }

// statusFailure words a status page error for the person. A provider's
// errors are worded by their HTTP status when they are (or wrap) a
// *statuspage.Error.
func statusFailure(err error, doing string) error {
	var e *statuspage.Error
	if errors.As(err, &e) {
		switch {
		case e.Status == 429:
			return command.UserErrorf("the status page is rate-limiting us (HTTP 429), so I could not %s before the command's deadline. Try again in a minute", doing)
		case e.Status == 0 || e.Status >= 500:
			return command.UserErrorf("the status page did not answer properly (%v), so I could not confirm that I could %s", e, doing)
		case e.Status == 401 || e.Status == 403:
			return fmt.Errorf("status page refused our API key while trying to %s: %w", doing, err)
		default:
			return command.UserErrorf("the status page refused to %s: %s", doing, e.Message)
		}
	}
	return fmt.Errorf("%s: %w", doing, err)
}

func (s *Service) statusSet(ctx context.Context, job *command.Job) error {
	ctx, cancel := s.jobContext(ctx, job)
	defer cancel()
	name, msg := job.Arg("component"), strings.TrimSpace(job.Text())
	st, ok := states[job.Arg("state")]
	if !ok {
		return command.UserErrorf("%q is not a state; use operational, degraded, partial_outage, major_outage or under_maintenance", job.Arg("state"))
	}
	comps, err := s.status.Components(ctx)
	if err != nil {
		return statusFailure(err, "list the status page's components")
	}
	want := name
	if id, ok := s.cfg.StatusPage.Components[name]; ok {
		want = id
	}
	var comp *statuspage.Component
	for i, c := range comps {
		if c.ID == want || strings.EqualFold(c.Name, want) {
			comp = &comps[i]
			break
		}
	}
	if comp == nil {
		var known []string
		for _, c := range comps {
			known = append(known, c.Name)
		}
		return command.UserErrorf("the status page has no component %q; it has: %s", name, strings.Join(known, ", "))
	}
	if job.DryRun() {
		what := fmt.Sprintf("Would set %s on the status page from %s to %s", comp.Name, words(comp.Status), words(st))
		if msg != "" {
			what += fmt.Sprintf(", and open an incident %q saying: %s", comp.Name+" "+words(st), msg)
		}
		return job.Done(ctx, what+".")
	}
	got, err := s.status.SetComponentStatus(ctx, comp.ID, st)
	if err != nil {
		return statusFailure(err, "set "+comp.Name+" to "+words(st))
	}
	answer := fmt.Sprintf("Status page: %s is now %s (was %s).", comp.Name, words(got.Status), words(comp.Status))
	s.statusEvent(ctx, job, "component.updated", answer, map[string]string{"component": comp.Name, "status": string(got.Status), "was": string(comp.Status)}, "")
	if msg != "" {
		inc, err := s.status.CreateIncident(ctx, statuspage.NewIncident{
			Name: comp.Name + " " + words(st), Body: msg, Components: map[string]statuspage.Status{comp.ID: st},
		})
		if err != nil {
			// The component did change: say both.
			return command.UserErrorf("%s But the incident with your message was not opened: %v", answer, statusFailure(err, "open the incident"))
		}
		answer += fmt.Sprintf(" Incident %q opened: %s", inc.Name, inc.Shortlink)
		s.statusEvent(ctx, job, "incident.created", "Status page incident opened: "+inc.Name, map[string]string{"incident": inc.Name, "status": inc.Status}, inc.Shortlink)
	}
	return job.Done(ctx, answer)
}

func (s *Service) statusIncident(ctx context.Context, job *command.Job) error {
	ctx, cancel := s.jobContext(ctx, job)
	defer cancel()
	title, msg := strings.TrimSpace(job.Arg("title")), strings.TrimSpace(job.Text())
	st := job.Flag("status")
	if st == "" {
		st = statuspage.Investigating
	}
	if title == "" || msg == "" {
		return command.UserErrorf("give a title and a message, e.g. %s", statusIncidentSpec.Example)
	}
	if job.DryRun() {
		return job.Done(ctx, fmt.Sprintf("Would open a status page incident %q (%s) saying: %s", title, st, msg))
	}
	inc, err := s.status.CreateIncident(ctx, statuspage.NewIncident{Name: title, Body: msg, Status: st})
	if err != nil {
		return statusFailure(err, "open the incident")
	}
	s.statusEvent(ctx, job, "incident.created", "Status page incident opened: "+inc.Name, map[string]string{"incident": inc.Name, "status": inc.Status}, inc.Shortlink)
	return job.Done(ctx, fmt.Sprintf("Status page incident %q opened (%s): %s", inc.Name, inc.Status, inc.Shortlink))
}

// statusEvent announces a status page change on EVENTS: unlike PagerDuty,
// Statuspage sends switchboard no webhook about it.
func (s *Service) statusEvent(ctx context.Context, job *command.Job, typ, text string, fields map[string]string, url string) {
	ev := &eventv1.Event{
		Id:        job.ID() + "-" + strings.ReplaceAll(typ, ".", "-"),
		Source:    "statuspage",
		Type:      typ,
		Severity:  eventv1.Severity_SEVERITY_INFO,
		Title:     text,
		Text:      text,
		Url:       url,
		Fields:    fields,
		CommandId: job.Request().GetId(),
	}
	if _, err := emit.Event(ctx, s.js, ev); err != nil {
		s.log.Warn("publish status page event", "job_id", job.ID(), "error", err)
	}
}
