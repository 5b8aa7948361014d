package watcher

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Modes of a check.
const (
	ModeOff      = "off"
	ModeAdvisory = "advisory"
	ModeEnforce  = "enforce"
)

// Modes lists the modes in the order people escalate them.
var Modes = []string{ModeOff, ModeAdvisory, ModeEnforce}

// Safety are the limits that keep automation from breaking production.
type Safety struct {
	// MaxRemovalsPerHour per backend: the watcher's own removals by every
	// check over the backend (in its environment) count.
	MaxRemovalsPerHour int `yaml:"max_removals_per_hour"`
	// MinHealthyFraction of the backend's hosts that must stay in service
	// and healthy after a removal. Hosts the load balancer has out of
	// service (drained or in maint by anyone), hosts the watcher removed
	// and other hosts that look sick all count as not healthy.
	MinHealthyFraction float64 `yaml:"min_healthy_fraction"`
	// Cooldown: after acting on a host, leave it alone this long (it came
	// back and got sick again: a person should look).
	Cooldown time.Duration `yaml:"cooldown"`
}

// Hysteresis: how many consecutive evaluations change a host's state.
type Hysteresis struct {
	SickAfter    int `yaml:"sick_after"`
	RecoverAfter int `yaml:"recover_after"`
}

// HostState is what the watcher remembers about one host of a check. Only
// hosts with something to remember are kept, so the state of a check over
// ten thousand healthy hosts stays small.
type HostState struct {
	Bad        int       `json:"bad,omitempty"`
	Good       int       `json:"good,omitempty"`
	Sick       bool      `json:"sick,omitempty"`
	SickSince  time.Time `json:"sick_since,omitzero"`
	Advised    bool      `json:"advised,omitempty"` // advisory finding posted this episode
	Acted      bool      `json:"acted,omitempty"`   // removed by the watcher this episode
	LastAction time.Time `json:"last_action,omitzero"`
	Refused    string    `json:"refused,omitempty"` // kind of the last refusal said in chat
	Ratio      float64   `json:"ratio,omitempty"`   // last reading, for status
}

func (h *HostState) idle(now time.Time, cooldown time.Duration) bool {
	return h.Bad == 0 && !h.Sick && !h.Acted && h.Refused == "" &&
		(h.LastAction.IsZero() || now.Sub(h.LastAction) >= cooldown)
}

// Intent is an action decided and recorded before it is sent: a replica that
// dies after recording it leaves it to the next leader, which sends it
// again with the same message id, so the chat runs it once.
type Intent struct {
	Host      string    `json:"host"`
	Backend   string    `json:"backend"`
	MessageID string    `json:"message_id"`
	Text      string    `json:"text"`
	Reason    string    `json:"reason"`
	Graph     string    `json:"graph,omitempty"`
	At        time.Time `json:"at"`
	JobID     string    `json:"job_id,omitempty"`
}

// Notice is a post and event waiting to be published (an outbox): it is
// saved with the state that produced it, so a replica that dies before
// publishing leaves it to the next leader; the id makes a republish a
// duplicate the streams drop.
type Notice struct {
	ID    string            `json:"id"`
	Kind  string            `json:"kind"` // event type: sick, recovered, would-act, acted, refused, outage, …
	Host  string            `json:"host,omitempty"`
	Text  string            `json:"text"`
	Graph string            `json:"graph,omitempty"`
	Error bool              `json:"error,omitempty"`
	Field map[string]string `json:"fields,omitempty"`
}

// CheckState is one check's memory, kept in KV under state.<check>.
type CheckState struct {
	Hosts   map[string]*HostState `json:"hosts,omitempty"`
	Outage  bool                  `json:"outage,omitempty"`
	Reason  string                `json:"outage_reason,omitempty"`
	Pending []Intent              `json:"pending,omitempty"`
	Outbox  []Notice              `json:"outbox,omitempty"`
	Slot    int64                 `json:"slot,omitempty"` // last evaluated cycle
	LastRun time.Time             `json:"last_run,omitzero"`
	Summary string                `json:"summary,omitempty"`
	// Problem is why the check cannot choose its hosts (its environment is
	// missing or unknown), said once in chat; empty while it runs.
	Problem string `json:"problem,omitempty"`
}

// Removal is one removal (or, in advisory mode, would-be removal) by a
// check.
type Removal struct {
	Host  string    `json:"host"`
	Check string    `json:"check"`
	At    time.Time `json:"at"`
}

// BackendState is what every check over one backend of one environment
// shares, kept in KV under backend.<env>.<backend>: the watcher's removals
// of the last hour, which the hourly limit counts whichever check made
// them.
type BackendState struct {
	Removals []Removal `json:"removals,omitempty"` // enforce
	Would    []Removal `json:"would,omitempty"`    // advisory "would remove"s
}

// recent returns rs without what is older than an hour before now.
func recent(rs []Removal, now time.Time) []Removal {
	hour := now.Add(-time.Hour)
	return slices.DeleteFunc(rs, func(r Removal) bool { return r.At.Before(hour) })
}

// Decision kinds.
const (
	KindSick      = "sick"
	KindRecovered = "recovered"
	KindWouldAct  = "would-act"
	KindAct       = "acted"
	KindRefused   = "refused"
)

// Decision is one thing a cycle decided about a host.
type Decision struct {
	Kind    string
	Host    string
	Reading Reading
	// Refusal: which limit ("muted", "cooldown", "rate", "lb-state",
	// "capacity") and the sentence that explains it.
	Limit  string
	Reason string
}

// Situation is what Step needs besides the state and the evaluation.
type Situation struct {
	// Check is the check's name, recorded with the backend's removals.
	Check      string
	Mode       string
	Hysteresis Hysteresis
	Safety     Safety
	// Muted hosts and until when.
	Muted map[string]time.Time
	// Size of the backend (hosts the check covers).
	Size int
	// OutOfService are the hosts the load balancer's desired state has out
	// of service (drain, maint or weight 0), whoever took them out.
	OutOfService map[string]bool
	// LBUnknown, when set, says why the load balancer's state could not be
	// read: nobody can tell then how many hosts are still in service, so no
	// host is removed.
	LBUnknown string
	Now       time.Time
}

// Step advances a check's state by one evaluation and returns what to say
// and do, hosts in name order. Removals it decides are added to bs, which
// every check over the backend shares. It is pure: no clock, no I/O. It
// must not be called with an outage evaluation (nothing can be judged
// then).
func Step(st *CheckState, bs *BackendState, ev Evaluation, sit Situation) []Decision {
	if st.Hosts == nil {
		st.Hosts = map[string]*HostState{}
	}
	var decided []Decision
	for _, h := range sortedHosts(ev.Readings) {
		rd := ev.Readings[h]
		hs := st.Hosts[h]
		if hs == nil {
			if rd.Status != StatusBad {
				continue // nothing to remember about a healthy host
			}
			hs = &HostState{}
			st.Hosts[h] = hs
		}
		hs.Ratio = rd.Ratio
		switch rd.Status {
		case StatusBad:
			hs.Bad++
			hs.Good = 0
			if !hs.Sick && hs.Bad >= sit.Hysteresis.SickAfter {
				hs.Sick, hs.SickSince = true, sit.Now
				decided = append(decided, Decision{Kind: KindSick, Host: h, Reading: rd})
			}
		case StatusGood:
			hs.Good++
			hs.Bad = 0
			if hs.Sick && hs.Good >= sit.Hysteresis.RecoverAfter {
				hs.Sick, hs.Advised, hs.Acted, hs.Refused, hs.Good = false, false, false, "", 0
				hs.SickSince = time.Time{}
				decided = append(decided, Decision{Kind: KindRecovered, Host: h, Reading: rd})
			}
		}
	}
	bs.Removals = recent(bs.Removals, sit.Now)
	bs.Would = recent(bs.Would, sit.Now)
	// Out of service: what the load balancer has out, what this check
	// removed (or, in advisory, would have removed) and has not recovered,
	// and what other checks over the backend removed in the last hour,
	// which the load balancer's state may not show yet. Such a host is not
	// acted on again. (This check's own tries are in its host state, which
	// also knows when one failed.)
	out := map[string]string{} // host → outLB or outWatcher
	for h := range sit.OutOfService {
		out[h] = outLB
	}
	taken := bs.Removals
	if sit.Mode == ModeAdvisory {
		taken = append(slices.Clone(taken), bs.Would...)
	}
	for _, r := range taken {
		if _, ok := out[r.Host]; !ok && r.Check != sit.Check {
			out[r.Host] = outWatcher
		}
	}
	for h, hs := range st.Hosts {
		if _, ok := out[h]; !ok && (hs.Acted || (sit.Mode == ModeAdvisory && hs.Advised)) {
			out[h] = outWatcher
		}
	}
	for _, h := range sortedHosts(st.Hosts) {
		hs := st.Hosts[h]
		if _, isOut := out[h]; !hs.Sick || isOut {
			continue
		}
		rd := ev.Readings[h]
		if rd.Status != StatusBad {
			continue // sick, but its latest reading is good: recovering, not to be acted on
		}
		limit, reason := refusal(bs, hs, h, sit, unhealthy(st, ev, out, h))
		if limit != "" {
			if hs.Refused != limit {
				hs.Refused = limit
				decided = append(decided, Decision{Kind: KindRefused, Host: h, Reading: rd, Limit: limit, Reason: reason})
			}
			continue
		}
		hs.Refused = ""
		out[h] = outWatcher
		r := Removal{Host: h, Check: sit.Check, At: sit.Now}
		if sit.Mode == ModeEnforce {
			hs.Acted, hs.LastAction = true, sit.Now
			bs.Removals = append(bs.Removals, r)
			decided = append(decided, Decision{Kind: KindAct, Host: h, Reading: rd})
		} else {
			hs.Advised = true
			bs.Would = append(bs.Would, r)
			decided = append(decided, Decision{Kind: KindWouldAct, Host: h, Reading: rd})
		}
	}
	for h, hs := range st.Hosts {
		// A host that left the backend, or has nothing left to remember.
		if _, covered := ev.Readings[h]; !covered || hs.idle(sit.Now, sit.Safety.Cooldown) {
			delete(st.Hosts, h)
		}
	}
	return decided
}

// Why a host is out of service, for Step.
const (
	outLB      = "lb"      // the load balancer's desired state
	outWatcher = "watcher" // removed (or would have been) by the watcher
)

// unhealthyHosts are the hosts of a check that are not in service and
// healthy, besides the one about to be removed, by reason; the capacity
// limit counts them and its refusal names them.
type unhealthyHosts struct {
	lb, watcher, sick []string
}

func (u unhealthyHosts) count() int { return len(u.lb) + len(u.watcher) + len(u.sick) }

// unhealthy lists the hosts of the check (those with a reading) other than
// candidate that are out of service or look sick.
func unhealthy(st *CheckState, ev Evaluation, out map[string]string, candidate string) unhealthyHosts {
	var u unhealthyHosts
	for _, h := range sortedHosts(ev.Readings) {
		switch {
		case h == candidate:
		case out[h] == outLB:
			u.lb = append(u.lb, h)
		case out[h] == outWatcher:
			u.watcher = append(u.watcher, h)
		case st.Hosts[h] != nil && st.Hosts[h].Sick:
			u.sick = append(u.sick, h)
		}
	}
	return u
}

// refusal says which safety limit forbids acting on host h now, if any.
func refusal(bs *BackendState, hs *HostState, h string, sit Situation, un unhealthyHosts) (string, string) {
	if until, ok := sit.Muted[h]; ok && until.After(sit.Now) {
		return "muted", fmt.Sprintf("%s is muted until %s", h, until.UTC().Format("15:04 MST on Jan 2"))
	}
	if !hs.LastAction.IsZero() && sit.Now.Sub(hs.LastAction) < sit.Safety.Cooldown {
		return "cooldown", fmt.Sprintf("the watcher acted on %s %s ago; its cool-down is %s", h,
			sit.Now.Sub(hs.LastAction).Round(time.Minute), shortDuration(sit.Safety.Cooldown))
	}
	// Advisory counts what enforce would count: the real removals of every
	// check over the backend, and its own would-be ones.
	done, what := len(bs.Removals), "removed"
	if sit.Mode == ModeAdvisory {
		done, what = done+len(bs.Would), "removed or would have removed"
	}
	if limit := sit.Safety.MaxRemovalsPerHour; done >= limit {
		return "rate", fmt.Sprintf("the watcher %s %s from this backend in the last hour already (the limit is %d an hour, for all checks of the backend)",
			what, hostCount(done), limit)
	}
	if sit.LBUnknown != "" {
		return "lb-state", fmt.Sprintf("the load balancer's state could not be read (%s), so the watcher cannot tell how many hosts are still in service",
			sit.LBUnknown)
	}
	if sit.Size > 0 {
		left := sit.Size - un.count() - 1
		need := int(math.Ceil(sit.Safety.MinHealthyFraction*float64(sit.Size) - 1e-9))
		if left < need {
			why := []string{}
			if len(un.lb) > 0 {
				why = append(why, fmt.Sprintf("%d out of service in the load balancer (%s)", len(un.lb), hostList(un.lb)))
			}
			if len(un.watcher) > 0 {
				verb := "removed"
				if sit.Mode == ModeAdvisory {
					verb = "would have been removed"
				}
				why = append(why, fmt.Sprintf("%d %s by the watcher (%s)", len(un.watcher), verb, hostList(un.watcher)))
			}
			if len(un.sick) > 0 {
				why = append(why, fmt.Sprintf("%d more looking sick (%s)", len(un.sick), hostList(un.sick)))
			}
			reason := fmt.Sprintf("removing it would leave %d of %d hosts in service and healthy, below the minimum of %.0f%% (%d)",
				left, sit.Size, sit.Safety.MinHealthyFraction*100, need)
			if len(why) > 0 {
				reason += ": " + strings.Join(why, ", ")
			}
			return "capacity", reason
		}
	}
	return "", ""
}

// hostCount is "1 host" or "3 hosts".
func hostCount(n int) string {
	if n == 1 {
		return "1 host"
	}
	return fmt.Sprintf("%d hosts", n)
}

// hostList names up to five hosts.
func hostList(hosts []string) string {
	if len(hosts) > 5 {
		return strings.Join(hosts[:5], ", ") + fmt.Sprintf(" and %d more", len(hosts)-5)
	}
	return strings.Join(hosts, ", ")
}
