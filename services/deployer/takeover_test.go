package deployer

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/jobs"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/deployer/executor"
	execexec "github.com/switchboard-ops/switchboard/services/deployer/executor/exec"
)

// dyingExecutor runs hosts with the configured exec executor, except its
// die-th Run: there the hosts' Puppet runs happen, and then the results
// never come back, as when the replica dies in the middle of the batch.
// That Run ends (with every host cancelled) only when its context does.
type dyingExecutor struct {
	next  executor.Executor
	die   int32
	calls atomic.Int32
	once  sync.Once
	dying chan struct{} // closed once the die-th batch's runs have finished
}

func newDyingExecutor(t *testing.T, cfg Config, die int32) *dyingExecutor {
	t.Helper()
	next, err := execexec.New(cfg.Exec)
	if err != nil {
		t.Fatal(err)
	}
	return &dyingExecutor{next: next, die: die, dying: make(chan struct{})}
}

func (d *dyingExecutor) Run(ctx context.Context, hosts []executor.Host, a executor.Action) <-chan executor.Result {
	if d.calls.Add(1) != d.die {
		return d.next.Run(ctx, hosts, a)
	}
	out := make(chan executor.Result, len(hosts))
	go func() {
		defer close(out)
		for range d.next.Run(ctx, hosts, a) {
		}
		d.once.Do(func() { close(d.dying) })
		<-ctx.Done()
		for _, h := range hosts {
			out <- executor.Result{Host: h.Name, Status: executor.Cancelled, ExitCode: -1, Detail: "cancelled"}
		}
	}()
	return out
}

// waitDying waits until the replica is in the middle of its dying batch.
func (d *dyingExecutor) waitDying(t *testing.T) {
	t.Helper()
	select {
	case <-d.dying:
	case <-time.After(60 * time.Second):
		t.Fatalf("batch %d never started (%d batches ran)", d.die, d.calls.Load())
	}
}

// watchLease records every operation on a replica's lease in sb_replicas,
// so a test can tell a lease that lapsed (no operation) from one that was
// released (a delete).
func watchLease(t *testing.T, e *env, instance string) func() []jetstream.KeyValueOp {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := e.js.KeyValue(ctx, wire.BucketReplicas)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.Watch(ctx, wire.Token(ServiceName)+"."+wire.Token(instance))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ops []jetstream.KeyValueOp
	go func() {
		for u := range w.Updates() {
			if u != nil {
				mu.Lock()
				ops = append(ops, u.Operation())
				mu.Unlock()
			}
		}
	}()
	return func() []jetstream.KeyValueOp {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(ops)
	}
}

func threadSays(posts []*chatv1.ChatPost, parts ...string) bool {
	for _, p := range posts {
		all := true
		for _, s := range parts {
			all = all && strings.Contains(p.GetText(), s)
		}
		if all {
			return true
		}
	}
	return false
}

func threadText(posts []*chatv1.ChatPost) string {
	var b strings.Builder
	for _, p := range posts {
		fmt.Fprintf(&b, "  [%s] %s\n", p.GetKind(), p.GetText())
	}
	return b.String()
}

func TestAReplicaKilledMidBatchIsTakenOverAfterItsLeaseLapsesAndTheRolloutCompletes(t *testing.T) {
	e := newEnv(t, webHosts(8)) // web-0001..web-0010: 5 batches of 2
	cfg := e.config()
	dying := newDyingExecutor(t, cfg, 2)
	e.exec = dying
	a := e.start(cfg)
	e.exec = nil

	id := e.send("deploy", map[string]string{"service": "frontend", "target": "web@production"}, map[string]string{"version": "1.4.0", "batch": "2"}, false)
	dying.waitDying(t)
	// The second replica starts only now, so the first one surely owns the job.
	b := e.start(cfg)
	ops := watchLease(t, e, a.Instance())
	e.kill(a)

	p, posts := e.final(id, 90*time.Second)
	wantOK(t, p, "Deployed frontend 1.4.0 to web@production: 10 host(s) ok in 5 batch(es)")
	ctx := natstest.Context(t, 10*time.Second)
	store, err := jobs.Open(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	j, _, err := store.Get(ctx, wire.JobID(id))
	if err != nil {
		t.Fatal(err)
	}
	if j.GetAttempt() != 2 || j.GetOwner() != b.Instance() {
		t.Fatalf("job: attempt %d by %s, want attempt 2 by the surviving replica %s", j.GetAttempt(), j.GetOwner(), b.Instance())
	}
	if got := ops(); slices.Contains(got, jetstream.KeyValueDelete) || slices.Contains(got, jetstream.KeyValuePurge) {
		t.Fatalf("the killed replica released its lease (%v): the take-over must come from the lease lapsing", got)
	}
	if !threadSays(posts, "Replica "+a.Instance()+" stopped while running this job", "replica "+b.Instance()+" is resuming it (attempt 2)") {
		t.Errorf("the thread does not say the job was taken over:\n%s", threadText(posts))
	}
	if !threadSays(posts, "Resuming frontend web@production 1.4.0 at batch 2 of 5", "batches 1–1 finished before") {
		t.Errorf("the thread does not say where the rollout resumed:\n%s", threadText(posts))
	}

	// Batch 1 finished on the killed replica and never runs again; batch 2
	// was interrupted, so the take-over runs it once more (documented:
	// Puppet runs are idempotent, finished batches never rerun); the rest
	// run once, on the survivor.
	count := map[string]int{}
	for _, h := range e.runs() {
		count[h]++
	}
	for i := 1; i <= 10; i++ {
		h := fmt.Sprintf("web-%04d", i)
		want := 1
		if i == 3 || i == 4 {
			want = 2
		}
		if count[h] != want {
			t.Errorf("%s ran %d time(s), want %d", h, count[h], want)
		}
	}
}

func TestATakeOverAnswersARolloutThatHadEndedWithoutRunningAnotherBatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		saved func(r *rollout)
		check func(t *testing.T, p *chatv1.ChatPost)
	}{
		{
			name: "a rollout stopped by the failure limit stays failed",
			saved: func(r *rollout) {
				r.State, r.BatchesDone, r.OK = "failed", 2, 3
				r.Failed = []rFail{{Host: "web-0003", Status: "failed", Detail: "failures"}}
			},
			check: func(t *testing.T, p *chatv1.ChatPost) {
				wantError(t, p, "Stopped after batch 2 of 5: 1 host(s) failed, more than --max-failures=0 (web-0003 failed). 3 host(s) ok; 6 not run.")
			},
		},
		{
			name: "a rollout that ran every batch stays succeeded",
			saved: func(r *rollout) {
				r.State, r.BatchesDone, r.OK = "succeeded", 5, 10
			},
			check: func(t *testing.T, p *chatv1.ChatPost) {
				wantOK(t, p, "Deployed frontend 1.5.0 to web@production: 10 host(s) ok in 5 batch(es).")
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, webHosts(8))
			cfg := e.config()
			dying := newDyingExecutor(t, cfg, 2)
			e.exec = dying
			a := e.start(cfg)
			e.exec = nil
			id := e.send("deploy", map[string]string{"service": "frontend", "target": "web@production"}, map[string]string{"version": "1.5.0", "batch": "2"}, false)
			dying.waitDying(t)
			b := e.start(cfg)
			e.kill(a)

			// What the killed replica would have recorded had it reached
			// the end and died before answering.
			ctx := natstest.Context(t, 10*time.Second)
			r, err := b.loadRollout(ctx, wire.JobID(id))
			if err != nil || r == nil || r.BatchesDone != 1 {
				t.Fatalf("rollout before the take-over: %+v, %v (want batch 1 done)", r, err)
			}
			tc.saved(r)
			data, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.state.Put(ctx, rolloutKey(r.Job), data); err != nil {
				t.Fatal(err)
			}
			before := len(e.runs())

			p, posts := e.final(id, 90*time.Second)
			tc.check(t, p)
			if !threadSays(posts, "replica "+b.Instance()+" is resuming it (attempt 2)") ||
				!threadSays(posts, "The rollout had ended ("+r.State+", after batch "+fmt.Sprint(r.BatchesDone)+" of 5)", "nothing is run again") {
				t.Errorf("the thread does not say the ended rollout was taken over:\n%s", threadText(posts))
			}
			if threadSays(posts, "Resuming") {
				t.Errorf("the take-over resumed an ended rollout:\n%s", threadText(posts))
			}
			if runs := e.runs(); len(runs) != before {
				t.Fatalf("the take-over ran Puppet again on %v", runs[before:])
			}
		})
	}
}
