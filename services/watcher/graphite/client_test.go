package graphite_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/watcher/graphite"
	"github.com/switchboard-ops/switchboard/services/watcher/graphitetest"
)

func TestPointsDecodeNullsAndNumbers(t *testing.T) {
	var s []graphite.Series
	in := `[{"target":"a","datapoints":[[null, 100],[1.5, 110],[0, 120.0],[null, 130]]}]`
	if err := json.Unmarshal([]byte(in), &s); err != nil {
		t.Fatal(err)
	}
	got := s[0].Datapoints
	want := []graphite.Point{{Time: 100}, {Value: 1.5, Time: 110, Valid: true}, {Value: 0, Time: 120, Valid: true}, {Time: 130}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("points = %v, want %v", got, want)
	}
	b, _ := json.Marshal(got)
	if string(b) != "[[null,100],[1.5,110],[0,120],[null,130]]" {
		t.Fatalf("re-encoded = %s", b)
	}
	if err := json.Unmarshal([]byte(`[{"target":"a","datapoints":[[1]]}]`), &s); err == nil {
		t.Fatal("a datapoint without a time was accepted")
	}
}

// recorder is a render endpoint that records every request's targets.
type recorder struct {
	mu       sync.Mutex
	requests [][]string
	methods  []string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if err := req.ParseForm(); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	r.mu.Lock()
	r.requests = append(r.requests, req.Form["target"])
	r.methods = append(r.methods, req.Method)
	r.mu.Unlock()
	if req.Form.Get("format") != "json" {
		http.Error(w, "format", 400)
		return
	}
	var out []graphite.Series
	for _, t := range req.Form["target"] {
		out = append(out, graphite.Series{Target: t, Datapoints: []graphite.Point{{Value: 1, Time: 10, Valid: true}}})
	}
	_ = json.NewEncoder(w).Encode(out)
}

func TestRenderSplitsTargetsIntoFewRequestsAndKeepsEverySeries(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	c := graphite.NewClient(srv.URL, graphite.WithMaxTargets(400), graphite.WithMaxBody(1<<20))
	var targets []string
	for i := range 1000 {
		targets = append(targets, fmt.Sprintf("alias(canary.host-%04d.points,'host-%04d')", i, i))
	}
	if n := c.Requests(targets); n != 3 {
		t.Fatalf("Requests = %d, want 3 (400 + 400 + 200)", n)
	}
	series, err := c.Render(context.Background(), graphite.Query{Targets: targets, From: "-10min", Until: "now"})
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1000 || len(rec.requests) != 3 {
		t.Fatalf("%d series in %d requests, want 1000 in 3", len(series), len(rec.requests))
	}
	for i, m := range rec.methods {
		if m != http.MethodPost {
			t.Fatalf("request %d was %s; a long target list must go in a POST form", i, m)
		}
	}
	// The body limit splits too: 1000 targets of ~45 bytes in 16 KiB bodies.
	c = graphite.NewClient(srv.URL, graphite.WithMaxBody(16<<10))
	if n := c.Requests(targets); n < 3 || n > 5 {
		t.Fatalf("Requests with a 16 KiB body limit = %d, want 3 to 5", n)
	}
}

func TestRenderErrorsSayWhetherGraphiteIsUnreachable(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Traceback (most recent call last):\n  ...", 500)
	}))
	defer broken.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "invalid target", 400)
	}))
	defer bad.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()

	for _, tc := range []struct {
		name        string
		url         string
		unreachable bool
	}{
		{"a timeout", slow.URL, true},
		{"a 500", broken.URL, true},
		{"a refused connection", gone.URL, true},
		{"a 400 (our query is wrong)", bad.URL, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := graphite.NewClient(tc.url, graphite.WithTimeout(200*time.Millisecond))
			_, err := c.Render(context.Background(), graphite.Query{Targets: []string{"a.b"}, From: "-1min"})
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, graphite.ErrUnreachable) != tc.unreachable {
				t.Fatalf("errors.Is(%v, ErrUnreachable) = %v, want %v", err, !tc.unreachable, tc.unreachable)
			}
		})
	}
}

func TestGraphURLIsAPNGRenderLink(t *testing.T) {
	u := graphite.GraphURL("https://graphite.example.com/", []string{"canary.superagg-0003.points"}, "-10min", "now", "superagg-0003")
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := p.Query()
	if p.Path != "/render" || q.Get("target") != "canary.superagg-0003.points" || q.Get("from") != "-10min" || q.Get("format") != "" {
		t.Fatalf("graph URL %s: want /render with the target, the window and no format (PNG)", u)
	}
}

// TestAgainstRealGraphite renders what was fed to a real carbon-cache,
// through the same batched targets the watcher sends.
func TestAgainstRealGraphite(t *testing.T) {
	g := graphitetest.Start(t)
	now := time.Now().Truncate(graphitetest.Step)
	var pts []graphitetest.Point
	for i := range 6 {
		ts := now.Add(-time.Duration(6-i) * graphitetest.Step)
		pts = append(pts,
			graphitetest.Point{Metric: "canary.web-1.points", Value: 6, Time: ts},
			graphitetest.Point{Metric: "canary.web-2.points", Value: float64(i), Time: ts})
	}
	if err := g.Send(pts...); err != nil {
		t.Fatal(err)
	}
	if err := g.WaitFor("canary.web-2.points", now.Add(-graphitetest.Step), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	c := graphite.NewClient(g.URL, graphite.WithTimeout(10*time.Second), graphite.WithMaxTargets(1))
	series, err := c.Render(context.Background(), graphite.Query{
		Targets: []string{"aliasByNode(canary.{web-1,web-2}.points,1)", "alias(canary.web-1.points,'one')", "canary.nothing.here"},
		From:    "-2min", Until: "now",
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, s := range series {
		for _, p := range s.Datapoints {
			if p.Valid {
				got[s.Target] += p.Value
			}
		}
	}
	want := map[string]float64{"web-1": 36, "web-2": 15, "one": 36}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("sums by series = %v, want %v", got, want)
	}
	g.Stop()
	_, err = c.Render(context.Background(), graphite.Query{Targets: []string{"canary.*.points"}, From: "-2min"})
	if !errors.Is(err, graphite.ErrUnreachable) {
		t.Fatalf("render with Graphite stopped: %v, want ErrUnreachable", err)
	}
}
