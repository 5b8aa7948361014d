package watcher

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/switchboard-ops/switchboard/services/watcher/graphite"
)

// Aggregates: what a host's window is measured by.
const (
	// AggCount counts the intervals that have a value: "at least 95% of the
	// expected points arrived".
	AggCount = "count"
	// AggSum adds the values (a metric that counts canary requests served)
	// and compares the sum with Rule.Expected.
	AggSum = "sum"
)

// Rule is the pure part of a check: how a window of points becomes a
// verdict.
type Rule struct {
	// Window is how much recent data one evaluation looks at.
	Window time.Duration
	// Settle is the newest part of the data that is never judged: carbon
	// writes the current interval while it is still filling, and senders
	// deliver late, so the last points are incomplete, not bad.
	Settle time.Duration
	// Aggregate is AggCount or AggSum.
	Aggregate string
	// Expected is the sum a healthy host reaches over Window (AggSum only).
	Expected float64
	// MinRatio: a host below this fraction of expected is bad.
	MinRatio float64
	// Quorum is the fraction of a backend's hosts that must have a value in
	// an interval for it to count as complete. The window ends at the newest
	// complete interval, so a pipeline that is late for everybody, or a
	// Graphite whose clock differs from the senders', delays the window
	// instead of making every host look sick.
	Quorum float64
	// MaxLag is how far the newest complete interval may trail Graphite's
	// clock before the data counts as out (a metrics outage).
	MaxLag time.Duration
}

// Status is a host's verdict in one evaluation.
type Status int

// Verdicts.
const (
	// StatusUnknown: no series at all for the host (never reported, or the
	// query did not cover it): neither good nor bad, never acted on.
	StatusUnknown Status = iota
	StatusGood
	StatusBad
)

func (s Status) String() string {
	switch s {
	case StatusGood:
		return "good"
	case StatusBad:
		return "bad"
	}
	return "no data"
}

// Reading is the numbers behind one host's verdict.
type Reading struct {
	Host     string
	Status   Status
	Ratio    float64 // observed / expected, capped at 1
	Observed float64 // points counted or values summed
	Expected float64
	Nulls    int   // intervals of the window without a value
	From     int64 // window start (Unix seconds, Graphite's clock), inclusive
	Until    int64 // window end, exclusive
}

// Evaluation is one check's verdicts over a backend.
type Evaluation struct {
	Readings map[string]Reading
	// Outage is set when the data cannot be judged at all (no host has
	// data, or all of it is late); Readings is then empty.
	Outage       bool
	OutageReason string
	Step         int64 // seconds per interval
	Frontier     int64 // start of the newest complete interval
	Good, Bad    int
	Unknown      int
}

// Percent is the ratio as a whole percentage, rounded down so that 94.9%
// never reads as "95%" next to a 95% threshold.
func (r Reading) Percent() int { return int(math.Floor(r.Ratio*100 + 1e-9)) }

// Evaluate judges every host from its series (keyed by host name; a host
// without a key has no series). It is pure: time comes from the series,
// which carry Graphite's clock, never from the caller's.
func Evaluate(r Rule, hosts []string, series map[string][]graphite.Point) Evaluation {
	ev := Evaluation{Readings: map[string]Reading{}}
	step, last := int64(0), int64(math.MinInt64)
	withSeries := 0
	for _, h := range hosts {
		pts := series[h]
		if len(pts) == 0 {
			continue
		}
		withSeries++
		if step == 0 && len(pts) >= 2 {
			step = pts[1].Time - pts[0].Time
		}
		last = max(last, pts[len(pts)-1].Time)
	}
	if withSeries == 0 {
		ev.Outage, ev.OutageReason = true, "Graphite has no series for any host of the check"
		return ev
	}
	if step <= 0 {
		step = 60
	}
	ev.Step = step
	// Graphite's "now" is the end of the newest interval it returned.
	now := last + step
	cutoff := now - int64(r.Settle/time.Second)
	// Count, per complete interval before the cutoff, the hosts with a value.
	counts := map[int64]int{}
	for _, h := range hosts {
		for _, p := range series[h] {
			if p.Valid && p.Time+step <= cutoff {
				counts[p.Time]++
			}
		}
	}
	need := max(1, int(math.Ceil(r.Quorum*float64(withSeries))))
	frontier := int64(math.MinInt64)
	for ts, n := range counts {
		if n >= need && ts > frontier {
			frontier = ts
		}
	}
	if frontier == math.MinInt64 {
		ev.Outage = true
		ev.OutageReason = fmt.Sprintf("no complete interval in the data: fewer than %d of %d hosts have a value in any interval", need, withSeries)
		if len(counts) == 0 {
			ev.OutageReason = fmt.Sprintf("all %d hosts have only nulls in the last %v", withSeries, time.Duration(now-firstTime(series, hosts))*time.Second)
		}
		return ev
	}
	if lag := time.Duration(cutoff-frontier-step) * time.Second; r.MaxLag > 0 && lag > r.MaxLag {
		ev.Outage = true
		ev.OutageReason = fmt.Sprintf("the data is late: the newest interval most hosts reported is %v old", lag+r.Settle)
		return ev
	}
	ev.Frontier = frontier
	until := frontier + step
	from := until - int64(r.Window/time.Second)
	slots := float64((until - from) / step)
	for _, h := range hosts {
		pts := series[h]
		if len(pts) == 0 {
			ev.Readings[h] = Reading{Host: h, Status: StatusUnknown, From: from, Until: until}
			ev.Unknown++
			continue
		}
		rd := Reading{Host: h, From: from, Until: until, Expected: slots}
		if r.Aggregate == AggSum {
			rd.Expected = r.Expected
		}
		var inWindow, tail float64
		seen := 0
		for _, p := range pts {
			switch {
			case p.Time < from:
			case p.Time < until:
				seen++
				if !p.Valid {
					rd.Nulls++
					continue
				}
				if r.Aggregate == AggSum {
					inWindow += p.Value
				} else {
					inWindow++
				}
			case p.Valid:
				// Newer than the window: a host whose clock runs ahead, or
				// data that came in after the frontier. It can only help.
				if r.Aggregate == AggSum {
					tail += p.Value
				} else {
					tail++
				}
			}
		}
		// Intervals the response did not cover at all are missing too.
		rd.Nulls += max(0, int(slots)-seen)
		rd.Observed = inWindow + tail
		if rd.Expected > 0 {
			rd.Ratio = math.Min(1, rd.Observed/rd.Expected)
		} else {
			rd.Ratio = 1
		}
		if rd.Ratio+1e-9 < r.MinRatio {
			rd.Status = StatusBad
			ev.Bad++
		} else {
			rd.Status = StatusGood
			ev.Good++
		}
		ev.Readings[h] = rd
	}
	return ev
}

func firstTime(series map[string][]graphite.Point, hosts []string) int64 {
	first := int64(math.MaxInt64)
	for _, h := range hosts {
		if pts := series[h]; len(pts) > 0 {
			first = min(first, pts[0].Time)
		}
	}
	return first
}

// Describe is the one-line summary of a reading for chat: "canary 61% of
// expected over 5m (11 of 18 intervals missing)".
func (r Reading) Describe(window time.Duration) string {
	s := fmt.Sprintf("canary %d%% of expected over %s", r.Percent(), shortDuration(window))
	if r.Nulls > 0 {
		s += fmt.Sprintf(", %d intervals without data", r.Nulls)
	}
	return s
}

// shortDuration prints 5m0s as "5 min" and 90s as "90s".
func shortDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0 && d >= time.Hour:
		return fmt.Sprintf("%d h", d/time.Hour)
	case d%time.Minute == 0 && d >= time.Minute:
		return fmt.Sprintf("%d min", d/time.Minute)
	}
	return d.String()
}

// sortedHosts returns the keys of m sorted.
func sortedHosts[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for h := range m {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}
