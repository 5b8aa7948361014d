package watcher

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/watcher/graphite"
)

// loadRecorded reads a render response recorded from a real graphite-web
// 1.1.8 (see TestRecordRenderResponses), keyed by series name.
func loadRecorded(t *testing.T, name string) map[string][]graphite.Point {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "render-"+name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var series []graphite.Series
	if err := json.Unmarshal(b, &series); err != nil {
		t.Fatal(err)
	}
	out := map[string][]graphite.Point{}
	for _, s := range series {
		out[s.Target] = s.Datapoints
	}
	return out
}

func testRule() Rule {
	return Rule{Window: 5 * time.Minute, Settle: 30 * time.Second, Aggregate: AggCount, MinRatio: 0.95, Quorum: 0.5, MaxLag: 5 * time.Minute}
}

func verdicts(ev Evaluation) map[string]string {
	out := map[string]string{}
	for h, r := range ev.Readings {
		out[h] = r.Status.String()
	}
	return out
}

func TestVerdictsOnRecordedResponses(t *testing.T) {
	hosts := []string{"h1", "h2", "h3", "h4"}
	for _, tc := range []struct {
		name string
		file string
		rule func(*Rule)
		want map[string]string
		// wantPercent of some hosts, to pin the arithmetic.
		wantPercent map[string]int
	}{
		{name: "every host reporting, the newest interval still filling (null)", file: "healthy",
			want: map[string]string{"h1": "good", "h2": "good", "h3": "good", "h4": "good"}},
		{name: "a host whose canary stopped 3 minutes ago is bad, the others good", file: "one-stopped",
			want: map[string]string{"h1": "good", "h2": "good", "h3": "bad", "h4": "good"}, wantPercent: map[string]int{"h3": 43}},
		{name: "three gaps in five minutes are bad, one gap is not", file: "gaps",
			want: map[string]string{"h1": "good", "h2": "bad", "h3": "good", "h4": "good"}, wantPercent: map[string]int{"h2": 93}},
		{name: "late data for everybody moves the window back instead of making everybody sick", file: "late",
			want: map[string]string{"h1": "good", "h2": "good", "h3": "bad", "h4": "good"}, wantPercent: map[string]int{"h1": 100, "h3": 50}},
		{name: "hosts whose clocks are 20s ahead or behind are not sick", file: "skew",
			want: map[string]string{"h1": "good", "h2": "good", "h3": "good", "h4": "good"}},
		{name: "a stricter threshold turns the single gap bad too", file: "gaps", rule: func(r *Rule) { r.MinRatio = 1 },
			want: map[string]string{"h1": "good", "h2": "bad", "h3": "good", "h4": "good"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testRule()
			if tc.rule != nil {
				tc.rule(&r)
			}
			ev := Evaluate(r, hosts, loadRecorded(t, tc.file))
			if ev.Outage {
				t.Fatalf("outage: %s", ev.OutageReason)
			}
			got := verdicts(ev)
			for h, w := range tc.want {
				if got[h] != w {
					t.Errorf("%s is %s (%d%%, %d nulls), want %s", h, got[h], ev.Readings[h].Percent(), ev.Readings[h].Nulls, w)
				}
			}
			for h, w := range tc.wantPercent {
				if p := ev.Readings[h].Percent(); p != w {
					t.Errorf("%s at %d%%, want %d%%", h, p, w)
				}
			}
			if ev.Step != 10 {
				t.Errorf("step = %d, want 10 (the 10s retention)", ev.Step)
			}
		})
	}
}

func TestNoDataForTheWholeBackendIsAnOutageNotSickHosts(t *testing.T) {
	hosts := []string{"h1", "h2", "h3", "h4"}
	ev := Evaluate(testRule(), hosts, loadRecorded(t, "outage"))
	if !ev.Outage || len(ev.Readings) != 0 || !strings.Contains(ev.OutageReason, "only nulls") {
		t.Fatalf("all-null response: outage=%v reason=%q readings=%d; want an outage and no verdicts", ev.Outage, ev.OutageReason, len(ev.Readings))
	}
	ev = Evaluate(testRule(), hosts, map[string][]graphite.Point{})
	if !ev.Outage {
		t.Fatal("an empty response ([]) is not an outage")
	}
	// Data 80s late is judged; with max_lag 30s it is an outage instead.
	r := testRule()
	r.MaxLag = 30 * time.Second
	if ev := Evaluate(r, hosts, loadRecorded(t, "late")); !ev.Outage || !strings.Contains(ev.OutageReason, "late") {
		t.Fatalf("late data beyond max_lag: outage=%v %q", ev.Outage, ev.OutageReason)
	}
}

func TestAHostWithoutAnySeriesIsNotJudged(t *testing.T) {
	ev := Evaluate(testRule(), []string{"h1", "h2", "h3", "h4", "h5"}, loadRecorded(t, "one-stopped"))
	if got := ev.Readings["h5"].Status; got != StatusUnknown || ev.Unknown != 1 {
		t.Fatalf("h5 (no series) is %v, unknown=%d; want no data, never bad", got, ev.Unknown)
	}
	if ev.Bad != 1 || ev.Good != 3 {
		t.Fatalf("good/bad = %d/%d, want 3/1", ev.Good, ev.Bad)
	}
}

func TestTheVerdictDependsOnGraphitesClockNotTheWatchers(t *testing.T) {
	// The same response shifted by three hours (a Graphite whose clock is
	// off, or a response replayed later) gives the same verdicts.
	data := loadRecorded(t, "one-stopped")
	shifted := map[string][]graphite.Point{}
	for h, pts := range data {
		for _, p := range pts {
			p.Time -= 3 * 3600
			shifted[h] = append(shifted[h], p)
		}
	}
	hosts := []string{"h1", "h2", "h3", "h4"}
	a, b := Evaluate(testRule(), hosts, data), Evaluate(testRule(), hosts, shifted)
	if got, want := verdicts(b), verdicts(a); len(got) != 4 || got["h3"] != want["h3"] || b.Frontier != a.Frontier-3*3600 {
		t.Fatalf("shifted verdicts %v (frontier %d), original %v (frontier %d)", got, b.Frontier, want, a.Frontier)
	}
}

func TestSumAggregateComparesWithTheExpectedTotal(t *testing.T) {
	pts := func(v float64, n int) []graphite.Point {
		var out []graphite.Point
		for i := range n {
			out = append(out, graphite.Point{Value: v, Time: int64(1000 + 60*i), Valid: true})
		}
		return append(out, graphite.Point{Time: int64(1000 + 60*n)}) // the filling minute
	}
	r := Rule{Window: 5 * time.Minute, Aggregate: AggSum, Expected: 300, MinRatio: 0.9, Quorum: 0.5}
	ev := Evaluate(r, []string{"a", "b"}, map[string][]graphite.Point{"a": pts(60, 10), "b": pts(36.6, 10)})
	if ev.Readings["a"].Status != StatusGood || ev.Readings["b"].Status != StatusBad || ev.Readings["b"].Percent() != 61 {
		t.Fatalf("a=%v b=%v (%d%%); want a good, b bad at 61%%", ev.Readings["a"].Status, ev.Readings["b"].Status, ev.Readings["b"].Percent())
	}
	if d := ev.Readings["b"].Describe(5 * time.Minute); d != "canary 61% of expected over 5 min" {
		t.Fatalf("describe = %q", d)
	}
}
