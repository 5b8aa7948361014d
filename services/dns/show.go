package dns

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

var showSpec = &commandv1.CommandSpec{
	Name:    "dns show",
	Usage:   "dns show <name>",
	Summary: "Show the records at a name: what DNS holds, what the inventory wants, and who owns it.",
	Help:    "The name may be absolute or not (example.com is example.com.); it must be in a configured zone.",
	Example: "dns show web1.prod.example.com",
	Args:    []*commandv1.ArgSpec{{Name: "name", Type: commandv1.ArgType_ARG_TYPE_STRING, Required: true, Help: "a DNS name"}},
}

func (s *Service) showCmd(ctx context.Context, job *command.Job) error {
	name := zone.Canonical(job.Arg("name"))
	if why := zone.NameProblem(name); why != "" {
		return command.UserErrorf("%q is not a DNS name: %s", job.Arg("name"), why)
	}
	z := s.zoneOf(name)
	if z == "" {
		return command.UserErrorf("%s is outside the zones switchboard manages (%s)", name, strings.Join(s.zones, ", "))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	snap, err := s.provider.Read(ctx, z)
	if err != nil {
		return providerErr("read zone "+z, err)
	}
	var have []zone.Record
	marked := false
	for _, r := range snap.Records {
		if r.Name == name {
			have = append(have, r)
		}
		if r.Name == markerPrefix+name && r.Data == s.markerData() {
			marked = true
		}
	}
	var want []zone.Record
	inv, err := inventory.Load(ctx, s.invKV)
	switch {
	case errors.Is(err, inventory.ErrEmpty):
	case err != nil:
		return fmt.Errorf("load inventory: %w", err)
	default:
		d, _ := s.build(inv)
		for k, rs := range d.sets[z] {
			if k.Name == name {
				want = append(want, rs...)
			}
		}
	}
	zone.SortRecords(have)
	zone.SortRecords(want)
	owner := "not owned by switchboard (left alone)"
	switch {
	case marked:
		owner = "owned by switchboard (ownership record " + markerPrefix + name + ")"
	case s.ownedByPattern(name):
		owner = "owned by switchboard (dns.owned_names)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s in zone %s (serial %d) — %s\n", name, z, snap.Serial, owner)
	b.WriteString("in DNS:\n")
	writeRecords(&b, have)
	b.WriteString("the inventory wants:\n")
	writeRecords(&b, want)
	return job.Done(ctx, b.String())
}

func writeRecords(b *strings.Builder, rs []zone.Record) {
	if len(rs) == 0 {
		b.WriteString("  (nothing)\n")
	}
	for _, r := range rs {
		fmt.Fprintf(b, "  %d %s %s\n", r.TTL, r.Type, r.Data)
	}
}

var plansSpec = &commandv1.CommandSpec{
	Name:    "dns plans",
	Usage:   "dns plans",
	Summary: "List the DNS plans that have not expired, newest first.",
	Example: "dns plans",
}

func (s *Service) plansCmd(ctx context.Context, job *command.Job) error {
	ps, err := s.plans.list(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	var b strings.Builder
	n := 0
	for _, p := range ps {
		if p.Status == StatusOpen && !now.Before(p.ExpiresAt) {
			continue
		}
		if n++; n > 20 {
			fmt.Fprintf(&b, "… and %d more\n", len(ps)-20)
			break
		}
		state := p.Status
		if p.Status == StatusOpen {
			state = "open, expires in " + p.ExpiresAt.Sub(now).Round(time.Minute).String()
		} else if p.AppliedBy != nil {
			state += " by " + p.AppliedBy.String()
		}
		fmt.Fprintf(&b, "%s  %s by %s, %s ago — %s [%s]\n", p.ID, plural(p.Count(), "change"), p.Planner, now.Sub(p.CreatedAt).Round(time.Second), summary(p), state)
	}
	if n == 0 {
		return job.Done(ctx, "no DNS plans — `dns plan` makes one")
	}
	return job.Done(ctx, b.String())
}
