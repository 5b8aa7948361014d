package natstest_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
)

// streams declares CHAT, AUDIT and EVENTS as bus.EnsureStreams would (the
// subjects only: natstest cannot import bus).
func streams(t *testing.T) jetstream.JetStream {
	t.Helper()
	js := natstest.JetStream(t, natstest.Connect(t, natstest.RunServer(t)))
	ctx := natstest.Context(t, 10*time.Second)
	for name, subj := range map[string]string{wire.StreamChat: "sb.chat.post.>", wire.StreamAudit: "sb.audit.>", wire.StreamEvents: "sb.event.>"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	return js
}

func publishPost(t *testing.T, js jetstream.JetStream, channel, thread, text string, kind chatv1.Kind) {
	t.Helper()
	if err := tryPublishPost(js, channel, thread, text, kind); err != nil {
		t.Fatal(err)
	}
}

func tryPublishPost(js jetstream.JetStream, channel, thread, text string, kind chatv1.Kind) error {
	p := &chatv1.ChatPost{Text: text, Kind: kind, Conversation: &chatv1.Conversation{Adapter: "console", Channel: channel, Thread: thread}}
	data, err := wire.Marshal(p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = js.Publish(ctx, wire.ChatPostSubject("console", channel), data)
	return err
}

func texts(ps []*chatv1.ChatPost) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.GetText())
	}
	return fmt.Sprint(s)
}

func TestPostsReadsAChannelInStreamOrderAndInThreadFilters(t *testing.T) {
	js := streams(t)
	ops := wire.ChatPostSubject("console", "ops")
	if got := natstest.Posts(t, js, ops); len(got) != 0 {
		t.Fatalf("empty stream: %d posts", len(got))
	}
	progress := chatv1.Kind_KIND_PROGRESS
	publishPost(t, js, "ops", "", "hello", chatv1.Kind_KIND_NOTICE)
	publishPost(t, js, "ops", "a", "a1", progress)
	publishPost(t, js, "other", "a", "elsewhere", progress)
	publishPost(t, js, "ops", "b", "b1", progress)
	publishPost(t, js, "ops", "a", "a2", chatv1.Kind_KIND_RESULT)
	// More than one fetch batch (1000) of another channel in between.
	for i := range 1001 {
		publishPost(t, js, "noise", "", fmt.Sprint(i), progress)
	}
	publishPost(t, js, "ops", "a", "a3", progress)

	all := natstest.Posts(t, js, ops)
	if got, want := texts(all), "[hello a1 b1 a2 a3]"; got != want {
		t.Fatalf("Posts(ops) = %s, want %s", got, want)
	}
	if got, want := texts(natstest.InThread(all, "a")), "[a1 a2 a3]"; got != want {
		t.Errorf("InThread(a) = %s, want %s", got, want)
	}
	if got, want := texts(natstest.InThread(all, "")), "[hello]"; got != want {
		t.Errorf("InThread(\"\") = %s, want %s (posts outside threads)", got, want)
	}
	if n := len(natstest.Posts(t, js, "sb.chat.post.>")); n != 1001+6 {
		t.Errorf("Posts(every channel) = %d posts, want %d", n, 1001+6)
	}
}

func TestFinalPostWaitsForTheThreadsResultOrError(t *testing.T) {
	js := streams(t)
	ops := wire.ChatPostSubject("console", "ops")
	publishPost(t, js, "ops", "job", "step 1", chatv1.Kind_KIND_PROGRESS)
	publishPost(t, js, "ops", "other", "done elsewhere", chatv1.Kind_KIND_RESULT)
	go func() {
		time.Sleep(200 * time.Millisecond)
		for _, p := range []struct {
			text string
			kind chatv1.Kind
		}{{"step 2", chatv1.Kind_KIND_PROGRESS}, {"failed", chatv1.Kind_KIND_ERROR}} {
			if err := tryPublishPost(js, "ops", "job", p.text, p.kind); err != nil {
				t.Error(err)
			}
		}
	}()
	final, all := natstest.FinalPost(t, js, ops, "job", 20*time.Second)
	if final.GetText() != "failed" || final.GetKind() != chatv1.Kind_KIND_ERROR {
		t.Errorf("final = %s %q, want the error", final.GetKind(), final.GetText())
	}
	if got, want := texts(all), "[step 1 step 2 failed]"; got != want {
		t.Errorf("thread = %s, want %s", got, want)
	}

	// WaitPost takes its own test: here, the second progress post.
	p, _ := natstest.WaitPost(t, js, ops, "job", 20*time.Second, 10*time.Millisecond, func(p *chatv1.ChatPost) bool { return p.GetText() == "step 2" })
	if p.GetText() != "step 2" {
		t.Errorf("WaitPost = %q, want step 2", p.GetText())
	}
}

func TestFinalPostFailsTheTestWhenNoFinalPostComes(t *testing.T) {
	js := streams(t)
	publishPost(t, js, "ops", "job", "step 1", chatv1.Kind_KIND_PROGRESS)
	ft := &fatalT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		natstest.FinalPost(ft, js, wire.ChatPostSubject("console", "ops"), "job", 300*time.Millisecond)
	}()
	<-done
	if !ft.failed {
		t.Fatal("FinalPost returned without a final post and without failing the test")
	}
}

// fatalT records Fatalf and ends the goroutine, as testing.T does.
type fatalT struct {
	testing.TB
	failed bool
}

func (f *fatalT) Helper() {}

func (f *fatalT) Fatalf(format string, args ...any) {
	f.failed = true
	runtime.Goexit()
}

func TestAuditRecordsAndEventsReadTheirStreams(t *testing.T) {
	js := streams(t)
	ctx := natstest.Context(t, 10*time.Second)
	for i, stage := range []string{"request", "accepted", "request"} {
		data, _ := wire.Marshal(&auditv1.Record{CommandId: fmt.Sprint(i)})
		if _, err := js.Publish(ctx, wire.AuditSubject(stage), data); err != nil {
			t.Fatal(err)
		}
	}
	for i, typ := range []string{"up", "down"} {
		data, _ := wire.Marshal(&eventv1.Event{Id: fmt.Sprint(i)})
		if _, err := js.Publish(ctx, wire.EventSubject("lb", typ), data); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(recs []*auditv1.Record) string {
		var s []string
		for _, r := range recs {
			s = append(s, r.GetCommandId())
		}
		return fmt.Sprint(s)
	}
	if got := ids(natstest.AuditRecords(t, js)); got != "[0 1 2]" {
		t.Errorf("AuditRecords() = %s, want [0 1 2]", got)
	}
	if got := ids(natstest.AuditRecords(t, js, wire.AuditSubject("request"))); got != "[0 2]" {
		t.Errorf("AuditRecords(request) = %s, want [0 2]", got)
	}
	evs := natstest.Events(t, js, wire.EventSubject("lb", "down"))
	if len(evs) != 1 || evs[0].GetId() != "1" {
		t.Errorf("Events(lb down) = %v, want event 1", evs)
	}
	if n := len(natstest.Events(t, js)); n != 2 {
		t.Errorf("Events() = %d, want 2", n)
	}
	if n := len(natstest.Messages(t, js, wire.StreamAudit, wire.AuditSubject("accepted"), wire.AuditSubject("request"))); n != 3 {
		t.Errorf("Messages(AUDIT, two filters) = %d, want 3", n)
	}
}
