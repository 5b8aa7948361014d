package incidents_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"

	"github.com/switchboard-ops/switchboard/services/incidents"
	"github.com/switchboard-ops/switchboard/services/incidents/pdtest"
	"github.com/switchboard-ops/switchboard/services/incidents/statuspage/statuspagetest"
)

// backendFault is a failure of the fake PagerDuty or status page: status 0
// drops the connection without an answer, an empty match hits every call.
type backendFault struct {
	status     int
	retryAfter int
	match      string
	times      int
}

// changingCommand is a command that changes PagerDuty or the status page,
// with what the tests need to know about it.
type changingCommand struct {
	cmd  string
	args map[string]string
	text string
	// onStatusPage: the command calls the status page, not PagerDuty.
	onStatusPage bool
	// retriesUnclear: a 5xx or a lost answer to the change is retried
	// (after checking it did not go through, when it is not idempotent).
	retriesUnclear bool
	// done is what the answer says when the change is made.
	done string
	// seed prepares the fakes; it returns the "METHOD /path" prefix of the
	// call that makes the change, and whether the fake now holds it.
	seed func(e *env) (change string, changed func() bool)
}

func (c changingCommand) inject(e *env, f backendFault) {
	if c.onStatusPage {
		e.sp.Inject(statuspagetest.Fault{Status: f.status, RetryAfter: f.retryAfter, Match: f.match, Times: f.times})
		return
	}
	e.pd.Inject(pdtest.Fault{Status: f.status, Drop: f.status == 0, RetryAfter: f.retryAfter, Match: f.match, Times: f.times})
}

func (c changingCommand) calls(e *env, prefix string) int {
	if c.onStatusPage {
		return e.sp.Count(prefix)
	}
	return e.pd.Count(prefix)
}

var changingCommands = []changingCommand{
	{
		cmd: "incident note", args: map[string]string{"incident": "765"}, text: "restarted carbon-relay on cop3",
		retriesUnclear: true, done: "Annotation for incident #765 added",
		seed: func(e *env) (string, func() bool) {
			inc := e.pd.AddIncident(pdtest.Incident{Number: 765, Title: "cop3 dropping points", Status: "acknowledged", ServiceID: svcAPI.ID, AssigneeIDs: []string{pdRob.ID}})
			return "POST /incidents/" + inc.ID + "/notes", func() bool { return len(e.pd.Notes(inc.ID)) > 0 }
		},
	},
	{
		cmd: "pager trigger", args: map[string]string{"service": "carbonpickle"}, text: "cops in production are dropping points",
		retriesUnclear: true, done: "Paged carbonpickle",
		seed: func(e *env) (string, func() bool) {
			return "POST /incidents", func() bool { return len(e.pd.Incidents()) > 0 }
		},
	},
	{
		cmd: "pager resolve", args: map[string]string{"incidents": "621"},
		retriesUnclear: true, done: "Resolved 1 incident",
		seed: func(e *env) (string, func() bool) {
			inc := e.pd.AddIncident(pdtest.Incident{Number: 621, Title: "production cop dropped points check", Status: "acknowledged", ServiceID: svcAPI.ID, AssigneeIDs: []string{pdRob.ID}})
			return "PUT /incidents", func() bool { got, _ := e.pd.Incident(inc.ID); return got.Status == "resolved" }
		},
	},
	{
		cmd: "status set", args: map[string]string{"component": "api", "state": "major_outage"},
		onStatusPage: true, retriesUnclear: true, done: "is now",
		seed: func(e *env) (string, func() bool) {
			return "PATCH /pages/" + e.sp.Page + "/components/cmpapi", func() bool { return e.sp.ComponentStatus("cmpapi") != "operational" }
		},
	},
	{
		// Statuspage has no idempotency key: after an unclear answer a
		// second POST could open the incident twice, so only 429s (which
		// Statuspage answers before doing anything) are retried.
		cmd: "status incident", args: map[string]string{"title": "Delayed metrics"}, text: "some graphs lag by up to 10 minutes",
		onStatusPage: true, retriesUnclear: false, done: "opened",
		seed: func(e *env) (string, func() bool) {
			return "POST /pages/" + e.sp.Page + "/incidents", func() bool { return len(e.sp.Incidents()) > 0 }
		},
	},
}

func TestChangingCommandsNeverSayDoneWhenTheBackendKeepsFailing(t *testing.T) {
	failures := []struct {
		name string
		// onChange: the fault hits the call that makes the change, else
		// every call.
		onChange bool
		fault    backendFault
		// What the answer says, from PagerDuty and from the status page.
		pdSays, spSays string
	}{
		{"unreachable", false, backendFault{status: 0, times: 1000}, "could not be reached", "did not answer properly"},
		{"failing with 503 on the change", true, backendFault{status: 503, times: 1000}, "answered HTTP 503", "HTTP 503"},
		{"rate limited on the change until the deadline", true, backendFault{status: 429, retryAfter: 1, times: 1000}, "rate-limiting us (HTTP 429)", "rate-limiting us (HTTP 429)"},
	}
	for _, c := range changingCommands {
		for _, f := range failures {
			t.Run(c.cmd+" "+f.name, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, func(cfg *incidents.Config) { cfg.CommandTimeout = 3 * time.Second })
				change, changed := c.seed(e)
				fault := f.fault
				if f.onChange {
					fault.match = change
				}
				c.inject(e, fault)
				final, _ := e.run(rob, c.cmd, c.args, c.text, false)
				says := f.pdSays
				if c.onStatusPage {
					says = f.spSays
				}
				wantError(t, final, says)
				// A failed change is unconfirmed; a failure on a read before
				// it (every call failing) changed nothing, and says that.
				if fault.status != 429 && !strings.Contains(final.GetText(), "could not confirm") && !strings.Contains(final.GetText(), "Nothing was changed") {
					t.Errorf("answer %q says neither that the change is unconfirmed nor that nothing was changed", final.GetText())
				}
				if strings.Contains(final.GetText(), c.done) {
					t.Errorf("answer %q claims success", final.GetText())
				}
				if changed() {
					t.Error("the change was made, though every attempt failed")
				}
				n := c.calls(e, fault.match)
				switch {
				case fault.status == 429 || c.retriesUnclear:
					if n < 2 {
						t.Errorf("%d attempts, want retries within the deadline", n)
					}
				case n != 1:
					t.Errorf("%d attempts, want 1: sending it again could make the change twice", n)
				}
			})
		}
	}
}

func TestChangingCommandsWaitOutRateLimitsAndSucceed(t *testing.T) {
	for _, c := range changingCommands {
		t.Run(c.cmd, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil)
			change, changed := c.seed(e)
			c.inject(e, backendFault{status: 429, retryAfter: 0, match: change, times: 2})
			final, all := e.run(rob, c.cmd, c.args, c.text, false)
			wantResult(t, final, c.done)
			if !changed() {
				t.Errorf("answer %q, but the change is not in the backend", final.GetText())
			}
			if n := c.calls(e, change); n != 3 {
				t.Errorf("%d calls of %s, want 2 rate-limited and 1 that went through", n, change)
			}
			who := "PagerDuty is rate-limiting us (HTTP 429)"
			if c.onStatusPage {
				who = "The status page is rate-limiting us (HTTP 429)"
			}
			said := false
			for _, p := range all {
				if p.GetKind() == chatv1.Kind_KIND_PROGRESS && strings.Contains(p.GetText(), who) {
					said = true
				}
			}
			if !said {
				t.Errorf("no progress post about the rate limit in %v", all)
			}
		})
	}
}

// The chat sets a request's Deadline a few seconds out: the time by which
// the work must start, not end. A Retry-After that runs past it, but not
// past command_timeout, is waited out.
func TestARetryAfterPastTheRequestDeadlineIsWaitedOut(t *testing.T) {
	const (
		deadline   = 2 * time.Second
		retryAfter = 3 // seconds, as the header says it
	)
	for _, c := range changingCommands {
		if c.cmd != "pager resolve" && c.cmd != "status set" {
			continue // one command per backend keeps it quick
		}
		t.Run(c.cmd, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(cfg *incidents.Config) { cfg.CommandTimeout = 2 * retryAfter * time.Second })
			change, changed := c.seed(e)
			c.inject(e, backendFault{status: 429, retryAfter: retryAfter, match: change, times: 1})
			req := request(rob, c.cmd, c.args, c.text, false)
			req.Deadline = timestamppb.New(time.Now().Add(deadline))
			final, _ := e.send(req)
			wantResult(t, final, c.done)
			if !changed() {
				t.Errorf("answer %q, but the change is not in the backend", final.GetText())
			}
			if n := c.calls(e, change); n != 2 {
				t.Errorf("%d calls of %s, want the rate-limited one and its retry", n, change)
			}
			if !time.Now().After(req.GetDeadline().AsTime()) {
				t.Error("the command ended before the request's deadline: the test did not wait past it")
			}
		})
	}
}
