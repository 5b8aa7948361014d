package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/kit/natstest"
)

// TestServeRunsTwoChatReplicasAgainstAnExternalCluster runs `switchboard
// serve chat` twice against a 3-node NATS cluster, as two machines would,
// and talks to them with `say --nats`.
func TestServeRunsTwoChatReplicasAgainstAnExternalCluster(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	env := map[string]string{"HOME": t.TempDir(), "SB_NATS_REPLICAS": "3", "SB_CHAT_CONSOLE_ADDR": "127.0.0.1:0", "SB_METRICS_ADDR": "127.0.0.1:0", "SB_INCIDENTS_HTTP_ADDR": "127.0.0.1:0"}
	getenv := func(k string) string { return env[k] }
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errOut syncBuffer
		var code int
		done := make(chan struct{})
		go func() {
			defer close(done)
			code = run(ctx, []string{"switchboard", "serve", "chat", "--nats", c.URL()}, getenv, nil, &out, &errOut)
		}()
		t.Cleanup(func() { cancel(); <-done })
		natstest.WaitFor(t, 90*time.Second, 20*time.Millisecond, func() error {
			select {
			case <-done:
				t.Fatalf("serve exited with %d: %s", code, errOut.String())
			default:
			}
			if !strings.Contains(out.String(), "switchboard is ready") {
				return errTimeout
			}
			return nil
		})
	}
	code, out, errOut := runSay(t, getenv, "--nats", c.URL(), "ping")
	if code != exitOK || !strings.Contains(out, "pong") {
		t.Fatalf("say ping against the cluster: exit %d, %q %q", code, out, errOut)
	}
}

func TestServeRefusesBadUsage(t *testing.T) {
	getenv := func(string) string { return "" }
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no service named", []string{"switchboard", "serve", "--nats", "nats://127.0.0.1:1"}, "name the services"},
		{"an unknown service", []string{"switchboard", "serve", "nope", "--nats", "nats://127.0.0.1:1"}, `unknown service "nope"`},
		{"no NATS URL", []string{"switchboard", "serve", "chat"}, "serve needs --nats"},
		{"an unknown subcommand", []string{"switchboard", "frobnicate"}, `unknown command "frobnicate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut syncBuffer
			code := run(context.Background(), tt.args, getenv, nil, &out, &errOut)
			if code != 2 || !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errOut.String(), tt.want)
			}
		})
	}
}

// The configuration files deploy/ ships are valid: a typo there would stop
// every replica at start.
func TestShippedConfigFilesAreValid(t *testing.T) {
	for _, f := range []string{"../../deploy/kubernetes/switchboard.yaml", "../../deploy/systemd/switchboard.yaml", "../../deploy/container/switchboard.yaml"} {
		env := map[string]string{"HOME": t.TempDir(), "SB_NATS_URL": "nats://127.0.0.1:4222"}
		cfg, err := loadConfig(f, func(k string) string { return env[k] })
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(cfg.Chat.RBAC.Grants) == 0 {
			t.Errorf("%s grants no roles: every identity would get the default roles", f)
		}
	}
}
