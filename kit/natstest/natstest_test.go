package natstest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-ops/switchboard/kit/natstest"
)

func TestRunServerGivesAJetStreamServerThatStopsWithTheTest(t *testing.T) {
	var s *server.Server
	t.Run("inner", func(t *testing.T) {
		s = natstest.RunServer(t, func(o *server.Options) { o.MaxPayload = 1 << 20 })
		nc := natstest.Connect(t, s)
		if got := nc.MaxPayload(); got != 1<<20 {
			t.Errorf("MaxPayload = %d, want the option's %d", got, 1<<20)
		}
		js := natstest.JetStream(t, nc)
		ctx := natstest.Context(t, 10*time.Second)
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
			t.Fatalf("create stream: %v", err)
		}
		if _, err := js.Publish(ctx, "t.1", []byte("hello")); err != nil {
			t.Fatalf("publish: %v", err)
		}
		if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") {
			t.Errorf("ClientURL = %s, want a loopback URL", s.ClientURL())
		}
	})
	if s.Running() {
		t.Errorf("server still running after its test ended")
	}
}

func TestContextHasTheGivenDeadline(t *testing.T) {
	ctx := natstest.Context(t, time.Hour)
	if _, ok := ctx.Deadline(); !ok {
		t.Fatal("Context has no deadline")
	}
	if ctx.Err() != nil {
		t.Fatalf("Context ended early: %v", ctx.Err())
	}
}

func TestWaitForReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	natstest.WaitFor(t, 10*time.Second, time.Millisecond, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Errorf("f called %d times, want 3 (stop at the first nil)", calls)
	}
}

func TestRunNodeRestartKeepsTheStoreAndThePort(t *testing.T) {
	n := natstest.RunNode(t)
	url := n.URL()
	if url != n.ClientURL() {
		t.Errorf("URL() = %s, ClientURL() = %s; want the same", url, n.ClientURL())
	}
	nc := natstest.ConnectURL(t, url)
	js := natstest.JetStream(t, nc)
	ctx := natstest.Context(t, 30*time.Second)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	ack, err := js.Publish(ctx, "t.1", []byte("survives"))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}

	n.Restart()

	if n.URL() != url || n.ClientURL() != url {
		t.Errorf("after restart URL() = %s, ClientURL() = %s; want %s", n.URL(), n.ClientURL(), url)
	}
	// The client reconnects on its own; wait for it and for JetStream to
	// have recovered the stream.
	natstest.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "T")
		if err != nil {
			return err
		}
		m, err := s.GetMsg(ctx, ack.Sequence)
		if err != nil {
			return err
		}
		if string(m.Data) != "survives" {
			return fmt.Errorf("message %d = %q, want %q", ack.Sequence, m.Data, "survives")
		}
		return nil
	})
}

// publish publishes one attempt with its own deadline: a request sent just
// as the client's server goes away gets no answer at all. The message id
// makes a retry of a publish whose ack was lost harmless.
func publish(ctx context.Context, js jetstream.JetStream, subject, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := js.Publish(ctx, subject, []byte(id), jetstream.WithMsgID(id))
	return err
}

// leaders returns the indexes of the meta leader and of the leader of
// stream, or -1 where there is none yet.
func leaders(c *natstest.Cluster, n int, stream string) (meta, streamLeader int) {
	meta, streamLeader = -1, -1
	for i := 0; i < n; i++ {
		s := c.Node(i)
		if s == nil {
			continue
		}
		if s.JetStreamIsLeader() {
			meta = i
		}
		if stream != "" && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			streamLeader = i
		}
	}
	return meta, streamLeader
}

// allCurrent reports an error unless the stream has a leader and every
// replica is online and caught up.
func allCurrent(info *jetstream.StreamInfo, want int) error {
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return errors.New("no stream leader")
	}
	if got := len(info.Cluster.Replicas) + 1; got != want {
		return fmt.Errorf("%d peers, want %d", got, want)
	}
	for _, p := range info.Cluster.Replicas {
		if p.Offline || !p.Current {
			return fmt.Errorf("peer %s offline=%v current=%v", p.Name, p.Offline, p.Current)
		}
	}
	return nil
}

func TestRunClusterHasAMetaLeaderAndTakesAnR3Stream(t *testing.T) {
	const n = 3
	c := natstest.RunCluster(t, n)
	meta, _ := leaders(c, n, "")
	if meta < 0 {
		t.Fatal("RunCluster returned without a meta leader")
	}
	if peers := c.Node(meta).JetStreamClusterPeers(); len(peers) != n {
		t.Errorf("meta leader sees peers %v online, want all %d", peers, n)
	}
	if got := strings.Count(c.URL(), "nats://127.0.0.1:"); got != n {
		t.Errorf("URL() = %s, want %d servers", c.URL(), n)
	}
	nc := natstest.ConnectURL(t, c.URL())
	js := natstest.JetStream(t, nc)
	ctx := natstest.Context(t, 30*time.Second)
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
	if err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	if _, err := js.Publish(ctx, "r3.a", []byte("a")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 {
		t.Errorf("stream has %d replicas, want 3", info.Config.Replicas)
	}
	if info.Cluster == nil || info.Cluster.Name != "sbtest" {
		t.Errorf("stream cluster = %+v, want sbtest", info.Cluster)
	}
}

func TestClusterSurvivesAKilledNodeThatRejoinsOnRestart(t *testing.T) {
	const n = 3
	c := natstest.RunCluster(t, n)
	nc := natstest.ConnectURL(t, c.URL())
	js := natstest.JetStream(t, nc)
	ctx := natstest.Context(t, 60*time.Second)
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
	if err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	if _, err := js.Publish(ctx, "r3.before", []byte("before")); err != nil {
		t.Fatalf("publish: %v", err)
	}

	// Kill a node that leads neither the meta group nor the stream.
	var meta, leader int
	natstest.WaitFor(t, 10*time.Second, 25*time.Millisecond, func() error {
		meta, leader = leaders(c, n, "R3")
		if meta < 0 || leader < 0 {
			return fmt.Errorf("meta leader %d, stream leader %d", meta, leader)
		}
		return nil
	})
	victim := -1
	for i := 0; i < n; i++ {
		if i != meta && i != leader {
			victim = i
			break
		}
	}
	c.Kill(victim)
	if c.Node(victim) != nil {
		t.Fatalf("Node(%d) is not nil after Kill", victim)
	}

	// The stream keeps working on two of three; the client may have been on
	// the killed node and need to reconnect first.
	natstest.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		return publish(ctx, js, "r3.during", "during")
	})

	c.Restart(victim)
	if c.Node(victim) == nil || !c.Node(victim).Running() {
		t.Fatalf("Node(%d) not running after Restart", victim)
	}
	natstest.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		return allCurrent(info, 3)
	})

	// The restarted node is a voting member again: with another node gone,
	// it and the third still make a quorum and hold every message.
	other := (victim + 1) % n
	c.Kill(other)
	natstest.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		return publish(ctx, js, "r3.after", "after")
	})
	var info *jetstream.StreamInfo
	natstest.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() (err error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		info, err = st.Info(ctx)
		return err
	})
	if info.State.Msgs != 3 {
		t.Errorf("stream holds %d messages, want 3 (before, during, after)", info.State.Msgs)
	}
}
