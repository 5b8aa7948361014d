package lb

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/lb/haproxytest"
)

// testEnv is an embedded NATS server with the shared streams and an
// inventory, and helpers to send commands and read answers.
type testEnv struct {
	t  *testing.T
	nc *nats.Conn
	js jetstream.JetStream
	mu sync.Mutex
	n  int
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	js := natstest.JetStream(t, nc)
	if err := bus.EnsureStreams(natstest.Context(t, 10*time.Second), js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, nc: nc, js: js}
}

// seed publishes hosts of one environment to the inventory.
func (e *testEnv) seed(env, backend string, hosts ...string) {
	e.t.Helper()
	kv, err := inventory.Bucket(context.Background(), e.js)
	if err != nil {
		e.t.Fatal(err)
	}
	var hs []*inventoryv1.Host
	for _, h := range hosts {
		hs = append(hs, &inventoryv1.Host{Name: h, Environment: env, Role: "web", Backends: []string{backend}, State: inventoryv1.HostState_HOST_STATE_ACTIVE})
	}
	if _, err := inventory.Publish(context.Background(), kv, "test", hs, nil); err != nil {
		e.t.Fatal(err)
	}
}

func testConfig(instances ...*haproxytest.Instance) Config {
	cfg := DefaultConfig()
	ec := EnvConfig{MapFile: instances[0].MapFile}
	for i, in := range instances {
		ec.Instances = append(ec.Instances, InstanceConfig{Name: fmt.Sprintf("lb%d", i+1), Address: in.Address()})
	}
	cfg.Environments = map[string]EnvConfig{"production": ec}
	cfg.Timeout = 2 * time.Second
	cfg.ReconcileInterval = time.Hour // tests that reconcile say so
	cfg.DrainPoll = 100 * time.Millisecond
	return cfg
}

func (e *testEnv) start(cfg Config) *Service {
	e.t.Helper()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("SB_TEST_LOG") == "debug" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	svc, err := New(context.Background(), cfg, Deps{NC: e.nc, Log: log})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { svc.Stop(context.Background()) })
	return svc
}

// req is a command as the chat would send it.
type req struct {
	cmd   string
	args  map[string]string
	flags map[string]string
	text  string
	roles []string
	dry   bool
	id    string
}

func (e *testEnv) request(r req) *commandv1.CommandRequest {
	if r.id == "" {
		e.mu.Lock()
		e.n++
		r.id = fmt.Sprintf("console/ops/%s-%d", e.t.Name(), e.n)
		e.mu.Unlock()
	}
	return &commandv1.CommandRequest{
		Id: r.id, Command: r.cmd, Args: r.args, Flags: r.flags, Text: r.text, DryRun: r.dry,
		Requester:    &chatv1.Identity{Id: "console:ana", Name: "ana", Roles: r.roles},
		Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops", Thread: r.id},
		Raw:          r.cmd,
	}
}

// sendOn sends a request on nc and returns the acknowledgement.
func (e *testEnv) sendOn(nc *nats.Conn, r *commandv1.CommandRequest) *commandv1.CommandAck {
	e.t.Helper()
	data, _ := wire.Marshal(r)
	f := strings.Fields(r.Command)
	resp, err := nc.Request(wire.CommandSubject(f[0], f[1]), data, 5*time.Second)
	if err != nil {
		e.t.Fatalf("request %s: %v", r.Command, err)
	}
	var ack commandv1.CommandAck
	if err := wire.Unmarshal(resp.Data, &ack); err != nil {
		e.t.Fatal(err)
	}
	return &ack
}

// run sends a command and waits for its final post.
func (e *testEnv) run(r req, within time.Duration) (*chatv1.ChatPost, []*chatv1.ChatPost) {
	e.t.Helper()
	cr := e.request(r)
	ack := e.sendOn(e.nc, cr)
	if ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_ACCEPTED {
		e.t.Fatalf("%s: ack %v %s", r.cmd, ack.GetStatus(), ack.GetReason())
	}
	return e.final(cr.GetId(), within)
}

// posts returns every post of the ops channel (thread "" for the channel
// itself, or one thread).
func (e *testEnv) posts(thread string, all bool) []*chatv1.ChatPost {
	e.t.Helper()
	ps := natstest.Posts(e.t, e.js, wire.ChatPostSubject("console", "ops"))
	if all {
		return ps
	}
	return natstest.InThread(ps, thread)
}

func (e *testEnv) final(thread string, within time.Duration) (*chatv1.ChatPost, []*chatv1.ChatPost) {
	e.t.Helper()
	return natstest.FinalPost(e.t, e.js, wire.ChatPostSubject("console", "ops"), thread, within)
}

// notice waits for a notice in the ops channel containing every part.
func (e *testEnv) notice(within time.Duration, parts ...string) *chatv1.ChatPost {
	e.t.Helper()
	var found *chatv1.ChatPost
	natstest.WaitFor(e.t, within, 100*time.Millisecond, func() error {
		for _, p := range e.posts("", true) {
			if p.GetKind() != chatv1.Kind_KIND_NOTICE {
				continue
			}
			ok := true
			for _, s := range parts {
				ok = ok && strings.Contains(p.GetText(), s)
			}
			if ok {
				found = p
				return nil
			}
		}
		return fmt.Errorf("no notice containing %q yet", parts)
	})
	return found
}

// events returns the lb events of a type published so far.
func (e *testEnv) events(typ string) []*eventv1.Event {
	e.t.Helper()
	return natstest.Events(e.t, e.js, wire.EventSubject("lb", typ))
}

// waitState waits until a server has a state on an instance.
func waitState(t *testing.T, in *haproxytest.Instance, backend, server, want string, within time.Duration) {
	t.Helper()
	natstest.WaitFor(t, within, 50*time.Millisecond, func() error {
		if got, _ := in.State(backend, server); got != want {
			return fmt.Errorf("%s/%s is %s, want %s", backend, server, got, want)
		}
		return nil
	})
}

// webFleet starts HTTP backends and n HAProxy instances over them.
func webFleet(t *testing.T, n int, delay time.Duration, hosts ...string) ([]*haproxytest.Instance, map[string]*haproxytest.HTTPServer) {
	t.Helper()
	web := haproxytest.StartHTTP(t, delay, hosts...)
	var servers []haproxytest.Server
	for _, h := range hosts {
		servers = append(servers, haproxytest.Server{Name: h, Addr: web[h].Addr})
	}
	var out []*haproxytest.Instance
	for i := 0; i < n; i++ {
		out = append(out, haproxytest.Start(t, haproxytest.Config{
			Backends: []haproxytest.Backend{{Name: "www", Check: true, Servers: servers}},
			Map:      map[string]string{"free": "10"},
		}))
	}
	return out, web
}

func fmtErrorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// seedMany publishes hosts of several environments to the inventory, each
// in backend www.
func (e *testEnv) seedMany(envs map[string][]string) jetstream.KeyValue {
	e.t.Helper()
	kv, err := inventory.Bucket(context.Background(), e.js)
	if err != nil {
		e.t.Fatal(err)
	}
	var hs []*inventoryv1.Host
	for env, hosts := range envs {
		for _, h := range hosts {
			hs = append(hs, &inventoryv1.Host{Name: h, Environment: env, Role: "web", Backends: []string{"www"}, State: inventoryv1.HostState_HOST_STATE_ACTIVE})
		}
	}
	if _, err := inventory.Publish(context.Background(), kv, "test", hs, nil); err != nil {
		e.t.Fatal(err)
	}
	return kv
}
