package lb

import (
	"context"
	"strconv"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
)

var weightSpec = &commandv1.CommandSpec{
	Name:    "lb weight",
	Usage:   "lb weight <host> <backend> <0-256> [--force] [--dry-run] [-- reason]",
	Summary: "Set a server's weight on every HAProxy instance of its environment.",
	Help: "Sets the weight HAProxy balances with (0 takes the server out of rotation, and counts as out of service for " +
		"the safety checks)." + safetyHelp,
	Example: "lb weight web3 www 50 -- warming the cache",
	Args: []*commandv1.ArgSpec{hostArg, backendArg(true, "the HAProxy backend"),
		{Name: "weight", Type: commandv1.ArgType_ARG_TYPE_INT, Required: true, Min: 0, Max: 256, Help: "0 to 256"}},
	Flags:          []*commandv1.FlagSpec{forceFlag},
	Mutating:       true,
	SupportsDryRun: true,
	Resumable:      true,
	TextName:       "reason",
}

func (s *Service) weight(ctx context.Context, job *command.Job) error {
	w, err := strconv.Atoi(job.Arg("weight"))
	if err != nil || w < 0 || w > 256 {
		return command.UserErrorf("weight %q is not a number from 0 to 256", job.Arg("weight"))
	}
	return s.setState(ctx, job, serverOp{verb: "weight", hosts: []string{job.Arg("host")}, backend: job.Arg("backend"), weight: &w}, "Weight set")
}
