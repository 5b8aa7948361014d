package slack_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat"
	"github.com/switchboard-ops/switchboard/services/chat/slack"
	"github.com/switchboard-ops/switchboard/services/chat/slack/slackfake"
)

// waitTotal bounds every wait for eventual state: a ceiling for a slow
// machine, never an assertion about speed.
const (
	waitTotal = 30 * time.Second
	waitStep  = 10 * time.Millisecond
)

const signingSecret = "8f742231b10e8888abcd99yyyzzz85a5"

// Channels and people of the fake workspace.
const (
	chOps      = "C0OPS"
	chBurst    = "C0BURST"
	chAlerts   = "C0ALERTS"
	chIncident = "C0INCIDENT"
	chArchive  = "C0ARCHIVED"
	chNoBot    = "C0NOBOT"
	uAna       = "U0ANA"  // admin by e-mail
	uOlga      = "U0OLGA" // operator through the @oncall group
	uIda       = "U0IDA"  // operator by her Slack user id
	uEve       = "U0EVE"  // nothing
)

// promotedEmail is granted operator; nobody has it at first.
const promotedEmail = "promoted@example.com"

// syncBuffer is a bytes.Buffer for concurrent log writers.
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

// runs counts how often each command id ran a "t" handler.
type runs struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *runs) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[id]++
}

func (r *runs) get(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[id]
}

func (r *runs) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := 0
	for _, v := range r.n {
		t += v
	}
	return t
}

// env is one NATS server with the streams, the test service "t", a fake
// Slack, and a log buffer every component writes to.
type env struct {
	t    testing.TB
	url  string
	js   jetstream.JetStream
	fake *slackfake.Server
	runs *runs
	logs *syncBuffer
	log  *slog.Logger
	// "t wait" sends its step number on entered after posting the step's
	// progress, then waits for release.
	entered chan int
	release chan struct{}
}

func newEnv(t testing.TB, opts ...slackfake.Option) *env {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	js := natstest.JetStream(t, nc)
	ctx := natstest.Context(t, 10*time.Second)
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		t.Fatalf("declare streams: %v", err)
	}
	logs := &syncBuffer{}
	e := &env{t: t, url: s.ClientURL(), js: js, fake: slackfake.Run(t, opts...), runs: &runs{n: map[string]int{}}, logs: logs,
		log:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		entered: make(chan int), release: make(chan struct{})}
	for _, ch := range []string{chOps, chBurst, chAlerts, chIncident} {
		e.fake.AddChannel(ch)
	}
	e.fake.AddChannel(chArchive)
	e.fake.ArchiveChannel(chArchive)
	e.fake.AddChannelWithoutBot(chNoBot)
	e.fake.AddUser(slackfake.User{ID: uAna, Name: "ana", DisplayName: "Ana", Email: "ana@example.com"})
	e.fake.AddUser(slackfake.User{ID: uOlga, Name: "olga", DisplayName: "Olga", Email: "olga@example.com"})
	e.fake.AddUser(slackfake.User{ID: uIda, Name: "ida", DisplayName: "Ida", Email: "ida@example.net"})
	e.fake.AddUser(slackfake.User{ID: uEve, Name: "eve", DisplayName: "Eve", Email: "eve@example.org"})
	e.fake.AddGroup(slackfake.Group{ID: "S0ONCALL", Handle: "oncall", Name: "On call", Users: []string{uOlga}})
	e.serveT()
	return e
}

// serveT starts service "t": count (runs once, answers), slow (progress),
// wait (progress, held step by step by the test: see env.entered), long
// (a plan too long for a message), fail (a user error).
func (e *env) serveT() {
	nc := natstest.ConnectURL(e.t, e.url)
	spec := func(name, usage string, args ...*commandv1.ArgSpec) *commandv1.CommandSpec {
		return &commandv1.CommandSpec{Name: name, Usage: usage, Summary: name + ".", Example: name, Args: args}
	}
	cmds := []command.Command{
		{Spec: spec("t count", "t count"), Run: func(ctx context.Context, job *command.Job) error {
			e.runs.add(job.Request().GetId())
			return job.Done(ctx, "counted")
		}},
		{Spec: spec("t slow", "t slow <steps>", &commandv1.ArgSpec{Name: "steps", Type: commandv1.ArgType_ARG_TYPE_INT, Required: true, Min: 1, Max: 100}),
			Run: func(ctx context.Context, job *command.Job) error {
				e.runs.add(job.Request().GetId())
				n, _ := strconv.Atoi(job.Arg("steps"))
				for i := 1; i <= n; i++ {
					time.Sleep(20 * time.Millisecond)
					job.Progressf(ctx, "step %d of %d", i, n)
				}
				return job.Done(ctx, fmt.Sprintf("did %d steps", n))
			}},
		{Spec: spec("t wait", "t wait <steps>", &commandv1.ArgSpec{Name: "steps", Type: commandv1.ArgType_ARG_TYPE_INT, Required: true, Min: 1, Max: 10}),
			Run: func(ctx context.Context, job *command.Job) error {
				e.runs.add(job.Request().GetId())
				n, _ := strconv.Atoi(job.Arg("steps"))
				for i := 1; i <= n; i++ {
					if err := job.Progressf(ctx, "step %d of %d", i, n); err != nil {
						return err
					}
					select {
					case e.entered <- i:
					case <-ctx.Done():
						return ctx.Err()
					}
					select {
					case <-e.release:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return job.Done(ctx, fmt.Sprintf("waited through %d steps", n))
			}},
		{Spec: spec("t long", "t long"), Run: func(ctx context.Context, job *command.Job) error {
			e.runs.add(job.Request().GetId())
			var plan strings.Builder
			for i := 0; i < 200; i++ {
				fmt.Fprintf(&plan, "+ web%03d.example.com. 300 IN A 192.0.2.%d\n", i, i%250)
			}
			return job.DoneWith(&chatv1.ChatPost{Text: "plan: 200 changes", Blocks: []*chatv1.Block{{Content: &chatv1.Block_Code{Code: plan.String()}}}})
		}},
		{Spec: spec("t fail", "t fail"), Run: func(ctx context.Context, job *command.Job) error {
			e.runs.add(job.Request().GetId())
			return command.UserErrorf("that cannot work")
		}},
	}
	srv, err := command.Serve(context.Background(), nc, cmds, command.Options{Service: "t", StopGrace: 500 * time.Millisecond, Log: e.log})
	if err != nil {
		e.t.Fatalf("serve t: %v", err)
	}
	e.t.Cleanup(func() { srv.Stop(context.Background()) })
}

// chatConfig: no console, Slack off (tests start adapters themselves or
// set the tokens), RBAC by e-mail and group.
func chatConfig() chat.Config {
	cfg := chat.DefaultConfig()
	cfg.Console.Addr = ""
	cfg.RBAC = chat.RBACConfig{
		Roles: map[string]chat.Role{
			"admin":    {Commands: []string{"*"}},
			"operator": {Commands: []string{"t count", "t slow"}},
		},
		Grants: []chat.Grant{
			{Users: []string{"ana@example.com"}, Roles: []string{"admin"}},
			{Groups: []string{"oncall"}, Roles: []string{"operator"}},
			{Users: []string{"slack:" + uIda}, Roles: []string{"operator"}},
			{Users: []string{promotedEmail}, Roles: []string{"operator"}},
		},
	}
	return cfg
}

// slackConfig points an adapter at the fake.
func (e *env) slackConfig(mode string) slack.Config {
	c := slack.DefaultConfig()
	c.BotToken = slack.NewSecret(slackfake.BotToken)
	c.AppToken = slack.NewSecret(slackfake.AppToken)
	c.SigningSecret = slack.NewSecret(signingSecret)
	c.Mode = mode
	c.APIURL = e.fake.APIURL()
	c.OpsChannel = chOps
	return c
}

// startChat starts a chat replica on its own connection.
func (e *env) startChat(cfg chat.Config) *chat.Service {
	e.t.Helper()
	nc := natstest.ConnectURL(e.t, e.url)
	ctx := natstest.Context(e.t, 10*time.Second)
	svc, err := chat.New(ctx, cfg, chat.Deps{NC: nc, Log: e.log})
	if err != nil {
		e.t.Fatalf("chat.New: %v", err)
	}
	if err := svc.Start(ctx, nil); err != nil {
		e.t.Fatalf("chat Start: %v", err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svc.Stop(ctx)
	})
	return svc
}

// replica is a chat replica with a Slack adapter in events mode, serving
// on its own loopback port.
type replica struct {
	svc    *chat.Service
	a      *slack.Adapter
	events string // URL of /slack/events
	cmds   string // URL of /slack/commands
}

// startReplica starts a replica with chatConfig. Its adapter keeps the
// posts it delivers in the shared bucket, as the chat service wires it.
func (e *env) startReplica(sc slack.Config, opts ...slack.Option) *replica {
	e.t.Helper()
	return e.startReplicaWith(chatConfig(), sc, opts...)
}

// startReplicaWith starts a replica with a chat configuration of the
// test's (routing rules, say).
func (e *env) startReplicaWith(cfg chat.Config, sc slack.Config, opts ...slack.Option) *replica {
	e.t.Helper()
	svc := e.startChat(cfg)
	js := natstest.JetStream(e.t, natstest.ConnectURL(e.t, e.url))
	a, err := slack.New(sc, svc, e.log, append([]slack.Option{slack.WithJetStream(js, 1)}, opts...)...)
	if err != nil {
		e.t.Fatalf("slack.New: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx := natstest.Context(e.t, 10*time.Second)
	if err := a.Start(ctx, l); err != nil {
		e.t.Fatalf("adapter Start: %v", err)
	}
	e.t.Cleanup(func() { a.Stop(context.Background()) })
	if err := svc.AddAdapter(ctx, a, chat.EgressOptions{}); err != nil {
		e.t.Fatalf("AddAdapter: %v", err)
	}
	base := "http://" + l.Addr().String()
	return &replica{svc: svc, a: a, events: base + "/slack/events", cmds: base + "/slack/commands"}
}

// post sends a signed request as Slack would and returns the status.
func post(t testing.TB, target, secret string, at time.Time, body []byte, retry int) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := slackfake.PostSigned(ctx, http.DefaultClient, target, secret, at, body, retry)
	if err != nil {
		t.Fatalf("post to %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// say puts a person's message into a channel and returns the event that
// tells the bot about it.
func (e *env) say(channel, user, text string) (slackfake.Message, slackfake.Event) {
	m := e.fake.AddMessage(channel, user, text)
	return m, slackfake.Event{Type: "message", Channel: channel, ChannelType: "channel", User: user, Text: text, TS: m.TS}
}

// cmdID is the command id the chat core derives from a Slack message.
func cmdID(channel, ts string) string {
	return "slack/" + channel + "/" + slackfake.TeamID + "-" + ts
}

// waitFor polls f until it returns nil.
func waitFor(t testing.TB, f func() error) {
	t.Helper()
	natstest.WaitFor(t, waitTotal, waitStep, f)
}

// thread returns the bot's replies in the thread of ts.
func (e *env) thread(channel, ts string) []slackfake.Message {
	var out []slackfake.Message
	for _, m := range e.fake.Messages(channel) {
		if m.ThreadTS == ts && m.User == slackfake.BotUserID {
			out = append(out, m)
		}
	}
	return out
}

// await receives what a test's command sends, or fails the test when
// nothing comes within waitTotal.
func await[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTotal):
		t.Fatalf("%s: nothing after %v", what, waitTotal)
		panic("unreachable")
	}
}

// releaseStep lets "t wait" go on past its current step.
func (e *env) releaseStep() {
	e.t.Helper()
	select {
	case e.release <- struct{}{}:
	case <-time.After(waitTotal):
		e.t.Fatalf("t wait did not take its release within %v", waitTotal)
	}
}

// clock is a time source a test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// reactions returns the reactions on a message, as a sorted string.
func (e *env) reactions(channel, ts string) string {
	m, _ := e.fake.Message(channel, ts)
	var r []string
	for k := range m.Reactions {
		r = append(r, k)
	}
	slices.Sort(r)
	return strings.Join(r, ",")
}

// waitReaction waits until the message's reactions are want.
func (e *env) waitReaction(channel, ts, want string) {
	e.t.Helper()
	waitFor(e.t, func() error {
		if got := e.reactions(channel, ts); got != want {
			return fmt.Errorf("reactions on %s = %q, want %q", ts, got, want)
		}
		return nil
	})
}
