package lb

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
)

var statusSpec = &commandv1.CommandSpec{
	Name:    "lb status",
	Usage:   "lb status [backend|host]",
	Summary: "Each server's state, health, sessions and weight across every HAProxy instance.",
	Help: "One line per server of every backend (or of the backend, or the host, named): its admin state " +
		"(ready, drain, maint), health, current sessions summed over the instances, weight, and the reason and " +
		"author of the last change. Where instances disagree, each instance's value is shown and the note says so. Instances that " +
		"do not answer are listed below the table.",
	Example: "lb status www",
	Args:    []*commandv1.ArgSpec{{Name: "target", Type: commandv1.ArgType_ARG_TYPE_STRING, Help: "a backend or a host name"}},
}

func (s *Service) status(ctx context.Context, job *command.Job) error {
	target := job.Arg("target")
	if len(s.cfg.Environments) == 0 {
		return command.UserErrorf("no HAProxy instances are configured (lb.environments)")
	}
	envs := make([]string, 0, len(s.cfg.Environments))
	for env := range s.cfg.Environments {
		envs = append(envs, env)
	}
	sort.Strings(envs)
	var b strings.Builder
	var notes []string
	found := false
	for _, env := range envs {
		v := s.fleet.view(ctx, env)
		desired, err := s.desired.servers(ctx, env)
		if err != nil {
			return err
		}
		rows := statusRows(v, desired, target)
		if u := v.unreachableText(); u != "" {
			notes = append(notes, fmt.Sprintf("%s: not answering: %s", env, u))
		}
		if len(rows) == 0 {
			continue
		}
		found = true
		fmt.Fprintf(&b, "%s (%s)\n", env, strings.Join(v.names, ", "))
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "BACKEND\tSERVER\tSTATE\tHEALTH\tSESS\tWEIGHT\tNOTE")
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		tw.Flush()
		b.WriteString("\n")
	}
	if !found && target != "" && len(notes) == 0 {
		return command.UserErrorf("%q is neither a backend nor a server on any configured HAProxy instance", target)
	}
	text := strings.TrimRight(b.String(), "\n")
	if len(notes) > 0 {
		text += "\n" + strings.Join(notes, "\n")
	}
	if text == "" {
		text = "No servers."
	}
	return job.DoneWith(&chatv1.ChatPost{Text: text, Blocks: []*chatv1.Block{{Content: &chatv1.Block_Code{Code: text}}}})
}

// statusRows builds the table of one environment.
func statusRows(v *view, desired map[string]entry[desiredServer], target string) [][]string {
	type key struct{ backend, server string }
	per := map[key]map[string]haproxy.Server{}
	var keys []key
	for _, n := range v.reachable() {
		for _, sv := range v.snaps[n].Servers {
			if target != "" && sv.Backend != target && sv.Name != target {
				continue
			}
			k := key{sv.Backend, sv.Name}
			if per[k] == nil {
				per[k] = map[string]haproxy.Server{}
				keys = append(keys, k)
			}
			per[k][n] = sv
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].backend != keys[j].backend {
			return keys[i].backend < keys[j].backend
		}
		return keys[i].server < keys[j].server
	})
	var rows [][]string
	for _, k := range keys {
		byInst := per[k]
		differ := false
		col := func(f func(haproxy.Server) string) string {
			vals := map[string]bool{}
			var parts []string
			for _, n := range v.reachable() {
				if sv, ok := byInst[n]; ok {
					val := f(sv)
					vals[val] = true
					parts = append(parts, n+":"+val)
				}
			}
			if len(vals) == 1 {
				for val := range vals {
					return val
				}
			}
			differ = true
			return strings.Join(parts, " ")
		}
		sessions := 0
		for _, sv := range byInst {
			sessions += sv.Sessions
		}
		note := ""
		if e, ok := desired[serverKey(v.env, k.backend, k.server)]; ok {
			d := e.v
			note = fmt.Sprintf("%s by %s", d.Command, d.By)
			if want := d.String(); want != "" && !desiredHolds(d, byInst) {
				note = "desired " + want + " (" + note + ")"
			}
			if d.Reason != "" {
				note += ": " + d.Reason
			}
			if len(d.Pending) > 0 {
				note += fmt.Sprintf(" (pending on %s)", strings.Join(d.Pending, ", "))
			}
		}
		state := col(func(s haproxy.Server) string { return string(s.State) })
		health := col(func(s haproxy.Server) string {
			if s.CheckStatus != "" && s.Operational != 2 {
				return s.Health() + " " + s.CheckStatus
			}
			return s.Health()
		})
		weight := col(func(s haproxy.Server) string { return fmt.Sprint(s.Weight) })
		if differ {
			// Said in words too: a per-instance value is easy to miss
			// in a long table, and it is what someone must look at.
			note = strings.TrimSuffix("≠ instances disagree; "+note, "; ")
		}
		rows = append(rows, []string{k.backend, k.server, state, health, fmt.Sprint(sessions), weight, note})
	}
	return rows
}

// desiredHolds reports whether every instance has the desired state.
func desiredHolds(d *desiredServer, byInst map[string]haproxy.Server) bool {
	for _, sv := range byInst {
		if len(d.changes(sv)) > 0 {
			return false
		}
	}
	return true
}
