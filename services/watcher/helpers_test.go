package watcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat"
)

// waitTotal bounds every wait for eventual state: a ceiling for a slow
// machine, never an assertion about speed.
const waitTotal = 40 * time.Second

var ana = &chatv1.Identity{Id: "console:ana", Name: "ana"}

// env is one NATS server with the streams, an inventory, and a chat
// replica whose RBAC lets the watcher run lb remove and nothing else.
type env struct {
	t    *testing.T
	url  string
	js   jetstream.JetStream
	nc   *nats.Conn
	chat *chat.Service
	lb   *fakeLB
	lbKV jetstream.KeyValue // sb_lb_desired
	// envOf is each host's environment in the inventory.
	envOf map[string]string
}

// setLBState writes the desired state of host in backend superagg to
// sb_lb_desired the way the lb service's commands do (key
// srv.<env>.<backend>.<server>, JSON; services/lb/desired.go).
func (e *env) setLBState(host, state, by, command string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.putLBState(ctx, host, state, by, command); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) putLBState(ctx context.Context, host, state, by, command string) error {
	env := e.envOf[host]
	v, err := json.Marshal(map[string]any{
		"env": env, "backend": "superagg", "server": host, "state": state,
		"reason": "kernel update", "by": by, "command": command,
		"command_id": "cmd-" + host, "job_id": "job-" + host, "at": time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	_, err = e.lbKV.Put(ctx, "srv."+env+".superagg."+host, v)
	return err
}

func newEnv(t *testing.T, hosts []string) *env {
	t.Helper()
	inv := superaggHosts("production", hosts)
	inv = append(inv, &inventoryv1.Host{Name: "web-1", Environment: "production", Role: "web", Backends: []string{"www"},
		State: inventoryv1.HostState_HOST_STATE_ACTIVE})
	return newEnvWithInventory(t, inv)
}

// superaggHosts are active hosts of backend superagg in env.
func superaggHosts(env string, names []string) []*inventoryv1.Host {
	var out []*inventoryv1.Host
	for _, h := range names {
		out = append(out, &inventoryv1.Host{Name: h, Environment: env, Role: "superagg", Backends: []string{"superagg"},
			State: inventoryv1.HostState_HOST_STATE_ACTIVE})
	}
	return out
}

// newEnvWithInventory is newEnv with the inventory given, and the lb
// service's bucket sb_lb_desired declared as lb declares it.
func newEnvWithInventory(t *testing.T, inv []*inventoryv1.Host) *env {
	t.Helper()
	s := natstest.RunServer(t)
	e := &env{t: t, url: s.ClientURL(), envOf: map[string]string{}}
	for _, h := range inv {
		e.envOf[h.GetName()] = h.GetEnvironment()
	}
	e.nc = natstest.ConnectURL(t, e.url)
	e.js = natstest.JetStream(t, e.nc)
	ctx := natstest.Context(t, 20*time.Second)
	if err := bus.EnsureStreams(ctx, e.js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	kv, err := inventory.Bucket(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inventory.Publish(ctx, kv, "r1", inv, nil); err != nil {
		t.Fatal(err)
	}
	e.lbKV, err = bus.EnsureBucket(ctx, e.js, 1, jetstream.KeyValueConfig{
		Bucket: wire.BucketLBDesired, Description: "lb: desired state of servers and rate limits, reconciliation bookkeeping",
		History: 5, Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := chat.DefaultConfig()
	cfg.Console.Addr = ""
	cfg.RBAC = chat.RBACConfig{
		Roles: map[string]chat.Role{
			"admin":      {Commands: []string{"*"}},
			"automation": {Commands: []string{"lb remove"}},
			"viewer":     {Commands: []string{"watcher status", "watcher explain"}},
		},
		Grants: []chat.Grant{
			{Users: []string{"console:ana"}, Roles: []string{"admin"}},
			{Users: []string{"automation:watcher"}, Roles: []string{"automation"}},
			{Users: []string{"console:vic"}, Roles: []string{"viewer"}},
		},
	}
	nc := natstest.ConnectURL(t, e.url)
	svc, err := chat.New(ctx, cfg, chat.Deps{NC: nc})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svc.Stop(ctx)
	})
	e.chat = svc
	return e
}

// fakeLB is a stand-in for the lb service's "lb remove": it records each
// run, keeps the server's desired state in sb_lb_desired and answers like
// lb would.
type fakeLB struct {
	mu   sync.Mutex
	runs []*commandv1.CommandRequest
	fail bool
}

func (f *fakeLB) removed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.runs {
		if !r.GetDryRun() {
			out = append(out, r.GetArgs()["host"]+"@"+r.GetArgs()["backend"]+" by "+r.GetRequester().GetId())
		}
	}
	return out
}

func (e *env) startFakeLB() *fakeLB {
	e.t.Helper()
	f := &fakeLB{}
	nc := natstest.ConnectURL(e.t, e.url)
	srv, err := command.Serve(context.Background(), nc, []command.Command{{
		Spec: &commandv1.CommandSpec{
			Name: "lb remove", Usage: "lb remove <host> <backend> [--dry-run] -- <reason>", Summary: "Take a server out of a backend.",
			Example: "lb remove web3 www -- disk failing",
			Args: []*commandv1.ArgSpec{
				{Name: "host", Type: commandv1.ArgType_ARG_TYPE_HOST, Required: true},
				{Name: "backend", Type: commandv1.ArgType_ARG_TYPE_BACKEND, Required: true},
			},
			Mutating: true, SupportsDryRun: true, TextRequired: true, TextName: "reason",
		},
		Run: func(ctx context.Context, job *command.Job) error {
			f.mu.Lock()
			f.runs = append(f.runs, proto.CloneOf(job.Request()))
			fail := f.fail
			f.mu.Unlock()
			if fail {
				return command.UserErrorf("removing %s would leave backend %s below its minimum", job.Arg("host"), job.Arg("backend"))
			}
			if !job.DryRun() {
				if err := e.putLBState(ctx, job.Arg("host"), "maint", job.Requester().GetName(), job.Request().GetCommand()); err != nil {
					return fmt.Errorf("save desired state of %s: %w", job.Arg("host"), err)
				}
			}
			return job.Done(ctx, fmt.Sprintf("%s removed from %s", job.Arg("host"), job.Arg("backend")))
		},
	}}, command.Options{Service: "lb", StopGrace: 500 * time.Millisecond})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { srv.Stop(context.Background()) })
	e.lb = f
	return f
}

// testConfig is a watcher with one check over backend superagg,
// evaluated every second.
func testConfig(graphiteURL string) Config {
	cfg := DefaultConfig()
	cfg.Graphite.URL = graphiteURL
	cfg.Lease = 3 * time.Second
	cfg.ActionTimeout = 30 * time.Second
	ch := DefaultCheck()
	ch.Name = "superagg-canary"
	ch.Backend = "superagg"
	ch.Target = "canary.{host}.points_received"
	ch.Interval = time.Second
	ch.SickAfter, ch.RecoverAfter = 2, 2
	ch.Safety = Safety{MaxRemovalsPerHour: 2, MinHealthyFraction: 0.5, Cooldown: time.Hour}
	cfg.Checks = []Check{ch}
	return cfg
}

// startWatcher starts a replica on its own connection; stop it with the
// returned function (also called when the test ends).
func (e *env) startWatcher(cfg Config, d Deps) (*Service, func()) {
	e.t.Helper()
	if d.NC == nil {
		d.NC = natstest.ConnectURL(e.t, e.url)
	}
	ctx := natstest.Context(e.t, 20*time.Second)
	svc, err := New(ctx, cfg, d)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			svc.Stop(ctx)
		})
	}
	e.t.Cleanup(stop)
	return svc, stop
}

// opsPosts returns the posts of the console ops channel, in order.
func (e *env) opsPosts() []*chatv1.ChatPost {
	e.t.Helper()
	var out []*chatv1.ChatPost
	for _, m := range e.readAll(wire.StreamChat, wire.ChatPostSubject("console", "ops")) {
		var p chatv1.ChatPost
		if err := wire.Unmarshal(m.Data(), &p); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, &p)
	}
	return out
}

// watcherPosts are the ops posts the watcher wrote itself.
func (e *env) watcherPosts() []*chatv1.ChatPost {
	var out []*chatv1.ChatPost
	for _, p := range e.opsPosts() {
		if p.GetAuthor().GetId() == "automation:watcher" && strings.HasPrefix(p.GetId(), "watcher-") {
			out = append(out, p)
		}
	}
	return out
}

func (e *env) events(typ string) []*eventv1.Event {
	e.t.Helper()
	var out []*eventv1.Event
	for _, m := range e.readAll(wire.StreamEvents, wire.EventSubject("watcher", typ)) {
		var ev eventv1.Event
		if err := wire.Unmarshal(m.Data(), &ev); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, &ev)
	}
	return out
}

func (e *env) readAll(stream string, subjects ...string) []jetstream.Msg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := e.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []jetstream.Msg
	for pending := info.NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			out = append(out, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			e.t.Fatal(err)
		}
		if n == 0 {
			break
		}
		pending -= uint64(n)
	}
	return out
}

// waitPost waits for a watcher post containing all of the given parts.
func (e *env) waitPost(parts ...string) *chatv1.ChatPost {
	e.t.Helper()
	var found *chatv1.ChatPost
	natstest.WaitFor(e.t, waitTotal, 100*time.Millisecond, func() error {
		for _, p := range e.watcherPosts() {
			if containsAll(p.GetText(), parts) {
				found = p
				return nil
			}
		}
		return fmt.Errorf("no watcher post with %q yet; posts: %s", parts, texts(e.watcherPosts()))
	})
	return found
}

func (e *env) countPosts(parts ...string) int {
	n := 0
	for _, p := range e.watcherPosts() {
		if containsAll(p.GetText(), parts) {
			n++
		}
	}
	return n
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func texts(ps []*chatv1.ChatPost) string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%q", p.GetText()))
	}
	return strings.Join(out, "\n")
}

// say sends text to the chat ingress as who, and waits for the job's
// final answer in its thread.
func (e *env) say(who *chatv1.Identity, text string) (*chatv1.ChatReply, *chatv1.ChatPost) {
	e.t.Helper()
	msg := &chatv1.ChatMessage{Id: "m" + emit.NewID()[:12], Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops"},
		Author: proto.CloneOf(who), Text: text}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reply := e.chat.Handle(ctx, msg)
	var final *chatv1.ChatPost
	natstest.WaitFor(e.t, waitTotal, 50*time.Millisecond, func() error {
		for _, p := range e.opsPosts() {
			if p.GetConversation().GetThread() == msg.GetId() && (p.GetKind() == chatv1.Kind_KIND_RESULT || p.GetKind() == chatv1.Kind_KIND_ERROR) {
				final = p
				return nil
			}
		}
		return fmt.Errorf("no answer to %q yet (reply %v)", text, reply)
	})
	return reply, final
}

// feed is canary data as a function of host and interval start: every
// host sends every interval except those listed in stopped (from when).
type feed struct {
	mu      sync.Mutex
	stopped map[string]int64
}

func newFeed() *feed { return &feed{stopped: map[string]int64{}} }

func (f *feed) stop(host string, at time.Time) {
	f.mu.Lock()
	f.stopped[host] = at.Unix()
	f.mu.Unlock()
}

// resume makes host's data whole again, the past included (as if it had
// been sent late).
func (f *feed) resume(host string) {
	f.mu.Lock()
	delete(f.stopped, host)
	f.mu.Unlock()
}

func (f *feed) data(host string, ts int64) (float64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if at, ok := f.stopped[host]; ok && ts >= at {
		return 0, false
	}
	return 6, true
}

func fleetNames(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("superagg-%04d", i))
	}
	return slices.Clip(out)
}
