package main

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
)

// syncBuffer is a bytes.Buffer safe for the server goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSwitchboard runs the all-in-one binary's run() on free ports with a
// fresh data dir, as `go run ./cmd/switchboard` does, and returns its env.
func startSwitchboard(t *testing.T) func(string) string {
	getenv, _ := startSwitchboardOutput(t)
	return getenv
}

// startSwitchboardOutput is startSwitchboard that also returns what the
// binary printed on stdout (the console URL).
func startSwitchboardOutput(t *testing.T) (func(string) string, string) {
	t.Helper()
	return startSwitchboardWith(t, nil)
}

// startSwitchboardWith is startSwitchboardOutput with more settings in the
// environment (SB_CONFIG, …).
func startSwitchboardWith(t *testing.T, extra map[string]string) (func(string) string, string) {
	t.Helper()
	dir := t.TempDir()
	env := map[string]string{
		"SB_DATA_DIR":            dir,
		"SB_EMBEDDED_PORT":       "-1",
		"SB_CHAT_CONSOLE_ADDR":   "127.0.0.1:0",
		"SB_METRICS_ADDR":        freeAddr(t),
		"SB_INCIDENTS_HTTP_ADDR": "127.0.0.1:0",
		"HOME":                   dir,
	}
	maps.Copy(env, extra)
	getenv := func(k string) string { return env[k] }
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"switchboard"}, getenv, nil, &out, &errOut) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("switchboard did not stop within 20s")
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), "switchboard is ready") {
		select {
		case code := <-done:
			t.Fatalf("switchboard exited with %d before it was ready:\n%s", code, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("switchboard not ready in 15s:\n%s", errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "nats.token")); err != nil {
		t.Fatalf("no generated credential in the data dir: %v", err)
	}
	return getenv, out.String()
}

func runSay(t *testing.T, getenv func(string) string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, append([]string{"switchboard", "say"}, args...), getenv, nil, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestSayExitCodes(t *testing.T) {
	getenv := startSwitchboard(t)
	tests := []struct {
		name     string
		args     []string
		code     int
		inOutput string
	}{
		{"ping goes through a service and back", []string{"ping"}, exitOK, "pong from sys replica"},
		{"help lists the built-in and discovered commands", []string{"help"}, exitOK, "ping"},
		{"an unknown command is a usage error with a suggestion", []string{"pnig"}, exitUsage, "Did you mean `ping`?"},
		{"unbalanced quotes are a usage error", []string{`job "abc`}, exitUsage, "unclosed"},
		{"a wrong argument type is a usage error", []string{"job", "nothex"}, exitUsage, "nothex"},
		{"a missing argument is a usage error", []string{"job"}, exitUsage, "id"},
		{"a job that does not exist is a failure", []string{"job", "0123456789ab"}, exitFailed, "no job 0123456789ab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runSay(t, getenv, tt.args...)
			if code != tt.code || !strings.Contains(out+errOut, tt.inOutput) {
				t.Fatalf("say %v: exit %d, output %q %q; want exit %d and %q", tt.args, code, out, errOut, tt.code, tt.inOutput)
			}
		})
	}
}

// say's other exit codes and its output: denied (3), nothing running (4),
// --json lines, --channel.
func TestSayDeniedUnavailableJSONAndChannel(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "switchboard.yaml")
	if err := os.WriteFile(cfg, []byte("chat:\n  rbac:\n    default_roles: [viewer]\n    roles:\n      viewer: {commands: [ping]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv, _ := startSwitchboardWith(t, map[string]string{"SB_CONFIG": cfg})

	code, out, errOut := runSay(t, getenv, "deploy", "status", "0123456789ab")
	if code != exitDenied || !strings.Contains(out+errOut, "Sorry, your roles (viewer) do not include deploy status") {
		t.Fatalf("say deploy status as a viewer: exit %d, %q %q; want %d and a refusal", code, out, errOut, exitDenied)
	}

	code, out, errOut = runSay(t, getenv, "--json", "--channel", "night-shift", "ping")
	if code != exitOK {
		t.Fatalf("say --json ping: exit %d, %q %q", code, out, errOut)
	}
	var kinds []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var p chatv1.ChatPost
		if err := protojson.Unmarshal([]byte(line), &p); err != nil {
			t.Fatalf("say --json printed a line that is not a ChatPost: %q: %v", line, err)
		}
		if got := p.GetConversation().GetChannel(); got != "night-shift" {
			t.Fatalf("post in channel %q, want night-shift: %q", got, line)
		}
		kinds = append(kinds, p.GetKind().String())
	}
	if len(kinds) == 0 || kinds[len(kinds)-1] != chatv1.Kind_KIND_RESULT.String() {
		t.Fatalf("say --json ping printed kinds %v, want the result last", kinds)
	}

	empty := map[string]string{"SB_DATA_DIR": t.TempDir(), "HOME": t.TempDir()}
	code, _, errOut = runSay(t, func(k string) string { return empty[k] }, "ping")
	if code != exitUnavailable || !strings.Contains(errOut, "no switchboard is running here") {
		t.Fatalf("say with nothing running: exit %d, %q; want %d", code, errOut, exitUnavailable)
	}
}

var errTimeout = errorString("not yet")

// freeAddr reserves a loopback port for a listener the test must reach.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestMetricsCountCommands(t *testing.T) {
	getenv := startSwitchboard(t)
	if code, out, errOut := runSay(t, getenv, "ping"); code != exitOK {
		t.Fatalf("say ping: %d %s %s", code, out, errOut)
	}
	resp, err := http.Get("http://" + getenv("SB_METRICS_ADDR") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`sb_chat_messages_total{adapter="cli"`, `sb_command_jobs_total{command="ping"`, "sb_command_duration_seconds_bucket"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(string(body), "sb_"))
		}
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
