// Package gitrepotest serves a bare git repository to tests the way a git
// host does: over HTTPS through git's own http-backend behind HTTP basic
// auth, and over SSH, running git's upload-pack and receive-pack for the
// client's exec requests. Both servers run in the test process and use the
// real git programs, so a client that works against them speaks the same
// protocol a forge expects.
//
// Both can make "a person" push at the worst moment for a client: after
// the client has read the references and before its pack arrives, so the
// server itself refuses the client's stale update (BeforeNextPush).
package gitrepotest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// NeedGit fails in CI and skips loudly elsewhere when git is missing.
func NeedGit(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		missing(t, "git is not installed")
	}
}

// httpBackend returns the path of git-http-backend, which Debian's git
// installs in git's exec path rather than on PATH.
func httpBackend(t testing.TB) string {
	t.Helper()
	NeedGit(t)
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(p); err != nil {
		missing(t, "git-http-backend is not installed ("+err.Error()+")")
	}
	return p
}

func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; the ENC remote tests need the real git programs", what)
	}
	t.Skipf("SKIPPED LOUDLY: %s; the ENC remote tests need the real git programs", what)
}

// Git runs the git CLI in dir as the person Rob (see RunGit) and fails the
// test when it fails.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := RunGit(dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RunGit runs the git CLI in dir as the person Rob, with no system or user
// configuration and no prompts, and returns its trimmed output. It is for
// goroutines other than the test's, such as a BeforeNextPush function.
func RunGit(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	// GIT_* variables of the machine are configuration too, and some beat
	// the repository's: GIT_SSL_CAINFO wins over http.sslCAInfo.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "GIT_AUTHOR_NAME=Rob Person", "GIT_AUTHOR_EMAIL=rob@example.com",
		"GIT_COMMITTER_NAME=Rob Person", "GIT_COMMITTER_EMAIL=rob@example.com",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+dir, "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// pushHook holds the function BeforeNextPush set, for one push.
type pushHook struct {
	mu sync.Mutex
	f  func()
}

func (h *pushHook) set(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.f = f
}

// take returns the function once; the push it makes itself passes through.
func (h *pushHook) take() func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.f
	h.f = nil
	return f
}

// testWriter sends what the git programs and the servers say to the test
// log, so a failure shows it and a passing run stays quiet.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
