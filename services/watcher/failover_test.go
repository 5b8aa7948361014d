package watcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
)

// killSwitch dials NATS for a replica that is to die mid-cycle: the moment
// the replica writes a message whose protocol line starts with trigger
// ("PUB sb.chat.in.watcher " also matches HPUB), that message and everything after
// it are lost and the connection drops, as when the process is killed.
// Nothing is released and nothing is said on the way out, and it never
// connects again.
type killSwitch struct {
	trigger []byte
	killed  chan struct{}
	once    sync.Once
}

func newKillSwitch(trigger string) *killSwitch {
	return &killSwitch{trigger: []byte(trigger), killed: make(chan struct{})}
}

func (k *killSwitch) kill() { k.once.Do(func() { close(k.killed) }) }

// Dial implements nats.CustomDialer.
func (k *killSwitch) Dial(network, address string) (net.Conn, error) {
	select {
	case <-k.killed:
		return nil, errors.New("this replica was killed")
	default:
	}
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &killableConn{Conn: c, k: k}, nil
}

type killableConn struct {
	net.Conn
	k    *killSwitch
	mu   sync.Mutex
	tail []byte // the end of the last write, for a trigger split across writes
}

func (c *killableConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.k.killed:
		return 0, net.ErrClosed
	default:
	}
	seen := append(slices.Clone(c.tail), b...)
	if i := bytes.Index(seen, c.k.trigger); i >= 0 {
		if before := i - len(c.tail); before > 0 {
			_, _ = c.Conn.Write(b[:before]) // what the replica wrote before the fatal message
		}
		c.k.kill()
		_ = c.Conn.Close()
		return 0, net.ErrClosed
	}
	c.tail = seen[max(0, len(seen)-len(c.k.trigger)+1):]
	return c.Conn.Write(b)
}

// leaseHolder reads who holds the watcher's lease, from KV.
func (e *env) leaseHolder(ctx context.Context) string {
	e.t.Helper()
	kv, err := e.js.KeyValue(ctx, wire.BucketWatcher)
	if err != nil {
		return ""
	}
	entry, err := kv.Get(ctx, keyLeader)
	if err != nil {
		return ""
	}
	var v leaseValue
	if err := json.Unmarshal(entry.Value(), &v); err != nil {
		e.t.Fatal(err)
	}
	return v.Holder
}

// TestALeaderKilledMidCycleIsFinishedOnceByTheReplicaThatTakesOver kills
// the leader in the cycle that recorded its intent to remove a host —
// while it posts the decision, or while it sends the lb remove — without
// Stop, so it keeps its lease until the lease runs out. The other replica
// then finishes what was recorded: one lb remove, each post once.
func TestALeaderKilledMidCycleIsFinishedOnceByTheReplicaThatTakesOver(t *testing.T) {
	for _, tc := range []struct{ name, trigger string }{
		{"killed as it posts the decision", "PUB " + wire.ChatPostSubject("console", "ops") + " "},
		{"killed as it sends lb remove", "PUB " + wire.ChatInSubject("watcher") + " "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := fleetNames(8)
			e := newEnv(t, hosts)
			lb := e.startFakeLB()
			f := newFeed()
			gr := newFakeRender(t, hosts, f.data)
			cfg := testConfig(gr.srv.URL)
			cfg.Checks[0].Mode = ModeEnforce
			ctx := natstest.Context(t, 2*waitTotal)

			ks := newKillSwitch(tc.trigger)
			doomed := natstest.ConnectURL(t, e.url, nats.SetCustomDialer(ks), nats.NoReconnect(),
				nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // its death is the point, not news

			e.startWatcher(cfg, Deps{NC: doomed, Instance: "replica-a"})
			natstest.WaitFor(t, waitTotal, 100*time.Millisecond, func() error {
				if h := e.leaseHolder(ctx); h != "replica-a" {
					return fmt.Errorf("lease held by %q, want replica-a", h)
				}
				return nil
			})
			b, _ := e.startWatcher(cfg, Deps{Instance: "replica-b"})

			f.stop("superagg-0003", time.Now().Add(-10*time.Minute))
			select {
			case <-ks.killed:
			case <-ctx.Done():
				t.Fatalf("replica-a never reached the point where it dies; posts: %s", texts(e.watcherPosts()))
			}
			e.waitPost("superagg-0003 has now been removed from the backend superagg ✓")
			time.Sleep(3 * time.Second) // more cycles by the survivor
			if got, want := lb.removed(), []string{"superagg-0003@superagg by automation:watcher"}; !slices.Equal(got, want) {
				t.Fatalf("lb remove runs %v, want %v", got, want)
			}
			for _, text := range []string{"removing it from backend superagg", "has now been removed"} {
				if n := e.countPosts("superagg-0003", text); n != 1 {
					t.Fatalf("%d posts with %q, want 1: %s", n, text, texts(e.watcherPosts()))
				}
			}
			for _, typ := range []string{"sick", "acting", "acted"} {
				if got := e.events(typ); len(got) != 1 {
					t.Fatalf("%d %s events, want 1", len(got), typ)
				}
			}
			if leader := b.lease.leader(ctx); leader != "replica-b" {
				t.Fatalf("leader %q after the kill, want replica-b", leader)
			}
			st, _, err := b.loadState(ctx, "superagg-canary")
			if err != nil || len(st.Pending) != 0 || len(st.Outbox) != 0 {
				t.Fatalf("state after the take-over: pending %v outbox %v (%v)", st.Pending, st.Outbox, err)
			}
		})
	}
}
