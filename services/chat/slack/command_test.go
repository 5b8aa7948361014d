package slack_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/chat/slack"
	"github.com/switchboard-ops/switchboard/services/chat/slack/slackfake"
)

func TestEyesAreOnTheCommandWhileItRunsThenGiveWayToTheOutcome(t *testing.T) {
	e := newEnv(t)
	r := e.startReplica(e.slackConfig(slack.ModeEvents))
	m, ev := e.say(chAlerts, uAna, "sb: t wait 1")
	post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
	await(t, e.entered, "t wait to start")
	running, _ := e.fake.Message(chAlerts, m.TS)
	if !slices.Equal(running.Reacted, []string{"+eyes"}) {
		t.Errorf("while the command runs, the reaction history is %q, want [+eyes]", running.Reacted)
	}
	e.releaseStep()
	e.waitReaction(chAlerts, m.TS, "white_check_mark")
	done, _ := e.fake.Message(chAlerts, m.TS)
	if want := []string{"+eyes", "-eyes", "+white_check_mark"}; !slices.Equal(done.Reacted, want) {
		t.Errorf("reaction history %q, want %q", done.Reacted, want)
	}
}

func TestProgressUpdatesEditOneMessage(t *testing.T) {
	e := newEnv(t)
	r := e.startReplica(e.slackConfig(slack.ModeEvents))
	m, ev := e.say(chAlerts, uAna, "sb: t wait 3")
	post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
	// Each step is shown before the next is made, so none is folded into
	// the next one on its way.
	for i := 1; i <= 3; i++ {
		if got := await(t, e.entered, "t wait's step"); got != i {
			t.Fatalf("step %d, want %d", got, i)
		}
		e.waitProgress(chAlerts, m.TS, fmt.Sprintf("step %d of 3", i))
		e.releaseStep()
	}
	e.waitReaction(chAlerts, m.TS, "white_check_mark")
	var progress []slackfake.Message
	for _, msg := range e.thread(chAlerts, m.TS) {
		if strings.HasPrefix(msg.Versions[0], "step ") {
			progress = append(progress, msg)
		}
	}
	if len(progress) != 1 {
		t.Fatalf("%d progress messages, want one, edited", len(progress))
	}
	if want := []string{"step 1 of 3", "step 2 of 3", "step 3 of 3"}; !slices.Equal(progress[0].Versions, want) {
		t.Errorf("the progress message went through %q, want %q", progress[0].Versions, want)
	}
	if n := e.fake.Calls("chat.update"); n != 2 {
		t.Errorf("chat.update called %d times, want 2", n)
	}
}

func TestEventsAPIAnswersWhileASlowCommandRuns(t *testing.T) {
	e := newEnv(t)
	r := e.startReplica(e.slackConfig(slack.ModeEvents))
	m, ev := e.say(chAlerts, uAna, "sb: t wait 1")
	answered := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTotal)
		defer cancel()
		resp, err := slackfake.PostSigned(ctx, http.DefaultClient, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
		if err != nil {
			answered <- err.Error()
			return
		}
		resp.Body.Close()
		answered <- resp.Status
	}()
	// The command is running and stays so until released: Slack must have
	// its answer (within its 3 seconds, whatever the command takes) before.
	await(t, e.entered, "t wait to start")
	if got := await(t, answered, "the Events API's answer while the command runs"); got != "200 OK" {
		t.Fatalf("answer %q, want 200 OK", got)
	}
	for _, msg := range e.thread(chAlerts, m.TS) {
		if strings.Contains(msg.Text, "waited through") {
			t.Fatalf("the command ended before it was released: %q", msg.Text)
		}
	}
	e.releaseStep()
	e.waitReaction(chAlerts, m.TS, "white_check_mark")
}

func TestAGrantBySlackUserIDGivesItsRolesAndNoOthers(t *testing.T) {
	e := newEnv(t)
	r := e.startReplica(e.slackConfig(slack.ModeEvents))
	for _, c := range []struct{ text, want string }{
		{"sb: t count", "white_check_mark"}, // operator by "slack:U0IDA"
		{"sb: t long", "x"},                 // not an operator's command
	} {
		m, ev := e.say(chAlerts, uIda, c.text)
		post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
		e.waitReaction(chAlerts, m.TS, c.want)
	}
	if n := e.runs.total(); n != 1 {
		t.Errorf("%d commands ran, want 1", n)
	}
}

func TestTheProfileCacheExpiresAndAChangedProfileThenCounts(t *testing.T) {
	e := newEnv(t)
	clk := newClock()
	sc := e.slackConfig(slack.ModeEvents)
	r := e.startReplica(sc, slack.WithNow(clk.now))
	run := func(want string) {
		t.Helper()
		m, ev := e.say(chAlerts, uEve, "sb: t count")
		post(t, r.events, signingSecret, clk.now(), slackfake.Callback(ev), 0)
		e.waitReaction(chAlerts, m.TS, want)
	}
	run("x") // Eve has no role
	// Her e-mail changes to one that is granted operator.
	e.fake.AddUser(slackfake.User{ID: uEve, Name: "eve", DisplayName: "Eve", Email: promotedEmail})
	clk.advance(sc.ProfileTTL - time.Second)
	run("x") // the cached profile still holds
	if n := e.fake.UserLookups(uEve); n != 1 {
		t.Fatalf("users.info for Eve called %d times within the TTL, want 1", n)
	}
	clk.advance(2 * time.Second)
	run("white_check_mark")
	if n := e.fake.UserLookups(uEve); n != 2 {
		t.Fatalf("users.info for Eve called %d times, want 2: once more after the TTL", n)
	}
}

func TestSocketModeSendsAnEnvelopeAgainWhenItsAckIsLateAndItRunsOnce(t *testing.T) {
	e := newEnv(t, slackfake.WithAckTimeout(200*time.Millisecond))
	cfg := chatConfig()
	cfg.Slack = e.slackConfig(slack.ModeSocket)
	e.startChat(cfg)
	waitFor(t, func() error {
		if open, _ := e.fake.Connections(); open == 0 {
			return fmt.Errorf("no socket mode connection yet")
		}
		return nil
	})
	e.fake.IgnoreAcks(1) // the first ack comes too late
	m, ev := e.say(chAlerts, uAna, "sb: t count")
	id := e.fake.SendSocket("events_api", slackfake.Callback(ev))
	waitFor(t, func() error {
		if e.fake.Acked(id) == 0 || e.fake.Unacked() != 0 {
			return fmt.Errorf("envelope %s sent %d times, acknowledged %d", id, e.fake.Sent(id), e.fake.Acked(id))
		}
		return nil
	})
	e.waitReaction(chAlerts, m.TS, "white_check_mark")
	if n := e.fake.Sent(id); n < 2 {
		t.Errorf("envelope sent %d times, want again after the late ack", n)
	}
	if _, opened := e.fake.Connections(); opened != 1 {
		t.Errorf("%d connections opened, want the envelope again on the first", opened)
	}
	if n := e.runs.get(cmdID(chAlerts, m.TS)); n != 1 {
		t.Errorf("the command ran %d times, want 1", n)
	}
	if th := e.thread(chAlerts, m.TS); len(th) != 1 {
		t.Errorf("%d answers in the thread, want 1", len(th))
	}
}
