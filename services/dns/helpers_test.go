package dns_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
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
	"github.com/switchboard-ops/switchboard/services/dns"
	"github.com/switchboard-ops/switchboard/services/dns/knottest"
	"github.com/switchboard-ops/switchboard/services/dns/rfc2136"
)

const (
	fwd = "example.test."
	rev = "2.0.192.in-addr.arpa."
	// testLease is the replicas' lease, short so a take-over comes soon.
	testLease = 2 * time.Second
)

// clock is a settable clock for plan expiry.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

type env struct {
	t     *testing.T
	nc    *nats.Conn
	js    jetstream.JetStream
	knot  *knottest.Server // nil in a newBusEnv
	svc   *dns.Service
	clock *clock
	invKV jetstream.KeyValue
	seq   atomic.Int64
	// dataDir is the data dir the last replica started with.
	dataDir string
}

// testRules: A and AAAA per host, a round-robin name per backend, a CNAME
// per host, and PTRs in the reverse zone.
func testRules() []dns.Rule {
	return []dns.Rule{
		{Type: "A", Name: "{host}.{env}.example.test."},
		{Type: "AAAA", Name: "{host}.{env}.example.test."},
		{Type: "A", Per: "backend", Name: "{backend}.example.test.", TTL: 60},
		{Type: "CNAME", Name: "{host}.example.test.", Target: "{host}.{env}.example.test."},
		{Type: "PTR", Target: "{host}.{env}.example.test."},
	}
}

func testHosts() []*inventoryv1.Host {
	return []*inventoryv1.Host{
		{Name: "web1", Environment: "prod", Role: "web", Ipv4: "192.0.2.11", Ipv6: "2001:db8::11", Backends: []string{"www"}, State: inventoryv1.HostState_HOST_STATE_ACTIVE},
		{Name: "web2", Environment: "prod", Role: "web", Ipv4: "192.0.2.12", Backends: []string{"www"}, State: inventoryv1.HostState_HOST_STATE_ACTIVE},
		{Name: "db1", Environment: "prod", Role: "db", Ipv4: "192.0.2.21", State: inventoryv1.HostState_HOST_STATE_ACTIVE},
	}
}

// newEnv starts NATS and Knot (serving fwd and rev with hand-made records)
// and seeds the inventory; start() then starts the service.
func newEnv(t *testing.T) *env {
	t.Helper()
	k := knottest.Start(t, knottest.Zone{Name: fwd}, knottest.Zone{Name: rev})
	e := newBusEnv(t, testHosts())
	e.knot = k
	return e
}

// newBusEnv starts NATS and seeds the inventory with hosts, without Knot:
// for tests on the zone file provider (zoneFileConfig).
func newBusEnv(t *testing.T, hosts []*inventoryv1.Host) *env {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	js := natstest.JetStream(t, nc)
	ctx := natstest.Context(t, 20*time.Second)
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{ReplicaLease: testLease}); err != nil {
		t.Fatal(err)
	}
	kv, err := inventory.Bucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, nc: nc, js: js, clock: &clock{}, invKV: kv}
	e.publish("rev1", hosts)
	return e
}

func (e *env) publish(rev string, hosts []*inventoryv1.Host) {
	e.t.Helper()
	if _, err := inventory.Publish(natstest.Context(e.t, 10*time.Second), e.invKV, rev, hosts, nil); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) config() dns.Config {
	cfg := dns.DefaultConfig()
	cfg.Provider = "rfc2136"
	cfg.RFC2136.Server = e.knot.Addr
	cfg.RFC2136.TSIGKey = e.knot.KeyName
	cfg.RFC2136.TSIGSecret = e.knot.Secret
	cfg.RFC2136.Timeout = 5 * time.Second
	cfg.Zones = []string{fwd, rev}
	cfg.Rules = testRules()
	cfg.Owner = "test"
	return cfg
}

// zoneFileConfig is config() on zone files in a fresh directory.
func (e *env) zoneFileConfig() dns.Config {
	cfg := dns.DefaultConfig()
	cfg.ZoneFile.Dir = e.t.TempDir()
	cfg.Zones = []string{fwd, rev}
	cfg.Rules = testRules()
	cfg.Owner = "test"
	return cfg
}

func (e *env) start(cfg dns.Config) *dns.Service {
	e.t.Helper()
	return e.startWrapped(cfg, nil)
}

// startWrapped starts a replica whose provider wrap wraps (none when nil).
func (e *env) startWrapped(cfg dns.Config, wrap func(dns.Provider) dns.Provider) *dns.Service {
	e.t.Helper()
	ctx := natstest.Context(e.t, 20*time.Second)
	e.dataDir = e.t.TempDir()
	svc, err := dns.New(ctx, cfg, dns.Deps{NC: e.nc, Now: e.clock.now, DataDir: e.dataDir, Lease: testLease, WrapProvider: wrap})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { svc.Stop(context.Background()) })
	e.svc = svc
	return svc
}

// rfc is a client with the test key, for looking at the zone directly.
func (e *env) rfc() *rfc2136.Client {
	return rfc2136.New(e.knot.Addr, rfc2136.WithTSIG(e.knot.KeyName, e.knot.Algorithm, e.knot.Secret))
}

// run sends a command as who and returns its final post.
func (e *env) run(who, text string, args map[string]string, dryRun bool) *chatv1.ChatPost {
	e.t.Helper()
	id := e.send(who, text, args, dryRun)
	final, _ := natstest.FinalPost(e.t, e.js, wire.ChatPostSubject("console", "ops"), id, 60*time.Second)
	return final
}

// send sends a command as who once it is accepted, and returns its id,
// which is also its thread.
func (e *env) send(who, text string, args map[string]string, dryRun bool) string {
	e.t.Helper()
	id := fmt.Sprintf("%s-%d-%d", e.t.Name(), time.Now().UnixNano(), e.seq.Add(1))
	id = strings.NewReplacer("/", "-", " ", "-").Replace(id)
	req := &commandv1.CommandRequest{
		Id: id, Command: text, Args: args, DryRun: dryRun, Raw: text,
		Requester:    &chatv1.Identity{Id: "console:" + who, Name: who},
		Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops", Thread: id},
	}
	data, _ := wire.Marshal(req)
	resp, err := e.nc.Request(wire.CommandSubject("dns", strings.Fields(text)[1]), data, 10*time.Second)
	if err != nil {
		e.t.Fatalf("%s: %v", text, err)
	}
	var ack commandv1.CommandAck
	if err := wire.Unmarshal(resp.Data, &ack); err != nil || ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_ACCEPTED {
		e.t.Fatalf("%s: ack %v (%v)", text, &ack, err)
	}
	return id
}

// posts returns every post in a channel so far.
func (e *env) posts(adapter, channel string) []*chatv1.ChatPost {
	e.t.Helper()
	return natstest.Posts(e.t, e.js, wire.ChatPostSubject(adapter, channel))
}

// events returns every event on a subject so far.
func (e *env) events(subject string) []*eventv1.Event {
	e.t.Helper()
	return natstest.Events(e.t, e.js, subject)
}
