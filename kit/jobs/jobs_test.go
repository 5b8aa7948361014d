package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/jobs"
	"github.com/switchboard-ops/switchboard/kit/natstest"
)

// openStore declares the buckets on js (with replicas) and opens the store.
func openStore(t *testing.T, js jetstream.JetStream, replicas int) *jobs.Store {
	t.Helper()
	ctx := natstest.Context(t, 30*time.Second)
	// A young cluster under load may briefly refuse to place replicated
	// assets ("no suitable peers for placement"); EnsureStreams is
	// idempotent, so ask again.
	natstest.WaitFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return bus.EnsureStreams(ctx, js, bus.StreamOptions{Replicas: replicas})
	})
	s, err := jobs.Open(ctx, js)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// newStore is a store on a fresh single server.
func newStore(t *testing.T) *jobs.Store {
	t.Helper()
	return openStore(t, natstest.JetStream(t, natstest.Connect(t, natstest.RunServer(t))), 1)
}

// newJob is an accepted job of service for commandID, owned by owner.
func newJob(service, commandID, owner string) *commandv1.Job {
	return &commandv1.Job{
		Id:           wire.JobID(commandID),
		CommandId:    commandID,
		Service:      service,
		Command:      service + " test",
		State:        commandv1.JobState_JOB_STATE_ACCEPTED,
		Requester:    &chatv1.Identity{Id: "console:ana", Name: "Ana"},
		Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops", Thread: commandID},
		Owner:        owner,
		Attempt:      1,
		CreatedAt:    timestamppb.New(time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)),
	}
}

func sorted(ids []string) []string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return ids
}

func TestTerminal(t *testing.T) {
	t.Parallel()
	for st, want := range map[commandv1.JobState]bool{
		commandv1.JobState_JOB_STATE_UNSPECIFIED: false,
		commandv1.JobState_JOB_STATE_ACCEPTED:    false,
		commandv1.JobState_JOB_STATE_RUNNING:     false,
		commandv1.JobState_JOB_STATE_SUCCEEDED:   true,
		commandv1.JobState_JOB_STATE_FAILED:      true,
		commandv1.JobState_JOB_STATE_CANCELLED:   true,
	} {
		if got := jobs.Terminal(st); got != want {
			t.Errorf("Terminal(%s) = %v, want %v", st, got, want)
		}
	}
}

func TestCreateThenGetReturnsTheJob(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := natstest.Context(t, 30*time.Second)
	j := newJob("lb", "console:ana:1", "lb-a")
	rev, existing, err := s.Create(ctx, j)
	if err != nil || existing != nil || rev == 0 {
		t.Fatalf("Create = %d, %v, %v; want a revision, no existing job, no error", rev, existing, err)
	}
	got, grev, err := s.Get(ctx, j.GetId())
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if grev != rev {
		t.Errorf("Get revision = %d, want Create's %d", grev, rev)
	}
	if diff := cmp.Diff(j, got, protocmp.Transform()); diff != "" {
		t.Errorf("Get (-created +got):\n%s", diff)
	}
}

func TestCreateOfAnExistingIDGivesErrExistsAndTheExistingJob(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := natstest.Context(t, 30*time.Second)
	first := newJob("lb", "T1/C2/1700000000.123456", "lb-a")
	if _, _, err := s.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := newJob("lb", "T1/C2/1700000000.123456", "lb-b") // a Slack redelivery on another replica
	rev, existing, err := s.Create(ctx, second)
	if !errors.Is(err, jobs.ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	if rev != 0 {
		t.Errorf("second Create revision = %d, want 0", rev)
	}
	if diff := cmp.Diff(first, existing, protocmp.Transform()); diff != "" {
		t.Errorf("existing job (-first +existing):\n%s", diff)
	}
	got, _, err := s.Get(ctx, first.GetId())
	if err != nil || got.GetOwner() != "lb-a" {
		t.Errorf("stored job after the duplicate: owner %q, %v; want the first's lb-a", got.GetOwner(), err)
	}
}

func TestCreateOfAFinishedJobAgainDoesNotReopenIt(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := natstest.Context(t, 30*time.Second)
	j := newJob("lb", "console:ana:finished", "lb-a")
	rev, _, err := s.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	j.State = commandv1.JobState_JOB_STATE_SUCCEEDED
	if _, err := s.Update(ctx, j, rev); err != nil {
		t.Fatal(err)
	}
	// A retry of the same command after it finished.
	if _, existing, err := s.Create(ctx, newJob("lb", "console:ana:finished", "lb-b")); !errors.Is(err, jobs.ErrExists) || existing.GetState() != commandv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("Create after the job finished = %v, %v; want ErrExists with the succeeded job", existing, err)
	}
	ids, err := s.OpenIDs(ctx, "lb")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(ids, j.GetId()) {
		t.Errorf("OpenIDs = %v: the finished job %s is open again", ids, j.GetId())
	}
}

func TestConcurrentCreatesOfOneIDFromTwoConnectionsLetExactlyOneWin(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	stores := []*jobs.Store{
		openStore(t, natstest.JetStream(t, natstest.Connect(t, srv)), 1),
		openStore(t, natstest.JetStream(t, natstest.Connect(t, srv)), 1),
	}
	ctx := natstest.Context(t, 30*time.Second)
	const n = 20
	type result struct {
		owner    string
		existing *commandv1.Job
		err      error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		owner := fmt.Sprintf("replica-%d", i)
		s := stores[i%2]
		wg.Go(func() {
			<-start
			_, existing, err := s.Create(ctx, newJob("lb", "console:ana:race", owner))
			results[i] = result{owner, existing, err}
		})
	}
	close(start)
	wg.Wait()

	var winners []string
	for _, r := range results {
		switch {
		case r.err == nil:
			winners = append(winners, r.owner)
		case !errors.Is(r.err, jobs.ErrExists):
			t.Errorf("Create by %s: %v, want nil or ErrExists", r.owner, r.err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d Creates succeeded (%v), want exactly 1", len(winners), winners)
	}
	for _, r := range results {
		if r.err != nil && r.existing.GetOwner() != winners[0] {
			t.Errorf("%s was told the job belongs to %q, want the winner %s", r.owner, r.existing.GetOwner(), winners[0])
		}
	}
	got, _, err := stores[0].Get(ctx, wire.JobID("console:ana:race"))
	if err != nil || got.GetOwner() != winners[0] {
		t.Errorf("stored job owner = %q, %v; want %s", got.GetOwner(), err, winners[0])
	}
}

func TestGetOfAMissingIDGivesErrNotFound(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := natstest.Context(t, 30*time.Second)
	if j, rev, err := s.Get(ctx, "0123456789ab"); !errors.Is(err, jobs.ErrNotFound) || j != nil || rev != 0 {
		t.Errorf("Get(missing) = %v, %d, %v; want ErrNotFound", j, rev, err)
	}
	if _, err := s.Modify(ctx, "0123456789ab", func(*commandv1.Job) bool { return true }); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Modify(missing) = %v, want ErrNotFound", err)
	}
}

func TestUpdateWithAStaleRevisionGivesErrConflict(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := natstest.Context(t, 30*time.Second)
	j := newJob("lb", "console:ana:2", "lb-a")
	rev, _, err := s.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	j.State = commandv1.JobState_JOB_STATE_RUNNING
	rev2, err := s.Update(ctx, j, rev)
	if err != nil {
		t.Fatalf("Update with the current revision: %v", err)
	}
	if rev2 <= rev {
		t.Errorf("Update revision = %d, want more than %d", rev2, rev)
	}

	stale := newJob("lb", "console:ana:2", "lb-b")
	stale.State = commandv1.JobState_JOB_STATE_FAILED
	if _, err := s.Update(ctx, stale, rev); !errors.Is(err, jobs.ErrConflict) {
		t.Fatalf("Update with a stale revision = %v, want ErrConflict", err)
	}
	got, grev, err := s.Get(ctx, j.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if got.GetState() != commandv1.JobState_JOB_STATE_RUNNING || got.GetOwner() != "lb-a" || grev != rev2 {
		t.Errorf("after the stale update: %s owned by %s at %d, want running owned by lb-a at %d", got.GetState(), got.GetOwner(), grev, rev2)
	}
	ids, err := s.OpenIDs(ctx, "lb")
	if err != nil || !slices.Contains(ids, j.GetId()) {
		t.Errorf("OpenIDs = %v, %v; a refused update to failed must keep the job open", ids, err)
	}
}

func TestAFinalStateClosesTheJobThroughCloseOrModify(t *testing.T) {
	t.Parallel()
	for _, final := range []commandv1.JobState{
		commandv1.JobState_JOB_STATE_SUCCEEDED,
		commandv1.JobState_JOB_STATE_FAILED,
		commandv1.JobState_JOB_STATE_CANCELLED,
	} {
		t.Run(final.String(), func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			ctx := natstest.Context(t, 30*time.Second)
			j := newJob("lb", "console:ana:"+final.String(), "lb-a")
			rev, _, err := s.Create(ctx, j)
			if err != nil {
				t.Fatal(err)
			}
			j.State = commandv1.JobState_JOB_STATE_RUNNING
			if rev, err = s.Update(ctx, j, rev); err != nil {
				t.Fatal(err)
			}
			if ids, err := s.OpenIDs(ctx, "lb"); err != nil || !slices.Equal(ids, []string{j.GetId()}) {
				t.Fatalf("OpenIDs while running = %v, %v; want [%s]", ids, err, j.GetId())
			}
			j.State = final
			if _, err := s.Update(ctx, j, rev); err != nil {
				t.Fatal(err)
			}
			// Update leaves the marker for the caller to Close once it has
			// posted the answer.
			if ids, err := s.OpenIDs(ctx, "lb"); err != nil || !slices.Equal(ids, []string{j.GetId()}) {
				t.Fatalf("OpenIDs after Update to %s = %v, %v; want the marker kept until Close", final, ids, err)
			}
			if err := s.Close(ctx, "lb", j.GetId()); err != nil {
				t.Fatal(err)
			}
			if ids, err := s.OpenIDs(ctx, "lb"); err != nil || len(ids) != 0 {
				t.Errorf("OpenIDs after Close = %v, %v; want none", ids, err)
			}
			// Modify to a final state closes by itself.
			k := newJob("lb", "console:ana:modify:"+final.String(), "lb-a")
			if _, _, err := s.Create(ctx, k); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Modify(ctx, k.GetId(), func(j *commandv1.Job) bool { j.State = final; return true }); err != nil {
				t.Fatal(err)
			}
			if ids, err := s.OpenIDs(ctx, "lb"); err != nil || len(ids) != 0 {
				t.Errorf("OpenIDs after Modify to %s = %v, %v; want none", final, ids, err)
			}
			if got, _, err := s.Get(ctx, j.GetId()); err != nil || got.GetState() != final {
				t.Errorf("Get after %s = %v, %v", final, got, err)
			}
		})
	}
}

func TestOpenIDsListsTheUnfinishedJobsOfAServiceOrOfAll(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := natstest.Context(t, 30*time.Second)
	if ids, err := s.OpenIDs(ctx, ""); err != nil || len(ids) != 0 {
		t.Fatalf("OpenIDs of an empty bucket = %v, %v; want none", ids, err)
	}
	create := func(service, cmd string, st commandv1.JobState) string {
		t.Helper()
		j := newJob(service, cmd, service+"-a")
		j.State = st
		if _, _, err := s.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
		return j.GetId()
	}
	lb1 := create("lb", "c1", commandv1.JobState_JOB_STATE_ACCEPTED)
	lb2 := create("lb", "c2", commandv1.JobState_JOB_STATE_RUNNING)
	dns := create("dns", "c3", commandv1.JobState_JOB_STATE_ACCEPTED)
	dotted := create("lb.eu", "c4", commandv1.JobState_JOB_STATE_ACCEPTED) // not a safe token
	create("lb", "c5", commandv1.JobState_JOB_STATE_SUCCEEDED)             // created finished: never open
	if err := s.Close(ctx, "dns", "0123456789ab"); err != nil {            // closing what is not open is fine
		t.Errorf("Close of a job that is not open: %v", err)
	}

	tests := []struct {
		service string
		want    []string
	}{
		{"lb", []string{lb1, lb2}},
		{"dns", []string{dns}},
		{"lb.eu", []string{dotted}},
		{"deployer", nil},
		{"", []string{lb1, lb2, dns, dotted}},
	}
	for _, tt := range tests {
		ids, err := s.OpenIDs(ctx, tt.service)
		if err != nil {
			t.Errorf("OpenIDs(%q): %v", tt.service, err)
			continue
		}
		if diff := cmp.Diff(sorted(tt.want), sorted(ids)); diff != "" {
			t.Errorf("OpenIDs(%q) (-want +got):\n%s", tt.service, diff)
		}
	}

	for i := 0; i < 2; i++ { // Close is idempotent
		if err := s.Close(ctx, "lb", lb1); err != nil {
			t.Fatalf("Close, call %d: %v", i+1, err)
		}
	}
	if ids, err := s.OpenIDs(ctx, "lb"); err != nil || !slices.Equal(ids, []string{lb2}) {
		t.Errorf("OpenIDs(lb) after Close = %v, %v; want [%s]", ids, err, lb2)
	}
}

func TestModifyRetriesWhenTheJobChangedMeanwhile(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := natstest.Context(t, 30*time.Second)
	j := newJob("lb", "console:ana:modify", "lb-a")
	if _, _, err := s.Create(ctx, j); err != nil {
		t.Fatal(err)
	}

	// The outer change reads the job, then another change lands before the
	// outer one writes: the outer write conflicts and Modify reads again.
	calls := 0
	got, err := s.Modify(ctx, j.GetId(), func(j *commandv1.Job) bool {
		calls++
		if calls == 1 {
			if _, err := s.Modify(ctx, j.GetId(), func(j *commandv1.Job) bool {
				j.CancelRequested = true
				return true
			}); err != nil {
				t.Errorf("inner Modify: %v", err)
			}
		}
		j.Posts++
		return true
	})
	if err != nil {
		t.Fatalf("Modify: %v", err)
	}
	if calls != 2 {
		t.Errorf("f called %d times, want 2 (once more after the conflict)", calls)
	}
	if !got.GetCancelRequested() || got.GetPosts() != 1 {
		t.Errorf("Modify returned cancel_requested=%v posts=%d, want both changes", got.GetCancelRequested(), got.GetPosts())
	}
	stored, _, err := s.Get(ctx, j.GetId())
	if err != nil || !stored.GetCancelRequested() || stored.GetPosts() != 1 {
		t.Errorf("stored job: cancel_requested=%v posts=%d (%v), want both changes", stored.GetCancelRequested(), stored.GetPosts(), err)
	}
}

func TestConcurrentModifiesAllApply(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	stores := []*jobs.Store{
		openStore(t, natstest.JetStream(t, natstest.Connect(t, srv)), 1),
		openStore(t, natstest.JetStream(t, natstest.Connect(t, srv)), 1),
	}
	ctx := natstest.Context(t, 30*time.Second)
	j := newJob("lb", "console:ana:many", "lb-a")
	if _, _, err := stores[0].Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		s := stores[i%2]
		wg.Go(func() {
			if _, err := s.Modify(ctx, j.GetId(), func(j *commandv1.Job) bool {
				j.Posts++
				return true
			}); err != nil {
				t.Errorf("Modify %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	got, _, err := stores[1].Get(ctx, j.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPosts() != n {
		t.Errorf("posts = %d after %d concurrent increments, want %d", got.GetPosts(), n, n)
	}
}

func TestModifyThatChangesNothingWritesNothing(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := natstest.Context(t, 30*time.Second)
	j := newJob("lb", "console:ana:noop", "lb-a")
	rev, _, err := s.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Modify(ctx, j.GetId(), func(j *commandv1.Job) bool {
		j.Owner = "not written"
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetId() != j.GetId() {
		t.Errorf("Modify returned job %q, want %q", got.GetId(), j.GetId())
	}
	if stored, srev, err := s.Get(ctx, j.GetId()); err != nil || srev != rev || stored.GetOwner() != "lb-a" {
		t.Errorf("stored job: owner %q at revision %d (%v), want lb-a at %d", stored.GetOwner(), srev, err, rev)
	}
}

func TestModifyToAFinalStateClosesTheJob(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := natstest.Context(t, 30*time.Second)
	j := newJob("lb", "console:ana:modify-final", "lb-a")
	if _, _, err := s.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Modify(ctx, j.GetId(), func(j *commandv1.Job) bool {
		j.State = commandv1.JobState_JOB_STATE_CANCELLED
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.OpenIDs(ctx, ""); err != nil || len(ids) != 0 {
		t.Errorf("OpenIDs after cancelling = %v, %v; want none", ids, err)
	}
}

// TestOnAThreeNodeCluster covers the replicated bucket, where the server
// reports a failed compare-and-set with another error code (10164) that
// nats.go before v1.53 did not map to ErrKeyExists.
func TestOnAThreeNodeCluster(t *testing.T) {
	t.Parallel()
	c := natstest.RunCluster(t, 3)
	url := c.URL()
	stores := []*jobs.Store{
		openStore(t, natstest.JetStream(t, natstest.ConnectURL(t, url)), 3),
		openStore(t, natstest.JetStream(t, natstest.ConnectURL(t, url)), 3),
	}
	ctx := natstest.Context(t, 60*time.Second)

	t.Run("a duplicate Create gives ErrExists", func(t *testing.T) {
		first := newJob("lb", "console:ana:r3", "lb-a")
		if _, _, err := stores[0].Create(ctx, first); err != nil {
			t.Fatalf("Create on R3: %v", err)
		}
		_, existing, err := stores[1].Create(ctx, newJob("lb", "console:ana:r3", "lb-b"))
		if !errors.Is(err, jobs.ErrExists) {
			t.Fatalf("duplicate Create on R3 = %v, want ErrExists", err)
		}
		if diff := cmp.Diff(first, existing, protocmp.Transform()); diff != "" {
			t.Errorf("existing job (-first +existing):\n%s", diff)
		}
	})

	t.Run("a stale Update gives ErrConflict", func(t *testing.T) {
		j := newJob("lb", "console:ana:r3-update", "lb-a")
		rev, _, err := stores[0].Create(ctx, j)
		if err != nil {
			t.Fatal(err)
		}
		j.State = commandv1.JobState_JOB_STATE_RUNNING
		if _, err := stores[0].Update(ctx, j, rev); err != nil {
			t.Fatal(err)
		}
		if _, err := stores[1].Update(ctx, j, rev); !errors.Is(err, jobs.ErrConflict) {
			t.Fatalf("stale Update on R3 = %v, want ErrConflict", err)
		}
	})

	t.Run("concurrent Creates let exactly one win", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i := range 10 {
			s := stores[i%2]
			wg.Go(func() {
				_, _, err := s.Create(ctx, newJob("lb", "console:ana:r3-race", fmt.Sprint("r", i)))
				if err != nil && !errors.Is(err, jobs.ErrExists) {
					t.Errorf("Create %d on R3: %v", i, err)
				}
				if err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Errorf("%d Creates succeeded on R3, want exactly 1", wins)
		}
	})
}

func TestWaitReturnsTheJobOnceItEnds(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := natstest.Context(t, 30*time.Second)
	j := newJob("lb", "console:ana:wait", "lb-a")
	rev, _, err := s.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		j.State = commandv1.JobState_JOB_STATE_SUCCEEDED
		s.Update(ctx, j, rev)
	}()
	got, err := s.Wait(ctx, j.GetId(), 10*time.Millisecond)
	if err != nil || got.GetState() != commandv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("Wait = %v, %v; want the succeeded job", got, err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := s.Wait(short, "nosuchjob", 10*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait for a job that never comes = %v, want the deadline", err)
	}
}
