package command

import (
	"context"
	"fmt"
	"sync"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/emit"
)

// Job is a handler's view of one run of a command: its request, and the way
// to talk to the person in the command's thread. It knows nothing of NATS
// beyond that.
type Job struct {
	srv     *Server
	rec     *commandv1.Job
	spec    *commandv1.CommandSpec
	traceID string
	rev     uint64 // revision of rec in the store, 0 when unknown
	// accepted is the "accepted" audit record in flight; the result record
	// waits for it, so the trail stays in order.
	accepted *emit.Pending

	mu     sync.Mutex
	seq    uint32
	result *chatv1.ChatPost
}

// ID is the job's short id.
func (j *Job) ID() string { return j.rec.GetId() }

// Request is the command request as accepted.
func (j *Job) Request() *commandv1.CommandRequest { return j.rec.GetRequest() }

// Arg returns a positional argument by spec name ("" when absent).
func (j *Job) Arg(name string) string { return j.rec.GetRequest().GetArgs()[name] }

// Flag returns a flag by name ("" when absent).
func (j *Job) Flag(name string) string { return j.rec.GetRequest().GetFlags()[name] }

// Text is the free text after "--".
func (j *Job) Text() string { return j.rec.GetRequest().GetText() }

// DryRun reports whether the person asked to see, not do.
func (j *Job) DryRun() bool { return j.rec.GetRequest().GetDryRun() }

// Requester is who asked, with the roles RBAC gave them.
func (j *Job) Requester() *chatv1.Identity { return j.rec.GetRequester() }

// Attempt is 1 for a first run, 2 and more when a replica took the job over
// from one that died: handlers of resumable commands must then check what
// the first attempt already did.
func (j *Job) Attempt() uint32 { return j.rec.GetAttempt() }

// TraceID is the trace id people can quote.
func (j *Job) TraceID() string { return j.traceID }

// Progress posts a progress update in the thread. Adapters may show the
// updates of one job as one message edited in place.
func (j *Job) Progress(ctx context.Context, text string) error {
	return j.Post(ctx, &chatv1.ChatPost{Kind: chatv1.Kind_KIND_PROGRESS, Text: text})
}

// Progressf is Progress with formatting.
func (j *Job) Progressf(ctx context.Context, format string, args ...any) error {
	return j.Progress(ctx, fmt.Sprintf(format, args...))
}

// Post publishes a post in the job's thread; the conversation, ids, author
// and sequence are filled in. It returns once the CHAT stream stored it, so
// posts of one job arrive in the order they were made.
func (j *Job) Post(ctx context.Context, p *chatv1.ChatPost) error {
	j.mu.Lock()
	j.seq++
	seq := j.seq
	j.mu.Unlock()
	j.srv.fillPost(j, p, seq)
	if _, err := emit.Post(ctx, j.srv.js, p); err != nil {
		return fmt.Errorf("post to job %s thread: %w", j.ID(), err)
	}
	return nil
}

// Done sets the job's final answer; the server posts it once the job's
// state is recorded. A handler usually ends with `return job.Done(ctx, text)`.
func (j *Job) Done(_ context.Context, text string) error {
	return j.DoneWith(&chatv1.ChatPost{Text: text})
}

// DoneWith sets a final answer with blocks or attachments.
func (j *Job) DoneWith(p *chatv1.ChatPost) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.result = p
	return nil
}

func (j *Job) takeResult() *chatv1.ChatPost {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.result
}

func (j *Job) nextSeq() uint32 {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seq++
	return j.seq
}
