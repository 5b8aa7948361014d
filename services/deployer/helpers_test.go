package deployer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat"
	"github.com/switchboard-ops/switchboard/services/deployer/enc"
	"github.com/switchboard-ops/switchboard/services/deployer/executor"
	"github.com/switchboard-ops/switchboard/services/deployer/gitrepo"
)

const testLease = 2 * time.Second

func needGit(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("git is not installed; the deployer tests need the real git CLI")
		}
		t.Skip("SKIPPED LOUDLY: git is not installed; the deployer tests need the real git CLI")
	}
}

func gitCLI(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Rob Person", "GIT_AUTHOR_EMAIL=rob@example.com",
		"GIT_COMMITTER_NAME=Rob Person", "GIT_COMMITTER_EMAIL=rob@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// env is one NATS server, one ENC remote and the deployers under test.
type env struct {
	t      testing.TB
	srv    *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	remote string
	runLog string // every host the exec executor ran on, one per line
	sleep  string // seconds each run takes
	// exec replaces the configured executor when set.
	exec executor.Executor
	// chat is the chat service when the test started one.
	chat *chat.Service
}

// newEnv starts NATS and creates the remote ENC: the example plus extra
// host files.
func newEnv(t testing.TB, extra map[string]string) *env {
	t.Helper()
	needGit(t)
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	js := natstest.JetStream(t, nc)
	if err := bus.EnsureStreams(natstest.Context(t, 10*time.Second), js, bus.StreamOptions{ReplicaLease: testLease}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := enc.Example()
	for p, c := range extra {
		files[p] = []byte(c)
	}
	remote := filepath.Join(dir, "enc.git")
	if _, err := gitrepo.InitBare(remote, "main", gitrepo.Signature{Name: "seed", Email: "seed@example.com"}, "seed", files); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: s, nc: nc, js: js, remote: remote, runLog: filepath.Join(dir, "runs.log"), sleep: "0.05"}
}

func webHosts(n int) map[string]string {
	out := map[string]string{}
	for i := 3; i < 3+n; i++ {
		out[enc.HostPath(fmt.Sprintf("web-%04d", i))] = fmt.Sprintf("environment: production\nrole: web\nipv4: 10.0.1.%d\nbackends: [www]\n", i)
	}
	return out
}

func (e *env) config() Config {
	cfg := DefaultConfig()
	cfg.ENC.URL = e.remote
	cfg.ENC.PollInterval = time.Second
	cfg.Exec.Command = []string{"sh", "-c", `echo "$1" >> "$2"; sleep "$3"; case "$1" in *bad*) exit 4;; esac; exit 2`, "sh", "{host}", e.runLog, e.sleep}
	cfg.Exec.PuppetExitCodes = true
	cfg.StopGrace = 200 * time.Millisecond
	cfg.VersionPattern = `^\d+\.\d+\.\d+$`
	return cfg
}

// start runs a deployer replica on its own connection and data dir.
func (e *env) start(cfg Config) *Service {
	e.t.Helper()
	nc := natstest.Connect(e.t, e.srv)
	ctx := natstest.Context(e.t, time.Minute)
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("SB_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	s, err := New(ctx, cfg, Deps{NC: nc, Log: log, DataDir: e.t.TempDir(), Lease: testLease, Executor: e.exec})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { s.Stop(context.Background()) })
	return s
}

// kill stops a replica the way a crash does: its connection closes first,
// so it neither releases its lease nor records or posts anything more; then
// its goroutines are reaped (what they still try to write fails).
func (e *env) kill(s *Service) {
	e.t.Helper()
	s.deps.NC.Close()
	s.Stop(context.Background())
}

// startChat runs the real chat service (console off) with rbac: the
// deployer's lb drain goes through its ingress, as a person's would.
func (e *env) startChat(rbac chat.RBACConfig) *chat.Service {
	e.t.Helper()
	ctx := natstest.Context(e.t, time.Minute)
	cfg := chat.DefaultConfig()
	cfg.Console.Addr = ""
	cfg.RBAC = rbac
	svc, err := chat.New(ctx, cfg, chat.Deps{NC: natstest.Connect(e.t, e.srv), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := svc.Start(ctx, nil); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svc.Stop(ctx)
	})
	e.chat = svc
	return svc
}

// waitChatKnows waits until the chat has discovered command name (it
// discovers services every few seconds, or on a miss at most once a second).
func (e *env) waitChatKnows(name string) {
	e.t.Helper()
	natstest.WaitFor(e.t, 20*time.Second, 200*time.Millisecond, func() error {
		seq++
		id := fmt.Sprintf("help-%d-%d", seq, time.Now().UnixNano())
		r := e.chat.Handle(natstest.Context(e.t, 10*time.Second), &chatv1.ChatMessage{Id: id, Text: "help " + name,
			Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops", Thread: id},
			Author:       &chatv1.Identity{Id: "console:ana", Name: "Ana"}})
		if r.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ANSWERED {
			return fmt.Errorf("the chat does not know %s yet: %s %s", name, r.GetStatus(), r.GetMessage())
		}
		return nil
	})
}

var seq int

// send sends a command as the chat would and returns its thread id.
func (e *env) send(name string, args, flags map[string]string, dry bool) string {
	e.t.Helper()
	seq++
	id := fmt.Sprintf("console/ops/%s-%d-%d", e.t.Name(), seq, time.Now().UnixNano())
	req := &commandv1.CommandRequest{
		Id: id, Command: name, Args: args, Flags: flags, DryRun: dry,
		Requester:    &chatv1.Identity{Id: "console:ana", Name: "Ana", Email: "ana@example.com"},
		Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops", Thread: id},
		Raw:          name,
	}
	data, _ := wire.Marshal(req)
	verb := strings.Join(strings.Fields(name), "_")
	resp, err := e.nc.Request(wire.CommandSubject(ServiceName, verb), data, 10*time.Second)
	if err != nil {
		e.t.Fatalf("request %s: %v", name, err)
	}
	var ack commandv1.CommandAck
	if err := wire.Unmarshal(resp.Data, &ack); err != nil {
		e.t.Fatal(err)
	}
	if ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_ACCEPTED {
		e.t.Fatalf("%s: ack %s %s", name, ack.GetStatus(), ack.GetReason())
	}
	return id
}

// posts returns the posts of a thread ("" : posts without a thread).
func (e *env) posts(thread string) []*chatv1.ChatPost {
	e.t.Helper()
	return natstest.InThread(natstest.Posts(e.t, e.js, wire.ChatPostSubject("console", "ops")), thread)
}

// final waits for the thread's result or error post.
func (e *env) final(thread string, within time.Duration) (*chatv1.ChatPost, []*chatv1.ChatPost) {
	e.t.Helper()
	return natstest.WaitPost(e.t, e.js, wire.ChatPostSubject("console", "ops"), thread, within, 50*time.Millisecond, func(p *chatv1.ChatPost) bool {
		// Other jobs may post in the thread (lb drain for host retire).
		return p.GetJobId() == wire.JobID(thread) && natstest.IsFinal(p)
	})
}

// run sends a command and waits for its answer.
func (e *env) run(name string, args, flags map[string]string, dry bool) *chatv1.ChatPost {
	e.t.Helper()
	p, _ := e.final(e.send(name, args, flags, dry), 30*time.Second)
	return p
}

func (e *env) inventory() *inventory.Snapshot {
	e.t.Helper()
	ctx := natstest.Context(e.t, 10*time.Second)
	kv, err := inventory.Bucket(ctx, e.js)
	if err != nil {
		e.t.Fatal(err)
	}
	snap, err := inventory.Load(ctx, kv)
	if err != nil {
		e.t.Fatal(err)
	}
	return snap
}

func (e *env) commits() string {
	return gitCLI(e.t, filepath.Dir(e.remote), "--git-dir", e.remote, "rev-list", "--count", "main")
}

func (e *env) runs() []string {
	b, _ := os.ReadFile(e.runLog)
	return strings.Fields(string(b))
}

func wantOK(t *testing.T, p *chatv1.ChatPost, contains ...string) {
	t.Helper()
	if p.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("want success, got %s: %s", p.GetKind(), p.GetText())
	}
	for _, c := range contains {
		if !strings.Contains(p.GetText(), c) {
			t.Fatalf("answer %q does not say %q", p.GetText(), c)
		}
	}
}

func wantError(t *testing.T, p *chatv1.ChatPost, contains ...string) {
	t.Helper()
	if p.GetKind() != chatv1.Kind_KIND_ERROR {
		t.Fatalf("want an error, got %s: %s", p.GetKind(), p.GetText())
	}
	for _, c := range contains {
		if !strings.Contains(p.GetText(), c) {
			t.Fatalf("error %q does not say %q", p.GetText(), c)
		}
	}
}
