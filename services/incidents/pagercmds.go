package incidents

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/services/incidents/pd"
)

// The pager commands change PagerDuty and publish no events of their own:
// PagerDuty announces every change through its webhook, which is what the
// channel shows, once.

var incidentsArg = &commandv1.ArgSpec{Name: "incidents", Type: commandv1.ArgType_ARG_TYPE_STRING, Variadic: true,
	Help: "Incident numbers (621 or #621), ids or links; default: yours."}

var ackSpec = &commandv1.CommandSpec{
	Name:    "pager ack",
	Usage:   "pager ack [incident…] [--dry-run]",
	Summary: "Acknowledge PagerDuty incidents: the ones named, or every triggered incident assigned to you.",
	Help: "Acknowledges in PagerDuty as you: your chat identity's e-mail address is matched to your PagerDuty user, " +
		"which PagerDuty records as the one who acknowledged. Without incidents, acknowledges every triggered incident assigned to you.",
	Example:        "pager ack 621",
	Args:           []*commandv1.ArgSpec{incidentsArg},
	Mutating:       true,
	SupportsDryRun: true,
	Resumable:      true, // acknowledging twice is harmless
}

var resolveSpec = &commandv1.CommandSpec{
	Name:    "pager resolve",
	Usage:   "pager resolve [incident…] [--dry-run]",
	Summary: "Resolve PagerDuty incidents: the ones named, or every incident you acknowledged.",
	Help: "Resolves in PagerDuty as you. Without incidents, resolves the acknowledged incidents assigned to you " +
		"(triggered ones must be named, so that nobody resolves a page they have not looked at).",
	Example:        "pager resolve 621,622",
	Args:           []*commandv1.ArgSpec{incidentsArg},
	Mutating:       true,
	SupportsDryRun: true,
	Resumable:      true,
}

var oncallSpec = &commandv1.CommandSpec{
	Name:    "pager oncall",
	Usage:   "pager oncall [schedule]",
	Summary: "Who is on call now, by escalation policy and level.",
	Help:    "Lists PagerDuty's current on-calls, for one schedule (a name from the configuration or a schedule id) or all.",
	Example: "pager oncall ops",
	Args:    []*commandv1.ArgSpec{{Name: "schedule", Type: commandv1.ArgType_ARG_TYPE_STRING, Help: "Schedule name or id."}},
}

var triggerSpec = &commandv1.CommandSpec{
	Name:    "pager trigger",
	Usage:   "pager trigger <service> [--dry-run] -- summary",
	Summary: "Page a PagerDuty service's on-call by hand.",
	Help: "Opens an incident on the service as you (or sends a trigger through the Events API when the service has a routing key). " +
		"A retry or a take-over never pages twice: the incident key is the job's id.",
	Example:        "pager trigger carbonpickle -- cops in production are dropping points",
	Args:           []*commandv1.ArgSpec{{Name: "service", Type: commandv1.ArgType_ARG_TYPE_STRING, Required: true, Help: "Service name from the configuration, or a service id."}},
	Mutating:       true,
	SupportsDryRun: true,
	TextRequired:   true,
	TextName:       "summary",
	Resumable:      true,
}

func (s *Service) pagerCommands() []command.Command {
	return []command.Command{
		{Spec: ackSpec, Run: func(ctx context.Context, job *command.Job) error { return s.manage(ctx, job, pd.StatusAcknowledged) }},
		{Spec: resolveSpec, Run: func(ctx context.Context, job *command.Job) error { return s.manage(ctx, job, pd.StatusResolved) }},
		{Spec: oncallSpec, Run: s.oncall},
		{Spec: triggerSpec, Run: s.trigger},
	}
}

// manage acknowledges or resolves.
func (s *Service) manage(ctx context.Context, job *command.Job, status string) error {
	ctx, cancel := s.jobContext(ctx, job)
	defer cancel()
	verb, past, ing := "acknowledge", "Acknowledged", "Acknowledging"
	if status == pd.StatusResolved {
		verb, past, ing = "resolve", "Resolved", "Resolving"
	}
	refs, err := parseRefs(job.Arg("incidents"))
	if err != nil {
		return err
	}
	who, err := s.requester(ctx, job)
	if err != nil {
		return err
	}
	var targets []pd.Incident
	if len(refs) == 0 {
		mine := pd.StatusTriggered
		if status == pd.StatusResolved {
			mine = pd.StatusAcknowledged
		}
		targets, err = s.pager.Incidents(ctx, pd.ListOptions{Statuses: []string{mine}, UserIDs: []string{who.user.ID}})
		if err != nil {
			return pdReadFailure(err, "list your incidents")
		}
		if len(targets) == 0 {
			return job.Done(ctx, fmt.Sprintf("Nothing to %s: no %s incidents are assigned to you (%s) in PagerDuty.", verb, mine, who.from))
		}
	} else if targets, err = s.findIncidents(ctx, refs, false); err != nil {
		return err
	}

	// Skip what is already in the wanted state, and say so.
	var todo []pd.Incident
	var notes []string
	for _, inc := range targets {
		switch {
		case inc.Status == status:
			notes = append(notes, fmt.Sprintf("#%d was already %s", inc.Number, status))
		case inc.Status == pd.StatusResolved:
			notes = append(notes, fmt.Sprintf("#%d is resolved already", inc.Number))
		default:
			todo = append(todo, inc)
		}
	}
	tail := ""
	if len(notes) > 0 {
		tail = " (" + strings.Join(notes, "; ") + ")"
	}
	if len(todo) == 0 {
		return job.Done(ctx, fmt.Sprintf("Nothing to %s%s.", verb, tail))
	}
	if job.DryRun() {
		return job.Done(ctx, fmt.Sprintf("Would %s %s as %s: %s%s.", verb, plural(len(todo), "incident", "incidents"), who.user.Name, list(todo), tail))
	}
	ids := make([]string, len(todo))
	for i, inc := range todo {
		ids[i] = inc.ID
	}
	if len(todo) > 1 {
		job.Progressf(ctx, "%s %d incidents in PagerDuty as %s…", ing, len(todo), who.user.Name)
	}
	failedIDs := map[string]bool{}
	got, err := s.pager.Manage(ctx, who.from, ids, status)
	var perr *pd.Error
	if err != nil && errors.As(err, &perr) && perr.Status == 400 && len(ids) > 1 {
		// PagerDuty refuses a bulk update as a whole: do them one by one,
		// so the answer says which ones went through.
		got, err = nil, nil
		var failed []string
		for _, inc := range todo {
			one, e := s.pager.Manage(ctx, who.from, []string{inc.ID}, status)
			if e != nil {
				failedIDs[inc.ID] = true
				failed = append(failed, fmt.Sprintf("#%d: %v", inc.Number, pdFailure(e, verb+" it")))
				continue
			}
			got = append(got, one...)
		}
		if len(failed) > 0 {
			notes = append(notes, "not done: "+strings.Join(failed, "; "))
		}
	} else if err != nil {
		return pdFailure(err, verb+" "+list(todo))
	}
	// Report only what PagerDuty says is now in the wanted state.
	var done, unconfirmed []pd.Incident
	for _, inc := range todo {
		i := indexOf(got, inc.ID)
		switch {
		case failedIDs[inc.ID]:
		case i >= 0 && (got[i].Status == status || status == pd.StatusAcknowledged && got[i].Status == pd.StatusResolved):
			done = append(done, got[i])
		default:
			unconfirmed = append(unconfirmed, inc)
		}
	}
	if len(unconfirmed) > 0 {
		notes = append(notes, "PagerDuty did not confirm "+list(unconfirmed))
	}
	tail = ""
	if len(notes) > 0 {
		tail = " (" + strings.Join(notes, "; ") + ")"
	}
	if len(done) == 0 {
		return command.UserErrorf("Nothing was %s%s.", strings.ToLower(past), tail)
	}
	return job.Done(ctx, fmt.Sprintf("%s %s in PagerDuty as %s: %s%s.", past, plural(len(done), "incident", "incidents"), who.user.Name, list(done), tail))
}

func indexOf(incs []pd.Incident, id string) int {
	for i, inc := range incs {
		if inc.ID == id {
			return i
		}
	}
	return -1
}

func list(incs []pd.Incident) string {
	var out []string
	for _, inc := range incs {
		out = append(out, describe(inc))
	}
	return strings.Join(out, "; ")
}

// oncall lists the current on-calls.
func (s *Service) oncall(ctx context.Context, job *command.Job) error {
	ctx, cancel := s.jobContext(ctx, job)
	defer cancel()
	var ids []string
	label := "all schedules"
	if name := job.Arg("schedule"); name != "" {
		id, ok := s.cfg.PagerDuty.Schedules[name]
		switch {
		case ok:
		case pdID.MatchString(name):
			id = name
		default:
			known := sortedNames(s.cfg.PagerDuty.Schedules)
			if len(known) == 0 {
				return command.UserErrorf("no schedule is called %q; give a schedule id (PXXXXXX)", name)
			}
			return command.UserErrorf("no schedule is called %q; known schedules: %s (or give a schedule id)", name, strings.Join(known, ", "))
		}
		ids, label = []string{id}, "schedule "+name
	}
	ocs, err := s.pager.OnCalls(ctx, ids)
	if err != nil {
		return pdReadFailure(err, "list who is on call")
	}
	if len(ocs) == 0 {
		return job.Done(ctx, "Nobody is on call for "+label+" in PagerDuty right now.")
	}
	sort.SliceStable(ocs, func(i, j int) bool {
		if ocs[i].Policy.Name != ocs[j].Policy.Name {
			return ocs[i].Policy.Name < ocs[j].Policy.Name
		}
		return ocs[i].Level < ocs[j].Level
	})
	var b strings.Builder
	policy := ""
	for _, o := range ocs {
		if o.Policy.Name != policy {
			policy = o.Policy.Name
			fmt.Fprintf(&b, "%s\n", policy)
		}
		fmt.Fprintf(&b, "  level %d  %-20s", o.Level, o.User.Name)
		if o.Schedule.Name != "" {
			fmt.Fprintf(&b, "  %s", o.Schedule.Name)
		}
		if !o.End.IsZero() {
			fmt.Fprintf(&b, "  until %s", o.End.UTC().Format("Mon 15:04 MST"))
		}
		b.WriteString("\n")
	}
	first := ocs[0]
	text := fmt.Sprintf("On call for %s: %s (level %d, %s).\n%s", label, first.User.Name, first.Level, first.Policy.Name, b.String())
	return job.DoneWith(&chatv1.ChatPost{
		Text: text,
		Blocks: []*chatv1.Block{
			{Content: &chatv1.Block_Markdown{Markdown: fmt.Sprintf("On call for %s: *%s*", label, first.User.Name)}},
			{Content: &chatv1.Block_Code{Code: strings.TrimRight(b.String(), "\n")}},
		},
	})
}

// trigger pages a service.
func (s *Service) trigger(ctx context.Context, job *command.Job) error {
	ctx, cancel := s.jobContext(ctx, job)
	defer cancel()
	name, summary := job.Arg("service"), strings.TrimSpace(job.Text())
	if summary == "" {
		return command.UserErrorf("say what is wrong after --, e.g. %s", triggerSpec.Example)
	}
	svc, ok := s.cfg.PagerDuty.Services[name]
	if !ok {
		if !pdID.MatchString(name) {
			known := strings.Join(sortedNames(s.cfg.PagerDuty.Services), ", ")
			if known == "" {
				known = "none configured"
			}
			return command.UserErrorf("no service is called %q; known services: %s (or give a service id)", name, known)
		}
		svc = PagerService{ID: name}
	}
	key := "sb-" + job.ID() // the same job never pages twice
	requester := job.Requester().GetName()
	if job.DryRun() {
		how := "open an incident on"
		if svc.RoutingKey != "" {
			how = "send a trigger through the Events API to"
		}
		return job.Done(ctx, fmt.Sprintf("Would %s %s (%s) with the summary %q.", how, name, svc.ID, summary))
	}
	if svc.RoutingKey != "" {
		dk, err := s.pager.Enqueue(ctx, svc.RoutingKey, key, summary, "switchboard (paged by "+requester+")", "critical")
		if err != nil {
			return pdFailure(err, "page "+name)
		}
		return job.Done(ctx, fmt.Sprintf("Paged %s: PagerDuty accepted the trigger (dedup key %s). The incident will be announced here when PagerDuty opens it.", name, dk))
	}
	who, err := s.requester(ctx, job)
	if err != nil {
		return err
	}
	inc, err := s.pager.CreateIncident(ctx, who.from, pd.NewIncident{
		ServiceID: svc.ID, Title: summary, Urgency: "high", Key: key,
		Details: fmt.Sprintf("Paged from switchboard by %s (job %s).", requester, job.ID()),
	})
	if err != nil {
		return pdFailure(err, "page "+name)
	}
	return job.DoneWith(&chatv1.ChatPost{
		Text: fmt.Sprintf("Paged %s: Incident #%d — %s — %s", name, inc.Number, inc.Title, inc.URL),
		Blocks: []*chatv1.Block{
			{Content: &chatv1.Block_Markdown{Markdown: fmt.Sprintf("Paged %s: Incident #%d — %s", name, inc.Number, inc.Title)}},
			{Content: &chatv1.Block_Link{Link: &chatv1.Link{Label: fmt.Sprintf("Incident #%d in PagerDuty", inc.Number), Url: inc.URL}}},
		},
	})
}

// since is "5m ago" for people.
func since(t time.Time) string {
	if t.IsZero() {
		return "?"
	}
	d := time.Since(t).Round(time.Minute)
	if d < time.Minute {
		return "just now"
	}
	return d.String() + " ago"
}
