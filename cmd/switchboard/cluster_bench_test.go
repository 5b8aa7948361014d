package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// BenchmarkClusterR3 measures the exactly-once path on the 3-node loopback
// cluster of deploy/nats (TLS, nkeys, R3 streams), with two chat replicas as
// separate processes: one sender's latency from the text sent to the result
// post, commands/s with 16 senders, and the time from a node's death to the
// next command answered (published, and stored on CHAT, where an adapter
// reads it). "fsync-always" is the shipped node.conf;
// "fsync-default" drops sync_interval (JetStream's 2-minute default), so the
// ratio is what the stated durability costs.
//
//	go test -run '^$' -bench ClusterR3 -benchtime 1x ./cmd/switchboard/
func BenchmarkClusterR3(b *testing.B) {
	for _, mode := range []string{"fsync-always", "fsync-default"} {
		b.Run(mode, func(b *testing.B) {
			var edit func(string) string
			if mode == "fsync-default" {
				edit = func(conf string) string { return strings.Replace(conf, "sync_interval: always", "", 1) }
			}
			c := startNATSClusterWith(b, edit)
			js := ensureR3(b, c)
			startServe(b, c, "chat", "chat", "")
			startServe(b, c, "chat", "chat", "")
			cli := c.connect("cli")
			watch := c.connect("admin")
			results := newResultWatch(b, watch)
			var n atomic.Int64
			// send runs ping in channel and returns how long the answer took
			// and the job's id.
			send := func(channel string) (time.Duration, string, error) {
				id := fmt.Sprintf("bench-%s-%d", channel, n.Add(1))
				job := wire.JobID("cli/" + channel + "/" + id)
				start := time.Now()
				done := results.expect(job)
				msg := &chatv1.ChatMessage{Id: id, Conversation: &chatv1.Conversation{Adapter: "cli", Channel: channel},
					Author: &chatv1.Identity{Id: "cli:bench", Name: "bench"}, Text: "ping"}
				data, _ := wire.Marshal(msg)
				resp, err := cli.Request(wire.ChatInSubject("cli"), data, 5*time.Second)
				if err != nil {
					return 0, job, err
				}
				var reply chatv1.ChatReply
				if err := wire.Unmarshal(resp.Data, &reply); err != nil || reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
					return 0, job, fmt.Errorf("not accepted: %v %q", reply.GetStatus(), reply.GetMessage())
				}
				select {
				case <-done:
					return time.Since(start), job, nil
				case <-time.After(10 * time.Second):
					return 0, job, fmt.Errorf("no result for %s", id)
				}
			}
			for range 50 { // warm up
				if _, _, err := send("warm"); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				// Baseline in the same run: the R3 primitives a command is
				// made of, from the same kind of connection.
				kv, err := js.KeyValue(context.Background(), wire.BucketJobs)
				if err != nil {
					b.Fatal(err)
				}
				var kvLat, pubLat []time.Duration
				for i := range 300 {
					start := time.Now()
					if _, err := kv.Create(context.Background(), fmt.Sprintf("bench.%s.%d", mode, i), []byte("x")); err != nil {
						b.Fatal(err)
					}
					kvLat = append(kvLat, time.Since(start))
					start = time.Now()
					if _, err := js.Publish(context.Background(), "sb.audit.bench", []byte("{}")); err != nil {
						b.Fatal(err)
					}
					pubLat = append(pubLat, time.Since(start))
				}
				slices.Sort(kvLat)
				slices.Sort(pubLat)
				b.ReportMetric(float64(kvLat[len(kvLat)/2].Microseconds()), "kv-create-p50-µs")
				b.ReportMetric(float64(pubLat[len(pubLat)/2].Microseconds()), "js-publish-p50-µs")

				var lat []time.Duration
				for range 300 {
					d, _, err := send("one")
					if err != nil {
						b.Fatal(err)
					}
					lat = append(lat, d)
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")

				const senders, window = 16, 5 * time.Second
				var done, failed atomic.Int64
				var wg sync.WaitGroup
				end := time.Now().Add(window)
				for i := range senders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for time.Now().Before(end) {
							if _, _, err := send(fmt.Sprintf("load%d", i)); err == nil {
								done.Add(1)
							} else {
								failed.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(done.Load())/window.Seconds(), "commands/s")
				// A command that failed under load is a finding, not noise.
				b.ReportMetric(float64(failed.Load()), "load-errors")

				// A node dies: how long until a command is answered again?
				c.kill(0)
				killed := time.Now()
				var answered string
				for {
					if _, job, err := send("failover"); err == nil {
						answered = job
						break
					}
					if time.Since(killed) > time.Minute {
						b.Fatal("no command answered within a minute of losing a node")
					}
				}
				b.ReportMetric(time.Since(killed).Seconds()*1000, "failover-ms")
				// What a chat adapter shows: the answer stored on CHAT.
				chat, err := js.Stream(context.Background(), wire.StreamChat)
				if err != nil {
					b.Fatal(err)
				}
				if err := waitStoredAnswer(chat, wire.ChatPostSubject("cli", "failover"), answered, time.Minute); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(time.Since(killed).Seconds()*1000, "failover-stored-ms")
				c.start(0)
			}
		})
	}
}

// resultWatch sees every result post on the cli adapter's channels with a
// core subscription. It sees a post when it is published, which in a
// fail-over can be before the stream stores it (the publisher retries): the
// fail-over time it gives is to the answer published, a lower bound of when
// a chat adapter shows it. The e2e test waits for the stored answer instead.
type resultWatch struct {
	mu      sync.Mutex
	waiting map[string]chan struct{}
}

func newResultWatch(b testing.TB, nc *nats.Conn) *resultWatch {
	w := &resultWatch{waiting: map[string]chan struct{}{}}
	_, err := nc.Subscribe(wire.SubjectChatPostPrefix+".cli.>", func(m *nats.Msg) {
		var p chatv1.ChatPost
		if wire.Unmarshal(m.Data, &p) != nil || (p.GetKind() != chatv1.Kind_KIND_RESULT && p.GetKind() != chatv1.Kind_KIND_ERROR) {
			return
		}
		w.mu.Lock()
		if ch, ok := w.waiting[p.GetJobId()]; ok {
			close(ch)
			delete(w.waiting, p.GetJobId())
		}
		w.mu.Unlock()
	})
	if err != nil {
		b.Fatal(err)
	}
	nc.Flush()
	return w
}

func (w *resultWatch) expect(job string) <-chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	w.waiting[job] = ch
	w.mu.Unlock()
	return ch
}
