package chat

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/jobs"
)

// builtin is a command the chat answers itself, in-process: it reads
// state (help, jobs, history) or changes only chat-owned state (cancel,
// confirm), so it needs no job of its own.
type builtin struct {
	spec *commandv1.CommandSpec
	run  func(ctx context.Context, r *request, req *commandv1.CommandRequest) (*chatv1.ChatPost, error)
	// open commands may be run by anyone, whatever RBAC says.
	open bool
}

func (s *Service) isBuiltin(sp *commandv1.CommandSpec) bool {
	_, ok := s.builtins[sp.GetName()]
	return ok && sp.GetService() == "chat"
}

func (s *Service) alwaysAllowed(sp *commandv1.CommandSpec) bool {
	b, ok := s.builtins[sp.GetName()]
	return ok && b.open && sp.GetService() == "chat"
}

func (s *Service) builtinCommands() map[string]builtin {
	str, text := commandv1.ArgType_ARG_TYPE_STRING, commandv1.ArgType_ARG_TYPE_TEXT
	list := []builtin{
		{open: true, run: s.help, spec: &commandv1.CommandSpec{
			Name: "help", Usage: "help [command]", Summary: "List the commands, or explain one.",
			Help:    "Without an argument, lists every command of every running service. With one, shows its usage, arguments, flags and an example.",
			Example: "help lb drain",
			Args:    []*commandv1.ArgSpec{{Name: "command", Type: text, Help: "a command name"}},
		}},
		{open: true, run: s.whoami, spec: &commandv1.CommandSpec{
			Name: "whoami", Usage: "whoami", Summary: "Show who switchboard thinks you are, and your roles.", Example: "whoami",
		}},
		{open: true, run: s.history, spec: &commandv1.CommandSpec{
			Name: "history", Usage: "history [--user U] [--command C] [--since 24h] [--limit 20]",
			Summary: "Show recent commands from the audit trail.", Example: "history --command 'lb drain' --since 2h",
			Flags: []*commandv1.FlagSpec{
				{Name: "user", Type: str, Help: "identity id, name or e-mail (substring)"},
				{Name: "command", Type: text, Help: "command name (prefix)"},
				{Name: "since", Type: commandv1.ArgType_ARG_TYPE_DURATION, Default: "24h", Help: "how far back"},
				{Name: "limit", Type: commandv1.ArgType_ARG_TYPE_INT, Default: "20", Min: 1, Max: 200, Help: "how many"},
			},
		}},
		{open: true, run: s.jobShow, spec: &commandv1.CommandSpec{
			Name: "job", Usage: "job <id>", Summary: "Show one job: state, who, where, result.", Example: "job 3fa9c1e2b7d4",
			Args: []*commandv1.ArgSpec{{Name: "id", Type: commandv1.ArgType_ARG_TYPE_JOB_ID, Required: true, Help: "job id"}},
		}},
		{open: true, run: s.jobList, spec: &commandv1.CommandSpec{
			Name: "jobs", Usage: "jobs", Summary: "List the jobs that are still running.", Example: "jobs",
		}},
		{open: true, run: s.cancelJob, spec: &commandv1.CommandSpec{
			Name: "cancel", Usage: "cancel <job>", Summary: "Stop a running job (yours, or one your roles may run).",
			Help:    "The job stops at its next safe point; commands that work in batches finish the running batch.",
			Example: "cancel 3fa9c1e2b7d4", Mutating: true, SupportsDryRun: true,
			Args: []*commandv1.ArgSpec{{Name: "job", Type: commandv1.ArgType_ARG_TYPE_JOB_ID, Required: true, Help: "job id"}},
		}},
		{open: true, run: s.confirm, spec: &commandv1.CommandSpec{
			Name: "confirm", Usage: "confirm <code>", Summary: "Confirm a command that asked for it.", Example: "confirm 4f2a9c",
			Args: []*commandv1.ArgSpec{{Name: "code", Type: str, Required: true, Help: "the code the command gave"}},
		}},
	}
	m := map[string]builtin{}
	for _, b := range list {
		b.spec.Service = "chat"
		m[b.spec.Name] = b
	}
	return m
}

// runBuiltin runs an in-process command and posts its answer.
func (s *Service) runBuiltin(ctx context.Context, r *request, b builtin, req *commandv1.CommandRequest) *chatv1.ChatReply {
	post, err := b.run(ctx, r, req)
	if err != nil {
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_REJECTED, "failed", err.Error())
	}
	if post == nil {
		return &chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_ANSWERED, Final: true}
	}
	s.audit(ctx, r, auditv1.Stage_STAGE_DECISION, "answered", "")
	s.answer(ctx, r, chatv1.Kind_KIND_RESULT, post)
	return &chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_ANSWERED, Message: post.GetText(), Final: true}
}

func (s *Service) help(ctx context.Context, r *request, req *commandv1.CommandRequest) (*chatv1.ChatPost, error) {
	if time.Since(s.reg.lastRefresh()) > time.Second {
		s.reg.refresh(ctx)
	}
	if name := strings.TrimSpace(req.GetArgs()["command"]); name != "" {
		sp, _ := s.reg.lookup(strings.Fields(name))
		if sp == nil {
			return nil, errors.New(s.unknownText(strings.Fields(name)))
		}
		return &chatv1.ChatPost{Text: helpText(sp)}, nil
	}
	byService := map[string][]*commandv1.CommandSpec{}
	for _, sp := range s.reg.all() {
		byService[sp.GetService()] = append(byService[sp.GetService()], sp)
	}
	services := make([]string, 0, len(byService))
	for k := range byService {
		services = append(services, k)
	}
	sort.Strings(services)
	var b strings.Builder
	b.WriteString("Commands (`help <command>` for details):\n")
	for _, svc := range services {
		fmt.Fprintf(&b, "\n%s\n", svc)
		for _, sp := range byService[svc] {
			fmt.Fprintf(&b, "  %-28s %s\n", sp.GetUsage(), sp.GetSummary())
		}
	}
	if len(s.aliases) > 0 {
		b.WriteString("\naliases\n")
		names := make([]string, 0, len(s.aliases))
		for n := range s.aliases {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&b, "  %-28s %s\n", n+" "+s.aliases[n].usage(), strings.Join(s.aliases[n].template, " "))
		}
	}
	return &chatv1.ChatPost{Text: b.String(), Blocks: []*chatv1.Block{{Content: &chatv1.Block_Code{Code: b.String()}}}}, nil
}

func helpText(sp *commandv1.CommandSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s — %s\nusage: %s\n", sp.GetName(), sp.GetSummary(), sp.GetUsage())
	if sp.GetHelp() != "" {
		fmt.Fprintf(&b, "\n%s\n", sp.GetHelp())
	}
	if len(sp.GetArgs()) > 0 {
		b.WriteString("\narguments:\n")
		for _, a := range sp.GetArgs() {
			req := ""
			if a.GetRequired() {
				req = " (required)"
			}
			fmt.Fprintf(&b, "  %-14s %-12s %s%s\n", a.GetName(), typeWord(a.GetType()), a.GetHelp(), req)
		}
	}
	if len(sp.GetFlags()) > 0 || sp.GetSupportsDryRun() {
		b.WriteString("\nflags:\n")
		for _, f := range sp.GetFlags() {
			def := ""
			if f.GetDefault() != "" {
				def = " (default " + f.GetDefault() + ")"
			}
			fmt.Fprintf(&b, "  --%-12s %-12s %s%s\n", f.GetName(), typeWord(f.GetType()), f.GetHelp(), def)
		}
		if sp.GetSupportsDryRun() {
			fmt.Fprintf(&b, "  --%-12s %-12s %s\n", "dry-run", "", "show what would change; change nothing")
		}
	}
	if sp.GetRequiredRole() != "" {
		fmt.Fprintf(&b, "\nneeds role: %s\n", sp.GetRequiredRole())
	}
	if sp.GetConfirm() == commandv1.ConfirmPolicy_CONFIRM_POLICY_ALWAYS {
		b.WriteString("asks for confirmation before it runs\n")
	}
	fmt.Fprintf(&b, "\nexample: %s\n", sp.GetExample())
	return b.String()
}

func typeWord(t commandv1.ArgType) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(t.String(), "ARG_TYPE_")), "_", "-")
}

func (s *Service) whoami(_ context.Context, r *request, _ *commandv1.CommandRequest) (*chatv1.ChatPost, error) {
	w := r.who
	fields := []*chatv1.Field{
		{Title: "id", Value: w.GetId(), Short: true},
		{Title: "name", Value: w.GetName(), Short: true},
		{Title: "roles", Value: rolesText(w.GetRoles()), Short: true},
	}
	if w.GetEmail() != "" {
		fields = append(fields, &chatv1.Field{Title: "e-mail", Value: w.GetEmail(), Short: true})
	}
	if len(w.GetGroups()) > 0 {
		fields = append(fields, &chatv1.Field{Title: "groups", Value: strings.Join(w.GetGroups(), ", "), Short: true})
	}
	text := fmt.Sprintf("You are %s (%s); roles: %s.", w.GetName(), w.GetId(), rolesText(w.GetRoles()))
	return &chatv1.ChatPost{Text: text, Blocks: []*chatv1.Block{{Content: &chatv1.Block_Fields{Fields: &chatv1.Fields{Items: fields}}}}}, nil
}

func (s *Service) jobShow(ctx context.Context, _ *request, req *commandv1.CommandRequest) (*chatv1.ChatPost, error) {
	id := req.GetArgs()["id"]
	j, _, err := s.jobs.Get(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil, fmt.Errorf("there is no job %s (jobs are kept 30 days)", id)
	}
	if err != nil {
		return nil, fmt.Errorf("reading job %s failed: %w", id, err)
	}
	text := fmt.Sprintf("job %s: %s — %s by %s, %s", j.GetId(), j.GetCommand(), stateText(j.GetState()), j.GetRequester().GetName(), ago(j.GetCreatedAt().AsTime()))
	if j.GetResult() != "" {
		text += "\n" + j.GetResult()
	}
	fields := []*chatv1.Field{
		{Title: "command", Value: j.GetRequest().GetRaw()},
		{Title: "state", Value: stateText(j.GetState()), Short: true},
		{Title: "requester", Value: j.GetRequester().GetId(), Short: true},
		{Title: "replica", Value: j.GetService() + "/" + j.GetOwner(), Short: true},
		{Title: "attempt", Value: fmt.Sprint(j.GetAttempt()), Short: true},
		{Title: "started", Value: j.GetCreatedAt().AsTime().UTC().Format(time.RFC3339), Short: true},
		{Title: "trace", Value: j.GetTraceId(), Short: true},
	}
	if j.GetFinishedAt() != nil {
		fields = append(fields, &chatv1.Field{Title: "took", Value: j.GetFinishedAt().AsTime().Sub(j.GetCreatedAt().AsTime()).Round(time.Millisecond).String(), Short: true})
	}
	if j.GetResult() != "" {
		fields = append(fields, &chatv1.Field{Title: "result", Value: j.GetResult()})
	}
	return &chatv1.ChatPost{Text: text, Blocks: []*chatv1.Block{{Content: &chatv1.Block_Fields{Fields: &chatv1.Fields{Items: fields}}}}}, nil
}

func (s *Service) jobList(ctx context.Context, _ *request, _ *commandv1.CommandRequest) (*chatv1.ChatPost, error) {
	ids, err := s.jobs.OpenIDs(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("listing jobs failed: %w", err)
	}
	var lines []string
	for _, id := range ids {
		j, _, err := s.jobs.Get(ctx, id)
		if err != nil || terminal(j.GetState()) {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s  %-10s %-24s %-20s %s", j.GetId(), stateText(j.GetState()), j.GetCommand(), j.GetRequester().GetName(), ago(j.GetCreatedAt().AsTime())))
	}
	if len(lines) == 0 {
		return &chatv1.ChatPost{Text: "No jobs are running."}, nil
	}
	sort.Strings(lines)
	text := fmt.Sprintf("%d running:\n%s", len(lines), strings.Join(lines, "\n"))
	return &chatv1.ChatPost{Text: text, Blocks: []*chatv1.Block{{Content: &chatv1.Block_Code{Code: strings.Join(lines, "\n")}}}}, nil
}

func (s *Service) cancelJob(ctx context.Context, r *request, req *commandv1.CommandRequest) (*chatv1.ChatPost, error) {
	id := req.GetArgs()["job"]
	j, _, err := s.jobs.Get(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil, fmt.Errorf("there is no job %s", id)
	}
	if err != nil {
		return nil, fmt.Errorf("reading job %s failed: %w", id, err)
	}
	if terminal(j.GetState()) {
		return nil, fmt.Errorf("job %s already ended (%s)", id, stateText(j.GetState()))
	}
	if j.GetRequester().GetId() != r.who.GetId() {
		// The same check as running the job's command: its required role
		// and the environments its request names count too.
		sp, _ := s.reg.lookup(strings.Fields(j.GetCommand()))
		if sp == nil || sp.GetName() != j.GetCommand() {
			sp = &commandv1.CommandSpec{Name: j.GetCommand()}
		}
		sc := requestScope(sp, j.GetRequest().GetArgs(), j.GetRequest().GetFlags(), s.hostEnv(ctx))
		if ok, _ := s.cfg.RBAC.Authorize(r.who.GetRoles(), sp, sc); !ok {
			return nil, fmt.Errorf("job %s is %s's, and your roles may not run %s", id, j.GetRequester().GetName(), j.GetCommand())
		}
	}
	if req.GetDryRun() {
		return &chatv1.ChatPost{Text: fmt.Sprintf("Would ask job %s (%s) to stop. Nothing was changed.", id, j.GetCommand())}, nil
	}
	_, err = s.jobs.Modify(ctx, id, func(j *commandv1.Job) bool {
		if terminal(j.GetState()) || j.GetCancelRequested() {
			return false
		}
		j.CancelRequested = true
		j.CancelledBy = r.who
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("recording the cancel of job %s failed: %w", id, err)
	}
	if err := s.nc.Publish(wire.SubjectJobCancelPrefix+"."+id, nil); err != nil {
		return nil, fmt.Errorf("asking job %s to stop failed: %w", id, err)
	}
	return &chatv1.ChatPost{Text: fmt.Sprintf("Asked job %s (%s) to stop; its thread will say when it has.", id, j.GetCommand())}, nil
}

// history reads the decisions on the AUDIT stream since a time.
func (s *Service) history(ctx context.Context, _ *request, req *commandv1.CommandRequest) (*chatv1.ChatPost, error) {
	f := req.GetFlags()
	since := 24 * time.Hour
	if v := f["since"]; v != "" {
		since, _ = time.ParseDuration(v)
	}
	limit := 20
	if v := f["limit"]; v != "" {
		fmt.Sscan(v, &limit)
	}
	user, cmd := strings.ToLower(f["user"]), strings.ToLower(f["command"])
	cons, err := s.js.OrderedConsumer(ctx, "AUDIT", jetstream.OrderedConsumerConfig{
		// Decisions say what was asked and whether it went out; results
		// say how a dispatched command ended.
		FilterSubjects: []string{wire.AuditSubject("decision"), wire.AuditSubject("result")},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   ptr(time.Now().Add(-since)),
	})
	if err != nil {
		return nil, fmt.Errorf("reading the audit trail failed: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the audit trail failed: %w", err)
	}
	var decisions []*auditv1.Record
	results := map[string]string{}
	pending := info.NumPending
	for pending > 0 {
		batch, err := cons.FetchNoWait(int(min(pending, 500)))
		if err != nil {
			return nil, fmt.Errorf("reading the audit trail failed: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			rec := &auditv1.Record{}
			if wire.Unmarshal(m.Data(), rec) != nil {
				continue
			}
			if rec.GetStage() == auditv1.Stage_STAGE_RESULT {
				results[rec.GetCommandId()] = rec.GetOutcome()
				continue
			}
			id := rec.GetIdentity()
			if user != "" && !strings.Contains(strings.ToLower(id.GetId()+" "+id.GetName()+" "+id.GetEmail()), user) {
				continue
			}
			if cmd != "" && !strings.HasPrefix(strings.ToLower(rec.GetCommand()+" "+rec.GetRaw()), cmd) {
				continue
			}
			decisions = append(decisions, rec)
		}
		if n == 0 {
			break
		}
		pending -= uint64(n)
	}
	var lines []string
	for _, rec := range decisions {
		outcome := rec.GetOutcome()
		if outcome == "dispatched" || outcome == "existing" {
			// A dispatched command shows how it ended, or that it has not.
			if r, ok := results[rec.GetCommandId()]; ok {
				outcome = r
			} else if outcome == "dispatched" {
				outcome = "running"
			}
		}
		lines = append(lines, fmt.Sprintf("%s  %-16s %-10s %s", rec.GetTime().AsTime().UTC().Format("01-02 15:04:05"), rec.GetIdentity().GetName(), outcome, rec.GetRaw()))
	}
	if len(lines) == 0 {
		return &chatv1.ChatPost{Text: "No commands match in the last " + since.String() + "."}, nil
	}
	if len(lines) > limit {
		lines = lines[len(lines)-limit:]
	}
	text := strings.Join(lines, "\n")
	return &chatv1.ChatPost{Text: text, Blocks: []*chatv1.Block{{Content: &chatv1.Block_Code{Code: text}}}}, nil
}

func ptr[T any](v T) *T { return &v }

func stateText(st commandv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "JOB_STATE_"))
}

func ago(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	if d < time.Second {
		return "just now"
	}
	return d.String() + " ago"
}
