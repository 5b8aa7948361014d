package slack_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	goslack "github.com/slack-go/slack"

	"github.com/switchboard-ops/switchboard/services/chat/slack"
	"github.com/switchboard-ops/switchboard/services/chat/slack/slackfake"
)

// advanceOn429 moves clk a second on after every 429 the fake answers, so
// a test can hold the fake's time still (a second call is then "too fast"
// for sure) and still let the adapter's retry through.
func advanceOn429(t *testing.T, fake *slackfake.Server, clk *clock) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() { close(done); <-stopped })
	go func() {
		defer close(stopped)
		seen := 0
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if n := fake.RateLimited(); n > seen {
					seen = n
					clk.advance(time.Second)
				}
			}
		}
	}()
}

// TestRateLimitedCallsAreRetriedAfterRetryAfter limits one method at a time
// to one call a second on a clock that stands still until a 429 is
// answered: the second call of the scenario is refused for sure, and the
// adapter must wait out Retry-After and try again.
func TestRateLimitedCallsAreRetriedAfterRetryAfter(t *testing.T) {
	perSecond := slackfake.Limit{N: 1, Per: time.Second}
	cases := []struct {
		name   string
		method string
		opts   []slackfake.Option
		run    func(t *testing.T, e *env, r *replica)
	}{
		{"chat.update of a progress message", "chat.update",
			[]slackfake.Option{slackfake.WithPostInterval(0), slackfake.WithLimit("chat.update", perSecond)},
			func(t *testing.T, e *env, r *replica) {
				m, ev := e.say(chAlerts, uAna, "sb: t wait 3")
				post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
				// Step 2 edits the message, step 3 edits it again at once.
				for i := 1; i <= 3; i++ {
					if got := await(t, e.entered, "t wait's step"); got != i {
						t.Fatalf("step %d, want %d", got, i)
					}
					e.waitProgress(chAlerts, m.TS, fmt.Sprintf("step %d of 3", i))
					e.releaseStep()
				}
				e.waitReaction(chAlerts, m.TS, "white_check_mark")
			}},
		{"reactions.add of the final reaction", "reactions.add",
			[]slackfake.Option{slackfake.WithPostInterval(0), slackfake.WithLimit("reactions.add", perSecond)},
			func(t *testing.T, e *env, r *replica) {
				// 👀, then ✅ in the same second.
				m, ev := e.say(chAlerts, uAna, "sb: t count")
				post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
				e.waitReaction(chAlerts, m.TS, "white_check_mark")
				got, _ := e.fake.Message(chAlerts, m.TS)
				if want := []string{"+eyes", "-eyes", "+white_check_mark"}; !slices.Equal(got.Reacted, want) {
					t.Errorf("reaction history %q, want %q", got.Reacted, want)
				}
			}},
		{"reactions.remove of 👀 on two commands", "reactions.remove",
			[]slackfake.Option{slackfake.WithPostInterval(0), slackfake.WithLimit("reactions.remove", perSecond)},
			func(t *testing.T, e *env, r *replica) {
				// Two commands end together: two 👀 to take off.
				m1, ev1 := e.say(chAlerts, uAna, "sb: t count")
				m2, ev2 := e.say(chAlerts, uAna, "sb: t count")
				post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev1), 0)
				post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev2), 0)
				e.waitReaction(chAlerts, m1.TS, "white_check_mark")
				e.waitReaction(chAlerts, m2.TS, "white_check_mark")
			}},
		{"files.completeUploadExternal right after a message to the channel", "files.completeUploadExternal",
			nil, // Slack's one message a second per channel, which sharing a file counts against
			func(t *testing.T, e *env, r *replica) {
				count, ev := e.say(chAlerts, uAna, "sb: t count")
				post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
				e.waitReaction(chAlerts, count.TS, "white_check_mark")
				long, ev := e.say(chAlerts, uAna, "sb: t long")
				post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
				e.waitReaction(chAlerts, long.TS, "white_check_mark")
				th := e.thread(chAlerts, long.TS)
				if len(th) != 1 || len(th[0].Files) != 1 || !strings.Contains(string(th[0].Files[0].Content), "web199.example.com") {
					t.Fatalf("thread %+v, want the plan as one file", th)
				}
				if n := e.fake.Calls("files.getUploadURLExternal"); n != 1 {
					t.Errorf("files.getUploadURLExternal called %d times, want 1: only the refused completion is retried", n)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			e := newEnv(t, append([]slackfake.Option{slackfake.WithoutMethodLimits(), slackfake.WithClock(clk.now)}, c.opts...)...)
			advanceOn429(t, e.fake, clk)
			sc := e.slackConfig(slack.ModeEvents)
			sc.PostInterval = 0 // the fake's 429s do the pacing
			r := e.startReplica(sc)
			c.run(t, e, r)
			if n := e.fake.RateLimitedCalls(c.method); n == 0 {
				t.Errorf("%s was never answered 429: the retry was not exercised", c.method)
			}
		})
	}
}

// waitProgress waits until the thread of ts shows a progress message
// reading text.
func (e *env) waitProgress(channel, ts, text string) {
	e.t.Helper()
	waitFor(e.t, func() error {
		for _, m := range e.thread(channel, ts) {
			if m.Text == text {
				return nil
			}
		}
		return fmt.Errorf("no message %q in the thread yet", text)
	})
}

// TestFakeSlackAppliesSlackRateLimitTiers checks the fake's documented
// per-method tiers and that sharing a file counts as a message to the
// channel.
func TestFakeSlackAppliesSlackRateLimitTiers(t *testing.T) {
	clk := newClock()
	f := slackfake.Run(t, slackfake.WithClock(clk.now))
	f.AddChannel(chOps)
	api := goslack.New(slackfake.BotToken, goslack.OptionAPIURL(f.APIURL()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	retryAfter := func(err error) time.Duration {
		var rl *goslack.RateLimitedError
		if errors.As(err, &rl) {
			return rl.RetryAfter
		}
		return 0
	}
	ref := goslack.NewRefToMessage(chOps, "1700000000.000001")
	for _, c := range []struct {
		method  string
		allowed int
		call    func() error
	}{
		{"reactions.remove (tier 2)", 20, func() error { return api.RemoveReactionContext(ctx, "eyes", ref) }},
		{"reactions.add (tier 3)", 50, func() error { return api.AddReactionContext(ctx, "eyes", ref) }},
		{"chat.update (tier 3)", 50, func() error {
			_, _, _, err := api.UpdateMessageContext(ctx, chOps, "1700000000.000001", goslack.MsgOptionText("x", false))
			return err
		}},
	} {
		for i := 1; i <= c.allowed; i++ {
			if err := c.call(); retryAfter(err) != 0 {
				t.Fatalf("%s: call %d of %d in a minute refused: %v", c.method, i, c.allowed, err)
			}
		}
		if d := retryAfter(c.call()); d != time.Minute {
			t.Errorf("%s: call %d in a minute: Retry-After %v, want 1m (429)", c.method, c.allowed+1, d)
		}
	}

	// A file shared in the second after a message waits like a message.
	if _, _, err := api.PostMessageContext(ctx, chOps, goslack.MsgOptionText("one", false)); err != nil {
		t.Fatal(err)
	}
	u, err := api.GetUploadURLExternalContext(ctx, goslack.GetUploadURLExternalParameters{FileName: "plan.txt", FileSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.UploadToURL(ctx, goslack.UploadToURLParameters{UploadURL: u.UploadURL, Filename: "plan.txt", Content: "plan"}); err != nil {
		t.Fatal(err)
	}
	complete := func() error {
		_, err := api.CompleteUploadExternalContext(ctx, goslack.CompleteUploadExternalParameters{
			Files: []goslack.FileSummary{{ID: u.FileID, Title: "plan"}}, Channel: chOps})
		return err
	}
	if d := retryAfter(complete()); d != time.Second {
		t.Fatalf("sharing a file right after a message: Retry-After %v, want 1s (429)", d)
	}
	clk.advance(time.Second)
	if err := complete(); err != nil {
		t.Fatalf("sharing the file a second later: %v", err)
	}
	if got := f.RateLimitedCalls("files.completeUploadExternal"); got != 1 {
		t.Errorf("files.completeUploadExternal answered 429 %d times, want 1", got)
	}
}
