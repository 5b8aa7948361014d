package lb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
)

var envArg = &commandv1.ArgSpec{Name: "env", Type: commandv1.ArgType_ARG_TYPE_ENVIRONMENT, Required: true, Help: "an environment of lb.environments"}

var rateSetSpec = &commandv1.CommandSpec{
	Name:    "ratelimit set",
	Usage:   "ratelimit set <env> <key>=<n> [<key>=<n>…] [--dry-run] [-- reason]",
	Summary: "Set rate limits live in the HAProxy map file of an environment, on every instance.",
	Help: "Each key=n sets (or adds) the key in the environment's rate-limit map (lb.environments.<env>.map_file) " +
		"on every HAProxy instance with set map/add map, keeps it in sb_lb_desired so reconciliation restores it " +
		"after a reload or restart, and rewrites the file itself when write_map_file is on. n is a whole number.",
	Example:        "ratelimit set production api-free=100 api-paid=1000 -- launch day",
	Args:           []*commandv1.ArgSpec{envArg, {Name: "limits", Type: commandv1.ArgType_ARG_TYPE_KEY_VALUE, Required: true, Variadic: true, Help: "key=n, one or more"}},
	Mutating:       true,
	SupportsDryRun: true,
	Resumable:      true,
	TextName:       "reason",
}

var rateShowSpec = &commandv1.CommandSpec{
	Name:    "ratelimit show",
	Usage:   "ratelimit show <env>",
	Summary: "Show the rate limits of an environment: desired and on each HAProxy instance.",
	Help:    "Lists every key of the environment's rate-limit map with the value switchboard keeps and the value each instance has, marking differences.",
	Example: "ratelimit show production",
	Args:    []*commandv1.ArgSpec{envArg},
}

var limitKey = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)

// parseLimits reads "a=1,b=2" (the chat joins variadic words with commas).
func parseLimits(s string) (map[string]string, []string, error) {
	out := map[string]string{}
	var order []string
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !limitKey.MatchString(k) {
			return nil, nil, command.UserErrorf("%q is not key=n (keys use letters, digits, '_', '.', '-')", kv)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, nil, command.UserErrorf("%q: the limit %q is not a whole number from 0 to 4294967295", kv, v)
		}
		if _, dup := out[k]; !dup {
			order = append(order, k)
		}
		out[k] = strconv.FormatUint(n, 10)
	}
	if len(out) == 0 {
		return nil, nil, command.UserErrorf("no limits given; usage: %s", rateSetSpec.Usage)
	}
	return out, order, nil
}

func (s *Service) rateEnv(env string) (EnvConfig, error) {
	ec, ok := s.cfg.Environments[env]
	if !ok {
		return ec, command.UserErrorf("no HAProxy instances are configured for environment %q (lb.environments)", env)
	}
	if ec.MapFile == "" {
		return ec, command.UserErrorf("environment %s has no rate-limit map (lb.environments.%s.map_file)", env, env)
	}
	return ec, nil
}

func (s *Service) rateSet(ctx context.Context, job *command.Job) error {
	env := job.Arg("env")
	ec, err := s.rateEnv(env)
	if err != nil {
		return err
	}
	limits, order, err := parseLimits(job.Arg("limits"))
	if err != nil {
		return err
	}
	prev, _, err := s.desired.limits(ctx, env)
	if err != nil {
		return err
	}
	cur := &desiredLimits{Env: env, Limits: map[string]string{}}
	if prev != nil {
		for k, v := range prev.Limits {
			cur.Limits[k] = v
		}
	}
	var changes []haproxy.Change
	var diff []string
	for _, k := range order {
		old, had := cur.Limits[k]
		switch {
		case !had:
			diff = append(diff, fmt.Sprintf("%s: (new) → %s", k, limits[k]))
		case old != limits[k]:
			diff = append(diff, fmt.Sprintf("%s: %s → %s", k, old, limits[k]))
		default:
			diff = append(diff, fmt.Sprintf("%s: %s (unchanged)", k, old))
		}
		changes = append(changes, haproxy.Change{Kind: haproxy.SetMap, Map: ec.MapFile, Key: k, Value: limits[k]})
	}
	names := make([]string, len(s.fleet.envs[env]))
	for i, in := range s.fleet.envs[env] {
		names[i] = in.name
	}
	if job.DryRun() {
		return job.Done(ctx, fmt.Sprintf("Dry run: would set in %s on %s (%s):\n%s\nNothing was changed.", ec.MapFile, strings.Join(names, ", "), env, strings.Join(diff, "\n")))
	}
	by := job.Requester().GetName()
	for k, v := range limits {
		cur.Limits[k] = v
	}
	cur.By, cur.CommandID, cur.At, cur.Pending = by, job.Request().GetId(), time.Now().UTC(), names
	written, err := put(ctx, s.desired.kv, limitsKey(env), cur, 0)
	if err != nil {
		return fmt.Errorf("save rate limits of %s: %w", env, err)
	}
	res := s.fleet.apply(ctx, env, changes, nil)
	ok, refused := res.accepted(func(int) bool { return true })
	// Limits no instance took and one refused go back to what they were,
	// so reconciliation does not retry them forever; the file keeps what
	// HAProxy has.
	rolledBack := false
	var fileErr error
	if len(ok) == 0 && refused {
		if rolledBack, err = restore(ctx, s.desired.kv, limitsKey(env), prev, written); err != nil {
			s.log.Warn("roll back rate limits", "env", env, "error", err)
		}
	} else {
		_, rev, err := s.desired.limits(ctx, env)
		if err == nil {
			err = settle(ctx, s.desired.kv, limitsKey(env), rev, func(d *desiredLimits) *[]string { return &d.Pending }, ok)
		}
		if err != nil {
			s.log.Warn("settle rate limits", "env", env, "error", err)
		}
		if ec.WriteMapFile {
			// HAProxy has the limits live by now, so a failure here is
			// said in the answer rather than turned into an internal error.
			if fileErr = writeMapFile(ec.MapFile, cur.Limits); fileErr != nil {
				s.log.Warn("rewrite map file", "env", env, "file", ec.MapFile, "error", fileErr)
			}
		}
	}
	s.rateEvent(ctx, job, env, limits, res, by)
	var b strings.Builder
	fmt.Fprintf(&b, "Rate limits set in %s (%s):\n%s", ec.MapFile, env, strings.Join(diff, "\n"))
	if r := job.Text(); r != "" {
		fmt.Fprintf(&b, "\nReason: %s.", r)
	}
	b.WriteString("\n" + res.summary(changes))
	if fileErr != nil {
		fmt.Fprintf(&b, "\n⚠ %s was not rewritten (%v): an HAProxy restart starts without these limits until reconciliation sets them.", ec.MapFile, fileErr)
	}
	switch {
	case rolledBack:
		return command.UserErrorf("Not applied on any instance: %s\nHAProxy refused the limits and no instance took them, so the desired limits were left as they were: nothing will retry them.", b.String())
	case len(ok) == 0:
		return command.UserErrorf("Not applied on any instance: %s\nThe limits are saved: reconciliation retries %s every %v.", b.String(), strings.Join(res.failedInstances(), ", "), s.cfg.ReconcileInterval)
	case res.failed():
		return command.UserErrorf("Partly applied: %s\nThe limits are saved: reconciliation retries %s every %v.", b.String(), strings.Join(res.failedInstances(), ", "), s.cfg.ReconcileInterval)
	}
	return job.Done(ctx, b.String())
}

func (s *Service) rateEvent(ctx context.Context, job *command.Job, env string, limits map[string]string, res results, by string) {
	fields := map[string]string{"env": env, "by": by, "reason": job.Text(), "job_id": job.ID()}
	keys := make([]string, 0, len(limits))
	for k, v := range limits {
		keys = append(keys, k+"="+v)
	}
	sort.Strings(keys)
	fields["limits"] = strings.Join(keys, ",")
	var inst []string
	sev := eventv1.Severity_SEVERITY_INFO
	for _, o := range res {
		st := "ok"
		if o.failed() {
			st, sev = "failed", eventv1.Severity_SEVERITY_WARNING
		}
		inst = append(inst, o.instance+"="+st)
	}
	fields["instances"] = strings.Join(inst, ",")
	e := &eventv1.Event{
		Id:     fmt.Sprintf("%s-%d-ratelimit", job.ID(), job.Attempt()),
		Source: "lb", Type: "ratelimit.set", Severity: sev,
		Title: fmt.Sprintf("%s set rate limits in %s: %s", by, env, fields["limits"]),
		Text:  job.Text(), Fields: fields, CommandId: job.Request().GetId(),
	}
	if _, err := emit.Event(ctx, s.js, e); err != nil {
		s.log.Warn("publish lb event", "type", e.Type, "error", err)
	}
}

// mapFileMu serialises rewrites of map files by this process.
var mapFileMu sync.Mutex

// writeMapFile sets the managed keys in a map file and keeps every other
// line as it is, then renames it into place so HAProxy never reads half a
// file.
func writeMapFile(path string, limits map[string]string) error {
	mapFileMu.Lock()
	defer mapFileMu.Unlock()
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	done := map[string]bool{}
	var lines []string
	for _, line := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 1 && !strings.HasPrefix(f[0], "#") {
			if v, ok := limits[f[0]]; ok {
				if !done[f[0]] {
					lines = append(lines, f[0]+" "+v)
					done[f[0]] = true
				}
				continue
			}
		}
		if line != "" || len(lines) > 0 {
			lines = append(lines, line)
		}
	}
	keys := make([]string, 0, len(limits))
	for k := range limits {
		if !done[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		lines = append(lines, k+" "+limits[k])
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ratelimit-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func (s *Service) rateShow(ctx context.Context, job *command.Job) error {
	env := job.Arg("env")
	ec, err := s.rateEnv(env)
	if err != nil {
		return err
	}
	cur, _, err := s.desired.limits(ctx, env)
	if err != nil {
		return err
	}
	ins := s.fleet.envs[env]
	actual := make([]map[string]string, len(ins))
	errs := make([]error, len(ins))
	var wg sync.WaitGroup
	for i, in := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			entries, err := in.rt.Map(ctx, ec.MapFile)
			if err != nil {
				errs[i] = err
				return
			}
			actual[i] = map[string]string{}
			for _, e := range entries {
				actual[i][e.Key] = e.Value
			}
		}()
	}
	wg.Wait()
	keys := map[string]bool{}
	if cur != nil {
		for k := range cur.Limits {
			keys[k] = true
		}
	}
	for _, a := range actual {
		for k := range a {
			keys[k] = true
		}
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	slices.Sort(sorted)
	var b strings.Builder
	fmt.Fprintf(&b, "%s, map %s\n", env, ec.MapFile)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	head := []string{"KEY", "DESIRED"}
	for _, in := range ins {
		head = append(head, strings.ToUpper(in.name))
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, k := range sorted {
		want := "-"
		if cur != nil && cur.Limits[k] != "" {
			want = cur.Limits[k]
		}
		row := []string{k, want}
		for i := range ins {
			switch {
			case errs[i] != nil:
				row = append(row, "?")
			case actual[i][k] == "":
				row = append(row, "(none)")
			case want != "-" && actual[i][k] != want:
				row = append(row, actual[i][k]+" ≠")
			default:
				row = append(row, actual[i][k])
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	for i, in := range ins {
		var refused *haproxy.ReplyError
		switch {
		case errors.As(errs[i], &refused):
			fmt.Fprintf(&b, "%s: map not readable: %v\n", in.name, errs[i])
		case errs[i] != nil:
			fmt.Fprintf(&b, "%s: not answering: %v\n", in.name, errs[i])
		}
	}
	if cur != nil && cur.By != "" {
		fmt.Fprintf(&b, "Last set by %s at %s.", cur.By, cur.At.Format(time.RFC3339))
	}
	text := strings.TrimRight(b.String(), "\n")
	return job.DoneWith(&chatv1.ChatPost{Text: text, Blocks: []*chatv1.Block{{Content: &chatv1.Block_Code{Code: text}}}})
}
