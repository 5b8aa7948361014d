// Package exec is the executor that runs a local command per host, from an
// argv template (never a shell string): the embedded default, and the way
// in for teams with their own tooling. It imports nothing from switchboard.
package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	osexec "os/exec"
	"syscall"
	"time"

	"github.com/switchboard-ops/switchboard/services/deployer/executor"
)

// Config configures the exec executor.
type Config struct {
	// Command is the argv template (see executor.Expand), e.g.
	// ["ssh", "{address}", "sudo", "puppet", "agent", "--test", "--tags", "{tags}"].
	Command []string `yaml:"command"`
	// Parallel is how many hosts run at once (default 10).
	Parallel int `yaml:"parallel"`
	// Timeout per host (default 30m).
	Timeout time.Duration `yaml:"timeout"`
	// PuppetExitCodes: read exit codes as Puppet's --detailed-exitcodes
	// (0 and 2 succeed). When false, only 0 succeeds.
	PuppetExitCodes bool `yaml:"puppet_exit_codes"`
}

// Executor runs Config.Command per host.
type Executor struct{ cfg Config }

var _ executor.Executor = (*Executor)(nil)

// New checks the configuration and returns the executor.
func New(cfg Config) (*Executor, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, errors.New("exec executor: command is empty")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Minute
	}
	// Resolve the program once rather than searching PATH for every host.
	if p, err := osexec.LookPath(cfg.Command[0]); err == nil {
		cfg.Command = append([]string{p}, cfg.Command[1:]...)
	}
	return &Executor{cfg: cfg}, nil
}

// Run runs the command for every host, at most Parallel at a time.
func (e *Executor) Run(ctx context.Context, hosts []executor.Host, a executor.Action) <-chan executor.Result {
	timeout := e.cfg.Timeout
	if a.Timeout > 0 {
		timeout = a.Timeout
	}
	if err := executor.CheckTags(a.Tags); err != nil {
		return executor.Parallel(ctx, hosts, len(hosts), func(context.Context, executor.Host) executor.Result {
			return executor.Result{Status: executor.Failed, ExitCode: -1, Detail: err.Error()}
		})
	}
	return executor.Parallel(ctx, hosts, e.cfg.Parallel, func(ctx context.Context, h executor.Host) executor.Result {
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		argv := executor.Expand(e.cfg.Command, h, a)
		cmd := osexec.CommandContext(hctx, argv[0], argv[1:]...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		// Kill the whole process group on timeout or cancel, so that a
		// wrapper script's children do not outlive it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 2 * time.Second
		err := cmd.Run()
		res := executor.Result{ExitCode: -1, Output: executor.Tail(out.Bytes(), 4096)}
		var ee *osexec.ExitError
		switch {
		case hctx.Err() != nil && ctx.Err() != nil:
			res.Status, res.Detail = executor.Cancelled, "cancelled"
		case hctx.Err() != nil:
			res.Status, res.Detail = executor.TimedOut, fmt.Sprintf("no result within %s", timeout)
		case err == nil:
			res.ExitCode = 0
			res.Status, res.Detail = e.status(0)
		case errors.As(err, &ee) && ee.ExitCode() >= 0:
			res.ExitCode = ee.ExitCode()
			res.Status, res.Detail = e.status(res.ExitCode)
		default:
			res.Status, res.Detail = executor.Unreachable, fmt.Sprintf("could not run %s: %v", argv[0], err)
		}
		return res
	})
}

func (e *Executor) status(code int) (executor.Status, string) {
	if e.cfg.PuppetExitCodes {
		return executor.Puppet(code)
	}
	if code == 0 {
		return executor.OK, "exit code 0"
	}
	return executor.Failed, fmt.Sprintf("exit code %d", code)
}
