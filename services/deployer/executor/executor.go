// Package executor is the contract between the deployer and the tools that
// run Puppet on hosts (Rundeck, SSH, a local command): a small interface,
// the types it speaks, and the meaning of Puppet's exit codes. The
// implementations live in its subpackages; executortest holds the
// conformance suite every one of them passes. It imports nothing from
// switchboard.
package executor

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Host is one target of a run.
type Host struct {
	// Name is the inventory name ("web-0001"); results carry it back.
	Name string
	// Address to reach it at: an IP address or a DNS name.
	Address string
	// FQDN when the inventory has one.
	FQDN string
}

// Action is what to run on each host.
type Action struct {
	// Tags limit the Puppet run (puppet agent --tags a,b); empty: all.
	Tags []string
	// Service and Version being deployed, for templates and Rundeck options.
	Service string
	Version string
	// Environment and Role of the hosts.
	Environment string
	Role        string
	// Timeout per host (0: the executor's default); for Rundeck, which
	// runs all the hosts as one execution, for the whole execution.
	Timeout time.Duration
}

// Status is a host's outcome.
type Status int

const (
	// OK: the run succeeded (Puppet 0: no changes, 2: changes applied).
	OK Status = iota + 1
	// Failed: the run reported failures (Puppet 4 or 6, or any other code).
	Failed
	// Unreachable: the host could not be reached or the tool could not start the run.
	Unreachable
	// TimedOut: the run did not end within the per-host timeout.
	TimedOut
	// Cancelled: the run was stopped before the host finished.
	Cancelled
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Failed:
		return "failed"
	case Unreachable:
		return "unreachable"
	case TimedOut:
		return "timed out"
	case Cancelled:
		return "cancelled"
	}
	return "unknown"
}

// Result is one host's outcome. Every host of a Run gets exactly one.
type Result struct {
	Host     string
	Status   Status
	ExitCode int // -1 when there is none
	// Detail says what happened in a few words ("changes applied").
	Detail string
	// Output is the tail of what the run printed.
	Output   string
	Duration time.Duration
}

// Executor runs an action on hosts and streams one result per host on the
// returned channel, which it closes when every host has one. Cancelling ctx
// stops the runs in flight (they end as Cancelled).
type Executor interface {
	Run(ctx context.Context, hosts []Host, a Action) <-chan Result
}

// Puppet maps an exit code of `puppet agent --test` (which implies
// --detailed-exitcodes) to a status and a few words.
func Puppet(code int) (Status, string) {
	switch code {
	case 0:
		return OK, "no changes"
	case 2:
		return OK, "changes applied"
	case 4:
		return Failed, "failures"
	case 6:
		return Failed, "changes applied with failures"
	case 1:
		return Failed, "run failed (or another run is in progress)"
	}
	return Failed, fmt.Sprintf("exit code %d", code)
}

var tagRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_:.-]*$`)

// CheckTags refuses tags that are not Puppet class or tag names, so that
// nothing a person typed can become an option or a shell word.
func CheckTags(tags []string) error {
	for _, t := range tags {
		if !tagRe.MatchString(t) {
			return fmt.Errorf("%q is not a Puppet tag (letters, digits, _, :, ., -)", t)
		}
	}
	return nil
}

// Expand builds an argv from a template for one host. Each element may
// hold placeholders: {host}, {address}, {fqdn}, {tags} (comma-joined),
// {service}, {version}, {environment}, {role}. An element that is exactly
// "{tags}" is dropped when there are no tags, together with the flag
// before it ("--tags"), so one template serves both cases. Values are
// substituted inside single argv elements: no shell ever parses them.
func Expand(tmpl []string, h Host, a Action) []string {
	r := replacer(h, a)
	out := make([]string, 0, len(tmpl))
	for _, el := range tmpl {
		if el == "{tags}" && len(a.Tags) == 0 {
			if n := len(out); n > 0 && strings.HasPrefix(out[n-1], "-") {
				out = out[:n-1]
			}
			continue
		}
		out = append(out, r.Replace(el))
	}
	return out
}

// ExpandString fills the placeholders of one string (Rundeck options).
func ExpandString(s string, h Host, a Action) string { return replacer(h, a).Replace(s) }

func replacer(h Host, a Action) *strings.Replacer {
	return strings.NewReplacer("{host}", h.Name, "{address}", h.Address, "{fqdn}", h.FQDN,
		"{tags}", strings.Join(a.Tags, ","), "{service}", a.Service, "{version}", a.Version,
		"{environment}", a.Environment, "{role}", a.Role)
}

// Tail keeps the last n bytes of output, on a line boundary when it can.
func Tail(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	b = b[len(b)-n:]
	if i := strings.IndexByte(string(b), '\n'); i >= 0 && i < len(b)-1 {
		b = b[i+1:]
	}
	return "…" + string(b)
}

// Parallel runs f for every host with at most limit at a time and streams
// the results; it is the fan-out the SSH and exec executors share.
func Parallel(ctx context.Context, hosts []Host, limit int, f func(ctx context.Context, h Host) Result) <-chan Result {
	if limit <= 0 {
		limit = 10
	}
	out := make(chan Result, len(hosts))
	go func() {
		defer close(out)
		sem := make(chan struct{}, limit)
		done := make(chan struct{})
		n := 0
		for _, h := range hosts {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				out <- Result{Host: h.Name, Status: Cancelled, ExitCode: -1, Detail: "not started: cancelled"}
				continue
			}
			n++
			go func(h Host) {
				defer func() { <-sem; done <- struct{}{} }()
				start := time.Now()
				r := f(ctx, h)
				r.Host = h.Name
				if r.Duration == 0 {
					r.Duration = time.Since(start)
				}
				out <- r
			}(h)
		}
		for ; n > 0; n-- {
			<-done
		}
	}()
	return out
}
