package deployer

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/services/deployer/enc"
	"github.com/switchboard-ops/switchboard/services/deployer/gitrepo"
)

var encGetSpec = &commandv1.CommandSpec{
	Name:    "enc get",
	Usage:   "enc get <host|role@env>",
	Summary: "Show a host's ENC file and what Puppet gets for it, or the hosts and pins of a role.",
	Example: "enc get web-0001",
	Args:    []*commandv1.ArgSpec{{Name: "what", Type: commandv1.ArgType_ARG_TYPE_STRING, Required: true, Help: "a host, or role@environment"}},
}

var encSetSpec = &commandv1.CommandSpec{
	Name:    "enc set",
	Usage:   "enc set <host> <key>=<value>… [--drop-class-parameters] [--dry-run] [-- reason]",
	Summary: "Change keys of a host's ENC file and commit.",
	Help: "Keys: environment, role, state (active | spare | decommissioned), fqdn, ipv4, ipv6, backends and classes " +
		"(comma-separated lists), parameters.<name>. The value ~ removes a key. Comments and key order in the file are kept. " +
		"A parameter is written as in YAML: 8080 is an integer, true and false are booleans, anything else is a string; " +
		"quote the value to keep it a string (parameters.port='\"8080\"'). " +
		"When the host's classes carry parameters (class → parameters), classes= keeps the parameters of the classes it names; " +
		"removing a class that has parameters needs --drop-class-parameters. " +
		"The change is refused, and nothing committed, if the ENC would have a problem it did not have (a duplicate IP, a backend " +
		"that does not exist …).",
	Example: "enc set web-0001 ipv4=10.0.1.11 parameters.ntp_server=ntp2.example.com parameters.workers=16 -- renumbered rack 4",
	Args: []*commandv1.ArgSpec{
		{Name: "host", Type: commandv1.ArgType_ARG_TYPE_HOST, Required: true, Help: "the host"},
		{Name: "sets", Type: commandv1.ArgType_ARG_TYPE_KEY_VALUE, Required: true, Variadic: true, Help: "key=value, one or more"},
	},
	Flags: []*commandv1.FlagSpec{
		{Name: "drop-class-parameters", Type: commandv1.ArgType_ARG_TYPE_BOOL, Help: "let classes= remove classes that have parameters, with them"},
	},
	SupportsDryRun: true,
	Mutating:       true,
}

var encLogSpec = &commandv1.CommandSpec{
	Name:    "enc log",
	Usage:   "enc log [n]",
	Summary: "The last n commits of the ENC (default 10).",
	Example: "enc log 5",
	Args:    []*commandv1.ArgSpec{{Name: "n", Type: commandv1.ArgType_ARG_TYPE_INT, Min: 1, Max: 100, Help: "how many commits"}},
}

var encDiffSpec = &commandv1.CommandSpec{
	Name:    "enc diff",
	Usage:   "enc diff <rev>",
	Summary: "What one commit of the ENC changed.",
	Example: "enc diff 3fa9c1e",
	Args:    []*commandv1.ArgSpec{{Name: "rev", Type: commandv1.ArgType_ARG_TYPE_STRING, Required: true, Help: "a commit (4 to 40 hex digits) or HEAD~n"}},
}

func (s *Service) encGet(ctx context.Context, job *command.Job) error {
	what := job.Arg("what")
	inv, probs, err := s.current(ctx)
	if err != nil {
		return err
	}
	head := s.repo.Head().String()[:12]
	note := ""
	if len(probs) > 0 {
		note = fmt.Sprintf("\n(the ENC has %d problem(s) at this revision; `enc log` shows who changed it last)", len(probs))
	}
	if role, env, ok := strings.Cut(what, "@"); ok {
		e := inv.Envs[env]
		if e == nil {
			return command.UserErrorf("unknown environment %q (environments: %s)", env, strings.Join(inv.EnvNames(), ", "))
		}
		if e.Roles[role] == nil {
			return command.UserErrorf("environment %s has no role %q", env, role)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s@%s at %s: backends %s, classes %s\n", role, env, head, listOr(e.Roles[role].Backends), listOr(e.Roles[role].Classes))
		for svc, roles := range e.Pins {
			if v, ok := roles[role]; ok {
				fmt.Fprintf(&b, "pin: %s %s\n", svc, nonEmpty(v, "(not pinned)"))
			}
		}
		hosts := inv.HostsOf(role, env)
		fmt.Fprintf(&b, "%d active host(s):\n", len(hosts))
		for _, h := range hosts {
			fmt.Fprintf(&b, "  %-20s %-15s %s\n", h.Name, h.IPv4, strings.Join(h.Backends, ","))
		}
		return job.Done(ctx, b.String()+note)
	}
	if !enc.ValidHostName(what) {
		return command.UserErrorf("%q is neither a host name nor role@environment", what)
	}
	h := inv.Hosts[what]
	if h == nil {
		return command.UserErrorf("%s is not in the inventory", what)
	}
	t, err := s.repo.TreeAt(s.repo.Head())
	if err != nil {
		return err
	}
	file, err := t.ReadFile(enc.HostPath(what))
	if err != nil {
		return err
	}
	answer, err := inv.ClassifyHost(h)
	if err != nil {
		answer = []byte(err.Error() + "\n")
	}
	return job.Done(ctx, fmt.Sprintf("%s at %s:\n```\n%s```\nPuppet gets:\n```\n%s```%s", enc.HostPath(what), head, file, answer, note))
}

func listOr(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// parseSets splits the comma-joined variadic key=value words back into
// sets; a word without "=" continues the previous value's list
// ("backends=www,api"), and so does any word while the previous value has
// a quote open (parameters.motd="hello, world").
func parseSets(raw string) ([]enc.Set, error) {
	var words []string
	for _, w := range strings.Split(raw, ",") {
		if len(words) > 0 && (!strings.Contains(w, "=") || quoteOpen(words[len(words)-1])) {
			words[len(words)-1] += "," + w
			continue
		}
		words = append(words, w)
	}
	var sets []enc.Set
	for _, w := range words {
		st, err := enc.ParseSet(w)
		if err != nil {
			return nil, err
		}
		sets = append(sets, st)
	}
	return sets, nil
}

// quoteOpen reports whether the value of key=value starts a quote it does
// not end.
func quoteOpen(kv string) bool {
	_, v, _ := strings.Cut(kv, "=")
	if v == "" || (v[0] != '"' && v[0] != '\'') {
		return false
	}
	return len(v) == 1 || v[len(v)-1] != v[0] || (v[0] == '"' && strings.HasSuffix(v, `\"`) && !strings.HasSuffix(v, `\\"`))
}

func (s *Service) encSet(ctx context.Context, job *command.Job) error {
	host := job.Arg("host")
	sets, err := parseSets(job.Arg("sets"))
	if err != nil {
		return command.UserError(err)
	}
	opts := enc.ApplyOptions{DropClassParameters: job.Flag("drop-class-parameters") == "true"}
	var before, after []byte
	var dropped []string
	e := func(inv *enc.Inventory, t *gitrepo.Tree) ([]gitrepo.Change, error) {
		if inv.Hosts[host] == nil {
			return nil, command.UserErrorf("%s is not in the inventory; nothing was changed", host)
		}
		data, err := t.ReadFile(enc.HostPath(host))
		if err != nil {
			return nil, err
		}
		d, err := enc.ParseDocument(data)
		if err != nil {
			return nil, command.UserErrorf("%s: %v", enc.HostPath(host), err)
		}
		dropped, err = d.Apply(opts, sets...)
		if errors.Is(err, enc.ErrDropsClassParameters) {
			return nil, command.UserErrorf("%s: %v. Name those classes to keep them, or add --drop-class-parameters to remove them with their parameters; nothing was changed",
				enc.HostPath(host), err)
		}
		if err != nil {
			return nil, command.UserErrorf("%s: %v", enc.HostPath(host), err)
		}
		out := d.Bytes()
		before, after = data, out
		if string(out) == string(data) {
			return nil, nil
		}
		return []gitrepo.Change{{Path: enc.HostPath(host), Data: out}}, nil
	}
	var words []string
	for _, st := range sets {
		words = append(words, st.Key+"="+st.Value)
	}
	subject := fmt.Sprintf("enc set %s %s", host, strings.Join(words, " "))
	if job.DryRun() {
		inv, _, err := s.current(ctx)
		if err != nil {
			return err
		}
		t, err := s.repo.TreeAt(s.repo.Head())
		if err != nil {
			return err
		}
		if _, err := e(inv, t); err != nil {
			return err
		}
		if string(before) == string(after) {
			return job.Done(ctx, fmt.Sprintf("Dry run: %s already says that; nothing would change.", enc.HostPath(host)))
		}
		return job.Done(ctx, fmt.Sprintf("Dry run: %s would become:\n```\n%s```%s", enc.HostPath(host), after, setNotes(sets, dropped)))
	}
	res, err := s.commit(ctx, job, subject, e)
	if err != nil {
		return err
	}
	if res.NoOp {
		return job.Done(ctx, fmt.Sprintf("%s already says that; nothing committed.", enc.HostPath(host)))
	}
	return job.Done(ctx, fmt.Sprintf("Committed %s: %s%s.%s", res.Commit.String()[:12], subject, retried(res), setNotes(sets, dropped)))
}

// setNotes says what is easy to miss in an enc set: the parameters that
// became numbers or booleans rather than text, and the classes removed
// with their parameters.
func setNotes(sets []enc.Set, dropped []string) string {
	var typed []string
	for _, st := range sets {
		if t := st.Type(); t == "integer" || t == "boolean" {
			typed = append(typed, strings.TrimPrefix(st.Key, "parameters.")+" is "+article(t))
		}
	}
	var b strings.Builder
	if len(typed) > 0 {
		fmt.Fprintf(&b, "\nTyped: %s (quote a value, key='\"8080\"', to keep it a string).", strings.Join(typed, ", "))
	}
	if len(dropped) > 0 {
		fmt.Fprintf(&b, "\nRemoved with their parameters: %s.", strings.Join(dropped, ", "))
	}
	return b.String()
}

func article(t string) string {
	if t == "integer" {
		return "an integer"
	}
	return "a " + t
}

func retried(res gitrepo.Result) string {
	if res.Attempts > 1 {
		return fmt.Sprintf(" (re-applied on a newer head: someone pushed meanwhile, %d attempts)", res.Attempts)
	}
	return ""
}

func (s *Service) encLog(ctx context.Context, job *command.Job) error {
	n := 10
	if v := job.Arg("n"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	if _, err := s.repo.Fetch(ctx); err != nil {
		return err
	}
	log, err := s.repo.Log(n)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, c := range log {
		co := ""
		if i := strings.Index(c.Message, "Co-authored-by: "); i >= 0 {
			line, _, _ := strings.Cut(c.Message[i+len("Co-authored-by: "):], "\n")
			name, _, _ := strings.Cut(line, " <")
			co = " with " + name
		}
		fmt.Fprintf(&b, "%s  %s  %s%s  %s\n", c.Hash.String()[:12], c.When.UTC().Format("2006-01-02 15:04"), c.Author.Name, co, c.Subject)
	}
	return job.Done(ctx, "```\n"+b.String()+"```")
}

var revRe = regexp.MustCompile(`^([0-9a-fA-F]{4,40}|HEAD(~[0-9]{1,4})?)$`)

func (s *Service) encDiff(ctx context.Context, job *command.Job) error {
	rev := job.Arg("rev")
	if !revRe.MatchString(rev) {
		return command.UserErrorf("%q is not a revision (4 to 40 hex digits, or HEAD~n)", rev)
	}
	if _, err := s.repo.Fetch(ctx); err != nil {
		return err
	}
	h, err := s.repo.Resolve(rev)
	if errors.Is(err, gitrepo.ErrNotFound) {
		return command.UserErrorf("no commit %s in the ENC", rev)
	}
	if err != nil {
		return err
	}
	info, diff, err := s.repo.Diff(h)
	if err != nil {
		return err
	}
	const max = 3500
	if len(diff) > max {
		diff = diff[:max] + "\n… (cut; run git show " + h.String()[:12] + " for all of it)\n"
	}
	return job.Done(ctx, fmt.Sprintf("%s %s — %s\n```diff\n%s```", h.String()[:12], info.Author.Name, info.Subject, diff))
}
