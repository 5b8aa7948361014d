package slack_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"

	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat"
	"github.com/switchboard-ops/switchboard/services/chat/route"
	"github.com/switchboard-ops/switchboard/services/chat/slack"
	"github.com/switchboard-ops/switchboard/services/chat/slack/slackfake"
)

// routedConfig is chatConfig with PagerDuty's events routed to the
// incident channel, one post per interval.
func routedConfig(interval time.Duration) chat.Config {
	cfg := chatConfig()
	cfg.Route = route.Config{Interval: interval, Rules: []route.Rule{
		{Subject: "sb.event.pagerduty.>", Adapter: slack.Name, Channel: chIncident, Name: "PagerDuty"},
	}}
	return cfg
}

// incidentEvent is a PagerDuty webhook delivery as the incidents service
// publishes it.
func incidentEvent(id, verb, incident string, number int) *eventv1.Event {
	return &eventv1.Event{Id: id, Source: "pagerduty", Type: "incident." + verb, CorrelationId: incident,
		Title: fmt.Sprintf("%s%s: Incident #%d — production cop dropped points check — assigned to Rob", strings.ToUpper(verb[:1]), verb[1:], number),
		Url:   "https://acme.pagerduty.com/incidents/" + incident}
}

// waitMessages waits until a channel holds at least n bot messages and
// returns them.
func (e *env) waitMessages(channel string, n int) []slackfake.Message {
	e.t.Helper()
	var bot []slackfake.Message
	waitFor(e.t, func() error {
		bot = bot[:0]
		for _, m := range e.fake.Messages(channel) {
			if m.User == slackfake.BotUserID {
				bot = append(bot, m)
			}
		}
		if len(bot) < n {
			return fmt.Errorf("%d of %d messages in %s", len(bot), n, channel)
		}
		return nil
	})
	return bot
}

func TestRoutedEventsOfAnIncidentGoIntoTheThreadOfItsFirstMessage(t *testing.T) {
	e := newEnv(t, slackfake.WithPostInterval(0))
	sc := e.slackConfig(slack.ModeEvents)
	sc.PostInterval = 0
	e.startReplicaWith(routedConfig(10*time.Millisecond), sc)
	ctx := natstest.Context(t, 30*time.Second)

	if _, err := emit.Event(ctx, e.js, incidentEvent("E621a", "triggered", "PINC621", 621)); err != nil {
		t.Fatal(err)
	}
	first := e.waitMessages(chIncident, 1)[0]
	if first.ThreadTS != "" || !strings.HasPrefix(first.Text, "Triggered: Incident #621") {
		t.Fatalf("first message %q in thread %q, want the trigger at the channel level", first.Text, first.ThreadTS)
	}
	if _, err := emit.Event(ctx, e.js, incidentEvent("E621b", "acknowledged", "PINC621", 621)); err != nil {
		t.Fatal(err)
	}
	second := e.waitMessages(chIncident, 2)[1]
	if !strings.HasPrefix(second.Text, "Acknowledged: Incident #621") {
		t.Fatalf("second message %q, want the acknowledgement", second.Text)
	}
	if second.ThreadTS != first.TS {
		t.Fatalf("the acknowledgement went to thread %q, want the trigger's thread %s", second.ThreadTS, first.TS)
	}
}

// acceptNothing is an ingress for adapters that only deliver.
type acceptNothing struct{}

func (acceptNothing) Handle(context.Context, *chatv1.ChatMessage) *chatv1.ChatReply {
	return &chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_IGNORED}
}

// startAdapter starts a Slack adapter on its own NATS connection, as one
// chat replica would, without the chat core.
func (e *env) startAdapter() *slack.Adapter {
	e.t.Helper()
	sc := e.slackConfig(slack.ModeEvents)
	sc.PostInterval = 0
	js := natstest.JetStream(e.t, natstest.ConnectURL(e.t, e.url))
	a, err := slack.New(sc, acceptNothing{}, e.log, slack.WithJetStream(js, 1))
	if err != nil {
		e.t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	if err := a.Start(natstest.Context(e.t, 10*time.Second), l); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { a.Stop(context.Background()) })
	return a
}

func notice(id, channel, thread, text string) *chatv1.ChatPost {
	return &chatv1.ChatPost{Id: id, Kind: chatv1.Kind_KIND_NOTICE, Text: text,
		Conversation: &chatv1.Conversation{Adapter: slack.Name, Channel: channel, Thread: thread}}
}

func TestAnotherOrARestartedReplicaFindsTheThreadOfAPostItDidNotDeliver(t *testing.T) {
	e := newEnv(t, slackfake.WithPostInterval(0))
	ctx := natstest.Context(t, 30*time.Second)
	first := e.startAdapter()
	if err := first.Deliver(ctx, notice("ev-root", chIncident, "", "Triggered: Incident #7")); err != nil {
		t.Fatal(err)
	}
	first.Stop(ctx) // it dies; its memory goes with it

	for i, a := range []*slack.Adapter{e.startAdapter(), e.startAdapter()} {
		if err := a.Deliver(ctx, notice(fmt.Sprintf("ev-later-%d", i), chIncident, "ev-root", "Acknowledged: Incident #7")); err != nil {
			t.Fatal(err)
		}
	}
	msgs := e.fake.Messages(chIncident)
	if len(msgs) != 3 {
		t.Fatalf("%d messages, want 3", len(msgs))
	}
	for _, m := range msgs[1:] {
		if m.ThreadTS != msgs[0].TS {
			t.Errorf("%q went to thread %q, want the first post's thread %s", m.Text, m.ThreadTS, msgs[0].TS)
		}
	}
}

func TestAPostWhoseThreadIsNotKnownGoesToTheChannelAndTheLogSaysSo(t *testing.T) {
	e := newEnv(t, slackfake.WithPostInterval(0))
	ctx := natstest.Context(t, 30*time.Second)
	a := e.startAdapter()
	if err := a.Deliver(ctx, notice("ev-orphan", chIncident, "ev-never-delivered", "Resolved: Incident #8")); err != nil {
		t.Fatal(err)
	}
	msgs := e.fake.Messages(chIncident)
	if len(msgs) != 1 || msgs[0].ThreadTS != "" || msgs[0].Text != "Resolved: Incident #8" {
		t.Fatalf("messages %+v, want the post at the channel level", msgs)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "not known") || !strings.Contains(logs, "ev-never-delivered") {
		t.Fatalf("no log line names the unknown thread:\n%s", logs)
	}
}

func TestARouteDigestIsAHeadlineInTheChannelWithItsListInTheThread(t *testing.T) {
	e := newEnv(t, slackfake.WithPostInterval(0))
	sc := e.slackConfig(slack.ModeEvents)
	sc.PostInterval = 0
	// Long enough that the events after the first wait for the next slot
	// together.
	e.startReplicaWith(routedConfig(500*time.Millisecond), sc)
	ctx := natstest.Context(t, 30*time.Second)
	var evs []*eventv1.Event
	for i := range 8 {
		verb := "triggered"
		if i%2 == 1 {
			verb = "resolved"
		}
		evs = append(evs, incidentEvent(fmt.Sprintf("D%d", i), verb, fmt.Sprintf("PDIG%d", i), 800+i))
	}
	for _, ev := range evs {
		if _, err := emit.Event(ctx, e.js, ev); err != nil {
			t.Fatal(err)
		}
	}
	// The router may make more than one digest (the events can reach it in
	// two slots): every headline is one line in the channel, and the lists
	// in their threads together hold the last events.
	var heads []slackfake.Message
	var listed string
	waitFor(t, func() error {
		heads, listed = nil, ""
		msgs := e.fake.Messages(chIncident)
		for _, m := range msgs {
			if strings.Contains(m.Text, "more PagerDuty events") {
				heads = append(heads, m)
			}
		}
		for _, h := range heads {
			found := false
			for _, m := range msgs {
				if m.ThreadTS == h.TS {
					found = true
					listed += m.Text
					for _, f := range m.Files {
						listed += string(f.Content)
					}
				}
			}
			if !found {
				return fmt.Errorf("digest %q has no list in its thread yet", h.Text)
			}
		}
		for _, ev := range evs[len(evs)-3:] {
			if !strings.Contains(listed, strings.ReplaceAll(ev.GetTitle(), "&", "&amp;")) {
				return fmt.Errorf("no list in a digest's thread has %q yet", ev.GetTitle())
			}
		}
		return nil
	})
	for _, head := range heads {
		if head.ThreadTS != "" || !strings.HasSuffix(head.Text, "— list in thread") || strings.Contains(head.Text, "•") {
			t.Errorf("headline %q in thread %q, want one line at the channel level", head.Text, head.ThreadTS)
		}
	}
}
