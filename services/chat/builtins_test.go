package chat_test

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat"
)

// ask runs a built-in and returns its answer, failing the test unless the
// reply is a final ANSWERED without a job and the same text is a succeeded
// result in the message's thread.
func (h *harness) ask(svc *chat.Service, from *chatv1.Identity, text string) string {
	h.t.Helper()
	msg := message(from, text)
	reply := h.handle(svc, msg)
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ANSWERED || !reply.GetFinal() {
		h.t.Fatalf("%s: reply %v %q (final %v), want a final ANSWERED", text, reply.GetStatus(), reply.GetMessage(), reply.GetFinal())
	}
	if reply.GetJobId() != "" {
		h.t.Fatalf("%s: the reply names job %s; built-ins run no job", text, reply.GetJobId())
	}
	p := h.chatAnswer(thread(msg))
	if p.GetKind() != chatv1.Kind_KIND_RESULT || p.GetReaction() != chatv1.Reaction_REACTION_SUCCEEDED || p.GetText() != reply.GetMessage() {
		h.t.Fatalf("%s: answer in the thread %v %v %q, want a succeeded result %q", text, p.GetKind(), p.GetReaction(), p.GetText(), reply.GetMessage())
	}
	return reply.GetMessage()
}

// refused runs a message that the ingress refuses with status st and
// returns the reason, checking that the thread shows it as failed.
func (h *harness) refused(svc *chat.Service, from *chatv1.Identity, text string, st chatv1.IngressStatus) string {
	h.t.Helper()
	msg := message(from, text)
	reply := h.handle(svc, msg)
	if reply.GetStatus() != st || !reply.GetFinal() {
		h.t.Fatalf("%s: reply %v %q (final %v), want a final %v", text, reply.GetStatus(), reply.GetMessage(), reply.GetFinal(), st)
	}
	p := h.chatAnswer(thread(msg))
	if p.GetKind() != chatv1.Kind_KIND_ERROR || p.GetReaction() != chatv1.Reaction_REACTION_FAILED || p.GetText() != reply.GetMessage() {
		h.t.Fatalf("%s: answer in the thread %v %v %q, want a failed error %q", text, p.GetKind(), p.GetReaction(), p.GetText(), reply.GetMessage())
	}
	return reply.GetMessage()
}

func TestHelpListsEveryDiscoveredCommandAndExplainsOne(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	svc := h.startChat(testConfig())

	list := h.ask(svc, vic, "help")
	// Each service's commands under its name, the built-ins under chat,
	// and the aliases with what they stand for.
	containsInOrder(t, "help", list, []string{
		"\nchat\n", "help [command]", "whoami",
		"\nsys\n", "ping",
		"\nt\n", "t add <host> <backend>", "Add a host to a backend.", "t slow <steps>",
		"\naliases\n", "addtolb <host> <backend>", "t add {host} {backend}",
	})

	one := h.ask(svc, vic, "help t add")
	containsInOrder(t, "help t add", one, []string{
		"t add — Add a host to a backend.",
		"usage: t add <host> <backend> [--weight N] [--wait D] [--dry-run]",
		"arguments:", "host", "host", "(required)", "backend", "backend", "(required)",
		"flags:", "--weight", "int", "--wait", "duration", "--dry-run",
		"example: t add web1 www",
	})
	nuke := h.ask(svc, vic, "help t nuke")
	containsInOrder(t, "help t nuke", nuke, []string{"asks for confirmation before it runs", "example: t nuke web1"})

	unknown := h.refused(svc, vic, "help t ad", chatv1.IngressStatus_INGRESS_STATUS_REJECTED)
	containsInOrder(t, "help t ad", unknown, []string{"Did you mean `t add`?"})
}

func TestWhoamiShowsTheRolesGrantedById_EmailAndGroup(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	svc := h.startChat(testConfig())

	tests := []struct {
		name string
		who  *chatv1.Identity
		want string
	}{
		{"by id", ana, "You are ana (console:ana); roles: admin."},
		{"by e-mail, ignoring case", &chatv1.Identity{Id: "slack:U1", Name: "bob", Email: "Bob@Example.com"}, "You are bob (slack:U1); roles: operator."},
		{"by group", &chatv1.Identity{Id: "slack:U2", Name: "carol", Groups: []string{"dev", "oncall"}}, "You are carol (slack:U2); roles: responder."},
		{"by several grants at once", &chatv1.Identity{Id: "console:olga", Name: "olga", Groups: []string{"oncall"}}, "You are olga (console:olga); roles: operator, responder."},
		{"by none", &chatv1.Identity{Id: "slack:U3", Name: "dan"}, "You are dan (slack:U3); roles: no roles."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *h
			h.t = t
			if got := h.ask(svc, tt.who, "whoami"); got != tt.want {
				t.Fatalf("whoami = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPingGoesThroughTheSysServiceAndAnswersPong(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	svc := h.startChat(testConfig())

	msg := message(vic, "ping")
	reply := h.handle(svc, msg)
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED || reply.GetJobId() != wire.JobID(commandID(msg)) {
		t.Fatalf("reply %v job %q (%s), want ACCEPTED as job %s", reply.GetStatus(), reply.GetJobId(), reply.GetMessage(), wire.JobID(commandID(msg)))
	}
	final, _ := h.waitFinal(thread(msg))
	if final.GetKind() != chatv1.Kind_KIND_RESULT || !strings.HasPrefix(final.GetText(), "pong from sys replica ") {
		t.Fatalf("final post %v %q, want a result starting with \"pong from sys replica \"", final.GetKind(), final.GetText())
	}
}

// TestJobsJobAndCancelFollowARunningJob starts a slow job and looks at it
// with jobs and job, lets someone whose roles do not allow the command try
// to cancel it, and then cancels it as the person who started it.
func TestJobsJobAndCancelFollowARunningJob(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	svc := h.startChat(testConfig())

	msg := message(ana, "t slow 10000")
	reply := h.handle(svc, msg)
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
		t.Fatalf("reply %v %q, want ACCEPTED", reply.GetStatus(), reply.GetMessage())
	}
	id := reply.GetJobId()
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		if len(h.posts(thread(msg))) == 0 {
			return errors.New("no progress yet")
		}
		return nil
	})

	jobs := h.ask(svc, vic, "jobs")
	if !regexp.MustCompile(`(?m)^1 running:\n` + id + `\s+running\s+t slow\s+ana\s`).MatchString(jobs) {
		t.Fatalf("jobs = %q, want one running line for job %s (t slow by ana)", jobs, id)
	}
	one := h.ask(svc, vic, "job "+strings.ToUpper(id))
	containsInOrder(t, "job", one, []string{"job " + id + ": t slow — running by ana"})

	denied := h.refused(svc, vic, "cancel "+id, chatv1.IngressStatus_INGRESS_STATUS_REJECTED)
	if want := fmt.Sprintf("job %s is ana's, and your roles may not run t slow", id); denied != want {
		t.Fatalf("cancel by vic: %q, want %q", denied, want)
	}
	if j, err := h.job(commandID(msg)); err != nil || j.GetState() != commandv1.JobState_JOB_STATE_RUNNING || j.GetCancelRequested() {
		t.Fatalf("after a refused cancel the job is %v (cancel requested %v, err %v), want still running", j.GetState(), j.GetCancelRequested(), err)
	}

	dry := h.ask(svc, ana, "cancel "+id+" --dry-run")
	if want := fmt.Sprintf("Would ask job %s (t slow) to stop. Nothing was changed.", id); dry != want {
		t.Fatalf("cancel --dry-run: %q, want %q", dry, want)
	}
	asked := h.ask(svc, ana, "cancel "+id)
	if want := fmt.Sprintf("Asked job %s (t slow) to stop; its thread will say when it has.", id); asked != want {
		t.Fatalf("cancel: %q, want %q", asked, want)
	}
	final, _ := h.waitFinal(thread(msg))
	if final.GetKind() != chatv1.Kind_KIND_ERROR || final.GetText() != "Cancelled: t slow stopped on request." {
		t.Fatalf("final post %v %q, want the cancellation", final.GetKind(), final.GetText())
	}
	j, err := h.job(commandID(msg))
	if err != nil || j.GetState() != commandv1.JobState_JOB_STATE_CANCELLED || j.GetCancelledBy().GetId() != ana.Id {
		t.Fatalf("job %v cancelled by %q (err %v), want cancelled by ana", j.GetState(), j.GetCancelledBy().GetId(), err)
	}
	containsInOrder(t, "job", h.ask(svc, vic, "job "+id), []string{"job " + id + ": t slow — cancelled by ana", "Cancelled: t slow stopped on request."})
	if got := h.ask(svc, vic, "jobs"); got != "No jobs are running." {
		t.Fatalf("jobs after the cancel = %q, want none running", got)
	}
	again := h.refused(svc, ana, "cancel "+id, chatv1.IngressStatus_INGRESS_STATUS_REJECTED)
	if want := fmt.Sprintf("job %s already ended (cancelled)", id); again != want {
		t.Fatalf("second cancel: %q, want %q", again, want)
	}
	missing := h.refused(svc, ana, "job 000000000000", chatv1.IngressStatus_INGRESS_STATUS_REJECTED)
	if !strings.Contains(missing, "there is no job 000000000000") {
		t.Fatalf("job of an unknown id: %q", missing)
	}
}

func TestHistoryFiltersTheAuditTrailByUserAndCommand(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	h.seedInventory(map[string]string{"web1": "production", "web2": "staging", "web3": "staging"})
	svc := h.startChat(testConfig())

	for _, m := range []struct {
		who  *chatv1.Identity
		text string
	}{
		{ana, "t add web1 www"},
		{olga, "t deploy 1.0 staging"},
		{olga, "t add web2 www"},
		{vic, "t add web3 www"}, // denied
		{ana, "ping"},
	} {
		msg := message(m.who, m.text)
		if h.handle(svc, msg).GetStatus() == chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
			h.waitFinal(thread(msg))
		}
	}
	// A dispatched command shows how it ended, once its result is audited.
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		if got := h.ask(svc, ana, "history"); strings.Contains(got, " running ") {
			return fmt.Errorf("not every result audited yet:\n%s", got)
		}
		return nil
	})

	// Each line is "<time>  <name> <outcome> <raw>".
	lines := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			f := strings.Fields(l)
			out = append(out, strings.Join(f[2:], " "))
		}
		return out
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"history --user olga", []string{"olga succeeded t deploy 1.0 staging", "olga succeeded t add web2 www"}},
		{"history --user VIC", []string{"vic denied t add web3 www"}},
		{"history --command 't add'", []string{"ana succeeded t add web1 www", "olga succeeded t add web2 www", "vic denied t add web3 www"}},
		{"history --user olga --command 't add'", []string{"olga succeeded t add web2 www"}},
		{"history --command ping --limit 1", []string{"ana succeeded ping"}},
		{"history --user nobody", []string{"No commands match in the last 24h0m0s."}},
	}
	for _, tt := range tests {
		got := h.ask(svc, ana, tt.query)
		if strings.HasPrefix(got, "No commands") {
			got = "x x " + got // lines() drops the first two fields
		}
		if diff := cmp.Diff(tt.want, lines(got)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.query, diff)
		}
	}
}

// TestCancellingAnotherPersonsJobNeedsTheRightToRunIt: the roles of whoever
// cancels must allow the job's command where it runs, as they would to
// start it.
func TestCancellingAnotherPersonsJobNeedsTheRightToRunIt(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveT()
	svc := h.startChat(testConfig())

	msg := message(ana, "t slow 10000 --env production")
	reply := h.handle(svc, msg)
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
		t.Fatalf("reply %v %q, want ACCEPTED", reply.GetStatus(), reply.GetMessage())
	}
	id := reply.GetJobId()

	// olga may run t slow, but only on staging.
	if got := h.refused(svc, olga, "t slow 1 --env production", chatv1.IngressStatus_INGRESS_STATUS_DENIED); !strings.Contains(got, `not on "production"`) {
		t.Fatalf("olga running t slow on production: %q", got)
	}
	denied := h.refused(svc, olga, "cancel "+id, chatv1.IngressStatus_INGRESS_STATUS_REJECTED)
	if want := fmt.Sprintf("job %s is ana's, and your roles may not run t slow", id); denied != want {
		t.Fatalf("cancel by olga: %q, want %q", denied, want)
	}
	if j, err := h.job(commandID(msg)); err != nil || j.GetCancelRequested() {
		t.Fatalf("after a refused cancel: cancel requested %v (err %v)", j.GetCancelRequested(), err)
	}

	// carol is on call: her role runs t slow anywhere.
	carol := &chatv1.Identity{Id: "slack:U2", Name: "carol", Groups: []string{"oncall"}}
	h.ask(svc, carol, "cancel "+id)
	final, _ := h.waitFinal(thread(msg))
	if final.GetText() != "Cancelled: t slow stopped on request." {
		t.Fatalf("final post %q, want the cancellation", final.GetText())
	}
}
