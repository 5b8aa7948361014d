package emit_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/kit/telemetry"
)

// setup starts a server with switchboard's streams and returns JetStream.
func setup(t *testing.T) jetstream.JetStream {
	t.Helper()
	js := natstest.JetStream(t, natstest.Connect(t, natstest.RunServer(t)))
	if err := bus.EnsureStreams(natstest.Context(t, 30*time.Second), js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return js
}

// stored is one message as the stream holds it.
type stored struct {
	seq     uint64
	subject string
	header  nats.Header
	data    []byte
}

// last reads the last message on subject from stream.
func last(t *testing.T, ctx context.Context, js jetstream.JetStream, stream, subject string) stored {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatalf("last message on %s in %s: %v", subject, stream, err)
	}
	return stored{m.Sequence, m.Subject, m.Header, m.Data}
}

func count(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// decode reads m's data into a new message of want's type and compares.
func checkData(t *testing.T, m stored, want proto.Message) {
	t.Helper()
	got := want.ProtoReflect().New().Interface()
	if err := wire.Unmarshal(m.data, got); err != nil {
		t.Fatalf("decode %s: %v", m.data, err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("stored message (-published +stored):\n%s", diff)
	}
}

// checkHeaders compares the switchboard headers of m with want; a missing
// key in want means the header must be absent.
func checkHeaders(t *testing.T, m stored, want map[string]string) {
	t.Helper()
	for _, k := range []string{wire.HeaderContentType, wire.HeaderType, wire.HeaderCommandID, jetstream.MsgIDHeader} {
		if got := m.header.Get(k); got != want[k] {
			t.Errorf("header %s = %q, want %q", k, got, want[k])
		}
	}
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestPostPublishesToTheConversationsSubjectWithHeaders(t *testing.T) {
	t.Parallel()
	js := setup(t)
	ctx := natstest.Context(t, 30*time.Second)
	tests := []struct {
		name    string
		post    *chatv1.ChatPost
		subject string
		headers map[string]string
	}{
		{
			"a job's result carries its command id",
			&chatv1.ChatPost{
				Id:           "7bfb4d06dcb7/2",
				Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops", Thread: "t1"},
				Kind:         chatv1.Kind_KIND_RESULT,
				Text:         "drained web3",
				Blocks:       []*chatv1.Block{{Content: &chatv1.Block_Code{Code: "www/web3 drain"}}},
				CommandId:    "console:ana:1",
				JobId:        "7bfb4d06dcb7",
				Seq:          2,
				CreatedAt:    timestamppb.New(time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)),
			},
			"sb.chat.post.console.ops",
			map[string]string{
				"Content-Type":  "application/json",
				"Sb-Type":       "sb.chat.v1.ChatPost",
				"Sb-Command-Id": "console:ana:1",
				"Nats-Msg-Id":   "7bfb4d06dcb7/2",
			},
		},
		{
			"a notice has no command id header",
			&chatv1.ChatPost{
				Id:           "notice-1",
				Conversation: &chatv1.Conversation{Adapter: "slack", Channel: "C024BE91L"},
				Kind:         chatv1.Kind_KIND_NOTICE,
				Text:         "build failed",
			},
			"sb.chat.post.slack.C024BE91L",
			map[string]string{
				"Content-Type": "application/json",
				"Sb-Type":      "sb.chat.v1.ChatPost",
				"Nats-Msg-Id":  "notice-1",
			},
		},
		{
			"a channel that is not a safe token is hashed into one",
			&chatv1.ChatPost{
				Id:           "p-3",
				Conversation: &chatv1.Conversation{Adapter: "cli", Channel: "ops.eu west"},
				Text:         "hi",
			},
			"sb.chat.post.cli." + wire.Token("ops.eu west"),
			map[string]string{
				"Content-Type": "application/json",
				"Sb-Type":      "sb.chat.v1.ChatPost",
				"Nats-Msg-Id":  "p-3",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq, err := emit.Post(ctx, js, tt.post)
			if err != nil {
				t.Fatalf("Post: %v", err)
			}
			m := last(t, ctx, js, wire.StreamChat, tt.subject)
			if m.seq != seq {
				t.Errorf("Post returned sequence %d, the stream holds it at %d", seq, m.seq)
			}
			checkHeaders(t, m, tt.headers)
			if tt.post.GetCreatedAt() == nil {
				t.Errorf("Post did not fill in CreatedAt")
			}
			checkData(t, m, tt.post)
		})
	}
}

func TestPostFillsInAMissingIDAndTime(t *testing.T) {
	t.Parallel()
	js := setup(t)
	ctx := natstest.Context(t, 30*time.Second)
	p := &chatv1.ChatPost{Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops"}, Text: "hi"}
	if _, err := emit.Post(ctx, js, p); err != nil {
		t.Fatal(err)
	}
	if !hexID.MatchString(p.GetId()) || p.GetCreatedAt() == nil {
		t.Errorf("after Post: id %q, created_at %v; want a random id and a time", p.GetId(), p.GetCreatedAt())
	}
	m := last(t, ctx, js, wire.StreamChat, "sb.chat.post.console.ops")
	if m.header.Get(jetstream.MsgIDHeader) != p.GetId() {
		t.Errorf("Nats-Msg-Id = %q, want the filled-in id %q", m.header.Get(jetstream.MsgIDHeader), p.GetId())
	}
}

func TestPostWithoutAnAdapterOrChannelIsAnError(t *testing.T) {
	t.Parallel()
	js := setup(t)
	ctx := natstest.Context(t, 30*time.Second)
	tests := []struct {
		name string
		conv *chatv1.Conversation
	}{
		{"no conversation", nil},
		{"no adapter", &chatv1.Conversation{Channel: "ops"}},
		{"no channel", &chatv1.Conversation{Adapter: "console", Thread: "t1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := emit.Post(ctx, js, &chatv1.ChatPost{Id: "p", Conversation: tt.conv, Text: "lost"}); err == nil || !strings.Contains(err.Error(), "adapter and a channel") {
				t.Errorf("Post = %v, want an error asking for an adapter and a channel", err)
			}
		})
	}
	if n := count(t, ctx, js, wire.StreamChat); n != 0 {
		t.Errorf("CHAT holds %d messages, want none", n)
	}
}

func TestEventPublishesOnSourceAndType(t *testing.T) {
	t.Parallel()
	js := setup(t)
	ctx := natstest.Context(t, 30*time.Second)
	ev := &eventv1.Event{
		Id:        "build-48213",
		Source:    "ci",
		Type:      "build.failed",
		Severity:  eventv1.Severity_SEVERITY_ERROR,
		Title:     "carbonpickle main #48213 failed",
		Fields:    map[string]string{"branch": "main"},
		CommandId: "console:ana:deploy-1",
	}
	if _, err := emit.Event(ctx, js, ev); err != nil {
		t.Fatalf("Event: %v", err)
	}
	if ev.GetOccurredAt() == nil {
		t.Errorf("Event did not fill in OccurredAt")
	}
	m := last(t, ctx, js, wire.StreamEvents, "sb.event.ci.build.failed")
	checkHeaders(t, m, map[string]string{
		"Content-Type":  "application/json",
		"Sb-Type":       "sb.event.v1.Event",
		"Sb-Command-Id": "console:ana:deploy-1",
		// Ids are unique per source only.
		"Nats-Msg-Id": "event/ci/build-48213",
	})
	checkData(t, m, ev)

	for _, bad := range []*eventv1.Event{{Id: "x", Type: "build.failed"}, {Id: "x", Source: "ci"}} {
		if _, err := emit.Event(ctx, js, bad); err == nil {
			t.Errorf("Event(%v) = nil error, want source and type required", bad)
		}
	}
}

func TestAuditPublishesOnItsStage(t *testing.T) {
	t.Parallel()
	js := setup(t)
	ctx := natstest.Context(t, 30*time.Second)
	stages := map[auditv1.Stage]string{
		auditv1.Stage_STAGE_REQUEST:  "sb.audit.request",
		auditv1.Stage_STAGE_DECISION: "sb.audit.decision",
		auditv1.Stage_STAGE_ACCEPTED: "sb.audit.accepted",
		auditv1.Stage_STAGE_RESULT:   "sb.audit.result",
	}
	for stage, subject := range stages {
		r := &auditv1.Record{
			Id:        "rec-" + stage.String(),
			Stage:     stage,
			Identity:  &chatv1.Identity{Id: "console:ana"},
			CommandId: "console:ana:1",
			Command:   "lb drain",
			Raw:       "lb drain web3",
			Outcome:   "allowed",
		}
		if _, err := emit.Audit(ctx, js, r); err != nil {
			t.Fatalf("Audit %s: %v", stage, err)
		}
		m := last(t, ctx, js, wire.StreamAudit, subject)
		checkHeaders(t, m, map[string]string{
			"Content-Type":  "application/json",
			"Sb-Type":       "sb.audit.v1.Record",
			"Sb-Command-Id": "console:ana:1",
			"Nats-Msg-Id":   "rec-" + stage.String(),
		})
		if r.GetTime() == nil {
			t.Errorf("Audit did not fill in Time")
		}
		checkData(t, m, r)
	}
	if _, err := emit.Audit(ctx, js, &auditv1.Record{Id: "no-stage"}); err == nil {
		t.Errorf("Audit without a stage = nil error, want one")
	}
}

func TestAuditCapsRawAt4000Bytes(t *testing.T) {
	t.Parallel()
	js := setup(t)
	ctx := natstest.Context(t, 30*time.Second)
	tests := []struct {
		name string
		raw  string
		want string
	}{
		{"short text is kept", "lb drain web3", "lb drain web3"},
		{"exactly 4000 bytes are kept", strings.Repeat("a", 4000), strings.Repeat("a", 4000)},
		{"longer text is cut to 4000 bytes", strings.Repeat("a", 5000), strings.Repeat("a", 4000)},
		{"a character across the cut is left out whole", strings.Repeat("a", 3999) + "é and more", strings.Repeat("a", 3999)},
		{"a four-byte character across the cut is left out whole", strings.Repeat("a", 3998) + "🚀", strings.Repeat("a", 3998)},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &auditv1.Record{Id: "raw-" + string(rune('a'+i)), Stage: auditv1.Stage_STAGE_REQUEST, Raw: tt.raw}
			if _, err := emit.Audit(ctx, js, r); err != nil {
				t.Fatalf("Audit: %v", err)
			}
			var got auditv1.Record
			if err := wire.Unmarshal(last(t, ctx, js, wire.StreamAudit, "sb.audit.request").data, &got); err != nil {
				t.Fatal(err)
			}
			if got.GetRaw() != tt.want {
				t.Errorf("stored raw has %d bytes (%q…), want %d", len(got.GetRaw()), got.GetRaw()[max(0, len(got.GetRaw())-8):], len(tt.want))
			}
			if !utf8.ValidString(got.GetRaw()) {
				t.Errorf("stored raw is not valid UTF-8")
			}
		})
	}
}

func TestTheSameIDIsStoredOnce(t *testing.T) {
	t.Parallel()
	js := setup(t)
	ctx := natstest.Context(t, 30*time.Second)
	conv := &chatv1.Conversation{Adapter: "console", Channel: "ops"}
	seq1, err := emit.Post(ctx, js, &chatv1.ChatPost{Id: "job1/1", Conversation: conv, Text: "first"})
	if err != nil {
		t.Fatal(err)
	}
	seq2, err := emit.Post(ctx, js, &chatv1.ChatPost{Id: "job1/1", Conversation: conv, Text: "retried"})
	if err != nil {
		t.Fatalf("second Post of the same id: %v", err)
	}
	if seq1 != seq2 {
		t.Errorf("second Post returned sequence %d, want the first's %d", seq2, seq1)
	}
	if _, err := emit.Post(ctx, js, &chatv1.ChatPost{Id: "job1/2", Conversation: conv, Text: "next"}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, ctx, js, wire.StreamChat); n != 2 {
		t.Errorf("CHAT holds %d posts, want 2 (job1/1 once, job1/2)", n)
	}

	// Events de-duplicate per source: the same id from two sources is two events.
	for _, ev := range []*eventv1.Event{
		{Id: "42", Source: "ci", Type: "build.failed"},
		{Id: "42", Source: "ci", Type: "build.failed"},
		{Id: "42", Source: "pagerduty", Type: "incident.triggered"},
	} {
		if _, err := emit.Event(ctx, js, ev); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, ctx, js, wire.StreamEvents); n != 2 {
		t.Errorf("EVENTS holds %d events, want 2", n)
	}
}

func TestATraceInTheContextTravelsInTheHeaders(t *testing.T) {
	t.Parallel()
	js := setup(t)
	ctx := natstest.Context(t, 30*time.Second)
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	sctx, span := tp.Tracer("emit_test").Start(ctx, "lb drain")
	defer span.End()

	conv := &chatv1.Conversation{Adapter: "console", Channel: "traced"}
	if _, err := emit.Post(sctx, js, &chatv1.ChatPost{Id: "traced", Conversation: conv, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	if _, err := emit.Post(ctx, js, &chatv1.ChatPost{Id: "untraced", Conversation: &chatv1.Conversation{Adapter: "console", Channel: "untraced"}, Text: "hi"}); err != nil {
		t.Fatal(err)
	}

	m := last(t, ctx, js, wire.StreamChat, "sb.chat.post.console.traced")
	if traceparent(m.header) == "" {
		t.Fatalf("no traceparent header in %v", m.header)
	}
	got := trace.SpanContextFromContext(telemetry.Extract(context.Background(), m.header))
	want := span.SpanContext()
	if got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() || !got.IsSampled() {
		t.Errorf("traceparent carries trace %s span %s sampled %v, want %s %s sampled", got.TraceID(), got.SpanID(), got.IsSampled(), want.TraceID(), want.SpanID())
	}

	m = last(t, ctx, js, wire.StreamChat, "sb.chat.post.console.untraced")
	if v := traceparent(m.header); v != "" {
		t.Errorf("traceparent = %q without a span in the context, want none", v)
	}
}

// traceparent returns the traceparent header in any spelling: the W3C name
// is lower case, OpenTelemetry's HeaderCarrier writes "Traceparent".
// traceparent reads the W3C header under its exact, lower-case name: NATS
// headers are case-sensitive, and other languages' clients look for it so.
func traceparent(h nats.Header) string {
	return h.Get("traceparent")
}

// flaky is a Publisher over real JetStream that loses the acks of its first
// lose calls after the message was stored, as a timeout would.
type flaky struct {
	js   jetstream.JetStream
	lose int

	mu    sync.Mutex
	calls []string // Nats-Msg-Id of each call
}

func (f *flaky) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := f.js.PublishMsg(ctx, msg, opts...)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, msg.Header.Get(jetstream.MsgIDHeader))
	if err == nil && len(f.calls) <= f.lose {
		return nil, context.DeadlineExceeded
	}
	return ack, err
}

var _ emit.Publisher = (*flaky)(nil)

func TestARetriedPublishIsStoredOnce(t *testing.T) {
	t.Parallel()
	js := setup(t)
	ctx := natstest.Context(t, 30*time.Second)
	f := &flaky{js: js, lose: 2}
	seq, err := emit.Post(ctx, f, &chatv1.ChatPost{Id: "job2/1", Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops"}, Text: "once"})
	if err != nil {
		t.Fatalf("Post through lost acks: %v", err)
	}
	if diff := cmp.Diff([]string{"job2/1", "job2/1", "job2/1"}, f.calls); diff != "" {
		t.Errorf("publish attempts (-want +got):\n%s", diff)
	}
	if n := count(t, ctx, js, wire.StreamChat); n != 1 || seq != 1 {
		t.Errorf("CHAT holds %d posts and Post returned sequence %d, want 1 and 1", n, seq)
	}
}

// failing is a Publisher that never succeeds.
type failing struct{ calls int }

func (f *failing) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	f.calls++
	return nil, nats.ErrNoResponders
}

func TestPublishGivesUpWhenTheContextEnds(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	f := &failing{}
	done := make(chan error, 1)
	go func() {
		_, err := emit.Event(ctx, f, &eventv1.Event{Id: "1", Source: "ci", Type: "build.failed"})
		done <- err
	}()
	cancel()
	err := <-done
	if err == nil {
		t.Fatal("Event through a publisher that always fails = nil error")
	}
	if !errors.Is(err, context.Canceled) && !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("Event = %v, want the context's or the publisher's error", err)
	}
	if !strings.Contains(err.Error(), "sb.event.ci.build.failed") {
		t.Errorf("Event = %q, want it to name the subject", err)
	}
}

// gate is a Publisher over real JetStream that reports its first call and
// counts them.
type gate struct {
	js      jetstream.JetStream
	once    sync.Once
	started chan struct{}
	calls   atomic.Int32
}

func (g *gate) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	g.calls.Add(1)
	g.once.Do(func() { close(g.started) })
	return g.js.PublishMsg(ctx, msg, opts...)
}

func TestPublishRetriesThroughANATSRestart(t *testing.T) {
	t.Parallel()
	n := natstest.RunNode(t)
	nc := natstest.ConnectURL(t, n.URL())
	js := natstest.JetStream(t, nc)
	ctx := natstest.Context(t, 30*time.Second)
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	conv := &chatv1.Conversation{Adapter: "console", Channel: "ops"}
	if _, err := emit.Post(ctx, js, &chatv1.ChatPost{Id: "before", Conversation: conv, Text: "before"}); err != nil {
		t.Fatal(err)
	}

	n.Stop()
	g := &gate{js: js, started: make(chan struct{})}
	type result struct {
		seq uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		seq, err := emit.Post(ctx, g, &chatv1.ChatPost{Id: "during", Conversation: conv, Text: "during the restart"})
		done <- result{seq, err}
	}()
	<-g.started // the first attempt is under way while the server is down
	n.Restart()

	r := <-done
	if r.err != nil {
		t.Fatalf("Post through a restart: %v", r.err)
	}
	// One attempt when the buffered publish is answered after the
	// reconnect, more when its ack was lost on the way.
	t.Logf("Post took %d attempt(s)", g.calls.Load())
	if got := count(t, ctx, js, wire.StreamChat); got != 2 {
		t.Errorf("CHAT holds %d posts, want 2 (before, and during exactly once)", got)
	}
	m := last(t, ctx, js, wire.StreamChat, "sb.chat.post.console.ops")
	if m.seq != r.seq || m.header.Get(jetstream.MsgIDHeader) != "during" {
		t.Errorf("last post is %q at %d, want during at %d", m.header.Get(jetstream.MsgIDHeader), m.seq, r.seq)
	}
}

func TestNewIDIsRandomHex(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		id := emit.NewID()
		if !hexID.MatchString(id) {
			t.Fatalf("NewID() = %q, want 32 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestAuditAsyncIsStoredInOrderAndOnce(t *testing.T) {
	js := setup(t)
	ctx := natstest.Context(t, 30*time.Second)
	first := emit.AuditAsync(ctx, js, &auditv1.Record{Id: "job1-1-accepted", Stage: auditv1.Stage_STAGE_ACCEPTED, CommandId: "c1", Raw: "lb drain web-1"})
	if err := first.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// Waiting twice publishes again at worst, and the stream drops the copy.
	if err := first.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := emit.Audit(ctx, js, &auditv1.Record{Id: "job1-1-succeeded", Stage: auditv1.Stage_STAGE_RESULT, CommandId: "c1"}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, wire.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("AUDIT holds %d records, want 2", info.State.Msgs)
	}
	var ids []string
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var r auditv1.Record
		if err := wire.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.GetId())
	}
	if !cmp.Equal(ids, []string{"job1-1-accepted", "job1-1-succeeded"}) {
		t.Errorf("audit order = %v", ids)
	}
}

// refusingAsync fails every asynchronous publish, as nats.go does when too
// many acks are pending.
type refusingAsync struct{ jetstream.JetStream }

func (refusingAsync) PublishMsgAsync(*nats.Msg, ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	return nil, errors.New("too many outstanding async publishes")
}

func TestAuditAsyncFallsBackToASynchronousPublish(t *testing.T) {
	js := setup(t)
	ctx := natstest.Context(t, 30*time.Second)
	p := emit.AuditAsync(ctx, refusingAsync{js}, &auditv1.Record{Id: "job2-1-accepted", Stage: auditv1.Stage_STAGE_ACCEPTED})
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	m := last(t, ctx, js, wire.StreamAudit, "sb.audit.accepted")
	var r auditv1.Record
	if err := wire.Unmarshal(m.data, &r); err != nil || r.GetId() != "job2-1-accepted" {
		t.Fatalf("stored %v, %v", &r, err)
	}
	if err := emit.AuditAsync(ctx, js, &auditv1.Record{}).Wait(ctx); err == nil {
		t.Error("a record without a stage was accepted")
	}
}
