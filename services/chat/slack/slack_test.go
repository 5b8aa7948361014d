package slack_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/config"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat"
	"github.com/switchboard-ops/switchboard/services/chat/slack"
	"github.com/switchboard-ops/switchboard/services/chat/slack/slackfake"
)

// streamTexts returns the data of every message on a stream, as text.
func streamTexts(t *testing.T, js jetstream.JetStream, stream string) []string {
	t.Helper()
	var out []string
	for _, m := range natstest.Messages(t, js, stream) {
		out = append(out, string(m.Data())+" "+fmt.Sprint(m.Headers()))
	}
	return out
}

func TestEventsAPIRefusesForgedAndStaleRequestsAndPublishesNothing(t *testing.T) {
	e := newEnv(t)
	r := e.startReplica(e.slackConfig(slack.ModeEvents))
	now := time.Now()
	_, forged := e.say(chAlerts, uAna, "sb: t count forged")
	_, stale := e.say(chAlerts, uAna, "sb: t count stale")
	cases := []struct {
		name   string
		secret string
		at     time.Time
		ev     slackfake.Event
	}{
		{"signed with another secret", "not-the-secret", now, forged},
		{"signed six minutes ago", signingSecret, now.Add(-6 * time.Minute), stale},
		{"signed six minutes in the future", signingSecret, now.Add(6 * time.Minute), stale},
	}
	for _, c := range cases {
		if code, _ := post(t, r.events, c.secret, c.at, slackfake.Callback(c.ev), 0); code != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", c.name, code)
		}
	}
	// Unsigned, and signed but with the body changed after signing.
	req, _ := http.NewRequest(http.MethodPost, r.events, strings.NewReader(string(slackfake.Callback(forged))))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned request: %v %v, want 401", resp.Status, err)
	}
	ts, sig := slackfake.Sign(signingSecret, now, []byte(`{"type":"event_callback"}`))
	req, _ = http.NewRequest(http.MethodPost, r.events, strings.NewReader(string(slackfake.Callback(forged))))
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", sig)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("tampered body: %v %v, want 401", resp.Status, err)
	}
	// A genuine request afterwards runs; once it has, nothing of the
	// refused ones was audited, posted or run.
	m, ok := e.say(chAlerts, uAna, "sb: t count")
	if code, _ := post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ok), 0); code != http.StatusOK {
		t.Fatalf("genuine request: status %d", code)
	}
	e.waitReaction(chAlerts, m.TS, "white_check_mark")
	for _, s := range []string{wire.StreamAudit, wire.StreamChat} {
		for _, txt := range streamTexts(t, e.js, s) {
			if strings.Contains(txt, "forged") || strings.Contains(txt, "stale") {
				t.Errorf("%s holds a refused request: %s", s, txt)
			}
		}
	}
	if n := e.runs.total(); n != 1 {
		t.Errorf("%d commands ran, want 1 (the genuine one)", n)
	}
}

func TestEventsAPIAnswersURLVerification(t *testing.T) {
	e := newEnv(t)
	r := e.startReplica(e.slackConfig(slack.ModeEvents))
	code, body := post(t, r.events, signingSecret, time.Now(), []byte(`{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`), 0)
	if code != http.StatusOK || !strings.Contains(body, "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P") {
		t.Fatalf("url_verification: %d %q, want 200 echoing the challenge", code, body)
	}
}

func TestRedeliveredEventRunsOnceAcrossRetriesAndReplicas(t *testing.T) {
	e := newEnv(t)
	a := e.startReplica(e.slackConfig(slack.ModeEvents))
	b := e.startReplica(e.slackConfig(slack.ModeEvents))
	m := e.fake.AddMessage(chAlerts, uAna, "<@"+slackfake.BotUserID+"> t count")
	mention := slackfake.Event{Type: "app_mention", Channel: chAlerts, User: uAna, Text: m.Text, TS: m.TS}
	message := slackfake.Event{Type: "message", ChannelType: "channel", Channel: chAlerts, User: uAna, Text: m.Text, TS: m.TS}
	// Slack's first delivery, its retries (to any replica behind the load
	// balancer), and the message event of the same message.
	for i, d := range []struct {
		url   string
		ev    slackfake.Event
		retry int
	}{{a.events, mention, 0}, {a.events, mention, 1}, {b.events, mention, 2}, {b.events, message, 0}, {a.events, message, 3}} {
		if code, _ := post(t, d.url, signingSecret, time.Now(), slackfake.Callback(d.ev), d.retry); code != http.StatusOK {
			t.Fatalf("delivery %d: status %d", i, code)
		}
	}
	e.waitReaction(chAlerts, m.TS, "white_check_mark")
	// Replica b may still be handling its copy: wait until its
	// duplicate has been answered by kit/command as an existing job.
	waitFor(t, func() error {
		for _, s := range streamTexts(t, e.js, wire.StreamAudit) {
			if strings.Contains(s, "existing") {
				return nil
			}
		}
		return fmt.Errorf("no duplicate seen by the second replica yet")
	})
	if n := e.runs.get(cmdID(chAlerts, m.TS)); n != 1 {
		t.Fatalf("the command ran %d times, want 1", n)
	}
	var answers []string
	for _, r := range e.thread(chAlerts, m.TS) {
		answers = append(answers, r.Text)
	}
	if len(answers) != 1 || !strings.Contains(answers[0], "counted") {
		t.Fatalf("thread answers = %q, want one \"counted\"", answers)
	}
}

func TestSocketModeReconnectsWithoutLosingOrRepeatingEvents(t *testing.T) {
	// No rate limits: this test is about the connection, not pacing, and
	// its 40 commands make more reactions a minute than Slack allows.
	e := newEnv(t, slackfake.WithPostInterval(0), slackfake.WithoutMethodLimits())
	cfg := chatConfig()
	cfg.Slack = e.slackConfig(slack.ModeSocket)
	cfg.Slack.PostInterval = 0
	e.startChat(cfg) // the chat service starts the adapter itself
	waitFor(t, func() error {
		if open, _ := e.fake.Connections(); open == 0 {
			return fmt.Errorf("no socket mode connection yet")
		}
		return nil
	})
	var msgs []slackfake.Message
	var envs []string
	send := func(n int) {
		for i := 0; i < n; i++ {
			m, ev := e.say(chAlerts, uAna, "sb: t count")
			msgs = append(msgs, m)
			envs = append(envs, e.fake.SendSocket("events_api", slackfake.Callback(ev)))
		}
	}
	send(15)
	e.fake.DropConnections(false) // the network breaks
	send(15)                      // some wait for the next connection
	waitFor(t, func() error {
		if open, opened := e.fake.Connections(); open == 0 || opened < 2 {
			return fmt.Errorf("not reconnected (open %d, opened %d)", open, opened)
		}
		return nil
	})
	e.fake.DropConnections(true) // Slack asks for a refresh
	send(10)
	waitFor(t, func() error {
		if n := e.runs.total(); n < len(msgs) {
			return fmt.Errorf("%d of %d commands ran", n, len(msgs))
		}
		if u := e.fake.Unacked(); u > 0 {
			return fmt.Errorf("%d envelopes unacknowledged", u)
		}
		return nil
	})
	for _, m := range msgs {
		if n := e.runs.get(cmdID(chAlerts, m.TS)); n != 1 {
			t.Errorf("message %s ran %d times, want 1", m.TS, n)
		}
	}
	if n := e.runs.total(); n != len(msgs) {
		t.Errorf("%d runs for %d messages", n, len(msgs))
	}
	again := 0
	for _, id := range envs {
		if e.fake.Sent(id) > 1 {
			again++
		}
	}
	_, opened := e.fake.Connections()
	t.Logf("%d connections; %d of %d envelopes were delivered more than once", opened, again, len(envs))
}

func TestBurstOfNoticesArrivesInOrderCoalescedAndComplete(t *testing.T) {
	e := newEnv(t)
	e.startReplica(e.slackConfig(slack.ModeEvents))
	const n = 500
	ctx := natstest.Context(t, 30*time.Second)
	for i := 1; i <= n; i++ {
		src := []string{"pagerduty", "ci"}[i%2]
		p := &chatv1.ChatPost{Id: fmt.Sprintf("burst-%04d", i), Conversation: &chatv1.Conversation{Adapter: slack.Name, Channel: chBurst},
			Kind: chatv1.Kind_KIND_NOTICE, Text: fmt.Sprintf("notice %04d", i), Author: &chatv1.Identity{Id: "service:" + src, Name: src}}
		if _, err := emit.Post(ctx, e.js, p); err != nil {
			t.Fatal(err)
		}
	}
	re := regexp.MustCompile(`notice (\d{4})`)
	var seen []int
	waitFor(t, func() error {
		seen = seen[:0]
		for _, m := range e.fake.Messages(chBurst) {
			for _, x := range re.FindAllStringSubmatch(m.Text, -1) {
				v, _ := strconv.Atoi(x[1])
				seen = append(seen, v)
			}
			for _, f := range m.Files {
				for _, x := range re.FindAllStringSubmatch(string(f.Content), -1) {
					v, _ := strconv.Atoi(x[1])
					seen = append(seen, v)
				}
			}
		}
		if len(seen) < n {
			return fmt.Errorf("%d of %d notices arrived", len(seen), n)
		}
		return nil
	})
	if len(seen) != n {
		t.Fatalf("%d notices arrived, want exactly %d (none twice)", len(seen), n)
	}
	for i, v := range seen {
		if v != i+1 {
			t.Fatalf("notice #%d in arrival order is %04d, want %04d: order broken", i+1, v, i+1)
		}
	}
	msgs := e.fake.Messages(chBurst)
	digests := 0
	for _, m := range msgs {
		if strings.Contains(m.Text, "arrived faster than Slack lets me post them") {
			digests++
		}
	}
	if digests == 0 || len(msgs) > n/10 {
		t.Fatalf("%d messages with %d digests for %d notices: not coalesced", len(msgs), digests, n)
	}
	// Within the rate limit: the fake refuses any post less than a second
	// after the last, so every accepted one respected it; say how often
	// the adapter had to be told.
	t.Logf("%d notices in %d messages (%d digests); %d posts answered 429", n, len(msgs), digests, e.fake.RateLimited())
}

func TestCommandAnswersInThreadWithReactionsProgressEditsAndFiles(t *testing.T) {
	e := newEnv(t)
	r := e.startReplica(e.slackConfig(slack.ModeEvents))

	slow, ev := e.say(chAlerts, uAna, "sb: t slow 5")
	post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
	e.waitReaction(chAlerts, slow.TS, "white_check_mark")
	var progress, result []slackfake.Message
	for _, m := range e.thread(chAlerts, slow.TS) {
		if strings.HasPrefix(m.Text, "step ") {
			progress = append(progress, m)
		} else {
			result = append(result, m)
		}
	}
	if len(progress) != 1 || progress[0].Text != "step 5 of 5" {
		t.Errorf("progress messages = %+v, want one, edited to \"step 5 of 5\"", progress)
	}
	if len(result) != 1 || result[0].Text != "did 5 steps" {
		t.Errorf("result messages = %+v, want one \"did 5 steps\"", result)
	}

	long, ev := e.say(chAlerts, uAna, "sb: t long")
	post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
	e.waitReaction(chAlerts, long.TS, "white_check_mark")
	th := e.thread(chAlerts, long.TS)
	if len(th) != 1 || len(th[0].Files) != 1 || !strings.Contains(string(th[0].Files[0].Content), "web199.example.com") ||
		!strings.Contains(th[0].Text, "plan: 200 changes") {
		t.Errorf("long output: thread %+v, want one message with the plan as a file", th)
	}

	bad, ev := e.say(chAlerts, uAna, "sb: t fail")
	post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
	e.waitReaction(chAlerts, bad.TS, "x")

	// Blocks, fields, links and an image by URL, as a service posts them.
	ctx := natstest.Context(t, 10*time.Second)
	emit.Post(ctx, e.js, &chatv1.ChatPost{Id: "rich-1", Conversation: &chatv1.Conversation{Adapter: slack.Name, Channel: chOps},
		Kind: chatv1.Kind_KIND_NOTICE, Text: "canary <carbonpickle> & friends",
		Blocks: []*chatv1.Block{
			{Content: &chatv1.Block_Fields{Fields: &chatv1.Fields{Items: []*chatv1.Field{{Title: "error rate", Value: "0.3%", Short: true}}}}},
			{Content: &chatv1.Block_Code{Code: "- old\n+ new"}},
			{Content: &chatv1.Block_Link{Link: &chatv1.Link{Label: "graph", Url: "https://graphite.example.com/render?target=a|b"}}},
		},
		Attachments: []*chatv1.Attachment{{Name: "superagg.png", ContentType: "image/png", Url: "https://graphite.example.com/superagg.png", Title: "superagg"}}})
	waitFor(t, func() error {
		if len(e.fake.Messages(chOps)) == 0 {
			return fmt.Errorf("no rich post yet")
		}
		return nil
	})
	rich := e.fake.Messages(chOps)[0]
	var blocks []map[string]any
	if err := json.Unmarshal(rich.Blocks, &blocks); err != nil {
		t.Fatalf("blocks: %v in %s", err, rich.Blocks)
	}
	var raw any
	json.Unmarshal(rich.Blocks, &raw)
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	enc.Encode(raw)
	b := sb.String()
	for _, want := range []string{`"type":"image"`, `"image_url":"https://graphite.example.com/superagg.png"`, "```- old\\n+ new```",
		`*error rate*\n0.3%`, "&lt;carbonpickle&gt; &amp; friends", "render?target=a%7Cb|graph"} {
		if !strings.Contains(b, want) {
			t.Errorf("blocks lack %s:\n%s", want, b)
		}
	}
}

func TestSlashCommandRunsAndAnswersInTheChannel(t *testing.T) {
	e := newEnv(t)
	r := e.startReplica(e.slackConfig(slack.ModeEvents))
	code, body := post(t, r.cmds, signingSecret, time.Now(), slackfake.SlashCommand("/sb", "t count", chAlerts, uAna, "1337.42.abc"), 0)
	if code != http.StatusOK || !strings.Contains(body, "ephemeral") {
		t.Fatalf("slash command: %d %s, want an ephemeral acknowledgement", code, body)
	}
	waitFor(t, func() error {
		for _, m := range e.fake.Messages(chAlerts) {
			if m.Text == "counted" && m.ThreadTS == "" {
				return nil
			}
		}
		return fmt.Errorf("no answer in the channel yet")
	})
	// A slash command leaves no message: its answers belong in the
	// channel, not in a thread that could not be found.
	if strings.Contains(e.logs.String(), "not known") {
		t.Errorf("the answer to a slash command was logged as having an unknown thread")
	}
}

func TestUndeliverableChannelsAreSkippedAndReportedOnce(t *testing.T) {
	e := newEnv(t)
	e.startReplica(e.slackConfig(slack.ModeEvents))
	ctx := natstest.Context(t, 10*time.Second)
	for i, ch := range []string{chArchive, chNoBot, chArchive, chNoBot, chArchive, "C0GONE", chBurst} {
		emit.Post(ctx, e.js, &chatv1.ChatPost{Id: fmt.Sprintf("u-%d", i), Conversation: &chatv1.Conversation{Adapter: slack.Name, Channel: ch},
			Kind: chatv1.Kind_KIND_NOTICE, Text: fmt.Sprintf("post %d", i)})
	}
	waitFor(t, func() error {
		if len(e.fake.Messages(chBurst)) != 1 || len(e.fake.Messages(chOps)) < 3 {
			return fmt.Errorf("burst %d, ops %d", len(e.fake.Messages(chBurst)), len(e.fake.Messages(chOps)))
		}
		return nil
	})
	// Later posts to the same channels are skipped without a new report.
	for i, ch := range []string{chArchive, chNoBot} {
		emit.Post(ctx, e.js, &chatv1.ChatPost{Id: fmt.Sprintf("v-%d", i), Conversation: &chatv1.Conversation{Adapter: slack.Name, Channel: ch},
			Kind: chatv1.Kind_KIND_NOTICE, Text: "again"})
	}
	emit.Post(ctx, e.js, &chatv1.ChatPost{Id: "v-last", Conversation: &chatv1.Conversation{Adapter: slack.Name, Channel: chBurst},
		Kind: chatv1.Kind_KIND_NOTICE, Text: "after"})
	waitFor(t, func() error {
		if len(e.fake.Messages(chBurst)) != 2 {
			return fmt.Errorf("the post after the skipped ones has not arrived")
		}
		return nil
	})
	ops := e.fake.Messages(chOps)
	if len(ops) != 3 {
		t.Fatalf("ops channel got %d reports, want 3 (one per channel): %+v", len(ops), ops)
	}
	for _, want := range []string{"is_archived", "not_in_channel", "channel_not_found"} {
		found := 0
		for _, m := range ops {
			if strings.Contains(m.Text, want) {
				found++
			}
		}
		if found != 1 {
			t.Errorf("%d reports of %s, want 1", found, want)
		}
	}
}

func TestRateLimitsAndServerErrorsAreRetried(t *testing.T) {
	e := newEnv(t)
	sc := e.slackConfig(slack.ModeEvents)
	sc.PostInterval = 0 // let the fake's 429s do the pacing
	e.startReplica(sc)
	e.fake.FailNext("chat.postMessage", 3)
	ctx := natstest.Context(t, 10*time.Second)
	for i := 1; i <= 4; i++ {
		emit.Post(ctx, e.js, &chatv1.ChatPost{Id: fmt.Sprintf("r-%d", i), Conversation: &chatv1.Conversation{Adapter: slack.Name, Channel: chBurst},
			Kind: chatv1.Kind_KIND_RESULT, Text: fmt.Sprintf("result %d", i)})
	}
	waitFor(t, func() error {
		if n := len(e.fake.Messages(chBurst)); n != 4 {
			return fmt.Errorf("%d of 4 delivered", n)
		}
		return nil
	})
	for i, m := range e.fake.Messages(chBurst) {
		if m.Text != fmt.Sprintf("result %d", i+1) {
			t.Errorf("message %d = %q: out of order", i, m.Text)
		}
	}
	if e.fake.RateLimited() == 0 {
		t.Errorf("no 429 was answered; the test did not exercise Retry-After")
	}
}

func TestIdentityComesFromProfileAndGroupsForRBAC(t *testing.T) {
	e := newEnv(t)
	r := e.startReplica(e.slackConfig(slack.ModeEvents))
	cases := []struct {
		user, text, want string
	}{
		{uAna, "sb: t long", "white_check_mark"},   // admin by e-mail
		{uOlga, "sb: t count", "white_check_mark"}, // operator by @oncall
		{uOlga, "sb: t long", "x"},                 // not an operator's command
		{uEve, "sb: t count", "x"},                 // nobody
		{uAna, "sb: t count", "white_check_mark"},  // from the cache
	}
	for _, c := range cases {
		m, ev := e.say(chAlerts, c.user, c.text)
		post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev), 0)
		e.waitReaction(chAlerts, m.TS, c.want)
	}
	if n := e.fake.UserLookups(uAna); n != 1 {
		t.Errorf("users.info for ana called %d times, want 1 (cached)", n)
	}
	var audit string
	for _, s := range streamTexts(t, e.js, wire.StreamAudit) {
		audit += s
	}
	if !strings.Contains(audit, "olga@example.com") || !strings.Contains(audit, `"oncall"`) {
		t.Errorf("audit lacks the Slack identity (e-mail, group)")
	}
}

func TestDirectMessagesMentionsAndPrefixAreCommandsOtherChatterIsNot(t *testing.T) {
	e := newEnv(t)
	r := e.startReplica(e.slackConfig(slack.ModeEvents))
	for _, c := range []struct {
		ev  slackfake.Event
		run bool
	}{
		{slackfake.Event{Type: "message", ChannelType: "im", Channel: "D0ANA", User: uAna, Text: "t count"}, true},
		{slackfake.Event{Type: "app_mention", Channel: chAlerts, User: uAna, Text: "<@" + slackfake.BotUserID + ">: t count"}, true},
		{slackfake.Event{Type: "message", ChannelType: "channel", Channel: chAlerts, User: uAna, Text: "SB: t count"}, true},
		{slackfake.Event{Type: "message", ChannelType: "channel", Channel: chAlerts, User: uAna, Text: "t count, someone?"}, false},
		{slackfake.Event{Type: "app_mention", Channel: chAlerts, User: uAna, Text: "ask <@" + slackfake.BotUserID + "> to t count"}, false},
		{slackfake.Event{Type: "message", ChannelType: "channel", Channel: chAlerts, BotID: "B0OTHER", Text: "sb: t count"}, false},
		{slackfake.Event{Type: "message", Subtype: "message_changed", ChannelType: "channel", Channel: chAlerts, User: uAna, Text: "sb: t count"}, false},
	} {
		m := e.fake.AddMessage(c.ev.Channel, uAna, c.ev.Text)
		c.ev.TS = m.TS
		post(t, r.events, signingSecret, time.Now(), slackfake.Callback(c.ev), 0)
		if c.run {
			e.waitReaction(c.ev.Channel, m.TS, "white_check_mark")
		}
	}
	// The last genuine command has finished; nothing else ran.
	if n := e.runs.total(); n != 3 {
		t.Fatalf("%d commands ran, want 3", n)
	}
}

func TestSecretsNeverAppearInLogsChatOrAudit(t *testing.T) {
	e := newEnv(t)
	cfg := chatConfig()
	cfg.Slack = e.slackConfig(slack.ModeSocket)
	e.startChat(cfg)
	r := e.startReplica(e.slackConfig(slack.ModeEvents))
	// Ordinary work, failures and a forged request, on both ingresses.
	m1, ev1 := e.say(chAlerts, uAna, "sb: t long")
	post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev1), 0)
	m2, ev2 := e.say(chAlerts, uEve, "sb: t count")
	waitFor(t, func() error {
		if open, _ := e.fake.Connections(); open == 0 {
			return fmt.Errorf("no socket connection")
		}
		return nil
	})
	e.fake.SendSocket("events_api", slackfake.Callback(ev2))
	post(t, r.events, "wrong", time.Now(), slackfake.Callback(ev2), 0)
	e.fake.FailNext("reactions.add", 2)
	m3, ev3 := e.say(chAlerts, uAna, "sb: t fail")
	post(t, r.events, signingSecret, time.Now(), slackfake.Callback(ev3), 0)
	e.waitReaction(chAlerts, m1.TS, "white_check_mark")
	e.waitReaction(chAlerts, m2.TS, "x")
	waitFor(t, func() error {
		if len(e.thread(chAlerts, m3.TS)) == 0 {
			return fmt.Errorf("no answer to t fail")
		}
		return nil
	})
	// Configuration printed every way a careless line might.
	sc := e.slackConfig(slack.ModeSocket)
	e.log.Info("config", "slack", sc, "bot", sc.BotToken, "chat", cfg)
	e.log.Info(fmt.Sprintf("%v %+v %#v %s", sc, sc, sc, sc.AppToken))

	var all []string
	all = append(all, e.logs.String())
	all = append(all, streamTexts(t, e.js, wire.StreamChat)...)
	all = append(all, streamTexts(t, e.js, wire.StreamAudit)...)
	for _, ch := range []string{chAlerts, chOps} {
		for _, m := range e.fake.Messages(ch) {
			all = append(all, m.Text, string(m.Blocks))
		}
	}
	for _, s := range all {
		for _, secret := range []string{slackfake.BotToken, slackfake.AppToken, signingSecret} {
			if strings.Contains(s, secret) {
				t.Fatalf("a secret (%.8s…) appears in: %.300s", secret, s)
			}
		}
	}
	if !strings.Contains(e.logs.String(), "[redacted]") {
		t.Errorf("the config was not logged as redacted; did the test log it?")
	}
}

// TestFakeSlackIsFaithful checks the fake's documented errors, so the
// adapter tests lean on behaviour Slack has.
func TestFakeSlackIsFaithful(t *testing.T) {
	f := slackfake.Run(t)
	f.AddChannel(chOps)
	f.AddChannel(chArchive)
	f.ArchiveChannel(chArchive)
	call := func(method, token string, form map[string]string) (int, map[string]any) {
		v := make([]string, 0)
		for k, x := range form {
			v = append(v, k+"="+x)
		}
		req, _ := http.NewRequest(http.MethodPost, f.APIURL()+method, strings.NewReader(strings.Join(v, "&")))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	for _, c := range []struct {
		method, token string
		form          map[string]string
		code          int
		err           string
	}{
		{"auth.test", "", nil, 200, "not_authed"},
		{"auth.test", "xoxb-wrong", nil, 200, "invalid_auth"},
		{"chat.postMessage", slackfake.BotToken, map[string]string{"channel": "C0NOPE", "text": "x"}, 200, "channel_not_found"},
		{"chat.postMessage", slackfake.BotToken, map[string]string{"channel": chArchive, "text": "x"}, 200, "is_archived"},
		{"chat.postMessage", slackfake.BotToken, map[string]string{"channel": chOps}, 200, "no_text"},
		{"chat.postMessage", slackfake.BotToken, map[string]string{"channel": chOps, "text": "one"}, 200, ""},
		{"chat.postMessage", slackfake.BotToken, map[string]string{"channel": chOps, "text": "two"}, 429, "ratelimited"},
		{"chat.update", slackfake.BotToken, map[string]string{"channel": chOps, "ts": "1.000000", "text": "x"}, 200, "message_not_found"},
		{"apps.connections.open", slackfake.BotToken, nil, 200, "invalid_auth"},
	} {
		code, out := call(c.method, c.token, c.form)
		got, _ := out["error"].(string)
		if code != c.code || got != c.err {
			t.Errorf("%s %v: %d %q, want %d %q", c.method, c.form, code, got, c.code, c.err)
		}
	}
}

func TestTokensComeFromTheEnvironment(t *testing.T) {
	var cfg struct {
		Chat chat.Config `yaml:"chat"`
	}
	cfg.Chat = chatConfig()
	env := map[string]string{
		"SB_CHAT_SLACK_BOT_TOKEN": slackfake.BotToken,
		"SB_CHAT_SLACK_APP_TOKEN": slackfake.AppToken,
		"SB_CHAT_SLACK_MODE":      "socket",
	}
	if err := config.Load("", func(k string) string { return env[k] }, &cfg); err != nil {
		t.Fatalf("load: %v", err)
	}
	if !cfg.Chat.Slack.Enabled() || cfg.Chat.Slack.BotToken.Reveal() != slackfake.BotToken || cfg.Chat.Slack.AppToken.Reveal() != slackfake.AppToken {
		t.Fatalf("tokens not taken from the environment: %v", cfg.Chat.Slack)
	}
}

// A post Slack refuses for what it is (here an empty one: no_text) is
// skipped, said once in the ops channel, and does not hold up the posts
// after it.
func TestARefusedPostIsSkippedAndReportedOnce(t *testing.T) {
	e := newEnv(t)
	e.startReplica(e.slackConfig(slack.ModeEvents))
	ctx := natstest.Context(t, 10*time.Second)
	for i := range 2 {
		emit.Post(ctx, e.js, &chatv1.ChatPost{Id: fmt.Sprintf("empty-%d", i), Conversation: &chatv1.Conversation{Adapter: slack.Name, Channel: chBurst},
			Kind: chatv1.Kind_KIND_NOTICE})
	}
	emit.Post(ctx, e.js, &chatv1.ChatPost{Id: "after", Conversation: &chatv1.Conversation{Adapter: slack.Name, Channel: chBurst},
		Kind: chatv1.Kind_KIND_NOTICE, Text: "after the refused ones"})
	waitFor(t, func() error {
		if len(e.fake.Messages(chBurst)) != 1 || len(e.fake.Messages(chOps)) != 1 {
			return fmt.Errorf("burst %d, ops %d", len(e.fake.Messages(chBurst)), len(e.fake.Messages(chOps)))
		}
		return nil
	})
	if got := e.fake.Messages(chBurst)[0].Text; !strings.Contains(got, "after the refused ones") {
		t.Fatalf("the post after the refused ones: %q", got)
	}
	if got := e.fake.Messages(chOps)[0].Text; !strings.Contains(got, "Slack refused a post to <#"+chBurst+"> (`no_text`)") {
		t.Fatalf("ops report: %q", got)
	}
}
