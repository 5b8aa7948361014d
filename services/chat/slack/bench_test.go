package slack_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat/slack"
	"github.com/switchboard-ops/switchboard/services/chat/slack/slackfake"
)

// acceptAll is an ingress that accepts at once: the Events API benchmark
// measures the acknowledgement, which never waits for the chat core.
type acceptAll struct{}

func (acceptAll) Handle(context.Context, *chatv1.ChatMessage) *chatv1.ChatReply {
	return &chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED}
}

// openLoad sends n signed event requests at rate per second to target,
// each at its scheduled time whatever the previous ones are doing (an open
// loop, as Slack sends), and returns the latencies from the scheduled time
// to the acknowledgement.
func openLoad(b *testing.B, fake *slackfake.Server, target string, n, rate int) []time.Duration {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}, Timeout: 10 * time.Second}
	bodies := make([][]byte, n)
	for i := range bodies {
		ts := fake.NewTS()
		bodies[i] = slackfake.Callback(slackfake.Event{Type: "message", ChannelType: "channel", Channel: chAlerts, User: uAna,
			Text: fmt.Sprintf("sb: t count %d", i), TS: ts})
	}
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	every := time.Second / time.Duration(rate)
	for i := 0; i < n; i++ {
		at := start.Add(time.Duration(i) * every)
		time.Sleep(time.Until(at))
		wg.Add(1)
		go func(i int, at time.Time) {
			defer wg.Done()
			resp, err := slackfake.PostSigned(context.Background(), client, target, signingSecret, time.Now(), bodies[i], 0)
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
			}
			lat[i] = time.Since(at)
		}(i, at)
	}
	wg.Wait()
	return lat
}

func pct(l []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkEventsAPIAck: 3,000 signed Events API requests at 1,000/s;
// reports p50 and p99 from send to acknowledgement, and the same load on
// an HTTP handler that only answers 200 (the same-run baseline).
//
//	go test -run '^$' -bench EventsAPIAck -benchtime 1x ./services/chat/slack/
func BenchmarkEventsAPIAck(b *testing.B) {
	const n, rate = 3000, 1000
	// The benchmark's 3,000 messages each get 👀: far more reactions a
	// minute than Slack allows, and nothing to do with the acknowledgement.
	fake := slackfake.Run(b, slackfake.WithPostInterval(0), slackfake.WithoutMethodLimits())
	fake.AddChannel(chAlerts)
	fake.AddUser(slackfake.User{ID: uAna, Name: "ana", Email: "ana@example.com"})
	sc := slack.DefaultConfig()
	sc.BotToken, sc.SigningSecret, sc.Mode, sc.APIURL = slack.NewSecret(slackfake.BotToken), slack.NewSecret(signingSecret), slack.ModeEvents, fake.APIURL()
	a, err := slack.New(sc, acceptAll{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := a.Start(context.Background(), l); err != nil {
		b.Fatal(err)
	}
	defer a.Stop(context.Background())
	bl, _ := net.Listen("tcp", "127.0.0.1:0")
	base := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body.Close()
		w.WriteHeader(http.StatusOK)
	})}
	go base.Serve(bl)
	defer base.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		baseline := openLoad(b, fake, "http://"+bl.Addr().String()+"/slack/events", n, rate)
		acked := openLoad(b, fake, "http://"+l.Addr().String()+"/slack/events", n, rate)
		b.ReportMetric(float64(pct(acked, 0.5).Microseconds()), "p50-µs")
		b.ReportMetric(float64(pct(acked, 0.99).Microseconds()), "p99-µs")
		b.ReportMetric(float64(pct(baseline, 0.5).Microseconds()), "baseline-p50-µs")
		b.ReportMetric(float64(pct(baseline, 0.99).Microseconds()), "baseline-p99-µs")
	}
}

// BenchmarkEgressPostToAPICall: a ChatPost published on the CHAT stream
// until the fake Slack receives its chat.postMessage, one at a time, no
// rate limit. The baseline is the bare stream hop: publish to a JetStream
// consumer's callback on the same server.
//
//	go test -run '^$' -bench EgressPostToAPICall -benchtime 2000x ./services/chat/slack/
func BenchmarkEgressPostToAPICall(b *testing.B) {
	var mu sync.Mutex
	arrived := map[string]chan time.Time{}
	hook := func(method string, form url.Values) {
		if method != "chat.postMessage" {
			return
		}
		mu.Lock()
		ch := arrived[form.Get("text")]
		mu.Unlock()
		if ch != nil {
			ch <- time.Now()
		}
	}
	e := newEnv(b, slackfake.WithPostInterval(0), slackfake.WithHook(hook))
	sc := e.slackConfig(slack.ModeEvents)
	sc.PostInterval = 0
	e.startReplica(sc)
	ctx := natstest.Context(b, 10*time.Minute)

	// The baseline consumer: what the bus alone costs.
	cons, err := e.js.CreateOrUpdateConsumer(ctx, wire.StreamChat, jetstream.ConsumerConfig{
		FilterSubject: wire.ChatPostSubject("benchbase", "x"), DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan time.Time, 1)
	cc, err := cons.Consume(func(jetstream.Msg) { got <- time.Now() })
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	var lat, base []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		text := fmt.Sprintf("bench %d", i)
		ch := make(chan time.Time, 1)
		mu.Lock()
		arrived[text] = ch
		mu.Unlock()
		t0 := time.Now()
		if _, err := emit.Post(ctx, e.js, &chatv1.ChatPost{Id: "bench-" + text, Conversation: &chatv1.Conversation{Adapter: slack.Name, Channel: chBurst},
			Kind: chatv1.Kind_KIND_RESULT, Text: text}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, (<-ch).Sub(t0))

		t0 = time.Now()
		if _, err := emit.Post(ctx, e.js, &chatv1.ChatPost{Id: "base-" + text, Conversation: &chatv1.Conversation{Adapter: "benchbase", Channel: "x"},
			Kind: chatv1.Kind_KIND_RESULT, Text: text}); err != nil {
			b.Fatal(err)
		}
		base = append(base, (<-got).Sub(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64(pct(lat, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(pct(lat, 0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(pct(base, 0.5).Microseconds()), "baseline-p50-µs")
}

// incidentNumberRe finds the events a Slack message names: every storm
// event's title carries its own incident number.
var incidentNumberRe = regexp.MustCompile(`Incident #(\d+) —`)

// routeHeadlineRe is a route digest's headline as Slack shows it.
var routeHeadlineRe = regexp.MustCompile(`^(\d+) more PagerDuty events: .* — list in thread$`)

// shownEvents returns the incident numbers a message names, in its text or
// in the files shared with it (a long list goes up as a file).
func shownEvents(m slackfake.Message) map[int]bool {
	out := map[int]bool{}
	texts := []string{m.Text}
	for _, f := range m.Files {
		texts = append(texts, string(f.Content))
	}
	for _, t := range texts {
		for _, x := range incidentNumberRe.FindAllStringSubmatch(t, -1) {
			v, _ := strconv.Atoi(x[1])
			out[v] = true
		}
	}
	return out
}

// BenchmarkIncidentStormThroughSlack is BenchmarkIncidentStorm of
// services/chat/route carried on into Slack: 10,000 PagerDuty events
// published evenly over a minute (SB_BENCH_STORM_SECONDS changes that) go
// through the router, the chat egress and the Slack adapter to the fake
// Slack, with Slack's limits on — one message a second per channel, which
// a shared file counts against, and the method tiers — on the real clock.
// It waits until every event is named in a message of the incident
// channel or in a digest's list (a file when long), and reports the
// messages Slack holds, the smallest gap between two of them (thread
// replies and shared files included: Slack's per-channel limit counts
// them too), the 429s the fake answered, and how long after the last
// event was published the message came that made the channel complete.
// The same-run baseline is the producer's publish time and the naive
// alternative of one message per event at one a second (events × 1 s).
//
//	go test -run '^$' -bench IncidentStormThroughSlack -benchtime 1x ./services/chat/slack/
func BenchmarkIncidentStormThroughSlack(b *testing.B) {
	const n = 10000
	const slackInterval = time.Second // the fake's, and Slack's, per-channel limit
	secs := 60
	if v, err := strconv.Atoi(os.Getenv("SB_BENCH_STORM_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	e := newEnv(b, slackfake.WithPostInterval(slackInterval))
	e.startReplicaWith(routedConfig(slackInterval), e.slackConfig(slack.ModeEvents))
	ctx := natstest.Context(b, time.Duration(secs)*time.Second+5*time.Minute)

	b.ResetTimer()
	t0 := time.Now()
	every := time.Duration(secs) * time.Second / n
	for i := range n {
		if d := time.Until(t0.Add(time.Duration(i) * every)); d > 0 {
			time.Sleep(d)
		}
		// The route benchmark's mix: 2 triggered, 2 resolved, 1
		// acknowledged in 5, over 700 incidents.
		verb := "triggered"
		switch i % 5 {
		case 1, 2:
			verb = "resolved"
		case 3:
			verb = "acknowledged"
		}
		if _, err := emit.Event(ctx, e.js, incidentEvent(fmt.Sprintf("STORM%05d", i), verb, fmt.Sprintf("PST%05d", i%700), i)); err != nil {
			b.Fatalf("publish event %d: %v", i, err)
		}
	}
	lastEvent := time.Now()

	// The fake keeps messages in the order it accepted them and never
	// changes one here (nothing is edited), so each is read once.
	shownIn := map[int]int{} // incident number → messages naming it
	read := 0
	var complete time.Time
	for complete.IsZero() {
		msgs := e.fake.Messages(chIncident)
		for _, m := range msgs[read:] {
			for v := range shownEvents(m) {
				shownIn[v]++
			}
			if len(shownIn) == n && complete.IsZero() {
				complete = m.At
			}
		}
		read = len(msgs)
		if !complete.IsZero() {
			break
		}
		if time.Since(lastEvent) > 5*time.Minute {
			b.Fatalf("5 minutes after the last event, %d of %d events are in Slack", len(shownIn), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()

	msgs := e.fake.Messages(chIncident)
	minGap := time.Duration(math.MaxInt64)
	var headlines, files int
	for i, m := range msgs {
		if i > 0 {
			minGap = min(minGap, m.At.Sub(msgs[i-1].At))
		}
		files += len(m.Files)
		h := routeHeadlineRe.FindStringSubmatch(m.Text)
		if h == nil || m.ThreadTS != "" {
			continue
		}
		// A digest's list is in its headline's thread and names as many
		// events as the headline counts.
		headlines++
		want, _ := strconv.Atoi(h[1])
		listed := 0
		for _, r := range msgs {
			if r.ThreadTS == m.TS {
				listed += len(shownEvents(r))
			}
		}
		if listed != want {
			b.Errorf("the thread of %q lists %d events, want %d", m.Text, listed, want)
		}
	}
	twice := 0
	for v, k := range shownIn {
		if v < 0 || v >= n {
			b.Errorf("Slack names incident #%d, which no event of the storm had", v)
		}
		if k > 1 {
			twice++
		}
	}
	if len(shownIn) != n {
		b.Fatalf("%d events named in Slack, want all %d", len(shownIn), n)
	}
	if minGap < slackInterval {
		b.Fatalf("two messages %v apart in the channel: faster than Slack's one a second", minGap)
	}
	limited := e.fake.RateLimited()
	drain := complete.Sub(lastEvent)
	published := lastEvent.Sub(t0)
	b.ReportMetric(float64(len(msgs)), "slack-messages")
	b.ReportMetric(float64(headlines), "digest-headlines")
	b.ReportMetric(float64(files), "files")
	b.ReportMetric(float64(len(shownIn)), "events-accounted")
	b.ReportMetric(float64(twice), "events-shown-twice")
	b.ReportMetric(minGap.Seconds(), "min-gap-s")
	b.ReportMetric(float64(limited), "429s")
	b.ReportMetric(drain.Seconds(), "complete-after-last-event-s")
	b.ReportMetric(published.Seconds(), "baseline-publish-s")
	b.ReportMetric(float64(n)*slackInterval.Seconds(), "baseline-naive-posts-s")
	b.Logf("%d events over %v: %d Slack messages (%d digest headlines, %d files), min gap %v, %d answered 429 (chat.postMessage %d, files.completeUploadExternal %d), all in Slack %v after the last event; one message per event would take %v",
		n, published.Round(time.Millisecond), len(msgs), headlines, files, minGap.Round(time.Millisecond), limited,
		e.fake.RateLimitedCalls("chat.postMessage"), e.fake.RateLimitedCalls("files.completeUploadExternal"),
		drain.Round(time.Millisecond), time.Duration(n)*slackInterval)
}
