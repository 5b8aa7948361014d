package command_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/jobs"
	"github.com/switchboard-ops/switchboard/kit/natstest"
)

const testLease = 2 * time.Second

// TestMain doubles as a replica process for the kill -9 test: with
// SB_TEST_REPLICA_NATS set, the test binary serves the test commands and
// prints "ready" until it is killed.
func TestMain(m *testing.M) {
	if url := os.Getenv("SB_TEST_REPLICA_NATS"); url != "" {
		os.Exit(runReplica(url))
	}
	os.Exit(m.Run())
}

func runReplica(url string) int {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv, err := command.Serve(context.Background(), nc, slowCommands(nil), command.Options{Service: "t", Lease: testLease})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready", srv.Instance())
	select {}
}

var stepsArg = []*commandv1.ArgSpec{{Name: "steps", Type: commandv1.ArgType_ARG_TYPE_INT, Required: true, Min: 1, Max: 1000}}

// slowCommands posts one progress step every 100ms; started counts runs.
func slowCommands(started *atomic.Int32) []command.Command {
	run := func(ctx context.Context, job *command.Job) error {
		if started != nil {
			started.Add(1)
		}
		n, _ := strconv.Atoi(job.Arg("steps"))
		if job.Attempt() > 1 {
			job.Progressf(ctx, "attempt %d picks up", job.Attempt())
		}
		for i := 1; i <= n; i++ {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			if err := job.Progressf(ctx, "step %d of %d", i, n); err != nil {
				return err
			}
		}
		return job.Done(ctx, fmt.Sprintf("did %d steps", n))
	}
	return []command.Command{
		{Spec: &commandv1.CommandSpec{Name: "t slow", Usage: "t slow <steps>", Summary: "Slow.", Example: "t slow 3", Args: stepsArg}, Run: run},
		{Spec: &commandv1.CommandSpec{Name: "t resumable", Usage: "t resumable <steps>", Summary: "Slow, resumable.", Example: "t resumable 3", Args: stepsArg, Resumable: true}, Run: run},
		{Spec: &commandv1.CommandSpec{Name: "t fail", Usage: "t fail", Summary: "Fails.", Example: "t fail"}, Run: func(ctx context.Context, job *command.Job) error {
			return command.UserErrorf("web9 is not in backend www")
		}},
		{Spec: &commandv1.CommandSpec{Name: "t panic", Usage: "t panic", Summary: "Panics.", Example: "t panic"}, Run: func(ctx context.Context, job *command.Job) error {
			panic("boom")
		}},
	}
}

type env struct {
	t  *testing.T
	nc *nats.Conn
	js jetstream.JetStream
}

func newEnv(t *testing.T, url string) *env {
	t.Helper()
	nc := natstest.ConnectURL(t, url)
	js := natstest.JetStream(t, nc)
	if err := bus.EnsureStreams(natstest.Context(t, 10*time.Second), js, bus.StreamOptions{ReplicaLease: testLease}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, nc: nc, js: js}
}

func (e *env) serve(cmds []command.Command) *command.Server {
	e.t.Helper()
	srv, err := command.Serve(context.Background(), e.nc, cmds, command.Options{Service: "t", Lease: testLease, StopGrace: time.Second, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { srv.Stop(context.Background()) })
	return srv
}

func request(id, name string, args map[string]string) *commandv1.CommandRequest {
	return &commandv1.CommandRequest{
		Id:           id,
		Command:      name,
		Args:         args,
		Requester:    &chatv1.Identity{Id: "console:ana", Name: "ana"},
		Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops", Thread: id},
		Raw:          name,
	}
}

func (e *env) send(nc *nats.Conn, req *commandv1.CommandRequest) *commandv1.CommandAck {
	e.t.Helper()
	data, _ := wire.Marshal(req)
	subj := wire.CommandSubject("t", strings.Fields(req.Command)[1])
	resp, err := nc.Request(subj, data, 5*time.Second)
	if err != nil {
		e.t.Fatalf("request %s: %v", req.Command, err)
	}
	var ack commandv1.CommandAck
	if err := wire.Unmarshal(resp.Data, &ack); err != nil {
		e.t.Fatalf("decode ack: %v", err)
	}
	return &ack
}

// posts returns every post in the thread so far, in stream order.
func (e *env) posts(thread string) []*chatv1.ChatPost {
	e.t.Helper()
	return natstest.InThread(natstest.Posts(e.t, e.js, wire.ChatPostSubject("console", "ops")), thread)
}

// final waits for the thread's final post (result or error).
func (e *env) final(thread string, within time.Duration) (*chatv1.ChatPost, []*chatv1.ChatPost) {
	e.t.Helper()
	return natstest.FinalPost(e.t, e.js, wire.ChatPostSubject("console", "ops"), thread, within)
}

func (e *env) job(id string) *commandv1.Job {
	e.t.Helper()
	store, err := jobs.Open(context.Background(), e.js)
	if err != nil {
		e.t.Fatal(err)
	}
	j, _, err := store.Get(context.Background(), wire.JobID(id))
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

func TestTheSameCommandSentToTwoReplicasManyTimesRunsOnce(t *testing.T) {
	s := natstest.RunServer(t)
	e := newEnv(t, s.ClientURL())
	var started atomic.Int32
	e.serve(slowCommands(&started))
	e.serve(slowCommands(&started))
	// Two chat replicas, each with its own connection, send the same command
	// concurrently, as a Slack redelivery or a retry would.
	senders := []*nats.Conn{natstest.Connect(t, s), natstest.Connect(t, s)}
	req := request("console/ops/m1", "t slow", map[string]string{"steps": "2"})
	var mu sync.Mutex
	count := map[commandv1.AckStatus]int{}
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(nc *nats.Conn) {
			defer wg.Done()
			ack := e.send(nc, req)
			mu.Lock()
			count[ack.GetStatus()]++
			mu.Unlock()
		}(senders[i%2])
	}
	wg.Wait()
	if count[commandv1.AckStatus_ACK_STATUS_ACCEPTED] != 1 || count[commandv1.AckStatus_ACK_STATUS_EXISTING] != 9 {
		t.Fatalf("acks = %v, want 1 accepted and 9 existing", count)
	}
	post, _ := e.final("console/ops/m1", 10*time.Second)
	if post.GetText() != "did 2 steps" {
		t.Fatalf("final post %q, want \"did 2 steps\"", post.GetText())
	}
	// Sent again after it ended: still once, and told the job's state.
	ack := e.send(senders[0], req)
	if ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_EXISTING || ack.GetJob().GetState() != commandv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("late resend: %v %v, want existing and succeeded", ack.GetStatus(), ack.GetJob().GetState())
	}
	if !strings.Contains(ack.GetReason(), "already received") {
		t.Fatalf("late resend reason %q does not say it was already received", ack.GetReason())
	}
	if n := started.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
}

func TestUserErrorsAreShownAndInternalErrorsGiveATraceID(t *testing.T) {
	s := natstest.RunServer(t)
	e := newEnv(t, s.ClientURL())
	e.serve(slowCommands(nil))
	tests := []struct {
		name, cmd, want string
	}{
		{"a user error is shown as it is", "t fail", "web9 is not in backend www"},
		{"a panic is an internal error with a trace id", "t panic", "internal error while running t panic (job "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "console/ops/" + tt.cmd
			if ack := e.send(e.nc, request(id, tt.cmd, nil)); ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_ACCEPTED {
				t.Fatalf("ack %v: %s", ack.GetStatus(), ack.GetReason())
			}
			post, _ := e.final(id, 5*time.Second)
			if post.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(post.GetText(), tt.want) {
				t.Fatalf("final post %v %q, want an error containing %q", post.GetKind(), post.GetText(), tt.want)
			}
			if post.GetReaction() != chatv1.Reaction_REACTION_FAILED {
				t.Fatalf("reaction %v, want failed", post.GetReaction())
			}
			if j := e.job(id); j.GetState() != commandv1.JobState_JOB_STATE_FAILED {
				t.Fatalf("job state %v, want failed", j.GetState())
			}
		})
	}
}

func TestBadRequestsAreRejectedWithoutAJob(t *testing.T) {
	s := natstest.RunServer(t)
	e := newEnv(t, s.ClientURL())
	e.serve(slowCommands(nil))
	tests := []struct {
		name string
		req  *commandv1.CommandRequest
		want string
	}{
		{"a missing argument", request("r1", "t slow", nil), "steps"},
		{"an argument of the wrong type", request("r2", "t slow", map[string]string{"steps": "many"}), "many"},
		{"an unknown argument", request("r3", "t slow", map[string]string{"steps": "1", "color": "red"}), "color"},
		{"dry run on a command without one", func() *commandv1.CommandRequest {
			r := request("r4", "t slow", map[string]string{"steps": "1"})
			r.DryRun = true
			return r
		}(), "dry"},
		{"no command id", request("", "t slow", map[string]string{"steps": "1"}), "no command id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ack := e.send(e.nc, tt.req)
			if ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_REJECTED || !strings.Contains(strings.ToLower(ack.GetReason()), tt.want) {
				t.Fatalf("ack %v %q, want rejected mentioning %q", ack.GetStatus(), ack.GetReason(), tt.want)
			}
			if tt.req.GetId() == "" {
				return
			}
			store, _ := jobs.Open(context.Background(), e.js)
			if _, _, err := store.Get(context.Background(), wire.JobID(tt.req.GetId())); !errors.Is(err, jobs.ErrNotFound) {
				t.Fatalf("a rejected request left a job (err %v)", err)
			}
		})
	}
}

func TestCancelStopsARunningJob(t *testing.T) {
	s := natstest.RunServer(t)
	e := newEnv(t, s.ClientURL())
	e.serve(slowCommands(nil))
	id := "console/ops/cancel-me"
	e.send(e.nc, request(id, "t slow", map[string]string{"steps": "500"}))
	natstest.WaitFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if len(e.posts(id)) == 0 {
			return errors.New("no progress yet")
		}
		return nil
	})
	if err := e.nc.Publish(wire.SubjectJobCancelPrefix+"."+wire.JobID(id), nil); err != nil {
		t.Fatal(err)
	}
	post, _ := e.final(id, 5*time.Second)
	if !strings.HasPrefix(post.GetText(), "Cancelled") {
		t.Fatalf("final post %q, want it to say cancelled", post.GetText())
	}
	if j := e.job(id); j.GetState() != commandv1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("state %v, want cancelled", j.GetState())
	}
}

// TestKillNineOfTheRunningReplica runs a replica in another process, kills it
// with SIGKILL in the middle of a job, and checks that a surviving replica
// fails the non-resumable job and resumes the resumable one, saying so in
// each thread.
func TestKillNineOfTheRunningReplica(t *testing.T) {
	s := natstest.RunServer(t)
	e := newEnv(t, s.ClientURL())

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SB_TEST_REPLICA_NATS="+s.ClientURL())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("replica did not start: %q %v", line, err)
	}
	dead := strings.TrimSpace(strings.TrimPrefix(line, "ready "))

	plain, resumable := "console/ops/k1", "console/ops/k2"
	for id, name := range map[string]string{plain: "t slow", resumable: "t resumable"} {
		if ack := e.send(e.nc, request(id, name, map[string]string{"steps": "30"})); ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_ACCEPTED {
			t.Fatalf("%s: ack %v %s", name, ack.GetStatus(), ack.GetReason())
		}
	}
	natstest.WaitFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(e.posts(plain)) < 2 || len(e.posts(resumable)) < 2 {
			return errors.New("jobs not under way yet")
		}
		return nil
	})
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no goodbye
		t.Fatal(err)
	}
	cmd.Wait()

	var started atomic.Int32
	e.serve(slowCommands(&started)) // the survivor
	post, all := e.final(plain, 30*time.Second)
	if post.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(post.GetText(), "Replica "+dead+" stopped") || !strings.Contains(post.GetText(), "marked failed") {
		t.Fatalf("plain job's final post %v %q, want an error saying replica %s stopped and the job was marked failed", post.GetKind(), post.GetText(), dead)
	}
	if j := e.job(plain); j.GetState() != commandv1.JobState_JOB_STATE_FAILED || j.GetAttempt() != 2 {
		t.Fatalf("plain job: state %v attempt %d, want failed at attempt 2", j.GetState(), j.GetAttempt())
	}
	post, all = e.final(resumable, 30*time.Second)
	if post.GetKind() != chatv1.Kind_KIND_RESULT || post.GetText() != "did 30 steps" {
		t.Fatalf("resumable job's final post %v %q, want the result", post.GetKind(), post.GetText())
	}
	var noticed bool
	for _, p := range all {
		noticed = noticed || (p.GetKind() == chatv1.Kind_KIND_NOTICE && strings.Contains(p.GetText(), "is resuming it (attempt 2)"))
	}
	if !noticed {
		t.Fatalf("no notice in the resumable job's thread that it was resumed")
	}
	if n := started.Load(); n != 1 {
		t.Fatalf("survivor ran %d jobs, want 1 (only the resumable one)", n)
	}
}

// TestNATSRestartLosesNoPostAndKeepsOrder restarts the NATS server while a
// job posts progress: every post arrives, once, in order.
func TestNATSRestartLosesNoPostAndKeepsOrder(t *testing.T) {
	n := natstest.RunNode(t)
	e := newEnv(t, n.URL())
	e.serve(slowCommands(nil))
	id := "console/ops/restart"
	e.send(e.nc, request(id, "t slow", map[string]string{"steps": "40"}))
	natstest.WaitFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if len(e.posts(id)) < 5 {
			return errors.New("not enough progress yet")
		}
		return nil
	})
	n.Restart()
	post, all := e.final(id, 60*time.Second)
	if post.GetText() != "did 40 steps" {
		t.Fatalf("final %q", post.GetText())
	}
	var steps []int
	for _, p := range all {
		var i, total int
		if _, err := fmt.Sscanf(p.GetText(), "step %d of %d", &i, &total); err == nil {
			steps = append(steps, i)
		}
	}
	if len(steps) != 40 {
		t.Fatalf("got %d progress posts, want 40: %v", len(steps), steps)
	}
	for i, s := range steps {
		if s != i+1 {
			t.Fatalf("progress out of order or duplicated at %d: %v", i, steps)
		}
	}
}

// A replica that recorded a job's end and died before posting the answer:
// the next scan posts it from the record, once.
func TestAnAnswerLostBetweenRecordAndPostIsPostedFromTheRecord(t *testing.T) {
	s := natstest.RunServer(t)
	e := newEnv(t, s.ClientURL())
	store, err := jobs.Open(context.Background(), e.js)
	if err != nil {
		t.Fatal(err)
	}
	ctx := natstest.Context(t, 30*time.Second)
	req := request("console/ops/lost", "t slow", map[string]string{"steps": "1"})
	rec := &commandv1.Job{Id: wire.JobID(req.GetId()), CommandId: req.GetId(), Service: "t", Command: "t slow",
		State: commandv1.JobState_JOB_STATE_RUNNING, Owner: "dead-replica", Attempt: 1, Request: req,
		Requester: req.GetRequester(), Conversation: req.GetConversation()}
	rev, _, err := store.Create(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	rec.State, rec.Result, rec.Posts = commandv1.JobState_JOB_STATE_SUCCEEDED, "drained web1", 3
	if _, err := store.Update(ctx, rec, rev); err != nil {
		t.Fatal(err)
	}
	var started atomic.Int32
	e.serve(slowCommands(&started))
	final, all := e.final(req.GetId(), 20*time.Second)
	if final.GetText() != "drained web1" || final.GetKind() != chatv1.Kind_KIND_RESULT || final.GetSeq() != 3 {
		t.Fatalf("reposted answer = %v", final)
	}
	natstest.WaitFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		ids, err := store.OpenIDs(ctx, "t")
		if err != nil || len(ids) != 0 {
			return fmt.Errorf("open jobs %v, %v", ids, err)
		}
		return nil
	})
	if len(all) != 1 || started.Load() != 0 {
		t.Errorf("%d posts and %d runs; want the answer once and no run", len(all), started.Load())
	}
}

// A replica scans for open jobs while it accepts new ones. A scan that
// reads a new job's marker and record before the job starts must not take
// the job for one left behind by this replica's previous life.
func TestAScanNeverTakesOverAJobBeingAccepted(t *testing.T) {
	s := natstest.RunServer(t)
	e := newEnv(t, s.ClientURL())
	// A short lease scans every ~20ms, so scans overlap many accepts.
	srv, err := command.Serve(context.Background(), e.nc, slowCommands(nil), command.Options{Service: "t", Lease: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	sender := natstest.Connect(t, s)
	const n = 200
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ack := e.send(sender, request(fmt.Sprintf("console/ops/a%d", i), "t slow", map[string]string{"steps": "1"}))
			if ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_ACCEPTED {
				t.Errorf("command %d: ack %v %s", i, ack.GetStatus(), ack.GetReason())
			}
		}()
	}
	wg.Wait()
	store, err := jobs.Open(context.Background(), e.js)
	if err != nil {
		t.Fatal(err)
	}
	ctx := natstest.Context(t, time.Minute)
	for i := range n {
		j, err := store.Wait(ctx, wire.JobID(fmt.Sprintf("console/ops/a%d", i)), 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if j.GetResult() != "did 1 steps" || j.GetAttempt() != 1 {
			t.Fatalf("command %d ended %s in attempt %d with %q, want succeeded in attempt 1", i, j.GetState(), j.GetAttempt(), j.GetResult())
		}
	}
}
