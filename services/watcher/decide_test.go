package watcher

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)

// eval builds an evaluation where the named hosts are bad and the rest of
// hosts good.
func eval(hosts []string, bad ...string) Evaluation {
	ev := Evaluation{Readings: map[string]Reading{}}
	for _, h := range hosts {
		r := Reading{Host: h, Status: StatusGood, Ratio: 1}
		for _, b := range bad {
			if b == h {
				r.Status, r.Ratio = StatusBad, 0.61
			}
		}
		ev.Readings[h] = r
	}
	return ev
}

func fleet(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("superagg-%04d", i))
	}
	return out
}

func situation(mode string, size int, now time.Time) Situation {
	return Situation{Check: "superagg-canary", Mode: mode, Hysteresis: Hysteresis{SickAfter: 3, RecoverAfter: 2},
		Safety: Safety{MaxRemovalsPerHour: 2, MinHealthyFraction: 0.75, Cooldown: time.Hour}, Size: size, Now: now}
}

// kinds lists "kind host[ limit]" of decisions.
func kinds(ds []Decision) string {
	var out []string
	for _, d := range ds {
		s := d.Kind + " " + d.Host
		if d.Limit != "" {
			s += " " + d.Limit
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

func TestAHostIsSickOnlyAfterConsecutiveBadEvaluationsAndHealthyAfterGoodOnes(t *testing.T) {
	hosts := fleet(10)
	st, bs := &CheckState{}, &BackendState{}
	steps := []struct {
		bad  []string
		want string
	}{
		{[]string{"superagg-0003"}, ""},
		{nil, ""}, // a good one in between resets the count
		{[]string{"superagg-0003"}, ""},
		{[]string{"superagg-0003"}, ""},
		{[]string{"superagg-0003"}, "sick superagg-0003, would-act superagg-0003"},
		{[]string{"superagg-0003"}, ""}, // said once per episode
		{nil, ""},
		{[]string{"superagg-0003"}, ""}, // one bad while sick resets the good count
		{nil, ""},
		{nil, "recovered superagg-0003"},
		{nil, ""},
	}
	for i, s := range steps {
		ds := Step(st, bs, eval(hosts, s.bad...), situation(ModeAdvisory, len(hosts), t0.Add(time.Duration(i)*time.Minute)))
		if got := kinds(ds); got != s.want {
			t.Fatalf("evaluation %d: decisions %q, want %q", i+1, got, s.want)
		}
	}
	if len(st.Hosts) != 0 {
		t.Fatalf("state still remembers %v after recovery; healthy hosts should not be kept", st.Hosts)
	}
}

func TestEnforceActsOnceAndRemembersItUntilRecovery(t *testing.T) {
	hosts := fleet(10)
	st, bs := &CheckState{}, &BackendState{}
	sit := situation(ModeEnforce, len(hosts), t0)
	sit.Hysteresis.SickAfter = 1
	if got := kinds(Step(st, bs, eval(hosts, "superagg-0003"), sit)); got != "sick superagg-0003, acted superagg-0003" {
		t.Fatalf("first bad evaluation: %q", got)
	}
	sit.Now = sit.Now.Add(time.Minute)
	if got := kinds(Step(st, bs, eval(hosts, "superagg-0003"), sit)); got != "" {
		t.Fatalf("still sick after the removal (its canary stopped for good): %q, want nothing", got)
	}
	if want := []Removal{{Host: "superagg-0003", Check: "superagg-canary", At: t0}}; !slices.Equal(bs.Removals, want) || !st.Hosts["superagg-0003"].Acted {
		t.Fatalf("removals %v (want %v), state %+v", bs.Removals, want, st.Hosts["superagg-0003"])
	}
}

func TestSafetyLimitsRefuseAndSayWhyOnce(t *testing.T) {
	hosts := fleet(8)
	for _, tc := range []struct {
		name  string
		setup func(*CheckState, *BackendState, *Situation)
		bad   []string
		want  string
	}{
		{"a muted host is not removed", func(st *CheckState, bs *BackendState, s *Situation) {
			s.Muted = map[string]time.Time{"superagg-0003": t0.Add(time.Hour)}
		}, []string{"superagg-0003"}, "sick superagg-0003, refused superagg-0003 muted"},
		{"an expired mute does not count", func(st *CheckState, bs *BackendState, s *Situation) {
			s.Muted = map[string]time.Time{"superagg-0003": t0.Add(-time.Second)}
		}, []string{"superagg-0003"}, "sick superagg-0003, acted superagg-0003"},
		{"at most two removals an hour", func(st *CheckState, bs *BackendState, s *Situation) {
			bs.Removals = []Removal{
				{Host: "superagg-0001", Check: "superagg-canary", At: t0.Add(-50 * time.Minute)},
				{Host: "superagg-0002", Check: "superagg-canary", At: t0.Add(-10 * time.Minute)},
				{Host: "superagg-0004", Check: "superagg-canary", At: t0.Add(-2 * time.Hour)},
			}
		}, []string{"superagg-0003"}, "sick superagg-0003, refused superagg-0003 rate"},
		{"removals by another check over the backend count against the hourly limit", func(st *CheckState, bs *BackendState, s *Situation) {
			bs.Removals = []Removal{
				{Host: "superagg-0001", Check: "superagg-latency", At: t0.Add(-50 * time.Minute)},
				{Host: "superagg-0002", Check: "superagg-latency", At: t0.Add(-10 * time.Minute)},
			}
		}, []string{"superagg-0003"}, "sick superagg-0003, refused superagg-0003 rate"},
		{"a host another check removed is not removed again", func(st *CheckState, bs *BackendState, s *Situation) {
			s.Safety.MaxRemovalsPerHour = 10
			bs.Removals = []Removal{{Host: "superagg-0003", Check: "superagg-latency", At: t0.Add(-time.Minute)}}
		}, []string{"superagg-0003"}, "sick superagg-0003"},
		{"hosts that look sick count as not healthy: three of 8 sick at once would leave 5, 75% needs 6", func(st *CheckState, bs *BackendState, s *Situation) {
			s.Safety.MaxRemovalsPerHour = 10
		}, []string{"superagg-0001", "superagg-0002", "superagg-0003"},
			"sick superagg-0001, sick superagg-0002, sick superagg-0003, refused superagg-0001 capacity, refused superagg-0002 capacity, refused superagg-0003 capacity"},
		{"hosts out of service in the load balancer and removed by the watcher count: with one of each a third would leave 5", func(st *CheckState, bs *BackendState, s *Situation) {
			s.Safety.MaxRemovalsPerHour = 10
			s.OutOfService = map[string]bool{"superagg-0001": true}
			st.Hosts = map[string]*HostState{"superagg-0002": {Bad: 5, Sick: true, SickSince: t0.Add(-time.Hour), Acted: true, LastAction: t0.Add(-time.Hour)}}
		}, []string{"superagg-0002", "superagg-0003"}, "sick superagg-0003, refused superagg-0003 capacity"},
		{"one host out of service in the load balancer leaves room for one removal", func(st *CheckState, bs *BackendState, s *Situation) {
			s.Safety.MaxRemovalsPerHour = 10
			s.OutOfService = map[string]bool{"superagg-0001": true}
		}, []string{"superagg-0003"}, "sick superagg-0003, acted superagg-0003"},
		{"a host the load balancer already has out of service is not removed", func(st *CheckState, bs *BackendState, s *Situation) {
			s.OutOfService = map[string]bool{"superagg-0003": true}
		}, []string{"superagg-0003"}, "sick superagg-0003"},
		{"nothing is removed while the load balancer's state is unknown", func(st *CheckState, bs *BackendState, s *Situation) {
			s.LBUnknown = "KV sb_lb_desired does not exist: is the lb service running?"
		}, []string{"superagg-0003"}, "sick superagg-0003, refused superagg-0003 lb-state"},
		{"a host acted on within the cool-down is left alone", func(st *CheckState, bs *BackendState, s *Situation) {
			st.Hosts = map[string]*HostState{"superagg-0003": {LastAction: t0.Add(-20 * time.Minute)}}
		}, []string{"superagg-0003"}, "sick superagg-0003, refused superagg-0003 cooldown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, bs := &CheckState{}, &BackendState{}
			sit := situation(ModeEnforce, len(hosts), t0)
			sit.Hysteresis.SickAfter = 1
			tc.setup(st, bs, &sit)
			if got := kinds(Step(st, bs, eval(hosts, tc.bad...), sit)); got != tc.want {
				t.Fatalf("decisions %q, want %q", got, tc.want)
			}
			// The same refusal is not repeated on the next evaluation.
			sit.Now = sit.Now.Add(time.Minute)
			for _, d := range Step(st, bs, eval(hosts, tc.bad...), sit) {
				if d.Kind == KindRefused {
					t.Fatalf("refusal repeated: %+v", d)
				}
			}
		})
	}
}

func TestTheCapacityRefusalNamesWhatIsOutOfServiceAndSick(t *testing.T) {
	hosts := fleet(10)
	st, bs := &CheckState{}, &BackendState{}
	sit := situation(ModeEnforce, len(hosts), t0)
	sit.Hysteresis.SickAfter = 1
	sit.Safety.MaxRemovalsPerHour = 10
	sit.OutOfService = map[string]bool{"superagg-0001": true, "superagg-0002": true}
	st.Hosts = map[string]*HostState{"superagg-0005": {Bad: 3, Sick: true, Acted: true, LastAction: t0.Add(-2 * time.Hour)}}
	ds := Step(st, bs, eval(hosts, "superagg-0005", "superagg-0007", "superagg-0009"), sit)
	if got := kinds(ds); got != "sick superagg-0007, sick superagg-0009, refused superagg-0007 capacity, refused superagg-0009 capacity" {
		t.Fatalf("decisions %q", got)
	}
	want := "removing it would leave 5 of 10 hosts in service and healthy, below the minimum of 75% (8): " +
		"2 out of service in the load balancer (superagg-0001, superagg-0002), 1 removed by the watcher (superagg-0005), 1 more looking sick (superagg-0009)"
	if ds[2].Reason != want {
		t.Fatalf("reason\n%q, want\n%q", ds[2].Reason, want)
	}
}

func TestTwoChecksOverOneBackendShareItsHourlyLimit(t *testing.T) {
	hosts := fleet(10)
	bs := &BackendState{}
	canary, latency := &CheckState{}, &CheckState{}
	sit := situation(ModeEnforce, len(hosts), t0)
	sit.Hysteresis.SickAfter = 1
	sit.Safety.MaxRemovalsPerHour = 1
	sit.Safety.MinHealthyFraction = 0.5
	sit.Check = "superagg-canary"
	if got := kinds(Step(canary, bs, eval(hosts, "superagg-0003", "superagg-0005"), sit)); got != "sick superagg-0003, sick superagg-0005, acted superagg-0003, refused superagg-0005 rate" {
		t.Fatalf("first check: %q", got)
	}
	sit.Check = "superagg-latency"
	ds := Step(latency, bs, eval(hosts, "superagg-0003", "superagg-0005"), sit)
	if got := kinds(ds); got != "sick superagg-0003, sick superagg-0005, refused superagg-0005 rate" {
		t.Fatalf("second check over the same backend: %q, want no second removal", got)
	}
	if !strings.Contains(ds[2].Reason, "the watcher removed 1 host from this backend in the last hour already (the limit is 1 an hour") {
		t.Fatalf("rate refusal: %q", ds[2].Reason)
	}
	if len(bs.Removals) != 1 {
		t.Fatalf("backend removals %v, want one", bs.Removals)
	}
}

func TestAdvisoryCountsItsWouldBeRemovalsAgainstTheSameLimits(t *testing.T) {
	hosts := fleet(20)
	st, bs := &CheckState{}, &BackendState{}
	sit := situation(ModeAdvisory, len(hosts), t0)
	sit.Hysteresis.SickAfter = 1
	got := kinds(Step(st, bs, eval(hosts, "superagg-0001", "superagg-0002", "superagg-0003"), sit))
	want := "sick superagg-0001, sick superagg-0002, sick superagg-0003, would-act superagg-0001, would-act superagg-0002, refused superagg-0003 rate"
	if got != want {
		t.Fatalf("decisions %q, want %q", got, want)
	}
	if len(bs.Removals) != 0 || len(bs.Would) != 2 {
		t.Fatalf("advisory recorded removals %v, would %v; want no removals and two would-be", bs.Removals, bs.Would)
	}
	// Switching to enforce acts on a host advisory only talked about.
	sit.Mode, sit.Now = ModeEnforce, t0.Add(time.Minute)
	if got := kinds(Step(st, bs, eval(hosts, "superagg-0001"), sit)); got != "acted superagg-0001" {
		t.Fatalf("after switching to enforce: %q, want acted superagg-0001", got)
	}
}

func TestHostsThatLeaveTheBackendAreForgotten(t *testing.T) {
	st, bs := &CheckState{}, &BackendState{}
	sit := situation(ModeAdvisory, 10, t0)
	Step(st, bs, eval(fleet(10), "superagg-0003"), sit)
	if st.Hosts["superagg-0003"] == nil {
		t.Fatal("a bad host is not remembered")
	}
	Step(st, bs, eval(fleet(2)), sit)
	if len(st.Hosts) != 0 {
		t.Fatalf("state %v after the host left the backend", st.Hosts)
	}
}
