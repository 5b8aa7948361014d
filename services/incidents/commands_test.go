package incidents_test

import (
	"strings"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"

	"github.com/switchboard-ops/switchboard/services/incidents"
	"github.com/switchboard-ops/switchboard/services/incidents/pdtest"
)

// seedPages gives Rob two triggered incidents and Ana one.
func seedPages(e *env) (a, b, c pdtest.Incident) {
	a = e.pd.AddIncident(pdtest.Incident{Number: 621, Title: "production cop dropped points check", ServiceID: svcAPI.ID, AssigneeIDs: []string{pdRob.ID}})
	b = e.pd.AddIncident(pdtest.Incident{Number: 622, Title: "relay queue growing", ServiceID: svcAPI.ID, AssigneeIDs: []string{pdRob.ID}})
	c = e.pd.AddIncident(pdtest.Incident{Number: 623, Title: "web7 down", ServiceID: svcAPI.ID, AssigneeIDs: []string{pdAna.ID}})
	return a, b, c
}

func status(t *testing.T, e *env, id string) string {
	t.Helper()
	i, ok := e.pd.Incident(id)
	if !ok {
		t.Fatalf("no incident %s", id)
	}
	return i.Status
}

func TestPagerAckWithoutIncidentsAcknowledgesMyTriggeredOnesAsMe(t *testing.T) {
	e := newEnv(t, nil)
	a, b, c := seedPages(e)
	final, _ := e.run(rob, "pager ack", nil, "", false)
	wantResult(t, final, "Acknowledged 2 incidents in PagerDuty as Rob", "#621 production cop dropped points check", "#622 relay queue growing")
	for _, inc := range []pdtest.Incident{a, b} {
		if got := status(t, e, inc.ID); got != "acknowledged" {
			t.Errorf("#%d is %s, want acknowledged", inc.Number, got)
		}
	}
	if got := status(t, e, c.ID); got != "triggered" {
		t.Errorf("Ana's #623 is %s, want triggered (not Rob's)", got)
	}
	for _, r := range e.pd.Requests() {
		if r.Method == "PUT" && r.From != "rob@example.com" {
			t.Errorf("PUT /incidents From %q, want Rob's PagerDuty e-mail", r.From)
		}
	}
	again, _ := e.run(rob, "pager ack", nil, "", false)
	wantResult(t, again, "Nothing to acknowledge: no triggered incidents are assigned to you")
}

func TestPagerAckDryRunChangesNothing(t *testing.T) {
	e := newEnv(t, nil)
	a, _, _ := seedPages(e)
	final, _ := e.run(rob, "pager ack", map[string]string{"incidents": "621"}, "", true)
	wantResult(t, final, "Would acknowledge 1 incident as Rob: #621")
	if got := status(t, e, a.ID); got != "triggered" || e.pd.Count("PUT /incidents") != 0 {
		t.Fatalf("dry run changed PagerDuty: #621 %s, %d PUTs", got, e.pd.Count("PUT /incidents"))
	}
}

func TestPagerCommandsAnswerBadInput(t *testing.T) {
	e := newEnv(t, nil)
	seedPages(e)
	cases := []struct {
		name string
		who  *chatv1.Identity
		cmd  string
		args map[string]string
		text string
		want string
	}{
		{"someone without an e-mail cannot act in PagerDuty", anon, "pager ack", nil, "", "I don't know your e-mail address"},
		{"an e-mail PagerDuty does not know", &chatv1.Identity{Id: "console:x", Email: "x@example.com"}, "pager ack", nil, "", "no PagerDuty user has the e-mail address x@example.com"},
		{"an incident that is not a number or id", rob, "pager ack", map[string]string{"incidents": "yesterday's"}, "", `"yesterday's" is not an incident`},
		{"a number that is not open", rob, "pager resolve", map[string]string{"incidents": "999"}, "", "incident #999 is not open"},
		{"an id PagerDuty does not have", rob, "incident show", map[string]string{"incident": "PNOPE99"}, "", "PagerDuty has no incident PNOPE99"},
		{"an unknown schedule", rob, "pager oncall", map[string]string{"schedule": "weekend"}, "", "known schedules: ops"},
		{"an unknown service", rob, "pager trigger", map[string]string{"service": "dns"}, "it is down", "known services: carbonpickle, graphite"},
		{"an unknown status page component", rob, "status set", map[string]string{"component": "billing", "state": "degraded"}, "", "it has: API, Graphs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			final, _ := e.run(c.who, c.cmd, c.args, c.text, false)
			wantError(t, final, c.want)
		})
	}
}

func TestPagerAckRetriesRateLimitsAndSaysSo(t *testing.T) {
	e := newEnv(t, nil)
	a, _, _ := seedPages(e)
	e.pd.Inject(pdtest.Fault{Status: 429, RetryAfter: 0, Match: "PUT /incidents", Times: 2})
	final, all := e.run(rob, "pager ack", map[string]string{"incidents": "#621"}, "", false)
	wantResult(t, final, "Acknowledged 1 incident in PagerDuty as Rob: #621")
	if got := status(t, e, a.ID); got != "acknowledged" {
		t.Fatalf("#621 is %s", got)
	}
	said := false
	for _, p := range all {
		if p.GetKind() == chatv1.Kind_KIND_PROGRESS && strings.Contains(p.GetText(), "rate-limiting us (HTTP 429)") {
			said = true
		}
	}
	if !said {
		t.Errorf("no progress post about the rate limit in %v", all)
	}
}

func TestPagerAckNeverSaysDoneWhenPagerDutyKeepsRefusing(t *testing.T) {
	cases := []struct {
		name  string
		fault pdtest.Fault
		want  string
	}{
		{"rate limited until the deadline", pdtest.Fault{Status: 429, RetryAfter: 1, Match: "PUT /incidents", Times: 1000}, "rate-limiting us (HTTP 429)"},
		{"unreachable until the deadline", pdtest.Fault{Drop: true, Match: "PUT /incidents", Times: 1000}, "could not be reached"},
		{"failing with 503 until the deadline", pdtest.Fault{Status: 503, Match: "PUT /incidents", Times: 1000}, "answered HTTP 503"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(cfg *incidents.Config) { cfg.CommandTimeout = 2 * time.Second })
			a, _, _ := seedPages(e)
			e.pd.Inject(c.fault)
			final, _ := e.run(rob, "pager ack", map[string]string{"incidents": "621"}, "", false)
			wantError(t, final, c.want)
			if strings.Contains(final.GetText(), "Acknowledged") {
				t.Errorf("answer %q claims success", final.GetText())
			}
			if n := e.pd.Count("PUT /incidents"); n < 2 {
				t.Errorf("%d attempts, want retries within the deadline", n)
			}
			if got := status(t, e, a.ID); got != "triggered" {
				t.Errorf("#621 is %s", got)
			}
		})
	}
}

func TestPagerResolveNamedIncidentsAndReportsWhatWasAlreadyDone(t *testing.T) {
	e := newEnv(t, nil)
	a, b, _ := seedPages(e)
	e.run(rob, "pager ack", map[string]string{"incidents": "621"}, "", false)
	final, _ := e.run(rob, "pager resolve", map[string]string{"incidents": "621,622"}, "", false)
	wantResult(t, final, "Resolved 2 incidents in PagerDuty as Rob")
	if status(t, e, a.ID) != "resolved" || status(t, e, b.ID) != "resolved" {
		t.Fatal("not resolved in PagerDuty")
	}
	final, _ = e.run(rob, "pager ack", map[string]string{"incidents": a.ID}, "", false)
	wantResult(t, final, "Nothing to acknowledge (#621 is resolved already)")
}

func TestIncidentNoteAddsAnnotationAsMeAndAuditsIt(t *testing.T) {
	e := newEnv(t, nil)
	inc := e.pd.AddIncident(pdtest.Incident{Number: 765, Title: "cop3 dropping points", Status: "acknowledged", ServiceID: svcAPI.ID, AssigneeIDs: []string{pdRob.ID}})
	text := "restarted carbon-relay on cop3, points flowing again"
	final, _ := e.run(rob, "incident note", map[string]string{"incident": "765"}, text, false)
	wantResult(t, final, "Annotation for incident #765 added.")
	notes := e.pd.Notes(inc.ID)
	if len(notes) != 1 || notes[0].Content != text || notes[0].UserID != pdRob.ID {
		t.Fatalf("notes in PagerDuty = %+v, want Rob's one note", notes)
	}
	found := false
	for _, r := range e.audits("result") {
		if r.GetCommand() == "incident note" && strings.Contains(r.GetRaw(), text) && r.GetDetail() == "Annotation for incident #765 added." && r.GetOutcome() == "succeeded" {
			found = true
		}
	}
	if !found {
		t.Error("the note is not in the audit trail")
	}
	show, _ := e.run(rob, "incident show", map[string]string{"incident": "#765"}, "", false)
	wantResult(t, show, "Incident #765 — cop3 dropping points", "Status: acknowledged", "Assigned to: Rob", "Rob (just now): "+text)
}

func TestIncidentNoteIsNotAddedTwiceWhenAnAttemptEndsAmbiguously(t *testing.T) {
	e := newEnv(t, nil)
	inc := e.pd.AddIncident(pdtest.Incident{Number: 766, Title: "t", ServiceID: svcAPI.ID})
	// PagerDuty stores the note, but the answer is lost behind a 502.
	e.pd.Inject(pdtest.Fault{Status: 502, Apply: true, Match: "POST /incidents/" + inc.ID + "/notes"})
	final, _ := e.run(rob, "incident note", map[string]string{"incident": "766"}, "checked the relay", false)
	wantResult(t, final, "Annotation for incident #766 added.")
	if n := len(e.pd.Notes(inc.ID)); n != 1 {
		t.Fatalf("%d notes, want 1", n)
	}
}

func TestPagerTriggerPagesOnceAsMe(t *testing.T) {
	e := newEnv(t, nil)
	// The incident is created, the answer lost: the retry must find it.
	e.pd.Inject(pdtest.Fault{Status: 502, Apply: true, Match: "POST /incidents"})
	final, _ := e.run(rob, "pager trigger", map[string]string{"service": "carbonpickle"}, "cops in production are dropping points", false)
	wantResult(t, final, "Paged carbonpickle: Incident #", "cops in production are dropping points")
	all := e.pd.Incidents()
	if len(all) != 1 || all[0].ServiceID != svcAPI.ID || !strings.HasPrefix(all[0].Key, "sb-") {
		t.Fatalf("incidents in PagerDuty = %+v, want one on carbonpickle keyed by the job", all)
	}
	dry, _ := e.run(rob, "pager trigger", map[string]string{"service": "carbonpickle"}, "again", true)
	wantResult(t, dry, `Would open an incident on carbonpickle (PSVC001) with the summary "again"`)
	if n := len(e.pd.Incidents()); n != 1 {
		t.Fatalf("dry run paged: %d incidents", n)
	}
}

func TestPagerTriggerThroughTheEventsAPI(t *testing.T) {
	e := newEnv(t, nil)
	final, _ := e.run(rob, "pager trigger", map[string]string{"service": "graphite"}, "whisper files full", false)
	wantResult(t, final, "Paged graphite: PagerDuty accepted the trigger (dedup key sb-")
	all := e.pd.Incidents()
	if len(all) != 1 || all[0].ServiceID != svcEvt.ID || all[0].Title != "whisper files full" {
		t.Fatalf("incidents = %+v", all)
	}
}

func TestPagerOncallListsLevelsOfTheSchedule(t *testing.T) {
	e := newEnv(t, nil)
	end := time.Now().Add(6 * time.Hour)
	e.pd.AddOnCall(pdtest.OnCall{UserID: pdRob.ID, ScheduleID: "PSCHED1", ScheduleName: "Ops primary", PolicyID: "PPOL1", PolicyName: "Ops", Level: 1, End: end})
	e.pd.AddOnCall(pdtest.OnCall{UserID: pdAna.ID, PolicyID: "PPOL1", PolicyName: "Ops", Level: 2, ScheduleID: "PSCHED1", End: end})
	e.pd.AddOnCall(pdtest.OnCall{UserID: pdBot.ID, ScheduleID: "PSCHED9", PolicyName: "Other", Level: 1})
	final, _ := e.run(rob, "pager oncall", map[string]string{"schedule": "ops"}, "", false)
	wantResult(t, final, "On call for schedule ops: Rob (level 1, Ops)", "level 2  Ana")
	if strings.Contains(final.GetText(), "switchboard") {
		t.Errorf("another schedule's on-call is listed: %q", final.GetText())
	}
}

func TestStatusSetChangesTheComponentAndOpensAnIncident(t *testing.T) {
	e := newEnv(t, nil)
	e.sp.RateLimit(1) // Statuspage's per-key limit, answered with a retry
	final, _ := e.run(rob, "status set", map[string]string{"component": "api", "state": "degraded"}, "elevated error rates on writes", false)
	wantResult(t, final, "Status page: API is now degraded performance (was operational).", `Incident "API degraded performance" opened`)
	if got := e.sp.ComponentStatus("cmpapi"); got != "degraded_performance" {
		t.Errorf("component status %s", got)
	}
	incs := e.sp.Incidents()
	if len(incs) != 1 || incs[0].Body != "elevated error rates on writes" || incs[0].Components["cmpapi"] != "degraded_performance" {
		t.Fatalf("status page incidents = %+v", incs)
	}
	evs := e.events("sb.event.statuspage.>")
	if len(evs) != 2 {
		t.Fatalf("%d status page events, want component.updated and incident.created", len(evs))
	}
	dry, _ := e.run(rob, "status set", map[string]string{"component": "Graphs", "state": "major_outage"}, "", true)
	wantResult(t, dry, "Would set Graphs on the status page from operational to major outage.")
	if e.sp.ComponentStatus("cmpgraphs") != "operational" {
		t.Fatal("dry run changed the status page")
	}
}

func TestStatusIncidentOpensAnIncident(t *testing.T) {
	e := newEnv(t, nil)
	final, _ := e.run(rob, "status incident", map[string]string{"title": "Delayed metrics"}, "some graphs lag by up to 10 minutes", false)
	wantResult(t, final, `Status page incident "Delayed metrics" opened (investigating): https://stspg.io/inc1`)
	if incs := e.sp.Incidents(); len(incs) != 1 || incs[0].Status != "investigating" {
		t.Fatalf("incidents = %+v", incs)
	}
}

func TestConfigValidateNamesTheKey(t *testing.T) {
	cases := []struct {
		name   string
		change func(*incidents.Config)
		want   string
	}{
		{"a seen ttl shorter than PagerDuty's retries", func(c *incidents.Config) { c.SeenTTL = time.Hour }, "incidents.seen_ttl"},
		{"a service id that is not PagerDuty's", func(c *incidents.Config) {
			c.PagerDuty.Services = map[string]incidents.PagerService{"x": {ID: "nope"}}
		}, "incidents.pagerduty.services.x.id"},
		{"a hook source without credentials", func(c *incidents.Config) {
			c.Hooks.Sources = map[string]incidents.HookSource{"ci": {Auth: "bearer", Template: "circleci"}}
		}, "incidents.hooks.sources.ci.token_file"},
		{"a hook source with an unknown template", func(c *incidents.Config) {
			c.Hooks.Sources = map[string]incidents.HookSource{"ci": {Auth: "bearer", Token: "t", Template: "jenkins"}}
		}, "incidents.hooks.sources.ci.template"},
		{"a template that does not parse", func(c *incidents.Config) {
			c.Hooks.Templates = map[string]incidents.HookTemplate{"mine": {Type: "x.{{.y"}}
		}, "incidents.hooks.templates.mine"},
		{"a status page without a key", func(c *incidents.Config) { c.StatusPage.PageID = "pg" }, "incidents.statuspage.api_key_file"},
		{"a status page provider nobody wrote", func(c *incidents.Config) { c.StatusPage.Provider = "instatus" }, `incidents.statuspage.provider: "instatus" is not a status page provider; known: statuspage`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := incidents.DefaultConfig()
			c.change(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, c.want)
			}
		})
	}
	if err := incidents.DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
}
