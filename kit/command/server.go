// Package command serves a service's commands as NATS micro endpoints on
// sb.cmd.<service>.<verb>, each endpoint's metadata carrying its CommandSpec
// so the chat discovers it, and runs every request exactly once as a job.
//
// Around each handler it does, once for every service: decode and validate
// the request against the spec; create the job with KV Create (a duplicate
// gets the existing job); acknowledge at once; run the handler in a goroutine
// under the server's context with a recover; record the final state with a
// compare-and-set; post the answer to the thread; write the audit trail.
// Replicas hold a lease in sb_replicas; a replica finds the open jobs of a
// dead one and resumes them (resumable commands) or fails them, and says so
// in the thread.
package command

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/jobs"
	"github.com/switchboard-ops/switchboard/kit/spec"
	"github.com/switchboard-ops/switchboard/kit/telemetry"
	"github.com/switchboard-ops/switchboard/kit/version"
)

// Handler runs one job. Returning nil means succeeded (with the answer set
// by job.Done); a UserError means failed with its message; any other error
// means failed with "internal error" and the trace id.
type Handler func(ctx context.Context, job *Job) error

// Command is a spec and the handler that runs it.
type Command struct {
	Spec *commandv1.CommandSpec
	Run  Handler
}

// MetadataSpec is the endpoint metadata key that carries the protojson spec.
const MetadataSpec = "sb.spec"

// Options configure Serve.
type Options struct {
	// Service name: the <service> in sb.cmd.<service>.<verb>.
	Service string
	// Version of the build; kit/version's when empty. doctor compares the
	// replicas' versions.
	Version     string
	Description string
	// Instance id of this replica; random when empty.
	Instance string
	Log      *slog.Logger
	// Tracer provider; no tracing when nil.
	Tracing trace.TracerProvider
	// Meter for the command metrics; none when nil.
	Meter metric.Meter
	// Lease is how long a replica counts as alive without renewing; the
	// default is bus.ReplicaLease, which the sb_replicas bucket's TTL sets.
	Lease time.Duration
	// StopGrace is how long Stop waits for running jobs before leaving them
	// to be taken over (default 10s).
	StopGrace time.Duration
}

// Server is a running set of command endpoints of one service replica.
type Server struct {
	opts     Options
	log      *slog.Logger
	tracer   trace.Tracer
	nc       *nats.Conn
	js       jetstream.JetStream
	store    *jobs.Store
	replicas jetstream.KeyValue
	svc      micro.Service
	cmds     map[string]Command // by spec name

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // running jobs
	bg     sync.WaitGroup // the lease and scan loop

	mu          sync.Mutex
	running     map[string]context.CancelCauseFunc
	accepting   map[string]int // jobs between their marker and start: not orphans
	connectedAt time.Time
	suspects    map[string]time.Time // owner → first seen without a lease
	orphans     map[string]time.Time // open markers seen without a job
	cancelSub   *nats.Subscription

	acks     metric.Int64Counter
	ended    metric.Int64Counter
	duration metric.Float64Histogram
}

// Serve registers the commands as micro endpoints and starts serving. The
// streams and buckets must exist (bus.EnsureStreams). Call Stop to end.
func Serve(ctx context.Context, nc *nats.Conn, cmds []Command, o Options) (*Server, error) {
	if o.Service == "" {
		return nil, errors.New("serve commands: service name is required")
	}
	if o.Instance == "" {
		o.Instance = emit.NewID()[:12]
	}
	if o.Version == "" {
		o.Version = version.String()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Tracing == nil {
		o.Tracing = noop.NewTracerProvider()
	}
	if o.Meter == nil {
		o.Meter = metricnoop.NewMeterProvider().Meter("")
	}
	if o.Lease == 0 {
		o.Lease = bus.ReplicaLease
	}
	if o.StopGrace == 0 {
		o.StopGrace = 10 * time.Second
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("serve %s: jetstream: %w", o.Service, err)
	}
	store, err := jobs.Open(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", o.Service, err)
	}
	replicas, err := js.KeyValue(ctx, wire.BucketReplicas)
	if err != nil {
		return nil, fmt.Errorf("serve %s: open bucket %s: %w", o.Service, wire.BucketReplicas, err)
	}
	sctx, cancel := context.WithCancelCause(context.Background())
	s := &Server{
		opts:        o,
		log:         o.Log.With("service", o.Service, "instance", o.Instance),
		tracer:      o.Tracing.Tracer("switchboard/kit/command"),
		nc:          nc,
		js:          js,
		store:       store,
		replicas:    replicas,
		cmds:        map[string]Command{},
		ctx:         sctx,
		cancel:      cancel,
		running:     map[string]context.CancelCauseFunc{},
		accepting:   map[string]int{},
		connectedAt: time.Now(),
		suspects:    map[string]time.Time{},
		orphans:     map[string]time.Time{},
	}
	s.acks, _ = o.Meter.Int64Counter("sb.command.requests", metric.WithDescription("Command requests by acknowledgement: accepted, existing, rejected."))
	s.ended, _ = o.Meter.Int64Counter("sb.command.jobs", metric.WithDescription("Jobs that ended, by outcome."))
	s.duration, _ = o.Meter.Float64Histogram("sb.command.duration", metric.WithUnit("s"), metric.WithDescription("Time from job start to its end."),
		metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10, 60, 300, 1800))
	for _, c := range cmds {
		if err := checkSpec(c.Spec); err != nil {
			cancel(nil)
			return nil, fmt.Errorf("serve %s: %w", o.Service, err)
		}
		c.Spec = proto.Clone(c.Spec).(*commandv1.CommandSpec)
		c.Spec.Service = o.Service
		if c.Spec.Subject == "" {
			c.Spec.Subject = wire.CommandSubject(o.Service, verb(o.Service, c.Spec.Name))
		}
		s.cmds[c.Spec.Name] = c
	}
	if err := s.renewLease(ctx); err != nil {
		cancel(nil)
		return nil, err
	}
	s.cancelSub, err = nc.Subscribe(wire.SubjectJobCancelPrefix+".*", s.onCancel)
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("serve %s: subscribe to cancel notices: %w", o.Service, err)
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        o.Service,
		Version:     o.Version,
		Description: o.Description,
		Metadata:    map[string]string{"instance": o.Instance},
	})
	if err != nil {
		s.cancelSub.Unsubscribe()
		cancel(nil)
		return nil, fmt.Errorf("serve %s: add micro service: %w", o.Service, err)
	}
	s.svc = svc
	for _, c := range s.cmds {
		meta, err := wire.Marshal(c.Spec)
		if err != nil {
			s.Stop(ctx)
			return nil, fmt.Errorf("serve %s: encode spec %s: %w", o.Service, c.Spec.Name, err)
		}
		err = svc.AddEndpoint(endpointName(c.Spec.Name), s.handle(c),
			micro.WithEndpointSubject(c.Spec.Subject),
			micro.WithEndpointMetadata(map[string]string{MetadataSpec: string(meta)}))
		if err != nil {
			s.Stop(ctx)
			return nil, fmt.Errorf("serve %s: add endpoint %s: %w", o.Service, c.Spec.Name, err)
		}
	}
	// Make the endpoints' subscriptions known to the server before
	// returning, so a request sent right after Serve finds a responder.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		s.Stop(ctx)
		return nil, fmt.Errorf("serve %s: flush subscriptions: %w", o.Service, err)
	}
	s.bg.Add(1)
	go s.maintain()
	s.log.Info("serving commands", "commands", len(s.cmds))
	return s, nil
}

// Instance is this replica's id.
func (s *Server) Instance() string { return s.opts.Instance }

// Stop stops taking requests, waits up to StopGrace for running jobs, and
// then leaves the rest open for another replica to take over.
func (s *Server) Stop(ctx context.Context) {
	if s.svc != nil {
		s.svc.Stop()
	}
	if s.cancelSub != nil {
		s.cancelSub.Unsubscribe()
	}
	done := make(chan struct{})
	go func() {
		s.mu.Lock()
		n := len(s.running)
		s.mu.Unlock()
		if n > 0 {
			s.log.Info("waiting for running jobs", "jobs", n, "grace", s.opts.StopGrace)
		}
		s.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(s.opts.StopGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
	s.cancel(errShutdown)
	<-done
	s.bg.Wait()
	dctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.replicas.Delete(dctx, leaseKey(s.opts.Service, s.opts.Instance))
}

func checkSpec(sp *commandv1.CommandSpec) error {
	if sp == nil || strings.TrimSpace(sp.Name) == "" {
		return errors.New("command without a name")
	}
	if sp.Usage == "" || sp.Example == "" || sp.Summary == "" {
		return fmt.Errorf("command %q needs usage, summary and an example", sp.Name)
	}
	if sp.Mutating && !sp.SupportsDryRun {
		return fmt.Errorf("command %q changes state and must support --dry-run", sp.Name)
	}
	return nil
}

// verb is the last word of a command name ("lb drain" → "drain"); a
// one-word command is its own verb ("deploy" → "deploy").
func verb(service, name string) string {
	f := strings.Fields(name)
	if len(f) > 1 && f[0] == service {
		return strings.Join(f[1:], "_")
	}
	return strings.Join(f, "_")
}

func endpointName(name string) string { return strings.Join(strings.Fields(name), "_") }

func leaseKey(service, instance string) string {
	return wire.Token(service) + "." + wire.Token(instance)
}

// handle is the micro handler of one command. micro delivers one message at
// a time per endpoint and does not recover panics, so it only validates,
// creates the job and acknowledges; the work runs in a goroutine.
func (s *Server) handle(c Command) micro.HandlerFunc {
	sem := make(chan struct{}, 256)
	return func(r micro.Request) {
		sem <- struct{}{}
		// Counted with the jobs, so Stop waits for an accept in flight
		// (and the job it may start) instead of racing it.
		s.wg.Add(1)
		go func() {
			defer func() { <-sem; s.wg.Done() }()
			s.handleOne(c, r)
		}()
	}
}

// handleOne accepts one request: micro delivers an endpoint's requests one
// at a time, and accepting takes two KV writes, so requests are accepted
// concurrently (bounded); exactly-once still rests on the KV Create.
func (s *Server) handleOne(c Command, r micro.Request) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic accepting command", "command", c.Spec.Name, "panic", p, "stack", string(debug.Stack()))
			r.Error("500", "internal error", nil)
		}
	}()
	ctx := telemetry.Extract(s.ctx, nats.Header(r.Headers()))
	ctx, span := s.tracer.Start(ctx, "command accept "+c.Spec.Name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("sb.command", c.Spec.Name), attribute.String("sb.service", s.opts.Service)))
	defer span.End()
	ack := s.accept(ctx, c, r.Data())
	s.acks.Add(ctx, 1, metric.WithAttributes(attribute.String("service", s.opts.Service), attribute.String("command", c.Spec.Name),
		attribute.String("ack", strings.ToLower(strings.TrimPrefix(ack.GetStatus().String(), "ACK_STATUS_")))))
	span.SetAttributes(attribute.String("sb.ack", ack.GetStatus().String()), attribute.String("sb.job_id", ack.GetJobId()))
	data, err := wire.Marshal(ack)
	if err != nil {
		r.Error("500", "encode ack", nil)
		return
	}
	if err := r.Respond(data, micro.WithHeaders(micro.Headers{wire.HeaderContentType: {wire.ContentTypeJSON}})); err != nil {
		s.log.Warn("respond to command request", "command", c.Spec.Name, "error", err)
	}
}

func (s *Server) accept(ctx context.Context, c Command, data []byte) *commandv1.CommandAck {
	reject := func(reason string) *commandv1.CommandAck {
		return &commandv1.CommandAck{Status: commandv1.AckStatus_ACK_STATUS_REJECTED, Reason: reason}
	}
	var req commandv1.CommandRequest
	if err := wire.Unmarshal(data, &req); err != nil {
		return reject("the request could not be decoded: " + err.Error())
	}
	if req.GetId() == "" {
		return reject("the request has no command id")
	}
	if req.GetConversation().GetAdapter() == "" || req.GetConversation().GetChannel() == "" {
		return reject("the request has no conversation to answer in")
	}
	if req.GetCommand() != c.Spec.Name {
		return reject(fmt.Sprintf("request for %q sent to the endpoint of %q", req.GetCommand(), c.Spec.Name))
	}
	if err := spec.Validate(c.Spec, &req); err != nil {
		return reject(err.Error())
	}
	if d := req.GetDeadline(); d != nil && d.AsTime().Before(time.Now()) {
		return reject("the request's deadline passed before it arrived")
	}
	now := timestamppb.Now()
	traceID := trace.SpanContextFromContext(ctx).TraceID()
	rec := &commandv1.Job{
		Id:           wire.JobID(req.GetId()),
		CommandId:    req.GetId(),
		Service:      s.opts.Service,
		Command:      c.Spec.Name,
		State:        commandv1.JobState_JOB_STATE_RUNNING,
		Requester:    req.GetRequester(),
		Conversation: req.GetConversation(),
		Request:      &req,
		Owner:        s.opts.Instance,
		Attempt:      1,
		CreatedAt:    now,
		UpdatedAt:    now,
		DryRun:       req.GetDryRun(),
	}
	if traceID.IsValid() {
		rec.TraceId = traceID.String()
	}
	// A scan that reads the marker and then the new record before start
	// registers the job would take this replica's own job for one left by
	// its previous life, and fail it: the job counts as here from before
	// its marker is written until it runs.
	s.mu.Lock()
	s.accepting[rec.GetId()]++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.accepting[rec.GetId()]--; s.accepting[rec.GetId()] <= 0 {
			delete(s.accepting, rec.GetId())
		}
		s.mu.Unlock()
	}()
	rev, existing, err := s.store.Create(ctx, rec)
	if errors.Is(err, jobs.ErrExists) {
		return &commandv1.CommandAck{Status: commandv1.AckStatus_ACK_STATUS_EXISTING, JobId: existing.GetId(), Job: existing,
			Reason: fmt.Sprintf("this command was already received as job %s (%s)", existing.GetId(), stateWord(existing.GetState()))}
	}
	if err != nil {
		s.log.ErrorContext(ctx, "create job", "command", c.Spec.Name, "command_id", req.GetId(), "error", err)
		return reject("the job could not be recorded (the bus may be unavailable); nothing was done — try again")
	}
	s.start(trace.ContextWithSpanContext(s.ctx, trace.SpanContextFromContext(ctx)), c, rec, rev)
	// The ack of a new job carries only its id: the caller knows the rest,
	// and a smaller ack is a faster one.
	return &commandv1.CommandAck{Status: commandv1.AckStatus_ACK_STATUS_ACCEPTED, JobId: rec.GetId()}
}

func stateWord(st commandv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "JOB_STATE_"))
}

// start registers a job as running here before its goroutine starts, so a
// concurrent scan never mistakes it for an orphan.
func (s *Server) start(parent context.Context, c Command, rec *commandv1.Job, rev uint64) {
	jctx, cancel := context.WithCancelCause(parent)
	s.mu.Lock()
	s.running[rec.GetId()] = cancel
	s.mu.Unlock()
	s.wg.Add(1)
	go s.run(jctx, cancel, c, rec, rev)
}

// run executes a job the server owns at revision rev and records its end.
func (s *Server) run(jctx context.Context, cancel context.CancelCauseFunc, c Command, rec *commandv1.Job, rev uint64) {
	defer s.wg.Done()
	defer cancel(nil)
	ctx, span := s.tracer.Start(context.WithoutCancel(jctx), "command run "+c.Spec.Name,
		trace.WithAttributes(attribute.String("sb.job_id", rec.GetId()), attribute.Int("sb.attempt", int(rec.GetAttempt()))))
	defer span.End()
	jctx = trace.ContextWithSpan(jctx, span)
	defer func() {
		s.mu.Lock()
		delete(s.running, rec.GetId())
		s.mu.Unlock()
	}()
	log := s.log.With("command", c.Spec.Name, "job_id", rec.GetId(), "command_id", rec.GetCommandId())
	job := &Job{srv: s, rec: rec, spec: c.Spec, traceID: rec.GetTraceId(), seq: rec.GetPosts(), rev: rev}
	if rec.GetAttempt() == 1 {
		// Not awaited here: the person waits on this path, and finish
		// waits for it before the result record.
		job.accepted = emit.AuditAsync(ctx, s.js, s.auditRecord(rec, auditv1.Stage_STAGE_ACCEPTED, "accepted", ""))
	}

	err := safeRun(jctx, c.Run, job, log)
	cause := context.Cause(jctx)
	if errors.Is(cause, errShutdown) && s.ctx.Err() != nil {
		// Leave the job open: another replica takes it over.
		log.Warn("job interrupted by shutdown; left for another replica", "error", err)
		s.awaitAccepted(ctx, job)
		return
	}
	state := commandv1.JobState_JOB_STATE_SUCCEEDED
	post := job.takeResult()
	if post == nil {
		post = &chatv1.ChatPost{Text: "Done."}
	}
	post.Kind = chatv1.Kind_KIND_RESULT
	post.Reaction = chatv1.Reaction_REACTION_SUCCEEDED
	outcome := "succeeded"
	switch {
	case err == nil:
	case errors.Is(cause, ErrCancelled):
		state, outcome = commandv1.JobState_JOB_STATE_CANCELLED, "cancelled"
		post = &chatv1.ChatPost{Kind: chatv1.Kind_KIND_ERROR, Reaction: chatv1.Reaction_REACTION_FAILED,
			Text: "Cancelled: " + c.Spec.Name + " stopped on request."}
	default:
		state, outcome = commandv1.JobState_JOB_STATE_FAILED, "failed"
		msg, ok := IsUserError(err)
		if !ok {
			log.ErrorContext(ctx, "command failed", "error", err)
			span.RecordError(err)
			msg = fmt.Sprintf("internal error while running %s (%s); the operators can find the details in the logs", c.Spec.Name, traceRef(job))
		}
		post = &chatv1.ChatPost{Kind: chatv1.Kind_KIND_ERROR, Reaction: chatv1.Reaction_REACTION_FAILED, Text: msg}
	}
	if state == commandv1.JobState_JOB_STATE_FAILED {
		span.SetStatus(codes.Error, post.GetText())
	}
	s.finish(ctx, job, state, post, outcome, log)
}

// traceRef is what a person quotes to the operators about a failed job.
func traceRef(job *Job) string {
	if job.traceID == "" {
		return "job " + job.ID()
	}
	return "job " + job.ID() + ", trace " + job.traceID
}

func safeRun(ctx context.Context, h Handler, job *Job, log *slog.Logger) (err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("panic in command handler", "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return h(ctx, job)
}

// finish records the final state and then posts the answer and audits it.
// Writes use the server's context so that a cancelled job still records its
// end; they retry while the bus reconnects.
func (s *Server) finish(ctx context.Context, job *Job, state commandv1.JobState, post *chatv1.ChatPost, outcome string, log *slog.Logger) {
	wctx, cancel := context.WithTimeout(trace.ContextWithSpanContext(context.WithoutCancel(ctx), trace.SpanContextFromContext(ctx)), 2*time.Minute)
	defer cancel()
	seq := job.nextSeq()
	var final *commandv1.Job
	mod := func(j *commandv1.Job) bool {
		if j.GetOwner() != s.opts.Instance || jobs.Terminal(j.GetState()) {
			return false // another replica took it over, or it ended already
		}
		now := timestamppb.Now()
		j.State = state
		j.Result = post.GetText()
		j.UpdatedAt = now
		j.FinishedAt = now
		j.Posts = seq
		return true
	}
	if job.rev != 0 {
		// The record as created (or claimed) is what is stored unless
		// something changed it since (a cancel request): try a
		// compare-and-set at that revision before reading it back.
		j := proto.CloneOf(job.rec)
		if mod(j) {
			if _, err := s.store.Update(wctx, j, job.rev); err == nil {
				final = j
			}
		}
	}
	for attempt := 0; final == nil; attempt++ {
		var err error
		final, err = s.store.Modify(wctx, job.ID(), mod)
		if err == nil {
			break
		}
		if wctx.Err() != nil {
			log.Error("record job end; giving up, the job stays open for take-over", "error", err)
			return
		}
		log.Warn("record job end; retrying", "error", err, "attempt", attempt)
		time.Sleep(backoff(attempt))
	}
	if final.GetOwner() != s.opts.Instance || final.GetState() != state {
		log.Warn("job was taken over by another replica before it ended here; its answer is not posted twice", "owner", final.GetOwner())
		return
	}
	attrs := metric.WithAttributes(attribute.String("service", s.opts.Service), attribute.String("command", final.GetCommand()), attribute.String("outcome", outcome))
	s.ended.Add(wctx, 1, attrs)
	s.duration.Record(wctx, final.GetFinishedAt().AsTime().Sub(final.GetCreatedAt().AsTime()).Seconds(), attrs)
	s.fillPost(job, post, seq)
	// The result record is sent before the post and awaited after it: over
	// one connection it reaches the stream first, so a replica that dies
	// right after posting has still left its record, and the person does
	// not wait for it.
	result := emit.AuditAsync(wctx, s.js, s.auditRecord(final, auditv1.Stage_STAGE_RESULT, outcome, post.GetText()))
	if _, err := emit.Post(wctx, s.js, post); err != nil {
		log.Error("post job result", "error", err)
	}
	s.awaitAccepted(wctx, job)
	if err := result.Wait(wctx); err != nil {
		log.Error("write audit record", "stage", "result", "error", err)
	}
	// Last, after the post and the records: until the marker is gone, a
	// scan that finds this replica dead posts the answer and writes the
	// result record again from the job (the streams drop the copies).
	if err := s.store.Close(wctx, s.opts.Service, job.ID()); err != nil {
		log.Warn("close job", "error", err)
	}
}

func (s *Server) awaitAccepted(ctx context.Context, job *Job) {
	if job.accepted == nil {
		return
	}
	if err := job.accepted.Wait(ctx); err != nil {
		s.log.Error("write audit record", "job_id", job.ID(), "stage", "accepted", "error", err)
	}
}

func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 4)
	return min(d, 2*time.Second)
}

func (s *Server) fillPost(job *Job, p *chatv1.ChatPost, seq uint32) {
	rec := job.rec
	p.Id = fmt.Sprintf("%s-%d-%d", rec.GetId(), rec.GetAttempt(), seq)
	p.Conversation = rec.GetConversation()
	p.CommandId = rec.GetCommandId()
	p.JobId = rec.GetId()
	p.Seq = seq
	p.TraceId = job.traceID
	p.ReplyTo = rec.GetRequest().GetMessageId()
	if p.Author == nil {
		p.Author = &chatv1.Identity{Id: "service:" + s.opts.Service, Name: s.opts.Service, Automation: true}
	}
	if p.Kind == chatv1.Kind_KIND_UNSPECIFIED {
		p.Kind = chatv1.Kind_KIND_PROGRESS
	}
}

func (s *Server) audit(ctx context.Context, j *commandv1.Job, stage auditv1.Stage, outcome, detail string) {
	if _, err := emit.Audit(ctx, s.js, s.auditRecord(j, stage, outcome, detail)); err != nil {
		s.log.Error("write audit record", "job_id", j.GetId(), "stage", stage.String(), "error", err)
	}
}

func (s *Server) auditRecord(j *commandv1.Job, stage auditv1.Stage, outcome, detail string) *auditv1.Record {
	return &auditv1.Record{
		Id:           fmt.Sprintf("%s-%d-%s", j.GetId(), j.GetAttempt(), outcome),
		Stage:        stage,
		Identity:     j.GetRequester(),
		Conversation: j.GetConversation(),
		CommandId:    j.GetCommandId(),
		JobId:        j.GetId(),
		Command:      j.GetCommand(),
		Raw:          j.GetRequest().GetRaw(),
		Outcome:      outcome,
		Detail:       detail,
		Service:      s.opts.Service,
		Instance:     s.opts.Instance,
		TraceId:      j.GetTraceId(),
		DryRun:       j.GetDryRun(),
	}
}

// onCancel stops a job this replica runs when "cancel <job>" asks for it.
func (s *Server) onCancel(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	s.mu.Lock()
	cancel, ok := s.running[id]
	s.mu.Unlock()
	if ok {
		s.log.Info("cancelling job on request", "job_id", id)
		cancel(ErrCancelled)
	}
}

// maintain renews this replica's lease and looks for open jobs whose owner
// has lost its lease.
func (s *Server) maintain() {
	defer s.bg.Done()
	renew := time.NewTicker(s.opts.Lease / 3)
	defer renew.Stop()
	// Scan soon after start (a restarted replica fails or resumes what it
	// left), then every half lease with jitter so replicas do not collide.
	scan := time.NewTimer(time.Duration(rand.Int64N(int64(s.opts.Lease / 4))))
	defer scan.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-renew.C:
			ctx, cancel := context.WithTimeout(s.ctx, s.opts.Lease/3)
			if err := s.renewLease(ctx); err != nil {
				s.log.Warn("renew replica lease", "error", err)
			}
			cancel()
		case <-scan.C:
			ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
			s.scan(ctx)
			cancel()
			scan.Reset(s.opts.Lease/2 + time.Duration(rand.Int64N(int64(s.opts.Lease/4))))
		}
	}
}

func (s *Server) renewLease(ctx context.Context) error {
	if !s.nc.IsConnected() {
		s.mu.Lock()
		s.connectedAt = time.Time{}
		s.mu.Unlock()
		return errors.New("not connected")
	}
	s.mu.Lock()
	if s.connectedAt.IsZero() {
		s.connectedAt = time.Now()
	}
	s.mu.Unlock()
	if _, err := s.replicas.Put(ctx, leaseKey(s.opts.Service, s.opts.Instance), []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("renew lease of %s: %w", s.opts.Instance, err)
	}
	return nil
}

// scan takes over the open jobs of replicas that lost their lease. Judging
// another replica dead is only safe when this one has itself been connected
// for two leases (after a NATS outage every lease has lapsed and must be
// renewed first) and the owner's lease was missing in two scans a lease
// apart.
func (s *Server) scan(ctx context.Context) {
	s.mu.Lock()
	stable := !s.connectedAt.IsZero() && time.Since(s.connectedAt) >= 2*s.opts.Lease
	s.mu.Unlock()
	ids, err := s.store.OpenIDs(ctx, s.opts.Service)
	if err != nil {
		s.log.Warn("scan open jobs", "error", err)
		return
	}
	seen := map[string]bool{}
	for _, id := range ids {
		s.mu.Lock()
		_, mine := s.running[id]
		mine = mine || s.accepting[id] > 0
		s.mu.Unlock()
		if mine {
			continue
		}
		rec, rev, err := s.store.Get(ctx, id)
		if errors.Is(err, jobs.ErrNotFound) {
			// A marker whose job was never created: the creator died between
			// the two writes, or lost the race to another replica's create.
			// It may also be a create in flight right now, so drop it only
			// when a later scan finds it again.
			s.mu.Lock()
			if _, ok := s.orphans[id]; ok {
				delete(s.orphans, id)
				s.mu.Unlock()
				s.store.Close(ctx, s.opts.Service, id)
				continue
			}
			s.orphans[id] = time.Now()
			s.mu.Unlock()
			continue
		}
		if err != nil {
			s.log.Warn("scan: read job", "job_id", id, "error", err)
			continue
		}
		if jobs.Terminal(rec.GetState()) {
			// Its owner records the end, then posts the answer, then closes
			// the marker. A marker still here means the owner is between
			// those steps, or died there: then the answer may never have
			// been posted, and is posted again from the record (same post
			// and audit ids, so the streams drop a copy they already hold).
			if owner := rec.GetOwner(); owner != s.opts.Instance && s.alive(ctx, owner) {
				continue
			}
			s.repostResult(ctx, rec)
			s.store.Close(ctx, s.opts.Service, id)
			continue
		}
		owner := rec.GetOwner()
		if owner != s.opts.Instance {
			if !stable {
				continue
			}
			seen[owner] = true
			if s.alive(ctx, owner) {
				continue
			}
			s.mu.Lock()
			first, ok := s.suspects[owner]
			if !ok {
				s.suspects[owner] = time.Now()
			}
			s.mu.Unlock()
			if !ok || time.Since(first) < s.opts.Lease {
				continue
			}
		}
		s.takeOver(ctx, rec, rev)
	}
	s.mu.Lock()
	for o := range s.suspects {
		if !seen[o] {
			delete(s.suspects, o)
		}
	}
	s.mu.Unlock()
}

// repostResult posts the answer of an ended job from its record, with the
// ids the first post and audit record had.
func (s *Server) repostResult(ctx context.Context, rec *commandv1.Job) {
	post := &chatv1.ChatPost{Text: rec.GetResult(), Kind: chatv1.Kind_KIND_RESULT, Reaction: chatv1.Reaction_REACTION_SUCCEEDED}
	if rec.GetState() != commandv1.JobState_JOB_STATE_SUCCEEDED {
		post.Kind, post.Reaction = chatv1.Kind_KIND_ERROR, chatv1.Reaction_REACTION_FAILED
	}
	if post.Text == "" {
		post.Text = "Done."
	}
	s.fillPost(&Job{srv: s, rec: rec, traceID: rec.GetTraceId()}, post, rec.GetPosts())
	if _, err := emit.Post(ctx, s.js, post); err != nil {
		s.log.Warn("post the answer of an ended job", "job_id", rec.GetId(), "error", err)
		return
	}
	s.audit(ctx, rec, auditv1.Stage_STAGE_RESULT, stateWord(rec.GetState()), post.GetText())
}

func (s *Server) alive(ctx context.Context, instance string) bool {
	_, err := s.replicas.Get(ctx, leaseKey(s.opts.Service, instance))
	return err == nil || !errors.Is(err, jetstream.ErrKeyNotFound)
}

// takeOver claims a job of a dead replica (or of this replica's previous
// life) and resumes it when its command is resumable, or fails it.
func (s *Server) takeOver(ctx context.Context, rec *commandv1.Job, rev uint64) {
	log := s.log.With("job_id", rec.GetId(), "command", rec.GetCommand(), "previous_owner", rec.GetOwner())
	c, ok := s.cmds[rec.GetCommand()]
	if !ok {
		log.Warn("open job of a command this replica does not serve; leaving it")
		return
	}
	prev := rec.GetOwner()
	rec.Owner = s.opts.Instance
	rec.Attempt++
	rec.UpdatedAt = timestamppb.Now()
	nrev, err := s.store.Update(ctx, rec, rev)
	if errors.Is(err, jobs.ErrConflict) {
		return // another replica claimed it first
	}
	if err != nil {
		log.Warn("claim job of a dead replica", "error", err)
		return
	}
	pctx := s.ctx
	if tid, err := trace.TraceIDFromHex(rec.GetTraceId()); err == nil {
		// Continue the command's trace, so the take-over shows in it.
		pctx = trace.ContextWithSpanContext(s.ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{1}, Remote: true}))
	}
	job := &Job{srv: s, rec: rec, spec: c.Spec, traceID: rec.GetTraceId(), seq: rec.GetPosts() + 100*(rec.GetAttempt()-1)}
	// The trail says who holds the job now (and has an "accepted" record
	// even when the first replica died before writing its own).
	s.audit(pctx, rec, auditv1.Stage_STAGE_ACCEPTED, "taken over", fmt.Sprintf("replica %s stopped; %s took the job over (attempt %d)", prev, s.opts.Instance, rec.GetAttempt()))
	if c.Spec.GetResumable() && !rec.GetCancelRequested() {
		log.Warn("resuming job of a replica that stopped")
		job.Post(pctx, &chatv1.ChatPost{Kind: chatv1.Kind_KIND_NOTICE,
			Text: fmt.Sprintf("Replica %s stopped while running this job; replica %s is resuming it (attempt %d).", prev, s.opts.Instance, rec.GetAttempt())})
		s.start(pctx, c, rec, nrev)
		return
	}
	log.Warn("failing job of a replica that stopped")
	state, outcome := commandv1.JobState_JOB_STATE_FAILED, "failed"
	text := fmt.Sprintf("Replica %s stopped while running this job, and %s cannot be resumed safely, so it was marked failed. "+
		"It may have been partly done: check the state before running it again.", prev, c.Spec.Name)
	if rec.GetCancelRequested() {
		state, outcome = commandv1.JobState_JOB_STATE_CANCELLED, "cancelled"
		text = fmt.Sprintf("Replica %s stopped while running this job after a cancel was asked; it is marked cancelled.", prev)
	}
	s.finish(pctx, job, state, &chatv1.ChatPost{Kind: chatv1.Kind_KIND_ERROR, Reaction: chatv1.Reaction_REACTION_FAILED, Text: text}, outcome, log)
}
