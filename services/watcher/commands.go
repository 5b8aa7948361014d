package watcher

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
)

// Commands returns the watcher commands; kit/command serves them on
// sb.cmd.watcher.<verb>.
func (s *Service) Commands() []command.Command {
	names := make([]string, 0, len(s.cfg.Checks))
	for _, ch := range s.cfg.Checks {
		names = append(names, ch.Name)
	}
	example := "superagg-canary"
	if len(names) > 0 {
		example = names[0]
	}
	return []command.Command{
		{Spec: &commandv1.CommandSpec{
			Name: "watcher status", Usage: "watcher status",
			Summary: "Show every canary check: its mode, the sick hosts, mutes and limits.",
			Help:    "Shows each check's mode (off, advisory, enforce), the leader replica, the last evaluation, the hosts that look sick, what the watcher did about them, the muted hosts and whether Graphite is out.",
			Example: "watcher status",
		}, Run: s.status},
		{Spec: &commandv1.CommandSpec{
			Name: "watcher mode", Usage: "watcher mode <check> <off|advisory|enforce> [--dry-run] [-- reason]",
			Summary: "Switch a check off, to advisory (say what it would do) or to enforce (do it).",
			Help: "advisory posts what the watcher would do and counts it; enforce sends `lb remove` under the watcher's identity, within the check's safety limits. " +
				"The mode is kept in KV and shared by every replica, so it survives restarts.",
			Example: "watcher mode " + example + " enforce -- two weeks of advisory without a false positive",
			Args: []*commandv1.ArgSpec{
				{Name: "check", Type: commandv1.ArgType_ARG_TYPE_ENUM, Required: true, Choices: names, Help: "the check's name"},
				{Name: "mode", Type: commandv1.ArgType_ARG_TYPE_ENUM, Required: true, Choices: Modes, Help: "off, advisory or enforce"},
			},
			RequiredRole: s.cfg.ModeRole, Mutating: true, SupportsDryRun: true, TextName: "reason",
		}, Run: s.setMode},
		{Spec: &commandv1.CommandSpec{
			Name: "watcher mute", Usage: "watcher mute <host> <duration> [--dry-run] [-- reason]",
			Summary: "Keep the watcher from acting on a host for a while (0s unmutes).",
			Help:    "A muted host is still evaluated and shown, but never removed; the watcher says so once if it looks sick.",
			Example: "watcher mute superagg-0003 2h -- kernel upgrade in progress",
			Args: []*commandv1.ArgSpec{
				{Name: "host", Type: commandv1.ArgType_ARG_TYPE_HOST, Required: true, Help: "a host of the inventory"},
				{Name: "duration", Type: commandv1.ArgType_ARG_TYPE_DURATION, Required: true, Help: "how long (0s unmutes)"},
			},
			Mutating: true, SupportsDryRun: true, TextName: "reason",
		}, Run: s.mute},
		{Spec: &commandv1.CommandSpec{
			Name: "watcher explain", Usage: "watcher explain <host>",
			Summary: "Show the numbers behind a host's verdict, read from Graphite now.",
			Example: "watcher explain superagg-0003",
			Args: []*commandv1.ArgSpec{
				{Name: "host", Type: commandv1.ArgType_ARG_TYPE_HOST, Required: true, Help: "a host of the inventory"},
			},
		}, Run: s.explain},
	}
}

func (s *Service) status(ctx context.Context, job *command.Job) error {
	if len(s.cfg.Checks) == 0 {
		return job.Done(ctx, "No canary checks are configured (watcher.checks).")
	}
	var b strings.Builder
	leader := s.lease.leader(ctx)
	if leader == "" {
		leader = "none right now"
	}
	fmt.Fprintf(&b, "Leader replica: %s\n", leader)
	mutes, err := s.mutes(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	for _, ch := range s.cfg.Checks {
		mode, _, err := s.mode(ctx, ch)
		if err != nil {
			return err
		}
		st, _, err := s.loadState(ctx, ch.Name)
		if err != nil {
			return err
		}
		sc, scopeErr := s.scopeOf(ctx, ch)
		where := ch.Backend
		if sc.env != "" {
			where += " in " + sc.env
		}
		fmt.Fprintf(&b, "\n*%s* — backend %s, %s, every %s\n", ch.Name, where, mode, ch.Interval)
		if scopeErr != nil {
			fmt.Fprintf(&b, "  ⚠ cannot run: %v\n", scopeErr)
		}
		switch {
		case st.LastRun.IsZero():
			b.WriteString("  not evaluated yet\n")
		default:
			fmt.Fprintf(&b, "  last evaluation %s ago: %s\n", now.Sub(st.LastRun).Round(time.Second), st.Summary)
		}
		if st.Outage {
			fmt.Fprintf(&b, "  ⚠ metrics outage: %s (no action is taken)\n", st.Reason)
		}
		for _, h := range sortedHosts(st.Hosts) {
			hs := st.Hosts[h]
			if !hs.Sick && hs.Bad == 0 {
				continue
			}
			line := fmt.Sprintf("  %s: %d%% of expected", h, int(hs.Ratio*100))
			switch {
			case hs.Acted:
				line += ", sick since " + hs.SickSince.UTC().Format("15:04") + ", removed by the watcher"
			case hs.Sick && hs.Advised:
				line += ", sick since " + hs.SickSince.UTC().Format("15:04") + ", would have been removed"
			case hs.Sick:
				line += ", sick since " + hs.SickSince.UTC().Format("15:04")
			default:
				line += fmt.Sprintf(", bad %d of %d evaluations needed to call it sick", hs.Bad, ch.SickAfter)
			}
			if hs.Refused != "" {
				line += " (not acted on: " + hs.Refused + ")"
			}
			b.WriteString(line + "\n")
		}
		removals := "?"
		if scopeErr == nil && sc.env != "" {
			bs, _, err := s.loadBackend(ctx, sc)
			if err != nil {
				return err
			}
			n := len(recent(bs.Removals, now))
			if mode == ModeAdvisory {
				n += len(recent(bs.Would, now))
			}
			removals = fmt.Sprint(n)
		}
		fmt.Fprintf(&b, "  limits: %s of %d removals from the backend in the last hour (all its checks), keep ≥%.0f%% in service and healthy, cool-down %s\n",
			removals, ch.Safety.MaxRemovalsPerHour, ch.Safety.MinHealthyFraction*100, shortDuration(ch.Safety.Cooldown))
		if len(st.Pending) > 0 {
			for _, p := range st.Pending {
				fmt.Fprintf(&b, "  in progress: `%s` (job %s)\n", p.Text, p.JobID)
			}
		}
	}
	if len(mutes) > 0 {
		b.WriteString("\nMuted: ")
		var parts []string
		for _, h := range sortedHosts(mutes) {
			parts = append(parts, fmt.Sprintf("%s until %s", h, mutes[h].Until.UTC().Format("Jan 2 15:04 MST")))
		}
		b.WriteString(strings.Join(parts, ", ") + "\n")
	}
	return job.Done(ctx, strings.TrimSpace(b.String()))
}

func (s *Service) setMode(ctx context.Context, job *command.Job) error {
	ch, ok := s.checks[job.Arg("check")]
	if !ok {
		return command.UserErrorf("there is no check %q; checks: %s", job.Arg("check"), strings.Join(sortedHosts(s.checks), ", "))
	}
	mode := job.Arg("mode")
	if !slices.Contains(Modes, mode) {
		return command.UserErrorf("%q is not a mode; use off, advisory or enforce", mode)
	}
	cur, _, err := s.mode(ctx, ch)
	if err != nil {
		return err
	}
	if cur == mode {
		return job.Done(ctx, fmt.Sprintf("%s is already in %s mode; nothing changed.", ch.Name, mode))
	}
	if job.DryRun() {
		return job.Done(ctx, fmt.Sprintf("Would switch %s from %s to %s mode.", ch.Name, cur, mode))
	}
	rec, _ := json.Marshal(modeRecord{Mode: mode, By: job.Requester().GetId(), At: s.now()})
	if _, err := s.kv.Put(ctx, modeKey(ch.Name), rec); err != nil {
		return fmt.Errorf("save mode of %s: %w", ch.Name, err)
	}
	text := fmt.Sprintf("%s switched from %s to %s mode by %s.", ch.Name, cur, mode, job.Requester().GetName())
	s.event(ctx, job, "mode", text, map[string]string{"check": ch.Name, "from": cur, "to": mode})
	switch mode {
	case ModeEnforce:
		text += fmt.Sprintf(" The watcher will now remove sick hosts from %s (at most %d an hour for the backend, keeping ≥%.0f%% of it in service and healthy).",
			ch.Backend, ch.Safety.MaxRemovalsPerHour, ch.Safety.MinHealthyFraction*100)
	case ModeAdvisory:
		text += " The watcher will say what it would do, and do nothing."
	}
	return job.Done(ctx, text)
}

func (s *Service) mute(ctx context.Context, job *command.Job) error {
	host := job.Arg("host")
	d, err := time.ParseDuration(job.Arg("duration"))
	if err != nil || d < 0 {
		return command.UserErrorf("%q is not a duration (try 30m or 2h)", job.Arg("duration"))
	}
	if d > s.cfg.MaxMute {
		return command.UserErrorf("%s is longer than the longest mute (%s); mute again later if you need more", d, s.cfg.MaxMute)
	}
	snap, err := s.snapshot(ctx)
	if err != nil {
		return fmt.Errorf("read inventory: %w", err)
	}
	if snap.Host(host) == nil {
		return command.UserErrorf("%s is not in the inventory", host)
	}
	if d == 0 {
		if job.DryRun() {
			return job.Done(ctx, "Would unmute "+host+".")
		}
		if err := s.kv.Delete(ctx, muteKey(host)); err != nil {
			return fmt.Errorf("unmute %s: %w", host, err)
		}
		s.event(ctx, job, "unmuted", host+" unmuted", map[string]string{"host": host})
		return job.Done(ctx, fmt.Sprintf("%s is no longer muted: the watcher may act on it again.", host))
	}
	until := s.now().Add(d)
	if job.DryRun() {
		return job.Done(ctx, fmt.Sprintf("Would mute %s until %s.", host, until.UTC().Format("Jan 2 15:04 MST")))
	}
	rec, _ := json.Marshal(muteRecord{Host: host, Until: until, By: job.Requester().GetId(), Reason: job.Text()})
	if _, err := s.kv.Put(ctx, muteKey(host), rec); err != nil {
		return fmt.Errorf("mute %s: %w", host, err)
	}
	s.event(ctx, job, "muted", fmt.Sprintf("%s muted for %s", host, d), map[string]string{"host": host, "until": until.UTC().Format(time.RFC3339)})
	return job.Done(ctx, fmt.Sprintf("%s is muted until %s: the watcher still watches it but will not act on it.", host, until.UTC().Format("Jan 2 15:04 MST")))
}

func (s *Service) explain(ctx context.Context, job *command.Job) error {
	host := job.Arg("host")
	snap, err := s.snapshot(ctx)
	if err != nil {
		return fmt.Errorf("read inventory: %w", err)
	}
	if snap.Host(host) == nil {
		return command.UserErrorf("%s is not in the inventory", host)
	}
	var found []Check
	scopes := map[string]scope{}
	for _, ch := range s.cfg.Checks {
		sc, err := selectHosts(snap, ch, s.checkKey[ch.Name])
		if err == nil && slices.Contains(sc.hosts, host) {
			found = append(found, ch)
			scopes[ch.Name] = sc
		}
	}
	if len(found) == 0 {
		return command.UserErrorf("no check covers %s (it is in no checked backend and environment, or not active)", host)
	}
	_ = job.Progressf(ctx, "Reading %d check(s) for %s from Graphite…", len(found), host)
	mutes, err := s.mutes(ctx)
	if err != nil {
		return err
	}
	var b strings.Builder
	var blocks []*chatv1.Block
	for _, ch := range found {
		mode, _, err := s.mode(ctx, ch)
		if err != nil {
			return err
		}
		sc := scopes[ch.Name]
		fmt.Fprintf(&b, "*%s* (%s mode, backend %s in %s, target `%s`)\n", ch.Name, mode, ch.Backend, sc.env, strings.ReplaceAll(ch.Target, "{host}", metricNode(host)))
		hosts := sc.hosts
		series, err := s.fetch(ctx, ch, hosts)
		if err != nil {
			fmt.Fprintf(&b, "  Graphite did not answer: %v\n", err)
		} else {
			ev := Evaluate(ch.rule(), hosts, series)
			rd := ev.Readings[host]
			switch {
			case ev.Outage:
				fmt.Fprintf(&b, "  metrics outage: %s — nobody is judged\n", ev.OutageReason)
			case rd.Status == StatusUnknown:
				b.WriteString("  Graphite has no series for this host: it is not judged\n")
			default:
				what := "points"
				if ch.Aggregate == AggSum {
					what = "sum"
				}
				fmt.Fprintf(&b, "  now: %s — %s %.0f of %.0f expected (%d%%, threshold %.0f%%), %d intervals of %ds without data\n",
					rd.Status, what, rd.Observed, rd.Expected, rd.Percent(), ch.MinRatio*100, rd.Nulls, ev.Step)
				fmt.Fprintf(&b, "  window %s–%s UTC (Graphite's clock; the newest %s are not judged yet)\n",
					time.Unix(rd.From, 0).UTC().Format("15:04:05"), time.Unix(rd.Until, 0).UTC().Format("15:04:05"), ch.Settle)
				fmt.Fprintf(&b, "  backend: %d good, %d bad, %d without data\n", ev.Good, ev.Bad, ev.Unknown)
			}
		}
		st, _, err := s.loadState(ctx, ch.Name)
		if err != nil {
			return err
		}
		if hs := st.Hosts[host]; hs != nil {
			fmt.Fprintf(&b, "  memory: %d bad and %d good evaluations in a row (sick after %d, healthy after %d)", hs.Bad, hs.Good, ch.SickAfter, ch.RecoverAfter)
			if hs.Sick {
				b.WriteString(", sick since " + hs.SickSince.UTC().Format("15:04 MST"))
			}
			if hs.Acted {
				b.WriteString(", removed by the watcher at " + hs.LastAction.UTC().Format("15:04 MST"))
			}
			if hs.Refused != "" {
				b.WriteString(", not acted on: " + hs.Refused)
			}
			b.WriteString("\n")
		} else {
			b.WriteString("  memory: healthy\n")
		}
		blocks = append(blocks, &chatv1.Block{Content: &chatv1.Block_Link{Link: &chatv1.Link{Label: "graph: " + ch.Name, Url: s.graph(ch, host)}}})
	}
	if m, ok := mutes[host]; ok {
		fmt.Fprintf(&b, "Muted until %s by %s.\n", m.Until.UTC().Format("Jan 2 15:04 MST"), m.By)
	}
	return job.DoneWith(&chatv1.ChatPost{Text: strings.TrimSpace(b.String()), Blocks: blocks})
}

// event emits an event about a command's change.
func (s *Service) event(ctx context.Context, job *command.Job, typ, title string, fields map[string]string) {
	e := &eventv1.Event{Id: job.ID() + "-" + typ, Source: "watcher", Type: typ, Severity: eventv1.Severity_SEVERITY_INFO,
		Title: title, Fields: fields, CommandId: job.Request().GetId()}
	if _, err := emit.Event(ctx, s.js, e); err != nil {
		s.log.ErrorContext(ctx, "emit event", "type", typ, "error", err)
	}
}
