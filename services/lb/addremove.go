package lb

import (
	"context"
	"fmt"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
)

var addSpec = &commandv1.CommandSpec{
	Name:    "lb add",
	Usage:   "lb add <host> <backend> [--dry-run] [-- reason]",
	Summary: "Put a server into service (ready) on every HAProxy instance of its environment.",
	Help: "Sets the server ready in the backend on every instance and keeps that as its desired state, " +
		"so reconciliation restores it after an HAProxy reload or restart. The reason is shown by lb status." + safetyHelp,
	Example:        "lb add web3 www -- kernel updated",
	Args:           []*commandv1.ArgSpec{hostArg, backendArg(true, "the HAProxy backend")},
	Mutating:       true,
	SupportsDryRun: true,
	Resumable:      true,
	TextName:       "reason",
}

var removeSpec = &commandv1.CommandSpec{
	Name:    "lb remove",
	Usage:   "lb remove <host> [backend] [--force] [--dry-run] [-- reason]",
	Summary: "Take a server out of service at once (maint) on every HAProxy instance.",
	Help: "Puts the server into maintenance in the backend (or in every backend it serves when none is named) on every " +
		"instance, without waiting for its sessions: use lb drain --wait for that." + safetyHelp,
	Example:        "lb remove web3 www -- disk failing",
	Args:           []*commandv1.ArgSpec{hostArg, backendArg(false, "the HAProxy backend (default: every backend the host is in)")},
	Flags:          []*commandv1.FlagSpec{forceFlag},
	Mutating:       true,
	SupportsDryRun: true,
	Resumable:      true,
	TextName:       "reason",
}

func (s *Service) add(ctx context.Context, job *command.Job) error {
	return s.setState(ctx, job, serverOp{verb: "add", hosts: []string{job.Arg("host")}, backend: job.Arg("backend"), state: haproxy.StateReady}, "In service (ready)")
}

func (s *Service) remove(ctx context.Context, job *command.Job) error {
	return s.setState(ctx, job, serverOp{verb: "remove", hosts: []string{job.Arg("host")}, backend: job.Arg("backend"), state: haproxy.StateMaint}, "Out of service (maint)")
}

// setState is lb add, lb remove and lb weight: plan, show or do, answer.
func (s *Service) setState(ctx context.Context, job *command.Job, op serverOp, done string) error {
	p, err := s.plan(ctx, job, op)
	if err != nil {
		return err
	}
	if job.DryRun() {
		return job.Done(ctx, dryRunText(p))
	}
	a, err := s.execute(ctx, job, p)
	if err != nil {
		return err
	}
	text, err := s.answer(job, p, a, done+": "+p.what()+".")
	if err != nil {
		return err
	}
	return job.Done(ctx, text)
}

func dryRunText(p *plan) string {
	text := "Dry run: would set " + p.what() + "."
	for _, w := range p.warnings {
		text += "\n⚠ " + w
	}
	if u := p.view.unreachableText(); u != "" {
		text += fmt.Sprintf("\nNot answering now (the change would be retried there by reconciliation): %s", u)
	}
	return text + "\nNothing was changed."
}
