package route_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat/route"
)

const (
	waitTotal = 30 * time.Second
	waitStep  = 20 * time.Millisecond
)

var pagerRule = route.Rule{Subject: "sb.event.pagerduty.>", Adapter: "slack", Channel: "C0INCIDENT", Name: "PagerDuty"}

func setup(t testing.TB) jetstream.JetStream {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	js := natstest.JetStream(t, nc)
	if err := bus.EnsureStreams(natstest.Context(t, 10*time.Second), js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return js
}

func start(t testing.TB, js jetstream.JetStream, cfg route.Config) *route.Router {
	t.Helper()
	ctx := natstest.Context(t, 10*time.Second)
	r, err := route.New(ctx, js, cfg, route.Options{PinnedTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop(context.Background()) })
	return r
}

func page(id, typ, incident string, n int) *eventv1.Event {
	verb := typ[strings.LastIndexByte(typ, '.')+1:]
	return &eventv1.Event{
		Id: id, Source: "pagerduty", Type: typ, CorrelationId: incident,
		Title: fmt.Sprintf("%s: Incident #%d — production cop dropped points check — assigned to Rob", strings.ToUpper(verb[:1])+verb[1:], n),
		Url:   "https://acme.pagerduty.com/incidents/" + incident,
	}
}

func publish(t testing.TB, js jetstream.JetStream, evs ...*eventv1.Event) {
	t.Helper()
	ctx := natstest.Context(t, 30*time.Second)
	for _, ev := range evs {
		if _, err := emit.Event(ctx, js, ev); err != nil {
			t.Fatal(err)
		}
	}
}

// posts reads every post of a channel so far.
func posts(t testing.TB, js jetstream.JetStream, adapter, channel string) []*chatv1.ChatPost {
	t.Helper()
	return natstest.Posts(t, js, wire.ChatPostSubject(adapter, channel))
}

var headlineRe = regexp.MustCompile(`^(\d+) more (.*?): (.*) — list in thread$`)

// accounted counts the events the posts carry: one per single post, and
// for a digest the events its list names. A list must be a reply in the
// thread of a headline whose number and counts it matches. It returns
// how many events that makes, and how many digest headlines and lists
// there are.
func accounted(t testing.TB, ps []*chatv1.ChatPost) (events, headlines, lists int) {
	t.Helper()
	heads := map[string]int{}
	var listPosts []*chatv1.ChatPost
	for _, p := range ps {
		switch {
		case !strings.HasPrefix(p.GetId(), "digest-"):
			events++
		case p.GetConversation().GetThread() != "":
			listPosts = append(listPosts, p)
		default:
			m := headlineRe.FindStringSubmatch(p.GetText())
			if m == nil {
				t.Errorf("digest headline %q does not read like one", p.GetText())
				continue
			}
			n, _ := strconv.Atoi(m[1])
			sum := 0
			for _, part := range strings.Split(m[3], ", ") {
				k, _ := strconv.Atoi(strings.Fields(part)[0])
				sum += k
			}
			if sum != n {
				t.Errorf("digest %q: counts add to %d, want %d", p.GetText(), sum, n)
			}
			heads[p.GetId()] = n
		}
	}
	for _, l := range listPosts {
		n, ok := heads[l.GetConversation().GetThread()]
		if !ok {
			t.Errorf("digest list %s is in thread %q, which is no headline's", l.GetId(), l.GetConversation().GetThread())
			continue
		}
		got := strings.Count(l.GetText(), "\n• ")
		if got != n {
			t.Errorf("digest list %s names %d events, its headline %d", l.GetId(), got, n)
		}
		events += got
	}
	return events, len(heads), len(listPosts)
}

func TestEventsReachTheRulesChannelAndLaterOnesThreadUnderTheFirst(t *testing.T) {
	js := setup(t)
	start(t, js, route.Config{Interval: 10 * time.Millisecond, Rules: []route.Rule{pagerRule}})
	publish(t, js, page("E1", "incident.triggered", "PINC621", 621))
	var ps []*chatv1.ChatPost
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		if ps = posts(t, js, "slack", "C0INCIDENT"); len(ps) < 1 {
			return fmt.Errorf("no post yet")
		}
		return nil
	})
	root := ps[0]
	if want := "Triggered: Incident #621 — production cop dropped points check — assigned to Rob"; root.GetText() != want || root.GetConversation().GetThread() != "" {
		t.Fatalf("first post %q in thread %q, want %q at the channel level", root.GetText(), root.GetConversation().GetThread(), want)
	}
	if root.GetKind() != chatv1.Kind_KIND_NOTICE || root.GetAuthor().GetName() != "PagerDuty" {
		t.Errorf("first post kind %s author %v", root.GetKind(), root.GetAuthor())
	}
	publish(t, js, page("E2", "incident.acknowledged", "PINC621", 621), page("E3", "incident.triggered", "PINC622", 622))
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		if ps = posts(t, js, "slack", "C0INCIDENT"); len(ps) < 3 {
			return fmt.Errorf("%d posts", len(ps))
		}
		return nil
	})
	for _, p := range ps[1:] {
		inThread := p.GetConversation().GetThread() == root.GetId()
		if strings.Contains(p.GetText(), "#621") != inThread {
			t.Errorf("post %q in thread %q; want incident 621's posts, and only those, in thread %s", p.GetText(), p.GetConversation().GetThread(), root.GetId())
		}
	}
}

func TestThreadsSurviveARestartOfTheRouter(t *testing.T) {
	js := setup(t)
	cfg := route.Config{Interval: 10 * time.Millisecond, Rules: []route.Rule{pagerRule}}
	first := start(t, js, cfg)
	publish(t, js, page("R1", "incident.triggered", "PINC900", 900))
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		if len(posts(t, js, "slack", "C0INCIDENT")) < 1 {
			return fmt.Errorf("no post yet")
		}
		return nil
	})
	first.Stop(context.Background())
	start(t, js, cfg) // a new replica (or a restart) with the same bucket
	publish(t, js, page("R2", "incident.resolved", "PINC900", 900))
	var ps []*chatv1.ChatPost
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		if ps = posts(t, js, "slack", "C0INCIDENT"); len(ps) < 2 {
			return fmt.Errorf("%d posts", len(ps))
		}
		return nil
	})
	if ps[1].GetConversation().GetThread() != ps[0].GetId() {
		t.Fatalf("after a restart, the resolve went to thread %q, want %q", ps[1].GetConversation().GetThread(), ps[0].GetId())
	}
}

func TestAStormIsDigestedAndEveryEventAccountedFor(t *testing.T) {
	js := setup(t)
	start(t, js, route.Config{Interval: 200 * time.Millisecond, MaxDigest: 400, Rules: []route.Rule{pagerRule,
		{Subject: "sb.event.ci.>", Adapter: "slack", Channel: "C0CI", Thread: "none"}}})
	const n = 1000
	var evs []*eventv1.Event
	for i := range n {
		typ := "incident.triggered"
		if i%3 == 0 {
			typ = "incident.resolved"
		}
		evs = append(evs, page(fmt.Sprintf("S%d", i), typ, fmt.Sprintf("PINC%d", i), i))
	}
	evs = append(evs, &eventv1.Event{Id: "B1", Source: "ci", Type: "build.failed", Title: "Failed: foxdan's build #1674"})
	publish(t, js, evs...)
	var got, headlines, lists int
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		got, headlines, lists = accounted(t, posts(t, js, "slack", "C0INCIDENT"))
		if got < n {
			return fmt.Errorf("%d of %d events accounted for", got, n)
		}
		return nil
	})
	if got != n {
		t.Fatalf("%d events accounted for, want exactly %d", got, n)
	}
	if headlines == 0 || lists != headlines {
		t.Fatalf("%d digest headlines and %d lists for a storm of 1000 events, want digests, each with its list", headlines, lists)
	}
	ci := posts(t, js, "slack", "C0CI")
	if len(ci) != 1 || ci[0].GetText() != "Failed: foxdan's build #1674" {
		t.Fatalf("ci channel posts = %v", ci)
	}
}

func TestADigestsListIsAReplyInItsHeadlinesThreadOneSlotLater(t *testing.T) {
	js := setup(t)
	// Long enough that the six events arrive within one slot: the first
	// may go alone, the rest wait for the next.
	const interval = 500 * time.Millisecond
	start(t, js, route.Config{Interval: interval, Rules: []route.Rule{pagerRule}})
	var evs []*eventv1.Event
	for i := range 6 {
		typ := "incident.triggered"
		if i%3 == 0 {
			typ = "incident.resolved"
		}
		evs = append(evs, page(fmt.Sprintf("D%d", i), typ, fmt.Sprintf("PDIG%d", i), 700+i))
	}
	publish(t, js, evs...)
	var ps []*chatv1.ChatPost
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		ps = posts(t, js, "slack", "C0INCIDENT")
		if got, _, _ := accounted(t, ps); got < len(evs) {
			return fmt.Errorf("%d of %d events accounted for", got, len(evs))
		}
		return nil
	})
	var head, list *chatv1.ChatPost
	for _, p := range ps {
		switch {
		case strings.HasPrefix(p.GetId(), "digest-") && p.GetConversation().GetThread() == "":
			head = p
		case strings.HasPrefix(p.GetId(), "digest-"):
			list = p
		}
	}
	if head == nil || list == nil {
		t.Fatalf("posts %v: want a digest headline and its list (the first event may go alone, the rest queue behind it)", ps)
	}
	if strings.Contains(head.GetText(), "•") || strings.Contains(head.GetText(), "\n") {
		t.Errorf("headline %q carries the list; want one line at the channel level", head.GetText())
	}
	if list.GetConversation().GetThread() != head.GetId() || list.GetConversation().GetChannel() != head.GetConversation().GetChannel() {
		t.Errorf("list in %v, want in thread %s of the headline's channel", list.GetConversation(), head.GetId())
	}
	for _, ev := range evs[len(evs)-2:] {
		if !strings.Contains(list.GetText(), ev.GetTitle()) {
			t.Errorf("list lacks %q:\n%s", ev.GetTitle(), list.GetText())
		}
	}
	// One post per slot: the list waits for the slot after the headline.
	if gap := list.GetCreatedAt().AsTime().Sub(head.GetCreatedAt().AsTime()); gap < interval {
		t.Errorf("list posted %v after its headline, want at least the interval %v", gap, interval)
	}
}

func TestEventsNoRuleMatchesAreAcknowledgedAndNotPosted(t *testing.T) {
	js := setup(t)
	start(t, js, route.Config{Interval: 10 * time.Millisecond, Rules: []route.Rule{pagerRule}})
	publish(t, js, &eventv1.Event{Id: "X1", Source: "watcher", Type: "finding", Title: "nope"}, page("P1", "incident.triggered", "PINC1", 1))
	ctx := natstest.Context(t, 10*time.Second)
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		c, err := js.Consumer(ctx, wire.StreamEvents, route.ConsumerName)
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumAckPending != 0 || info.NumPending != 0 {
			return fmt.Errorf("%d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
		}
		return nil
	})
	if ps := posts(t, js, "slack", "C0INCIDENT"); len(ps) != 1 {
		t.Fatalf("%d posts, want only the PagerDuty one", len(ps))
	}
}

func TestFormatRendersTheEvent(t *testing.T) {
	js := setup(t)
	start(t, js, route.Config{Interval: 10 * time.Millisecond, Rules: []route.Rule{{
		Subject: "sb.event.pagerduty.incident.*", Adapter: "console", Channel: "ops",
		Format: `{{.Verb}}: Incident #{{.Fields.number}} — {{.Fields.title}}{{with .Fields.assignees}} — assigned to {{.}}{{end}}{{.Fields.absent}}`,
	}}})
	publish(t, js, &eventv1.Event{Id: "F1", Source: "pagerduty", Type: "incident.triggered",
		Fields: map[string]string{"number": "621", "title": "production cop dropped points check", "assignees": "Rob"}})
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		ps := posts(t, js, "console", "ops")
		if len(ps) != 1 {
			return fmt.Errorf("%d posts", len(ps))
		}
		if want := "Triggered: Incident #621 — production cop dropped points check — assigned to Rob"; ps[0].GetText() != want {
			t.Fatalf("text %q, want %q", ps[0].GetText(), want)
		}
		return nil
	})
}

func TestConfigValidateNamesTheRule(t *testing.T) {
	cases := []struct {
		name string
		rule route.Rule
		want string
	}{
		{"a subject outside the events", route.Rule{Subject: "sb.chat.post.>", Adapter: "a", Channel: "c"}, "route.rules[0]: subject"},
		{"a misplaced >", route.Rule{Subject: "sb.event.>.x", Adapter: "a", Channel: "c"}, "route.rules[0]: subject"},
		{"no channel", route.Rule{Subject: "sb.event.>", Adapter: "a"}, "adapter and channel"},
		{"a broken format", route.Rule{Subject: "sb.event.>", Adapter: "a", Channel: "c", Format: "{{.Title"}, "format"},
		{"an unknown thread mode", route.Rule{Subject: "sb.event.>", Adapter: "a", Channel: "c", Thread: "always"}, "thread"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := route.Config{Rules: []route.Rule{c.rule}}.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want %q", err, c.want)
			}
		})
	}
}
