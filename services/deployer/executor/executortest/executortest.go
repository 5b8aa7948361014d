// Package executortest is the conformance suite every executor passes,
// fakes included: one result per host, Puppet's exit codes, the per-host
// timeout, cancellation, output.
//
// Hosts are named after what they should do, so each backend's test rig
// can make them do it: Behaviour(name) says the exit code and how long to
// take, and Script is a POSIX shell script that does it given the host name
// as $1 (for executors that run commands).
//
// ParallelLimit is for the executors with a parallelism limit (exec, ssh):
// it checks that no more hosts than the limit run at once.
package executortest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/deployer/executor"
)

// Behaviour of a host in the suite: "ok-*" exits 0, "changes-*" 2,
// "fail4-*" 4, "fail6-*" 6, "slow-*" sleeps 30s then exits 0.
func Behaviour(host string) (code int, sleep time.Duration) {
	switch {
	case strings.HasPrefix(host, "changes-"):
		return 2, 0
	case strings.HasPrefix(host, "fail4-"):
		return 4, 0
	case strings.HasPrefix(host, "fail6-"):
		return 6, 0
	case strings.HasPrefix(host, "slow-"):
		return 0, 30 * time.Second
	}
	return 0, 0
}

// Script does Behaviour($1) and prints "hello from $1".
const Script = `echo "hello from $1"; case "$1" in changes-*) exit 2;; fail4-*) exit 4;; fail6-*) exit 6;; slow-*) sleep 30; exit 0;; esac; exit 0`

// Run runs the suite against executors made by newExec.
func Run(t *testing.T, newExec func(t *testing.T) executor.Executor) {
	t.Run("every host gets one result with Puppet's exit codes", func(t *testing.T) {
		ex := newExec(t)
		hosts := targets("ok-1", "changes-1", "fail4-1", "fail6-1", "ok-2")
		got := collect(t, ex.Run(context.Background(), hosts, executor.Action{Timeout: 20 * time.Second}), len(hosts))
		want := map[string]executor.Status{"ok-1": executor.OK, "changes-1": executor.OK, "fail4-1": executor.Failed, "fail6-1": executor.Failed, "ok-2": executor.OK}
		codes := map[string]int{"ok-1": 0, "changes-1": 2, "fail4-1": 4, "fail6-1": 6, "ok-2": 0}
		for h, st := range want {
			r, ok := got[h]
			if !ok {
				t.Fatalf("no result for %s (got %v)", h, got)
			}
			if r.Status != st || r.ExitCode != codes[h] {
				t.Errorf("%s: status %s exit %d (%s), want %s exit %d", h, r.Status, r.ExitCode, r.Detail, st, codes[h])
			}
			if !strings.Contains(r.Output, "hello from "+h) {
				t.Errorf("%s: output %q does not carry the host's output", h, r.Output)
			}
		}
	})
	t.Run("a host slower than the per-host timeout times out, the others do not wait for it", func(t *testing.T) {
		ex := newExec(t)
		hosts := targets("ok-1", "slow-1")
		got := collect(t, ex.Run(context.Background(), hosts, executor.Action{Timeout: 1500 * time.Millisecond}), 2)
		if got["slow-1"].Status != executor.TimedOut {
			t.Errorf("slow-1: %s (%s), want timed out", got["slow-1"].Status, got["slow-1"].Detail)
		}
		if got["ok-1"].Status != executor.OK {
			t.Errorf("ok-1: %s (%s), want ok", got["ok-1"].Status, got["ok-1"].Detail)
		}
	})
	t.Run("cancelling stops the runs and closes the stream", func(t *testing.T) {
		ex := newExec(t)
		ctx, cancel := context.WithCancel(context.Background())
		hosts := targets("slow-1", "slow-2")
		ch := ex.Run(ctx, hosts, executor.Action{Timeout: time.Minute})
		time.AfterFunc(700*time.Millisecond, cancel)
		got := collect(t, ch, 2)
		for _, h := range []string{"slow-1", "slow-2"} {
			if got[h].Status != executor.Cancelled {
				t.Errorf("%s: %s (%s), want cancelled", h, got[h].Status, got[h].Detail)
			}
		}
	})
	t.Run("tags that are not Puppet tags are refused before anything runs", func(t *testing.T) {
		ex := newExec(t)
		got := collect(t, ex.Run(context.Background(), targets("ok-1"), executor.Action{Tags: []string{"x; rm -rf /"}, Timeout: 10 * time.Second}), 1)
		if got["ok-1"].Status == executor.OK {
			t.Errorf("a tag with a shell metacharacter ran: %+v", got["ok-1"])
		}
	})
}

func targets(names ...string) []executor.Host {
	out := make([]executor.Host, len(names))
	for i, n := range names {
		out[i] = executor.Host{Name: n, Address: "127.0.0.1", FQDN: n + ".test"}
	}
	return out
}

// collect reads the stream until it closes (or 40s pass) and checks each
// host has exactly one result.
func collect(t *testing.T, ch <-chan executor.Result, n int) map[string]executor.Result {
	t.Helper()
	got := map[string]executor.Result{}
	deadline := time.After(40 * time.Second)
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				if len(got) != n {
					t.Fatalf("stream closed with %d results, want %d: %v", len(got), n, got)
				}
				return got
			}
			if _, dup := got[r.Host]; dup {
				t.Fatalf("two results for %s", r.Host)
			}
			got[r.Host] = r
		case <-deadline:
			t.Fatalf("stream not closed after 40s; results so far: %v", got)
		}
	}
}

// Itoa is strconv.Itoa, for rigs.
func Itoa(n int) string { return strconv.Itoa(n) }
