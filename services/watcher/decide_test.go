package watcher

import (
	"fmt"
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
	return Situation{Mode: mode, Hysteresis: Hysteresis{SickAfter: 3, RecoverAfter: 2},
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
	st := &CheckState{}
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
		ds := Step(st, eval(hosts, s.bad...), situation(ModeAdvisory, len(hosts), t0.Add(time.Duration(i)*time.Minute)))
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
	st := &CheckState{}
	sit := situation(ModeEnforce, len(hosts), t0)
	sit.Hysteresis.SickAfter = 1
	if got := kinds(Step(st, eval(hosts, "superagg-0003"), sit)); got != "sick superagg-0003, acted superagg-0003" {
		t.Fatalf("first bad evaluation: %q", got)
	}
	sit.Now = sit.Now.Add(time.Minute)
	if got := kinds(Step(st, eval(hosts, "superagg-0003"), sit)); got != "" {
		t.Fatalf("still sick after the removal (its canary stopped for good): %q, want nothing", got)
	}
	if len(st.Removals) != 1 || !st.Hosts["superagg-0003"].Acted {
		t.Fatalf("removals %v, state %+v", st.Removals, st.Hosts["superagg-0003"])
	}
}

func TestSafetyLimitsRefuseAndSayWhyOnce(t *testing.T) {
	hosts := fleet(8)
	for _, tc := range []struct {
		name  string
		setup func(*CheckState, *Situation)
		bad   []string
		want  string
	}{
		{"a muted host is not removed", func(st *CheckState, s *Situation) {
			s.Muted = map[string]time.Time{"superagg-0003": t0.Add(time.Hour)}
		}, []string{"superagg-0003"}, "sick superagg-0003, refused superagg-0003 muted"},
		{"an expired mute does not count", func(st *CheckState, s *Situation) {
			s.Muted = map[string]time.Time{"superagg-0003": t0.Add(-time.Second)}
		}, []string{"superagg-0003"}, "sick superagg-0003, acted superagg-0003"},
		{"at most two removals an hour", func(st *CheckState, s *Situation) {
			st.Removals = []time.Time{t0.Add(-50 * time.Minute), t0.Add(-10 * time.Minute), t0.Add(-2 * time.Hour)}
		}, []string{"superagg-0003"}, "sick superagg-0003, refused superagg-0003 rate"},
		{"never below the minimum in service: 8 hosts, 75% means 6 stay", func(st *CheckState, s *Situation) {
			s.Safety.MaxRemovalsPerHour = 10
		}, []string{"superagg-0001", "superagg-0002", "superagg-0003"},
			"sick superagg-0001, sick superagg-0002, sick superagg-0003, acted superagg-0001, acted superagg-0002, refused superagg-0003 capacity"},
		{"a host acted on within the cool-down is left alone", func(st *CheckState, s *Situation) {
			st.Hosts = map[string]*HostState{"superagg-0003": {LastAction: t0.Add(-20 * time.Minute)}}
		}, []string{"superagg-0003"}, "sick superagg-0003, refused superagg-0003 cooldown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &CheckState{}
			sit := situation(ModeEnforce, len(hosts), t0)
			sit.Hysteresis.SickAfter = 1
			tc.setup(st, &sit)
			if got := kinds(Step(st, eval(hosts, tc.bad...), sit)); got != tc.want {
				t.Fatalf("decisions %q, want %q", got, tc.want)
			}
			// The same refusal is not repeated on the next evaluation.
			sit.Now = sit.Now.Add(time.Minute)
			for _, d := range Step(st, eval(hosts, tc.bad...), sit) {
				if d.Kind == KindRefused {
					t.Fatalf("refusal repeated: %+v", d)
				}
			}
		})
	}
}

func TestAdvisoryCountsItsWouldBeRemovalsAgainstTheSameLimits(t *testing.T) {
	hosts := fleet(20)
	st := &CheckState{}
	sit := situation(ModeAdvisory, len(hosts), t0)
	sit.Hysteresis.SickAfter = 1
	got := kinds(Step(st, eval(hosts, "superagg-0001", "superagg-0002", "superagg-0003"), sit))
	want := "sick superagg-0001, sick superagg-0002, sick superagg-0003, would-act superagg-0001, would-act superagg-0002, refused superagg-0003 rate"
	if got != want {
		t.Fatalf("decisions %q, want %q", got, want)
	}
	if len(st.Removals) != 0 || len(st.Would) != 2 {
		t.Fatalf("advisory recorded removals %v, would %v; want no removals and two would-be", st.Removals, st.Would)
	}
	// Switching to enforce acts on a host advisory only talked about.
	sit.Mode, sit.Now = ModeEnforce, t0.Add(time.Minute)
	if got := kinds(Step(st, eval(hosts, "superagg-0001"), sit)); got != "acted superagg-0001" {
		t.Fatalf("after switching to enforce: %q, want acted superagg-0001", got)
	}
}

func TestHostsThatLeaveTheBackendAreForgotten(t *testing.T) {
	st := &CheckState{}
	sit := situation(ModeAdvisory, 10, t0)
	Step(st, eval(fleet(10), "superagg-0003"), sit)
	if st.Hosts["superagg-0003"] == nil {
		t.Fatal("a bad host is not remembered")
	}
	Step(st, eval(fleet(2)), sit)
	if len(st.Hosts) != 0 {
		t.Fatalf("state %v after the host left the backend", st.Hosts)
	}
}
