package slack_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
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
