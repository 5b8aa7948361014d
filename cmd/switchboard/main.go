// Command switchboard runs switchboard: every service in one process with an
// embedded NATS server (no arguments), chosen services against an external
// NATS cluster (serve), or the command-line chat client (say).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchboard-ops/switchboard/kit/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `switchboard — ChatOps for small operations teams

usage:
  switchboard [run] [--config FILE]          everything in one process: embedded NATS, every service, web console
  switchboard serve SERVICE… --nats URL [--creds FILE] [--config FILE]
                                             chosen services against an external NATS cluster (services: chat)
  switchboard say [--channel C] [--json] [--timeout D] [--nats URL] [--creds FILE] [--tls-ca FILE] TEXT…
                                             send a command as you would in chat and follow its thread
  switchboard doctor [--nats URL] [--creds FILE] [--as SERVICE]
                                             check the connection, permissions, streams, buckets and services
  switchboard enc classify [--repo DIR] HOST print the Puppet ENC answer for HOST from a checkout (external_nodes)
  switchboard nkeys --out DIR                NATS nkey seeds for every service and the nkeys.conf of deploy/nats
  switchboard version

exit codes of say: 0 success, 1 command failed, 2 parse or usage error, 3 denied, 4 no service answers
`

// run is main without the process: tests call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	sub := "run"
	rest := args[1:]
	if len(rest) > 0 && !isFlag(rest[0]) {
		sub, rest = rest[0], rest[1:]
	}
	var err error
	switch sub {
	case "run":
		err = runAll(ctx, rest, getenv, stdout, stderr)
	case "serve":
		err = serve(ctx, rest, getenv, stdout, stderr)
	case "say":
		return say(ctx, rest, getenv, stdout, stderr)
	case "enc":
		return encCmd(rest, stdout, stderr)
	case "nkeys":
		err = nkeysCmd(rest, stdout)
	case "doctor":
		return doctor(ctx, rest, getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "switchboard", version.String())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "switchboard: unknown command %q\n\n%s", sub, usage)
		return 2
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "switchboard %s: %v\n\n%s", sub, err, usage)
			return 2
		}
		fmt.Fprintf(stderr, "switchboard %s: %v\n", sub, err)
		return 1
	}
	return 0
}

type usageError struct{ error }

func isFlag(s string) bool { return len(s) > 0 && s[0] == '-' }
