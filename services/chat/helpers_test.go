package chat_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/jobs"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat"
)

// waitTotal bounds every wait for eventual state; it is a ceiling for a
// slow CI machine, never an assertion about speed.
const (
	waitTotal = 20 * time.Second
	waitStep  = 10 * time.Millisecond
)

// People of the test RBAC configuration.
var (
	ana  = &chatv1.Identity{Id: "console:ana", Name: "ana"}   // admin by id
	olga = &chatv1.Identity{Id: "console:olga", Name: "olga"} // operator, staging only
	vic  = &chatv1.Identity{Id: "console:vic", Name: "vic"}   // viewer: ping only
)

// testRBAC grants roles by id, e-mail and group; nobody gets a default role.
func testRBAC() chat.RBACConfig {
	return chat.RBACConfig{
		Roles: map[string]chat.Role{
			"admin":     {Commands: []string{"*"}},
			"operator":  {Commands: []string{"t *", "ping"}, Environments: []string{"staging", "dev-*"}},
			"viewer":    {Commands: []string{"ping"}},
			"responder": {Commands: []string{"t slow", "ping"}},
		},
		Grants: []chat.Grant{
			{Users: []string{"console:ana"}, Roles: []string{"admin"}},
			{Users: []string{"console:olga", "bob@example.com"}, Roles: []string{"operator"}},
			{Users: []string{"console:vic"}, Roles: []string{"viewer"}},
			{Groups: []string{"oncall"}, Roles: []string{"responder"}},
		},
	}
}

// testConfig is the chat configuration of these tests: no web console,
// the test RBAC, and an alias.
func testConfig() chat.Config {
	cfg := chat.DefaultConfig()
	cfg.Console.Addr = ""
	cfg.RBAC = testRBAC()
	cfg.Aliases = map[string]string{"addtolb": "t add {host} {backend}"}
	return cfg
}

// recorder keeps every request the test service's handlers ran, by
// command id.
type recorder struct {
	mu   sync.Mutex
	reqs map[string][]*commandv1.CommandRequest
}

func newRecorder() *recorder {
	return &recorder{reqs: map[string][]*commandv1.CommandRequest{}}
}

func (r *recorder) record(job *command.Job) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := job.Request().GetId()
	r.reqs[id] = append(r.reqs[id], proto.CloneOf(job.Request()))
}

// calls returns the requests run under a command id.
func (r *recorder) calls(cmdID string) []*commandv1.CommandRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs[cmdID])
}

// total is how many times any handler ran.
func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.reqs {
		n += len(v)
	}
	return n
}

// stepEvery is how long one step of "t slow" takes.
const stepEvery = 50 * time.Millisecond

// testCommands is service "t": commands with typed arguments, a mutating
// one with --dry-run, a slow one, and specs that exercise RBAC and
// confirmation. Every handler records its request.
func testCommands(rec *recorder) []command.Command {
	str := func(name string, t commandv1.ArgType) *commandv1.ArgSpec {
		return &commandv1.ArgSpec{Name: name, Type: t, Required: true}
	}
	done := func(ctx context.Context, job *command.Job) error {
		rec.record(job)
		if job.DryRun() {
			return job.Done(ctx, "would run "+job.Request().GetCommand())
		}
		return job.Done(ctx, "ran "+job.Request().GetCommand())
	}
	return []command.Command{
		{Spec: &commandv1.CommandSpec{
			Name: "t add", Usage: "t add <host> <backend> [--weight N] [--wait D] [--dry-run]",
			Summary: "Add a host to a backend.", Example: "t add web1 www",
			Args: []*commandv1.ArgSpec{str("host", commandv1.ArgType_ARG_TYPE_HOST), str("backend", commandv1.ArgType_ARG_TYPE_BACKEND)},
			Flags: []*commandv1.FlagSpec{
				{Name: "weight", Type: commandv1.ArgType_ARG_TYPE_INT, Min: 0, Max: 256, Help: "server weight"},
				{Name: "wait", Type: commandv1.ArgType_ARG_TYPE_DURATION, Help: "how long to wait for health"},
			},
			Mutating: true, SupportsDryRun: true,
		}, Run: func(ctx context.Context, job *command.Job) error {
			rec.record(job)
			verb := "added"
			if job.DryRun() {
				verb = "would add"
			}
			return job.Done(ctx, fmt.Sprintf("%s %s to %s", verb, job.Arg("host"), job.Arg("backend")))
		}},
		{Spec: &commandv1.CommandSpec{
			Name: "t slow", Usage: "t slow <steps> [--env E]", Summary: "Count steps slowly.", Example: "t slow 3",
			Args:  []*commandv1.ArgSpec{{Name: "steps", Type: commandv1.ArgType_ARG_TYPE_INT, Required: true, Min: 1, Max: 10000}},
			Flags: []*commandv1.FlagSpec{{Name: "env", Type: commandv1.ArgType_ARG_TYPE_ENVIRONMENT, Help: "where to count"}},
		}, Run: func(ctx context.Context, job *command.Job) error {
			rec.record(job)
			n, _ := strconv.Atoi(job.Arg("steps"))
			for i := 1; i <= n; i++ {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(stepEvery):
				}
				if err := job.Progressf(ctx, "step %d of %d", i, n); err != nil {
					return err
				}
			}
			return job.Done(ctx, fmt.Sprintf("did %d steps", n))
		}},
		{Spec: &commandv1.CommandSpec{
			Name: "t deploy", Usage: "t deploy <version> <env>", Summary: "Deploy a version.", Example: "t deploy 1.2.3 staging",
			Args:     []*commandv1.ArgSpec{str("version", commandv1.ArgType_ARG_TYPE_VERSION), str("env", commandv1.ArgType_ARG_TYPE_ENVIRONMENT)},
			Mutating: true, SupportsDryRun: true,
		}, Run: done},
		{Spec: &commandv1.CommandSpec{
			Name: "t scale", Usage: "t scale <role@env>", Summary: "Scale a role.", Example: "t scale web@staging",
			Args:     []*commandv1.ArgSpec{str("target", commandv1.ArgType_ARG_TYPE_ROLE_ENV)},
			Mutating: true, SupportsDryRun: true,
		}, Run: done},
		{Spec: &commandv1.CommandSpec{
			Name: "t wipe", Usage: "t wipe", Summary: "Wipe everything.", Example: "t wipe",
			RequiredRole: "dba", Mutating: true, SupportsDryRun: true,
		}, Run: done},
		{Spec: &commandv1.CommandSpec{
			Name: "t nuke", Usage: "t nuke <host>", Summary: "Reinstall a host.", Example: "t nuke web1",
			Args:    []*commandv1.ArgSpec{str("host", commandv1.ArgType_ARG_TYPE_HOST)},
			Confirm: commandv1.ConfirmPolicy_CONFIRM_POLICY_ALWAYS, Mutating: true, SupportsDryRun: true,
		}, Run: done},
	}
}

// harness is one NATS server (or node) with the streams declared, and the
// test service "t" and chat replicas started on it, each with its own
// connection as separate processes would have.
type harness struct {
	t   *testing.T
	url string
	js  jetstream.JetStream
	// rec sees every run of a "t" handler.
	rec  *recorder
	jobs *jobs.Store
	// tracing, when set before starting anything, is given to the chat
	// replicas and the "t" replicas.
	tracing trace.TracerProvider
}

// newHarness starts a JetStream server for one test.
func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessAt(t, natstest.RunServer(t).ClientURL())
}

// newHarnessAt uses the server at url (a natstest.Node for restarts).
func newHarnessAt(t *testing.T, url string) *harness {
	t.Helper()
	nc := natstest.ConnectURL(t, url)
	js := natstest.JetStream(t, nc)
	ctx := natstest.Context(t, 10*time.Second)
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		t.Fatalf("declare streams: %v", err)
	}
	store, err := jobs.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, url: url, js: js, rec: newRecorder(), jobs: store}
}

// serveT starts a replica of service "t" on its own connection and stops
// it when the test ends.
func (h *harness) serveT() *command.Server {
	h.t.Helper()
	nc := natstest.ConnectURL(h.t, h.url)
	srv, err := command.Serve(context.Background(), nc, testCommands(h.rec), command.Options{
		Service:   "t",
		StopGrace: 500 * time.Millisecond,
		Tracing:   h.tracing,
	})
	if err != nil {
		h.t.Fatalf("serve t: %v", err)
	}
	h.t.Cleanup(func() { srv.Stop(context.Background()) })
	return srv
}

// startChat starts a chat replica on its own connection and stops it when
// the test ends.
func (h *harness) startChat(cfg chat.Config) *chat.Service {
	h.t.Helper()
	nc := natstest.ConnectURL(h.t, h.url)
	return h.startChatOn(nc, cfg)
}

func (h *harness) startChatOn(nc *nats.Conn, cfg chat.Config) *chat.Service {
	h.t.Helper()
	ctx := natstest.Context(h.t, 10*time.Second)
	svc, err := chat.New(ctx, cfg, chat.Deps{NC: nc, Tracing: h.tracing})
	if err != nil {
		h.t.Fatalf("chat.New: %v", err)
	}
	if err := svc.Start(ctx, nil); err != nil {
		h.t.Fatalf("chat Start: %v", err)
	}
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svc.Stop(ctx)
	})
	return svc
}

// message is a top-level message in console channel ops with a fresh id.
func message(from *chatv1.Identity, text string) *chatv1.ChatMessage {
	return messageIn("console", "ops", from, text)
}

func messageIn(adapter, channel string, from *chatv1.Identity, text string) *chatv1.ChatMessage {
	return &chatv1.ChatMessage{
		Id:           "m" + emit.NewID()[:12],
		Conversation: &chatv1.Conversation{Adapter: adapter, Channel: channel},
		Author:       proto.CloneOf(from),
		Text:         text,
	}
}

// commandID is the command id the ingress derives from a message.
func commandID(m *chatv1.ChatMessage) string {
	c := m.GetConversation()
	return wire.Token(c.GetAdapter()) + "/" + c.GetChannel() + "/" + m.GetId()
}

// thread is where the answers to a top-level message go.
func thread(m *chatv1.ChatMessage) *chatv1.Conversation {
	c := m.GetConversation()
	return &chatv1.Conversation{Adapter: c.GetAdapter(), Channel: c.GetChannel(), Thread: m.GetId()}
}

// handle runs the ingress on a message, as an adapter would.
func (h *harness) handle(svc *chat.Service, m *chatv1.ChatMessage) *chatv1.ChatReply {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return svc.Handle(ctx, proto.CloneOf(m))
}

// readAll returns every message of a stream on subjects (all when none),
// in stream order.
func (h *harness) readAll(stream string, subjects ...string) []jetstream.Msg {
	h.t.Helper()
	return natstest.Messages(h.t, h.js, stream, subjects...)
}

// posts returns the posts of a conversation's channel, in stream order,
// that belong to its thread (every post of the channel when thread is "").
func (h *harness) posts(c *chatv1.Conversation) []*chatv1.ChatPost {
	h.t.Helper()
	ps := natstest.Posts(h.t, h.js, wire.ChatPostSubject(c.GetAdapter(), c.GetChannel()))
	if c.GetThread() == "" {
		return ps
	}
	return natstest.InThread(ps, c.GetThread())
}

// isFinal reports whether a post is a job's final answer.
func isFinal(p *chatv1.ChatPost) bool {
	return p.GetJobId() != "" && natstest.IsFinal(p)
}

// waitFinal waits for the final answer of the job in a thread and returns
// it with every post of the thread.
func (h *harness) waitFinal(c *chatv1.Conversation) (*chatv1.ChatPost, []*chatv1.ChatPost) {
	h.t.Helper()
	return natstest.WaitPost(h.t, h.js, wire.ChatPostSubject(c.GetAdapter(), c.GetChannel()), c.GetThread(), waitTotal, waitStep, isFinal)
}

// chatAnswer returns the chat's own answer in a thread (its post ids end
// in "-chat"), failing the test when there is not exactly one.
func (h *harness) chatAnswer(c *chatv1.Conversation) *chatv1.ChatPost {
	h.t.Helper()
	var found []*chatv1.ChatPost
	for _, p := range h.posts(c) {
		if p.GetAuthor().GetId() == "service:chat" {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		h.t.Fatalf("thread %s has %d answers from the chat, want 1: %v", c.GetThread(), len(found), found)
	}
	return found[0]
}

// audit returns the audit records, in stream order, that match keep.
func (h *harness) audit(keep func(*auditv1.Record) bool) []*auditv1.Record {
	h.t.Helper()
	var out []*auditv1.Record
	for _, r := range natstest.AuditRecords(h.t, h.js) {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// auditOf returns the audit records of a command id.
func (h *harness) auditOf(cmdID string) []*auditv1.Record {
	h.t.Helper()
	return h.audit(func(r *auditv1.Record) bool { return r.GetCommandId() == cmdID })
}

// outcomes lists "stage outcome" of records, for messages and comparisons.
func outcomes(recs []*auditv1.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, strings.ToLower(strings.TrimPrefix(r.GetStage().String(), "STAGE_"))+" "+r.GetOutcome())
	}
	return out
}

// job returns the job of a command id, or jobs.ErrNotFound.
func (h *harness) job(cmdID string) (*commandv1.Job, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	j, _, err := h.jobs.Get(ctx, wire.JobID(cmdID))
	return j, err
}

// noJob fails the test when a command id has a job.
func (h *harness) noJob(cmdID string) {
	h.t.Helper()
	if j, err := h.job(cmdID); !errors.Is(err, jobs.ErrNotFound) {
		h.t.Fatalf("command %s left a job (%v, err %v); it should have changed nothing", cmdID, j, err)
	}
}
