package lb

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
)

// inService reports whether a server takes traffic: ready, passing its
// checks and with a weight.
func inService(sv haproxy.Server) bool {
	return sv.State == haproxy.StateReady && sv.Up() && sv.Weight > 0
}

// backendServers is, for one backend, every server name and whether it is in
// service on every reachable instance (a server out on any instance counts
// as out: that instance's traffic does not reach it).
func backendServers(v *view, backend string) (all []string, ready map[string]bool) {
	ready = map[string]bool{}
	seen := map[string]bool{}
	for _, n := range v.reachable() {
		for _, sv := range v.snaps[n].Servers {
			if sv.Backend != backend {
				continue
			}
			if !seen[sv.Name] {
				seen[sv.Name] = true
				all = append(all, sv.Name)
				ready[sv.Name] = inService(sv)
				continue
			}
			ready[sv.Name] = ready[sv.Name] && inService(sv)
		}
	}
	sort.Strings(all)
	return all, ready
}

// checkSafety refuses to take targets out of a backend when that would
// leave it without a server in service, or with more than maxOut (a
// fraction) of its servers out of service. Targets already out change
// nothing and pass. The error is a sentence for the person.
//
// The fraction is of all the backend's servers, counting those already out
// (drain, maint, weight 0, failing checks), not of the ready servers a
// command finds: a limit per command on the ready ones would let a series
// of commands (a person's, then the watcher's) take a backend down to its
// last server one allowed step at a time. README.md says so to operators.
func checkSafety(backend string, all []string, ready map[string]bool, targets []string, maxOut float64) error {
	var taking []string
	for _, t := range targets {
		if ready[t] {
			taking = append(taking, t)
		}
	}
	if len(taking) == 0 {
		return nil
	}
	var left []string
	for _, s := range all {
		if ready[s] && !slices.Contains(taking, s) {
			left = append(left, s)
		}
	}
	if len(left) == 0 {
		return fmt.Errorf("taking %s out would leave backend %s with no server in service (the last ready server%s)",
			strings.Join(taking, ", "), backend, plural(len(taking)))
	}
	out := len(all) - len(left)
	allowed := int(math.Floor(maxOut*float64(len(all)) + 1e-9))
	if out > allowed {
		already := ""
		if n := out - len(taking); n > 0 {
			already = fmt.Sprintf(", counting the %d already out", n)
		}
		return fmt.Errorf("taking %s out would leave %d of %d servers of backend %s out of service; the limit is %d (%.0f%%%s)",
			strings.Join(taking, ", "), out, len(all), backend, allowed, maxOut*100, already)
	}
	return nil
}
