package natstest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// Messages returns every message stored on stream under the subject
// filters (every subject when none), in stream order. It reads them with an
// ordered consumer and fails the test if the stream cannot be read or
// holds fewer messages than the consumer counted when it was created.
func Messages(t testing.TB, js jetstream.JetStream, stream string, subjects ...string) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	if err != nil {
		t.Fatalf("natstest: read %s: %v", stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatalf("natstest: read %s: %v", stream, err)
	}
	var out []jetstream.Msg
	for pending := info.NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("natstest: read %s: %v", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			out = append(out, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("natstest: read %s: %v", stream, err)
		}
		if n == 0 {
			t.Fatalf("natstest: read %s: %d messages pending but none delivered", stream, pending)
		}
		pending -= uint64(n)
	}
	return out
}

// decode unmarshals the data of every message into a new T.
func decode[T proto.Message](t testing.TB, what string, msgs []jetstream.Msg, fresh func() T) []T {
	t.Helper()
	var out []T
	for _, m := range msgs {
		v := fresh()
		if err := wire.Unmarshal(m.Data(), v); err != nil {
			t.Fatalf("natstest: decode %s (%s): %v", what, m.Subject(), err)
		}
		out = append(out, v)
	}
	return out
}

// Posts returns every post stored on the CHAT stream under subject, a
// subject or filter such as wire.ChatPostSubject("console", "ops") or
// "sb.chat.post.>", in stream order.
func Posts(t testing.TB, js jetstream.JetStream, subject string) []*chatv1.ChatPost {
	t.Helper()
	return decode(t, "chat post", Messages(t, js, wire.StreamChat, subject), func() *chatv1.ChatPost { return &chatv1.ChatPost{} })
}

// InThread returns the posts of ps whose conversation thread is thread,
// in order. An empty thread keeps the posts made outside any thread.
func InThread(ps []*chatv1.ChatPost, thread string) []*chatv1.ChatPost {
	var out []*chatv1.ChatPost
	for _, p := range ps {
		if p.GetConversation().GetThread() == thread {
			out = append(out, p)
		}
	}
	return out
}

// IsFinal reports whether p ends a command: a RESULT or an ERROR post.
func IsFinal(p *chatv1.ChatPost) bool {
	return p.GetKind() == chatv1.Kind_KIND_RESULT || p.GetKind() == chatv1.Kind_KIND_ERROR
}

// FinalPost waits up to within, reading every 50ms, until thread has a
// final post (see IsFinal) under the CHAT subject, then returns the first
// such post and every post of the thread at that time, in stream order.
// It fails the test when no final post comes in time.
func FinalPost(t testing.TB, js jetstream.JetStream, subject, thread string, within time.Duration) (*chatv1.ChatPost, []*chatv1.ChatPost) {
	t.Helper()
	return waitPost(t, js, subject, thread, within, 50*time.Millisecond, IsFinal, "final post")
}

// WaitPost is FinalPost with the poll interval and the test for the post
// to wait for given: it reads the thread's posts (as InThread) every step
// until one satisfies match, and returns that first post with every post
// of the thread; it fails the test after total.
func WaitPost(t testing.TB, js jetstream.JetStream, subject, thread string, total, step time.Duration, match func(*chatv1.ChatPost) bool) (*chatv1.ChatPost, []*chatv1.ChatPost) {
	t.Helper()
	return waitPost(t, js, subject, thread, total, step, match, "matching post")
}

func waitPost(t testing.TB, js jetstream.JetStream, subject, thread string, total, step time.Duration, match func(*chatv1.ChatPost) bool, what string) (*chatv1.ChatPost, []*chatv1.ChatPost) {
	t.Helper()
	var found *chatv1.ChatPost
	var all []*chatv1.ChatPost
	WaitFor(t, total, step, func() error {
		all = InThread(Posts(t, js, subject), thread)
		for _, p := range all {
			if match(p) {
				found = p
				return nil
			}
		}
		return fmt.Errorf("no %s in thread %s yet (%d posts)", what, thread, len(all))
	})
	return found, all
}

// AuditRecords returns every audit record stored on the AUDIT stream under
// the subject filters (every record when none), in stream order.
func AuditRecords(t testing.TB, js jetstream.JetStream, subjects ...string) []*auditv1.Record {
	t.Helper()
	return decode(t, "audit record", Messages(t, js, wire.StreamAudit, subjects...), func() *auditv1.Record { return &auditv1.Record{} })
}

// Events returns every event stored on the EVENTS stream under the subject
// filters (every event when none), in stream order.
func Events(t testing.TB, js jetstream.JetStream, subjects ...string) []*eventv1.Event {
	t.Helper()
	return decode(t, "event", Messages(t, js, wire.StreamEvents, subjects...), func() *eventv1.Event { return &eventv1.Event{} })
}
