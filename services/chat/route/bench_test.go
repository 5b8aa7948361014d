package route_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat/route"
)

// BenchmarkIncidentStorm publishes 10,000 PagerDuty events evenly over a
// minute (SB_BENCH_STORM_SECONDS changes that) to a router with Slack's
// rate limit (one post per second per channel), and waits until every
// event is accounted for in the channel. It reports the posts made, the
// smallest gap between two posts (must stay ≥ 1s), and how long after
// the last event the channel had them all. The same-run baseline is the
// producer: the time to publish the events, and the naive alternative of
// one post per event at one post per second (events/1s).
//
//	go test -run '^$' -bench IncidentStorm -benchtime 1x ./services/chat/route/
func BenchmarkIncidentStorm(b *testing.B) {
	const n = 10000
	secs := 60
	if v, err := strconv.Atoi(os.Getenv("SB_BENCH_STORM_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	js := setup(b)
	start(b, js, route.Config{Interval: time.Second, Rules: []route.Rule{pagerRule}})
	ctx := natstest.Context(b, time.Duration(secs)*time.Second+5*time.Minute)
	b.ResetTimer()
	t0 := time.Now()
	interval := time.Duration(secs) * time.Second / n
	for i := range n {
		if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		typ := "incident.triggered"
		switch i % 5 {
		case 1, 2:
			typ = "incident.resolved"
		case 3:
			typ = "incident.acknowledged"
		}
		if _, err := emit.Event(ctx, js, page(fmt.Sprintf("STORM%05d", i), typ, fmt.Sprintf("PST%05d", i%700), i)); err != nil {
			b.Fatal(err)
		}
	}
	published := time.Since(t0)
	var got, digests, lists int
	var last time.Time
	for {
		ps := posts(b, js, "slack", "C0INCIDENT")
		got, digests, lists = accounted(b, ps)
		if got >= n {
			last = time.Now()
			minGap := time.Hour
			for i := 1; i < len(ps); i++ {
				if g := ps[i].GetCreatedAt().AsTime().Sub(ps[i-1].GetCreatedAt().AsTime()); g < minGap {
					minGap = g
				}
			}
			b.StopTimer()
			if got != n || lists != digests {
				b.Fatalf("%d events accounted for, want exactly %d; %d digests, %d lists", got, n, digests, lists)
			}
			if minGap < 990*time.Millisecond {
				b.Errorf("two posts %v apart: faster than one a second", minGap)
			}
			b.ReportMetric(float64(len(ps)), "posts")
			b.ReportMetric(float64(digests), "digests")
			b.ReportMetric(float64(got), "events-accounted")
			b.ReportMetric(minGap.Seconds(), "min-gap-s")
			b.ReportMetric(last.Sub(t0.Add(published)).Seconds(), "drain-after-last-event-s")
			b.ReportMetric(published.Seconds(), "baseline-publish-s")
			b.ReportMetric(float64(n), "baseline-naive-posts-s")
			b.Logf("%d events over %v: %d posts (%d digests), min gap %v, all accounted %v after the last event; one post per event would take %v",
				n, published.Round(time.Millisecond), len(ps), digests, minGap.Round(time.Millisecond), last.Sub(t0.Add(published)).Round(time.Millisecond), time.Duration(n)*time.Second)
			return
		}
		if time.Since(t0) > published+5*time.Minute {
			b.Fatalf("only %d of %d events accounted for", got, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
