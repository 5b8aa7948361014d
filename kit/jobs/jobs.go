// Package jobs is the exactly-once job store over the sb_jobs KV bucket.
//
// A job starts only when Create of its key succeeds: KV Create is atomic in
// JetStream, so a second replica, a retried request or a redelivered chat
// message finds the key and gets the existing job instead of starting
// another. Every later change is a compare-and-set on the key's revision.
//
// Keys: job.<id> holds the Job; open.<service>.<id> exists while the job has
// not ended, so a replica can find the unfinished jobs of its service
// without reading every job ever run.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// Errors callers branch on.
var (
	// ErrExists: a job with this id was created before.
	ErrExists = errors.New("job exists")
	// ErrConflict: the job changed since it was read; read it again.
	ErrConflict = errors.New("job changed concurrently")
	// ErrNotFound: no job with this id.
	ErrNotFound = errors.New("no such job")
)

// Store reads and writes jobs.
type Store struct {
	kv jetstream.KeyValue
}

// New returns a store over the sb_jobs bucket.
func New(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// Open opens the sb_jobs bucket, which bus.EnsureStreams declares.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, wire.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", wire.BucketJobs, err)
	}
	return New(kv), nil
}

func jobKey(id string) string           { return "job." + id }
func openKey(service, id string) string { return "open." + wire.Token(service) + "." + id }
func openPrefix(service string) string  { return "open." + wire.Token(service) + "." }

// Terminal reports whether a state is final.
func Terminal(s commandv1.JobState) bool {
	return s == commandv1.JobState_JOB_STATE_SUCCEEDED ||
		s == commandv1.JobState_JOB_STATE_FAILED ||
		s == commandv1.JobState_JOB_STATE_CANCELLED
}

// Create stores a new job and returns its revision. When the id is taken it
// returns ErrExists together with the existing job.
func (s *Store) Create(ctx context.Context, j *commandv1.Job) (uint64, *commandv1.Job, error) {
	data, err := wire.Marshal(j)
	if err != nil {
		return 0, nil, fmt.Errorf("encode job %s: %w", j.GetId(), err)
	}
	// The open marker goes first, and is acknowledged before the job is
	// created: if this replica dies between the two writes, a marker without
	// a job is harmless (the janitor drops it), while a job without a marker
	// would never be found and finished. (Sending both without waiting in
	// between is not safe: during a stream leader election the marker can
	// be lost while the Create, sent just after, is stored.)
	if !Terminal(j.GetState()) {
		if _, err := s.kv.Put(ctx, openKey(j.GetService(), j.GetId()), []byte(j.GetOwner())); err != nil {
			return 0, nil, fmt.Errorf("mark job %s open: %w", j.GetId(), err)
		}
	}
	rev, err := s.kv.Create(ctx, jobKey(j.GetId()), data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		existing, _, gerr := s.Get(ctx, j.GetId())
		// On a replicated bucket the read may be served by a replica that
		// has not applied the winning Create yet: give it a moment.
		for i := 0; errors.Is(gerr, ErrNotFound) && i < 40; i++ {
			select {
			case <-ctx.Done():
				gerr = ctx.Err()
			case <-time.After(50 * time.Millisecond):
				existing, _, gerr = s.Get(ctx, j.GetId())
			}
		}
		if gerr != nil {
			return 0, nil, fmt.Errorf("job %s exists; read it: %w", j.GetId(), gerr)
		}
		// The marker written above must not reopen a job that has ended
		// (a retry or redelivery after the job finished).
		if !Terminal(j.GetState()) && Terminal(existing.GetState()) {
			s.Close(ctx, j.GetService(), j.GetId())
		}
		return 0, existing, ErrExists
	}
	if err != nil {
		return 0, nil, fmt.Errorf("create job %s: %w", j.GetId(), err)
	}
	return rev, nil, nil
}

// Get returns a job and its revision.
func (s *Store) Get(ctx context.Context, id string) (*commandv1.Job, uint64, error) {
	e, err := s.kv.Get(ctx, jobKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("get job %s: %w", id, err)
	}
	var j commandv1.Job
	if err := wire.Unmarshal(e.Value(), &j); err != nil {
		return nil, 0, fmt.Errorf("decode job %s: %w", id, err)
	}
	return &j, e.Revision(), nil
}

// Update writes j if the stored revision is still rev, and returns the new
// revision; ErrConflict otherwise. A job that reaches a final state keeps its
// open marker until the caller calls Close: the command server first posts
// the answer, so a person sees it one round trip sooner.
func (s *Store) Update(ctx context.Context, j *commandv1.Job, rev uint64) (uint64, error) {
	data, err := wire.Marshal(j)
	if err != nil {
		return 0, fmt.Errorf("encode job %s: %w", j.GetId(), err)
	}
	nrev, err := s.kv.Update(ctx, jobKey(j.GetId()), data, rev)
	if err != nil {
		if isConflict(err) {
			return 0, ErrConflict
		}
		return 0, fmt.Errorf("update job %s: %w", j.GetId(), err)
	}
	return nrev, nil
}

// Close drops the open marker of a job. It is idempotent.
func (s *Store) Close(ctx context.Context, service, id string) error {
	if err := s.kv.Delete(ctx, openKey(service, id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("close job %s: %w", id, err)
	}
	return nil
}

// Modify reads the job, applies f, and writes it back, retrying on
// conflicts. f returns false to leave the job unchanged. A job it brings to a
// final state loses its open marker.
func (s *Store) Modify(ctx context.Context, id string, f func(*commandv1.Job) bool) (*commandv1.Job, error) {
	for attempt := 0; attempt < 20; attempt++ {
		j, rev, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if !f(j) {
			return j, nil
		}
		if _, err := s.Update(ctx, j, rev); errors.Is(err, ErrConflict) {
			continue
		} else if err != nil {
			return nil, err
		}
		if Terminal(j.GetState()) {
			s.Close(ctx, j.GetService(), j.GetId())
		}
		return j, nil
	}
	return nil, fmt.Errorf("modify job %s: %w after 20 attempts", id, ErrConflict)
}

// OpenIDs lists the jobs of a service that have not ended (all services when
// service is empty).
func (s *Store) OpenIDs(ctx context.Context, service string) ([]string, error) {
	filter := "open.>"
	if service != "" {
		filter = openPrefix(service) + "*"
	}
	lister, err := s.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list open jobs: %w", err)
	}
	var ids []string
	for k := range lister.Keys() {
		ids = append(ids, k[strings.LastIndexByte(k, '.')+1:])
	}
	// The lister stops itself once it has delivered every key; Stop is for
	// leaving early, so its error after a full read means nothing.
	lister.Stop()
	return ids, nil
}

// isConflict recognises a failed compare-and-set. nats.go maps the server's
// "wrong last sequence" (10071) to ErrKeyExists on Update.
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Wait polls the job every poll until it ends, and returns it. A job not
// created yet is waited for too (a command still on its way to its service),
// and a failed read is tried again (a NATS node failing over) until ctx ends.
func (s *Store) Wait(ctx context.Context, id string, poll time.Duration) (*commandv1.Job, error) {
	var last error
	for {
		j, _, err := s.Get(ctx, id)
		if err == nil && Terminal(j.GetState()) {
			return j, nil
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return nil, fmt.Errorf("job %s did not end: %w (last read: %v)", id, ctx.Err(), last)
			}
			return nil, fmt.Errorf("job %s did not end: %w", id, ctx.Err())
		case <-time.After(poll):
		}
	}
}
