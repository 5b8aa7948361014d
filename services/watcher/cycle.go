package watcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/services/watcher/graphite"
)

// errConflict: another replica wrote the check's state since we read it.
var errConflict = errors.New("watcher: state changed by another replica")

func stateKey(check string) string { return "state." + wire.Token(check) }
func modeKey(check string) string  { return "mode." + wire.Token(check) }
func muteKey(host string) string   { return "mute." + wire.Token(host) }

// loadState reads a check's state and its revision (0: none yet).
func (s *Service) loadState(ctx context.Context, check string) (*CheckState, uint64, error) {
	e, err := s.kv.Get(ctx, stateKey(check))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &CheckState{Hosts: map[string]*HostState{}}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read state of %s: %w", check, err)
	}
	var st CheckState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, 0, fmt.Errorf("decode state of %s: %w", check, err)
	}
	if st.Hosts == nil {
		st.Hosts = map[string]*HostState{}
	}
	return &st, e.Revision(), nil
}

// saveState writes a check's state if it is still at rev; errConflict
// otherwise.
func (s *Service) saveState(ctx context.Context, check string, st *CheckState, rev uint64) (uint64, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("encode state of %s: %w", check, err)
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = s.kv.Create(ctx, stateKey(check), b)
	} else {
		nrev, err = s.kv.Update(ctx, stateKey(check), b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, errConflict
	}
	if err != nil {
		return 0, fmt.Errorf("save state of %s: %w", check, err)
	}
	return nrev, nil
}

// modifyState applies f to the latest state, retrying on conflicts.
func (s *Service) modifyState(ctx context.Context, check string, f func(*CheckState)) error {
	for {
		st, rev, err := s.loadState(ctx, check)
		if err != nil {
			return err
		}
		f(st)
		if _, err = s.saveState(ctx, check, st, rev); !errors.Is(err, errConflict) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// modeRecord is the KV value of mode.<check>.
type modeRecord struct {
	Mode string    `json:"mode"`
	By   string    `json:"by,omitempty"`
	At   time.Time `json:"at,omitzero"`
}

// mode is a check's current mode: what `watcher mode` set, or the config's.
func (s *Service) mode(ctx context.Context, ch Check) (string, *modeRecord, error) {
	e, err := s.kv.Get(ctx, modeKey(ch.Name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ch.Mode, nil, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("read mode of %s: %w", ch.Name, err)
	}
	var m modeRecord
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return "", nil, fmt.Errorf("decode mode of %s: %w", ch.Name, err)
	}
	return m.Mode, &m, nil
}

// muteRecord is the KV value of mute.<host>.
type muteRecord struct {
	Host   string    `json:"host"`
	Until  time.Time `json:"until"`
	By     string    `json:"by,omitempty"`
	Reason string    `json:"reason,omitempty"`
}

// mutes returns the hosts muted now.
func (s *Service) mutes(ctx context.Context) (map[string]muteRecord, error) {
	out := map[string]muteRecord{}
	lister, err := s.kv.ListKeysFiltered(ctx, "mute.*")
	if err != nil {
		return nil, fmt.Errorf("list mutes: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	now := s.now()
	for _, k := range keys {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		var m muteRecord
		if json.Unmarshal(e.Value(), &m) == nil && m.Until.After(now) {
			out[m.Host] = m
		}
	}
	return out, nil
}

// fetch reads a check's series for hosts, keyed by host name.
func (s *Service) fetch(ctx context.Context, ch Check, hosts []string) (map[string][]graphite.Point, error) {
	tpl, _ := parseTemplate(ch.Target)
	series, err := s.gr.Render(ctx, graphite.Query{
		Targets: tpl.targets(ch.Batch, hosts),
		From:    "-" + strconv.Itoa(int(ch.span()/time.Second)) + "s",
		Until:   "now",
	})
	if err != nil {
		return nil, err
	}
	byNode := make(map[string]string, len(hosts))
	for _, h := range hosts {
		byNode[metricNode(h)] = h
	}
	out := make(map[string][]graphite.Point, len(hosts))
	for _, sr := range series {
		if h, ok := byNode[sr.Target]; ok {
			out[h] = sr.Datapoints
		}
	}
	return out, nil
}

// graph is the PNG link for a host of a check.
func (s *Service) graph(ch Check, host string) string {
	tpl, _ := parseTemplate(ch.Target)
	base := s.cfg.Graphite.GraphURL
	if base == "" {
		base = s.cfg.Graphite.URL
	}
	return graphite.GraphURL(base, []string{tpl.forHost(host)}, "-"+strconv.Itoa(int(ch.span()/time.Minute))+"min", "now", host+" — "+ch.Name)
}

// Cycle evaluates one check once: it reads the series, advances the state,
// records what to say and do, and then says and does it. Only the leader
// calls it; the state's compare-and-set makes a stale leader's cycle a no-op.
func (s *Service) Cycle(ctx context.Context, name string) error {
	ch, ok := s.checks[name]
	if !ok {
		return fmt.Errorf("no check %q", name)
	}
	mu := s.cycleMu[name]
	mu.Lock()
	defer mu.Unlock()
	mode, _, err := s.mode(ctx, ch)
	if err != nil {
		return err
	}
	st, rev, err := s.loadState(ctx, name)
	if err != nil {
		return err
	}
	// What a previous leader decided but did not finish comes first.
	if len(st.Outbox) > 0 || len(st.Pending) > 0 {
		s.finish(ctx, ch, st.Outbox, st.Pending)
		if st, rev, err = s.loadState(ctx, name); err != nil {
			return err
		}
	}
	if mode == ModeOff {
		return nil
	}
	now := s.now()
	slot := now.Unix() / int64(ch.Interval/time.Second)
	if slot <= st.Slot {
		return nil // this interval was evaluated already (by us or a previous leader)
	}
	id := func(kind, host string) string {
		return fmt.Sprintf("watcher-%s-%d-%s-%s", wire.Token(name), slot, kind, wire.Token(host))
	}
	sc, err := s.scopeOf(ctx, ch)
	if se := (*scopeError)(nil); errors.As(err, &se) {
		return s.cannotRun(ctx, ch, st, rev, se, id("problem", ""), slot, now)
	}
	if err != nil {
		return err
	}
	st.Problem = ""
	if len(sc.hosts) == 0 {
		st.Slot, st.LastRun = slot, now
		st.Summary = fmt.Sprintf("no active host of backend %s in the inventory", ch.Backend)
		_, err := s.saveState(ctx, name, st, rev)
		return err
	}
	mutes, err := s.mutes(ctx)
	if err != nil {
		return err
	}
	muted := make(map[string]time.Time, len(mutes))
	for h, m := range mutes {
		muted[h] = m.Until
	}
	series, ferr := s.fetch(ctx, ch, sc.hosts)
	var ev Evaluation
	if ferr != nil {
		ev = Evaluation{Outage: true, OutageReason: "Graphite did not answer: " + ferr.Error()}
	} else {
		ev = Evaluate(ch.rule(), sc.hosts, series)
	}
	var intents []Intent
	var notices []Notice
	switch {
	case ev.Outage && !st.Outage:
		notices = append(notices, Notice{ID: id("outage", ""), Kind: "outage", Error: true,
			Text: fmt.Sprintf("Metrics outage for check %s (backend %s): %s. The watcher takes no action until the data is back; hosts are not judged meanwhile.",
				name, ch.Backend, ev.OutageReason)})
		st.Outage, st.Reason = true, ev.OutageReason
	case !ev.Outage && st.Outage:
		notices = append(notices, Notice{ID: id("outage-over", ""), Kind: "outage-over",
			Text: fmt.Sprintf("Metrics for check %s (backend %s) are back: %d hosts reporting. Evaluating again.", name, ch.Backend, ev.Good+ev.Bad)})
		st.Outage, st.Reason = false, ""
	}
	// recorded: the removals this cycle added to the backend's shared
	// record, taken back if the state that goes with them is not saved.
	recorded := false
	// The backend's lock is held from reading its shared record until the
	// state that goes with it is saved.
	unlock := func() {}
	defer func() { unlock() }()
	if !ev.Outage {
		sit := Situation{Check: name, Mode: mode, Hysteresis: ch.Hysteresis, Safety: ch.Safety, Muted: muted, Size: len(sc.hosts), Now: now}
		// Only a bad host can be acted on, and only then does the
		// watcher need to know what else is out of service.
		if ev.Bad > 0 {
			out, err := s.lbOutOfService(ctx, sc)
			if err != nil {
				s.log.Warn("read the load balancer's state; no host is removed", "check", name, "error", err)
				sit.LBUnknown = err.Error()
			}
			sit.OutOfService = out
		}
		unlock = sync.OnceFunc(s.lockBackend(sc))
		bs, brev, err := s.loadBackend(ctx, sc)
		if err != nil {
			return err
		}
		ds := Step(st, bs, ev, sit)
		for _, d := range ds {
			n, in := s.render(ch, sc, d, id(d.Kind, d.Host), now)
			notices = append(notices, n)
			if in != nil {
				intents = append(intents, *in)
			}
			recorded = recorded || d.Kind == KindAct || d.Kind == KindWouldAct
		}
		if recorded {
			if err := s.saveBackend(ctx, sc, bs, brev); err != nil {
				return err
			}
		}
		st.Summary = fmt.Sprintf("%d hosts: %d good, %d bad, %d without data", len(sc.hosts), ev.Good, ev.Bad, ev.Unknown)
	} else {
		st.Summary = "metrics outage: " + ev.OutageReason
	}
	st.Slot, st.LastRun = slot, now
	st.Outbox = append(st.Outbox, notices...)
	st.Pending = append(st.Pending, intents...)
	if _, err := s.saveState(ctx, name, st, rev); err != nil {
		if recorded {
			if ferr := s.forgetRemovals(ctx, sc, name, now); ferr != nil {
				s.log.Error("take back removals of a cycle that was not saved", "check", name, "error", ferr)
			}
		}
		return err
	}
	unlock()
	for _, d := range notices {
		if d.Kind == KindWouldAct {
			s.wouldAct.Add(ctx, 1, metric.WithAttributes(attribute.String("check", name), attribute.String("backend", ch.Backend)))
		}
	}
	s.finish(ctx, ch, st.Outbox, st.Pending)
	return nil
}

// cannotRun records that a check cannot choose its hosts and says so once,
// naming the config key to fix.
func (s *Service) cannotRun(ctx context.Context, ch Check, st *CheckState, rev uint64, se *scopeError, noticeID string, slot int64, now time.Time) error {
	st.Slot, st.LastRun, st.Summary = slot, now, "not running: "+se.Error()
	if st.Problem != se.Error() {
		st.Problem = se.Error()
		st.Outbox = append(st.Outbox, Notice{ID: noticeID, Kind: "problem", Error: true,
			Text: fmt.Sprintf("Check %s cannot run: %s. It evaluates nothing until the watcher's config or the inventory is fixed.", ch.Name, se)})
		s.log.Warn("check cannot run", "check", ch.Name, "error", se)
	}
	if _, err := s.saveState(ctx, ch.Name, st, rev); err != nil {
		return err
	}
	s.finish(ctx, ch, st.Outbox, st.Pending)
	return nil
}

// render turns a decision into the notice to publish and, for an action,
// the intent to record.
func (s *Service) render(ch Check, sc scope, d Decision, id string, now time.Time) (Notice, *Intent) {
	graph := s.graph(ch, d.Host)
	desc := d.Reading.Describe(ch.Window)
	n := Notice{ID: id, Kind: d.Kind, Host: d.Host, Graph: graph, Field: map[string]string{
		"check": ch.Name, "backend": ch.Backend, "environment": sc.env, "host": d.Host,
		"ratio": strconv.FormatFloat(d.Reading.Ratio, 'f', 3, 64),
	}}
	switch d.Kind {
	case KindSick:
		n.Text = fmt.Sprintf("%s looks sick (%s)", d.Host, desc)
	case KindRecovered:
		n.Text = fmt.Sprintf("%s looks healthy again (%s)", d.Host, desc)
	case KindWouldAct:
		n.Text = fmt.Sprintf("%s looks sick (%s) — would remove it from backend %s", d.Host, desc, ch.Backend)
	case KindRefused:
		n.Text = fmt.Sprintf("%s looks sick (%s), but the watcher will not remove it from backend %s: %s.", d.Host, desc, ch.Backend, d.Reason)
		n.Field["limit"] = d.Limit
	case KindAct:
		n.Kind = "acting"
		n.Text = fmt.Sprintf("%s looks sick (%s) — removing it from backend %s", d.Host, desc, ch.Backend)
		reason := fmt.Sprintf("watcher check %s: %s", ch.Name, desc)
		text := strings.NewReplacer("{host}", d.Host, "{backend}", ch.Backend, "{reason}", reason).Replace(s.cfg.Action)
		// The command's message id differs from the notice's: the chat
		// echoes the command as a post with the message id as its post id,
		// and the CHAT stream would drop it as a duplicate of the notice.
		return n, &Intent{Host: d.Host, Backend: ch.Backend, MessageID: id + "-cmd", Text: text, Reason: reason, Graph: graph, At: now}
	}
	return n, nil
}

// finish publishes the outbox, removes what it published from the state,
// and sends and follows each pending action.
func (s *Service) finish(ctx context.Context, ch Check, outbox []Notice, pending []Intent) {
	var done []string
	for _, n := range outbox {
		if err := s.publish(ctx, ch, n); err != nil {
			s.log.Error("publish notice", "check", ch.Name, "id", n.ID, "error", err)
			break // keep the rest in order for the next cycle
		}
		done = append(done, n.ID)
	}
	if len(done) > 0 {
		err := s.modifyState(ctx, ch.Name, func(st *CheckState) {
			kept := st.Outbox[:0]
			for _, n := range st.Outbox {
				if !contains(done, n.ID) {
					kept = append(kept, n)
				}
			}
			st.Outbox = kept
		})
		if err != nil {
			s.log.Error("clear outbox", "check", ch.Name, "error", err)
		}
	}
	for _, in := range pending {
		s.mu.Lock()
		busy := s.inflight[in.MessageID]
		s.inflight[in.MessageID] = true
		s.mu.Unlock()
		if !busy {
			s.goRun(func() { s.act(ch, in) })
		}
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// publish posts a notice in the ops channel and emits its event. Both carry
// ids derived from the notice, so publishing twice stores it once.
func (s *Service) publish(ctx context.Context, ch Check, n Notice) error {
	if n.Kind != KindSick { // the sick event is for machines; chat hears of the decision that follows
		p := &chatv1.ChatPost{
			Id:           n.ID,
			Conversation: &chatv1.Conversation{Adapter: s.cfg.Ops.Adapter, Channel: s.cfg.Ops.Channel},
			Kind:         chatv1.Kind_KIND_NOTICE,
			Text:         n.Text,
			Author:       s.identity(),
		}
		if n.Graph != "" {
			p.Blocks = []*chatv1.Block{{Content: &chatv1.Block_Link{Link: &chatv1.Link{Label: "graph of " + n.Host, Url: n.Graph}}}}
		}
		if n.Error {
			p.Kind = chatv1.Kind_KIND_ERROR
		}
		if _, err := emit.Post(ctx, s.js, p); err != nil {
			return fmt.Errorf("post notice %s: %w", n.ID, err)
		}
	}
	sev := eventv1.Severity_SEVERITY_INFO
	switch n.Kind {
	case KindSick, KindWouldAct, KindRefused, "acting", "outage":
		sev = eventv1.Severity_SEVERITY_WARNING
	}
	if n.Error {
		sev = eventv1.Severity_SEVERITY_ERROR
	}
	fields := map[string]string{"check": ch.Name, "backend": ch.Backend}
	for k, v := range n.Field {
		fields[k] = v
	}
	e := &eventv1.Event{Id: n.ID, Source: "watcher", Type: n.Kind, Severity: sev, Title: n.Text, Url: n.Graph,
		Fields: fields, OccurredAt: timestamppb.New(s.now()), CorrelationId: "watcher/" + ch.Name + "/" + n.Host}
	if _, err := emit.Event(ctx, s.js, e); err != nil {
		return fmt.Errorf("emit event %s: %w", n.ID, err)
	}
	return nil
}

// identity is who the watcher is in chat.
func (s *Service) identity() *chatv1.Identity {
	return &chatv1.Identity{Id: s.cfg.Identity, Name: "watcher", Automation: true}
}
