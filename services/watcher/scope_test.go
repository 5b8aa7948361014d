package watcher

import (
	"slices"
	"strings"
	"testing"
	"time"

	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"

	"github.com/switchboard-ops/switchboard/kit/inventory"
)

func TestAChecksHostsAreItsBackendsInItsEnvironment(t *testing.T) {
	hosts := append(superaggHosts("production", []string{"superagg-p1", "superagg-p2"}), superaggHosts("staging", []string{"superagg-s1"})...)
	hosts = append(hosts,
		&inventoryv1.Host{Name: "superagg-p3", Environment: "production", Backends: []string{"superagg"}, State: inventoryv1.HostState_HOST_STATE_SPARE},
		&inventoryv1.Host{Name: "web-1", Environment: "production", Backends: []string{"www"}, State: inventoryv1.HostState_HOST_STATE_ACTIVE})
	snap := &inventory.Snapshot{Meta: &inventoryv1.Meta{Environments: []string{"production", "staging"}}, Hosts: map[string]*inventoryv1.Host{}}
	for _, h := range hosts {
		snap.Hosts[h.GetName()] = h
	}
	for _, tc := range []struct {
		name        string
		environment string
		backend     string
		wantEnv     string
		wantHosts   []string
		wantErr     string
	}{
		{"the environment named", "staging", "superagg", "staging", []string{"superagg-s1"}, ""},
		{"only active hosts", "production", "superagg", "production", []string{"superagg-p1", "superagg-p2"}, ""},
		{"no environment needed for a backend in one", "", "www", "production", []string{"web-1"}, ""},
		{"no environment for a backend in two is an error naming the key", "", "superagg", "", nil,
			"watcher.checks[2].environment: required: backend superagg has hosts in 2 environments of the inventory (production, staging)"},
		{"an environment the inventory does not have", "prod", "superagg", "", nil,
			`watcher.checks[2].environment: "prod" is not an environment of the inventory (production, staging)`},
		{"a backend without hosts", "", "nosuch", "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := selectHosts(snap, Check{Environment: tc.environment, Backend: tc.backend}, "watcher.checks[2]")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || sc.env != tc.wantEnv || !slices.Equal(sc.hosts, tc.wantHosts) {
				t.Fatalf("scope %+v, error %v; want %s %v", sc, err, tc.wantEnv, tc.wantHosts)
			}
		})
	}
}

func TestAChecksEnvironmentChoosesTheHostsItJudgesAndRemoves(t *testing.T) {
	production := []string{"superagg-p1", "superagg-p2", "superagg-p3", "superagg-p4"}
	staging := []string{"superagg-s1", "superagg-s2", "superagg-s3", "superagg-s4"}
	e := newEnvWithInventory(t, append(superaggHosts("production", production), superaggHosts("staging", staging)...))
	lb := e.startFakeLB()
	f := newFeed()
	gr := newFakeRender(t, append(slices.Clone(production), staging...), f.data)
	cfg := testConfig(gr.srv.URL)
	cfg.Checks[0].Mode = ModeEnforce
	inStaging := cfg.Checks[0]
	inStaging.Name, inStaging.Environment = "superagg-staging", "staging"
	cfg.Checks = append(cfg.Checks, inStaging)
	e.startWatcher(cfg, Deps{})

	// The first check names no environment, and its backend is in two.
	p := e.waitPost("Check superagg-canary cannot run: watcher.checks[0].environment: required: backend superagg has hosts in 2 environments of the inventory (production, staging)")
	if p.GetKind().String() != "KIND_ERROR" {
		t.Fatalf("the check's problem is posted as %v", p.GetKind())
	}
	f.stop("superagg-p2", time.Now().Add(-10*time.Minute))
	f.stop("superagg-s3", time.Now().Add(-10*time.Minute))
	e.waitPost("superagg-s3 has now been removed from the backend superagg ✓")
	time.Sleep(3 * time.Second) // more cycles
	if got, want := lb.removed(), []string{"superagg-s3@superagg by automation:watcher"}; !slices.Equal(got, want) {
		t.Fatalf("lb remove runs %v, want %v: the staging check judges staging only", got, want)
	}
	if n := e.countPosts("cannot run"); n != 1 {
		t.Fatalf("the problem was said %d times, want once: %s", n, texts(e.watcherPosts()))
	}
	_, ans := e.say(ana, "watcher status")
	if !strings.Contains(ans.GetText(), "*superagg-staging* — backend superagg in staging") ||
		!strings.Contains(ans.GetText(), "cannot run: watcher.checks[0].environment: required") {
		t.Fatalf("status:\n%s", ans.GetText())
	}
}
