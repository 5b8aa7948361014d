package chat

import (
	"context"
	"fmt"
	"time"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
)

var pingSpec = &commandv1.CommandSpec{
	Name:    "ping",
	Usage:   "ping",
	Summary: "Round trip through a service endpoint and the job store; reports the latency.",
	Help: "ping goes the whole way a real command goes — chat ingress, RBAC, a NATS request to the sys service, " +
		"a job created exactly once, a post back through the CHAT stream — so a pong means the bus, JetStream and the chat all work.",
	Example: "ping",
}

// sysCommands are switchboard's own service commands, served by the chat
// process under the service name "sys".
func (s *Service) sysCommands() []command.Command {
	return []command.Command{{Spec: pingSpec, Run: s.ping}}
}

func (s *Service) ping(_ context.Context, job *command.Job) error {
	lat := "?"
	if t := job.Request().GetSentAt(); t != nil {
		lat = time.Since(t.AsTime()).Round(time.Microsecond).String()
	}
	return job.Done(context.Background(), fmt.Sprintf("pong from sys replica %s — dispatch to job start took %s", s.instance, lat))
}
