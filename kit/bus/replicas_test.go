package bus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/natstest"
)

// declaredAssets are the JetStream streams behind everything EnsureStreams
// declares; a KV bucket is the stream KV_<bucket>.
var declaredAssets = []string{
	wire.StreamChat, wire.StreamEvents, wire.StreamAudit,
	"KV_" + wire.BucketJobs, "KV_" + wire.BucketReplicas, "KV_" + wire.BucketInventory,
}

// clusterData is what a test wrote before changing the replication, to be
// found again afterwards.
type clusterData struct {
	// messages maps a stream to its payloads in sequence order.
	messages map[string][]string
	// jobs maps sb_jobs keys to their values.
	jobs map[string]string
}

func writeClusterData(t *testing.T, ctx context.Context, js jetstream.JetStream) clusterData {
	t.Helper()
	d := clusterData{messages: map[string][]string{}, jobs: map[string]string{}}
	subjects := map[string]string{
		wire.StreamChat:   wire.ChatPostSubject("console", "ops"),
		wire.StreamEvents: wire.EventSubject("ci", "build.failed"),
		wire.StreamAudit:  wire.AuditSubject("request"),
	}
	for stream, subj := range subjects {
		for i := range 5 {
			payload := fmt.Sprintf(`{"stream":%q,"n":%d}`, stream, i)
			untilAnswered(t, "publish to "+subj, func() error {
				_, err := js.Publish(ctx, subj, []byte(payload))
				return err
			})
			d.messages[stream] = append(d.messages[stream], payload)
		}
	}
	kv, err := js.KeyValue(ctx, wire.BucketJobs)
	if err != nil {
		t.Fatalf("open %s: %v", wire.BucketJobs, err)
	}
	for i := range 5 {
		key, val := fmt.Sprintf("job.r1-%d", i), fmt.Sprintf(`{"state":"running","n":%d}`, i)
		untilAnswered(t, "create "+wire.BucketJobs+"/"+key, func() error {
			_, err := kv.Create(ctx, key, []byte(val))
			return err
		})
		d.jobs[key] = val
	}
	return d
}

// untilAnswered runs the write f until a stream answers it. On a cluster
// that has just formed, a new stream's interest reaches the other nodes a
// moment after it is created, and until then a write through them finds no
// responder (and so was not stored). Any other error fails the test.
func untilAnswered(t *testing.T, what string, f func() error) {
	t.Helper()
	natstest.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		err := f()
		if err != nil && !errors.Is(err, jetstream.ErrNoStreamResponse) {
			t.Fatalf("%s: %v", what, err)
		}
		return err
	})
}

// checkClusterData reads back every message and key through the stream
// leaders, then waits until every node of the cluster holds every message:
// data only the leader had would not survive the loss of that node.
func checkClusterData(t *testing.T, ctx context.Context, js jetstream.JetStream, c *natstest.Cluster, d clusterData) {
	t.Helper()
	for stream, payloads := range d.messages {
		st, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatalf("stream %s: %v", stream, err)
		}
		for i, want := range payloads {
			m, err := st.GetMsg(ctx, uint64(i+1))
			if err != nil {
				t.Fatalf("stream %s message %d: %v", stream, i+1, err)
			}
			if string(m.Data) != want {
				t.Errorf("stream %s message %d = %s, want %s", stream, i+1, m.Data, want)
			}
		}
	}
	kv, err := js.KeyValue(ctx, wire.BucketJobs)
	if err != nil {
		t.Fatalf("open %s: %v", wire.BucketJobs, err)
	}
	for key, want := range d.jobs {
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatalf("%s/%s: %v", wire.BucketJobs, key, err)
		}
		if string(e.Value()) != want {
			t.Errorf("%s/%s = %s, want %s", wire.BucketJobs, key, e.Value(), want)
		}
	}

	want := map[string]uint64{"KV_" + wire.BucketJobs: uint64(len(d.jobs))}
	for stream, payloads := range d.messages {
		want[stream] = uint64(len(payloads))
	}
	for i := range 3 {
		natstest.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			held, err := streamsOnNode(c.Node(i))
			if err != nil {
				return err
			}
			for stream, n := range want {
				st, ok := held[stream]
				if !ok {
					return fmt.Errorf("node %d has no replica of %s", i, stream)
				}
				if st.Msgs != n || st.FirstSeq != 1 {
					return fmt.Errorf("node %d holds %d messages of %s from sequence %d, want %d from 1", i, st.Msgs, stream, st.FirstSeq, n)
				}
			}
			return nil
		})
	}
}

// streamsOnNode returns the state of every stream replica node s holds.
func streamsOnNode(s *server.Server) (map[string]server.StreamState, error) {
	jsz, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		return nil, fmt.Errorf("jsz of %s: %w", s.Name(), err)
	}
	held := map[string]server.StreamState{}
	for _, acc := range jsz.AccountDetails {
		for _, st := range acc.Streams {
			held[st.Name] = st.State
		}
	}
	return held, nil
}

// waitReplicated checks that every declared stream and bucket is configured
// with want replicas, and waits until each has a leader and want-1 peers
// that have caught up.
func waitReplicated(t *testing.T, ctx context.Context, js jetstream.JetStream, want int) {
	t.Helper()
	for _, name := range declaredAssets {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if got := st.CachedInfo().Config.Replicas; got != want {
			t.Fatalf("stream %s configured with %d replicas, want %d", name, got, want)
		}
		natstest.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			info, err := st.Info(ctx)
			if err != nil {
				return err
			}
			if info.Cluster == nil || info.Cluster.Leader == "" {
				return fmt.Errorf("stream %s has no leader yet", name)
			}
			if got := len(info.Cluster.Replicas) + 1; got != want {
				return fmt.Errorf("stream %s runs on %d servers, want %d", name, got, want)
			}
			for _, p := range info.Cluster.Replicas {
				if !p.Current {
					return fmt.Errorf("stream %s peer %s has not caught up", name, p.Name)
				}
			}
			return nil
		})
	}
}

// assetConfigs returns the configuration of every declared stream and bucket.
func assetConfigs(t *testing.T, ctx context.Context, js jetstream.JetStream) map[string]jetstream.StreamConfig {
	t.Helper()
	configs := map[string]jetstream.StreamConfig{}
	for _, name := range declaredAssets {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		configs[name] = st.CachedInfo().Config
	}
	return configs
}

// TestEnsureStreamsRaisesReplicationWithoutLosingData follows an install
// that grows from `serve` with nats.replicas: 1 on a cluster to nats.replicas: 3,
// and then meets a replica still started with the old config.
func TestEnsureStreamsRaisesReplicationWithoutLosingData(t *testing.T) {
	t.Parallel()
	c := natstest.RunCluster(t, 3)
	js := natstest.JetStream(t, natstest.ConnectURL(t, c.URL()))
	ctx := natstest.Context(t, 50*time.Second)

	// The first `serve`, with nats.replicas: 1. A young cluster may refuse
	// its first requests for a moment (see TestEnsureStreamsOnAThreeNodeCluster).
	natstest.WaitFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return bus.EnsureStreams(ctx, js, bus.StreamOptions{Replicas: 1})
	})
	checkDeclared(t, ctx, js, 1)
	data := writeClusterData(t, ctx, js)

	// The operator sets nats.replicas: 3 and starts `serve` again.
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{Replicas: 3}); err != nil {
		t.Fatalf("EnsureStreams raising replicas from 1 to 3: %v", err)
	}
	waitReplicated(t, ctx, js, 3)
	checkDeclared(t, ctx, js, 3)
	checkClusterData(t, ctx, js, c, data)

	// Every further replica starting with nats.replicas: 3 changes nothing
	// and has nothing to warn about.
	raised := assetConfigs(t, ctx, js)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{Replicas: 3, Log: log}); err != nil {
		t.Fatalf("EnsureStreams with replicas 3 again: %v", err)
	}
	if diff := cmp.Diff(raised, assetConfigs(t, ctx, js)); diff != "" {
		t.Errorf("EnsureStreams with replicas 3 again changed the configs (-before +after):\n%s", diff)
	}
	if logs.Len() != 0 {
		t.Errorf("EnsureStreams with replicas 3 again warned:\n%s", logs.String())
	}

	// A replica started with a stale config (nats.replicas: 1) must not undo
	// the operator's choice: it keeps 3 replicas and says why.
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{Replicas: 1, Log: log}); err != nil {
		t.Fatalf("EnsureStreams with a stale replicas 1: %v", err)
	}
	if diff := cmp.Diff(raised, assetConfigs(t, ctx, js)); diff != "" {
		t.Errorf("EnsureStreams with a stale replicas 1 changed the configs (-before +after):\n%s", diff)
	}
	waitReplicated(t, ctx, js, 3)
	checkClusterData(t, ctx, js, c, data)
	for _, attr := range []string{
		`"stream":"CHAT"`, `"stream":"EVENTS"`, `"stream":"AUDIT"`,
		`"bucket":"sb_jobs"`, `"bucket":"sb_replicas"`, `"bucket":"sb_inventory"`,
	} {
		if !strings.Contains(logs.String(), attr) {
			t.Errorf("no warning with %s about keeping its replication; logs:\n%s", attr, logs.String())
		}
	}
}

// TestEnsureBucketKeepsALargerReplication covers a service's own bucket
// declared by a stale replica of that service.
func TestEnsureBucketKeepsALargerReplication(t *testing.T) {
	t.Parallel()
	c := natstest.RunCluster(t, 3)
	js := natstest.JetStream(t, natstest.ConnectURL(t, c.URL()))
	ctx := natstest.Context(t, 50*time.Second)
	kc := jetstream.KeyValueConfig{Bucket: "sb_test_state", History: 1}

	var kv jetstream.KeyValue
	natstest.WaitFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		kv, err = bus.EnsureBucket(ctx, js, 1, kc)
		return err
	})
	untilAnswered(t, "put k", func() error {
		_, err := kv.Put(ctx, "k", []byte("v"))
		return err
	})
	for _, tt := range []struct {
		replicas, want int
	}{
		{3, 3}, // the operator raises it
		{3, 3}, // another replica with the same config
		{1, 3}, // a replica with a stale config
	} {
		kv, err := bus.EnsureBucket(ctx, js, tt.replicas, kc)
		if err != nil {
			t.Fatalf("EnsureBucket with %d replicas: %v", tt.replicas, err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if got := st.Config().Replicas; got != tt.want {
			t.Errorf("EnsureBucket with %d replicas: bucket has %d, want %d", tt.replicas, got, tt.want)
		}
		// KV reads may be served by any replica, and a new one answers
		// once it has caught up: wait for that rather than for a leader read.
		natstest.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			e, err := kv.Get(ctx, "k")
			if err != nil {
				return fmt.Errorf("EnsureBucket with %d replicas: get k: %w", tt.replicas, err)
			}
			if string(e.Value()) != "v" {
				t.Fatalf("EnsureBucket with %d replicas: k = %q, want v", tt.replicas, e.Value())
			}
			return nil
		})
	}
}
