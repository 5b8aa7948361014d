package watcher

import (
	"fmt"
	"slices"
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
	// MaxRemovalsPerHour per backend (the watcher's own removals).
	MaxRemovalsPerHour int `yaml:"max_removals_per_hour"`
	// MinHealthyFraction of the backend's hosts that must stay in service
	// after a removal.
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
	Hosts    map[string]*HostState `json:"hosts,omitempty"`
	Removals []time.Time           `json:"removals,omitempty"` // watcher's removals (enforce)
	Would    []time.Time           `json:"would,omitempty"`    // advisory "would remove"s
	Outage   bool                  `json:"outage,omitempty"`
	Reason   string                `json:"outage_reason,omitempty"`
	Pending  []Intent              `json:"pending,omitempty"`
	Outbox   []Notice              `json:"outbox,omitempty"`
	Slot     int64                 `json:"slot,omitempty"` // last evaluated cycle
	LastRun  time.Time             `json:"last_run,omitzero"`
	Summary  string                `json:"summary,omitempty"`
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
	// Refusal: which limit ("muted", "cooldown", "rate", "capacity") and the
	// sentence that explains it.
	Limit  string
	Reason string
}

// Situation is what Step needs besides the state and the evaluation.
type Situation struct {
	Mode       string
	Hysteresis Hysteresis
	Safety     Safety
	// Muted hosts and until when.
	Muted map[string]time.Time
	// Size of the backend (hosts the check covers).
	Size int
	Now  time.Time
}

// Step advances a check's state by one evaluation and returns what to say
// and do, hosts in name order. It is pure: no clock, no I/O. It must not be
// called with an outage evaluation (nothing can be judged then).
func Step(st *CheckState, ev Evaluation, sit Situation) []Decision {
	if st.Hosts == nil {
		st.Hosts = map[string]*HostState{}
	}
	var out []Decision
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
				out = append(out, Decision{Kind: KindSick, Host: h, Reading: rd})
			}
		case StatusGood:
			hs.Good++
			hs.Bad = 0
			if hs.Sick && hs.Good >= sit.Hysteresis.RecoverAfter {
				hs.Sick, hs.Advised, hs.Acted, hs.Refused, hs.Good = false, false, false, "", 0
				hs.SickSince = time.Time{}
				out = append(out, Decision{Kind: KindRecovered, Host: h, Reading: rd})
			}
		}
	}
	hour := sit.Now.Add(-time.Hour)
	st.Removals = slices.DeleteFunc(st.Removals, func(t time.Time) bool { return t.Before(hour) })
	st.Would = slices.DeleteFunc(st.Would, func(t time.Time) bool { return t.Before(hour) })
	// Out of service: hosts the watcher removed (or, in advisory, would
	// have removed) and that have not recovered.
	outOfService := 0
	for _, hs := range st.Hosts {
		if hs.Acted || (sit.Mode == ModeAdvisory && hs.Advised) {
			outOfService++
		}
	}
	for _, h := range sortedHosts(st.Hosts) {
		hs := st.Hosts[h]
		if !hs.Sick || hs.Acted || (sit.Mode == ModeAdvisory && hs.Advised) {
			continue
		}
		rd := ev.Readings[h]
		if rd.Status != StatusBad {
			continue // sick, but its latest reading is good: recovering, not to be acted on
		}
		limit, reason := refusal(st, hs, h, sit, outOfService)
		if limit != "" {
			if hs.Refused != limit {
				hs.Refused = limit
				out = append(out, Decision{Kind: KindRefused, Host: h, Reading: rd, Limit: limit, Reason: reason})
			}
			continue
		}
		hs.Refused = ""
		outOfService++
		if sit.Mode == ModeEnforce {
			hs.Acted, hs.LastAction = true, sit.Now
			st.Removals = append(st.Removals, sit.Now)
			out = append(out, Decision{Kind: KindAct, Host: h, Reading: rd})
		} else {
			hs.Advised = true
			st.Would = append(st.Would, sit.Now)
			out = append(out, Decision{Kind: KindWouldAct, Host: h, Reading: rd})
		}
	}
	for h, hs := range st.Hosts {
		// A host that left the backend, or has nothing left to remember.
		if _, covered := ev.Readings[h]; !covered || hs.idle(sit.Now, sit.Safety.Cooldown) {
			delete(st.Hosts, h)
		}
	}
	return out
}

// refusal says which safety limit forbids acting on host h now, if any.
func refusal(st *CheckState, hs *HostState, h string, sit Situation, outOfService int) (string, string) {
	if until, ok := sit.Muted[h]; ok && until.After(sit.Now) {
		return "muted", fmt.Sprintf("%s is muted until %s", h, until.UTC().Format("15:04 MST on Jan 2"))
	}
	if !hs.LastAction.IsZero() && sit.Now.Sub(hs.LastAction) < sit.Safety.Cooldown {
		return "cooldown", fmt.Sprintf("the watcher acted on %s %s ago; its cool-down is %s", h,
			sit.Now.Sub(hs.LastAction).Round(time.Minute), shortDuration(sit.Safety.Cooldown))
	}
	done := len(st.Removals)
	if sit.Mode == ModeAdvisory {
		done = len(st.Would)
	}
	if max := sit.Safety.MaxRemovalsPerHour; done >= max {
		return "rate", fmt.Sprintf("%d removals from this backend in the last hour already (the limit is %d)", done, max)
	}
	if sit.Size > 0 {
		left := sit.Size - outOfService - 1
		if float64(left) < sit.Safety.MinHealthyFraction*float64(sit.Size) {
			return "capacity", fmt.Sprintf("removing it would leave %d of %d hosts in service, below the minimum of %.0f%%",
				left, sit.Size, sit.Safety.MinHealthyFraction*100)
		}
	}
	return "", ""
}
