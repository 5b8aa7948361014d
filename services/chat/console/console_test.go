package console

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// waitTotal bounds every wait for eventual state in these tests.
const (
	waitTotal = 10 * time.Second
	waitStep  = 10 * time.Millisecond
)

// fakeIngress stands in for the chat core: it records every message and,
// like the core, publishes the echo (and whatever respond adds) to CHAT.
type fakeIngress struct {
	t  testing.TB
	js jetstream.JetStream
	// respond returns the posts the "command" produces after the echo.
	respond func(msg *chatv1.ChatMessage) []*chatv1.ChatPost

	mu    sync.Mutex
	calls []*chatv1.ChatMessage
}

var _ Ingress = (*fakeIngress)(nil)

// Handle records msg, publishes its echo and responses, and accepts it.
func (f *fakeIngress) Handle(ctx context.Context, msg *chatv1.ChatMessage) *chatv1.ChatReply {
	f.mu.Lock()
	f.calls = append(f.calls, proto.CloneOf(msg))
	f.mu.Unlock()
	conv := msg.GetConversation()
	posts := []*chatv1.ChatPost{{
		Id:           msg.GetId(),
		Conversation: conv,
		Kind:         chatv1.Kind_KIND_MESSAGE,
		Text:         msg.GetText(),
		Author:       msg.GetAuthor(),
		CreatedAt:    timestamppb.Now(),
	}}
	if f.respond != nil {
		posts = append(posts, f.respond(msg)...)
	}
	for _, p := range posts {
		publishPost(ctx, f.t, f.js, p)
	}
	thread := conv.GetThread()
	if thread == "" {
		thread = msg.GetId()
	}
	return &chatv1.ChatReply{
		Status:       chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED,
		CommandId:    "console/" + msg.GetId(),
		JobId:        wire.JobID("console/" + msg.GetId()),
		Conversation: &chatv1.Conversation{Adapter: Adapter, Channel: conv.GetChannel(), Thread: thread},
	}
}

// recorded returns the messages Handle saw.
func (f *fakeIngress) recorded() []*chatv1.ChatMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// publishPost puts p on CHAT under its conversation's subject and returns
// its stream sequence. It reports failures with Errorf, so it is safe to
// call from the goroutine of an HTTP handler.
func publishPost(ctx context.Context, t testing.TB, js jetstream.JetStream, p *chatv1.ChatPost) uint64 {
	t.Helper()
	b, err := wire.Marshal(p)
	if err != nil {
		t.Errorf("marshal post %s: %v", p.GetId(), err)
		return 0
	}
	subject := wire.ChatPostSubject(p.GetConversation().GetAdapter(), p.GetConversation().GetChannel())
	var opts []jetstream.PublishOpt
	if p.GetId() != "" {
		opts = append(opts, jetstream.WithMsgID(p.GetId()))
	}
	ack, err := js.Publish(ctx, subject, b, opts...)
	if err != nil {
		t.Errorf("publish post %s to %s: %v", p.GetId(), subject, err)
		return 0
	}
	return ack.Sequence
}

// post returns a notice post to channel with id.
func post(channel, id string) *chatv1.ChatPost {
	return &chatv1.ChatPost{
		Id:           id,
		Conversation: &chatv1.Conversation{Adapter: Adapter, Channel: channel},
		Kind:         chatv1.Kind_KIND_NOTICE,
		Text:         "post " + id,
		CreatedAt:    timestamppb.Now(),
	}
}

// env is a console on a real JetStream server behind httptest.
type env struct {
	js      jetstream.JetStream
	in      *fakeIngress
	console *Console
	url     string // of the console, without a trailing slash
}

// newEnv starts NATS, declares the streams and serves a console with cfg.
func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	return newEnvOn(t, startJetStream(t), cfg)
}

// newEnvOn serves another console on the same JetStream.
func newEnvOn(t *testing.T, js jetstream.JetStream, cfg Config) *env {
	t.Helper()
	in := &fakeIngress{t: t, js: js}
	c, err := New(cfg, in, js, testLogger(t))
	if err != nil {
		t.Fatalf("new console: %v", err)
	}
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	return &env{js: js, in: in, console: c, url: srv.URL}
}

// serveConsole runs a console on a loopback listener until the test ends
// and returns its URL.
func serveConsole(t *testing.T, c *Console) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + l.Addr().String()
}

// startJetStream runs NATS with the switchboard streams.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, s))
	if err := bus.EnsureStreams(natstest.Context(t, waitTotal), js, bus.StreamOptions{}); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
	return js
}

// postMessage sends body to POST /api/messages with headers.
func (e *env) postMessage(t *testing.T, body any, headers map[string]string) (int, []byte) {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatalf("marshal request: %v", err)
		}
	}
	req, err := http.NewRequestWithContext(natstest.Context(t, waitTotal), http.MethodPost, e.url+"/api/messages", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

// get fetches path.
func (e *env) get(t *testing.T, path string, headers map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(natstest.Context(t, waitTotal), http.MethodGet, e.url+path, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", req.URL.Path, err)
	}
	return resp.StatusCode, b
}

// sseEvent is one Server-Sent Event, or a comment when Comment is set.
type sseEvent struct {
	ID, Event, Data, Comment string
}

// sseStream reads an event stream in the background.
type sseStream struct {
	t      *testing.T
	mu     sync.Mutex
	events []sseEvent
	err    error
	status int
}

// openStream connects to /api/stream with query and headers; the
// connection closes when the test ends.
func (e *env) openStream(t *testing.T, query string, headers map[string]string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/api/stream?"+query, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	s := &sseStream{t: t, status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("open stream ?%s: status %d: %s", query, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("stream Content-Type = %q, want text/event-stream", ct)
	}
	go s.read(resp.Body)
	t.Cleanup(func() { resp.Body.Close() })
	return s
}

// read parses the stream as the EventSource spec says, roughly.
func (s *sseStream) read(body io.Reader) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var ev sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if len(data) > 0 || ev.Event != "" {
				ev.Data = strings.Join(data, "\n")
				s.add(ev)
			}
			ev, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
			s.add(sseEvent{Comment: strings.TrimSpace(line[1:])})
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				ev.ID = value
			case "event":
				ev.Event = value
			case "data":
				data = append(data, value)
			}
		}
	}
	s.mu.Lock()
	s.err = sc.Err()
	s.mu.Unlock()
}

func (s *sseStream) add(ev sseEvent) {
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
}

func (s *sseStream) snapshot() []sseEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// posts returns the ids of the posts received so far, each as
// "<sequence>:<post id>", and whether "synced" came before post number i
// (as the index of the synced event among posts, -1 if none yet).
func (s *sseStream) posts() (got []string, syncedAt int) {
	syncedAt = -1
	for _, ev := range s.snapshot() {
		switch {
		case ev.Event == "synced":
			if syncedAt < 0 {
				syncedAt = len(got)
			}
		case ev.Comment != "" || ev.Event != "":
		default:
			var p chatv1.ChatPost
			if err := wire.Unmarshal([]byte(ev.Data), &p); err != nil {
				s.t.Errorf("event %s: undecodable post %q: %v", ev.ID, ev.Data, err)
				continue
			}
			got = append(got, ev.ID+":"+p.GetId())
		}
	}
	return got, syncedAt
}

// waitPosts waits until the stream has delivered want (and synced), then
// checks that nothing else came.
func (s *sseStream) waitPosts(want []string, syncedAt int) {
	s.t.Helper()
	natstest.WaitFor(s.t, waitTotal, waitStep, func() error {
		got, synced := s.posts()
		if len(got) < len(want) || synced < 0 {
			return fmt.Errorf("have %d of %d posts (synced at %d): %v", len(got), len(want), synced, got)
		}
		return nil
	})
	got, synced := s.posts()
	if diff := cmp.Diff(want, got); diff != "" {
		s.t.Errorf("posts (-want +got):\n%s", diff)
	}
	if synced != syncedAt {
		s.t.Errorf("synced after %d posts, want after %d", synced, syncedAt)
	}
}

// seqID formats what posts() reports for a post.
func seqID(seq uint64, id string) string { return strconv.FormatUint(seq, 10) + ":" + id }

func TestPostMessageRefusesInvalidRequests(t *testing.T) {
	e := newEnv(t, Config{})
	valid := map[string]any{"channel": "ops", "thread": "", "id": "m1", "user": "ana", "text": "lb status"}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for kk, vv := range valid {
			m[kk] = vv
		}
		m[k] = v
		return m
	}
	tests := []struct {
		name        string
		body        any
		contentType string
		wantStatus  int
		wantError   string
	}{
		{"a channel with upper-case letters is refused", with("channel", "Ops"), "", 400, "channel:"},
		{"an empty channel is refused", with("channel", ""), "", 400, "channel:"},
		{"a channel starting with a dash is refused", with("channel", "-ops"), "", 400, "channel:"},
		{"a channel of 65 characters is refused", with("channel", strings.Repeat("a", 65)), "", 400, "channel:"},
		{"a missing id is refused", with("id", ""), "", 400, "id: required"},
		{"an id with a space is refused", with("id", "a b"), "", 400, "id:"},
		{"a thread id with a space is refused", with("thread", "a b"), "", 400, "thread:"},
		{"a thread id of 257 characters is refused", with("thread", strings.Repeat("t", 257)), "", 400, "thread:"},
		{"an empty user is refused", with("user", "  "), "", 400, "user: required"},
		{"a user with a newline is refused", with("user", "ana\nroot"), "", 400, "control characters"},
		{"a user of 65 bytes is refused", with("user", strings.Repeat("é", 32)+"x"), "", 400, "at most 64"},
		{"empty text is refused", with("text", " \n"), "", 400, "text: required"},
		{"text over 4000 bytes is refused", with("text", strings.Repeat("x", 4001)), "", 400, "at most 4000"},
		{"a body that is not JSON is refused", "{channel:", "", 400, "invalid JSON"},
		{"a form post is refused, so other sites cannot post without CORS", "channel=ops", "application/x-www-form-urlencoded", 415, "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := map[string]string{}
			if tt.contentType != "" {
				headers["Content-Type"] = tt.contentType
			}
			status, body := e.postMessage(t, tt.body, headers)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", status, tt.wantStatus, body)
			}
			var got errorBody
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("error body %q is not JSON: %v", body, err)
			}
			if !strings.Contains(got.Error, tt.wantError) {
				t.Errorf("error = %q, want it to mention %q", got.Error, tt.wantError)
			}
		})
	}
	if calls := e.in.recorded(); len(calls) != 0 {
		t.Errorf("ingress saw %d messages from invalid requests, want none", len(calls))
	}
}

func TestPostMessageAcceptsTheLongestValidValues(t *testing.T) {
	e := newEnv(t, Config{})
	status, body := e.postMessage(t, map[string]any{
		"channel": strings.Repeat("a", 64), "id": strings.Repeat("i", 128),
		"user": strings.Repeat("u", 64), "text": strings.Repeat("t", 4000),
	}, nil)
	if status != http.StatusOK {
		t.Fatalf("status = %d, want 200: %s", status, body)
	}
}

func TestPostMessageReachesIngressWithConversationAndIdentity(t *testing.T) {
	e := newEnv(t, Config{})
	status, body := e.postMessage(t, map[string]any{
		"channel": "ops", "thread": "pagerduty/P1X2", "id": "6f1c2a7e-0000-4000-8000-000000000001",
		"user": "Ana Lima", "text": "lb drain web3 www",
	}, nil)
	if status != http.StatusOK {
		t.Fatalf("status = %d, want 200: %s", status, body)
	}
	want := &chatv1.ChatMessage{
		Id:           "6f1c2a7e-0000-4000-8000-000000000001",
		Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops", Thread: "pagerduty/P1X2"},
		Author:       &chatv1.Identity{Id: "console:Ana Lima", Name: "Ana Lima"},
		Text:         "lb drain web3 www",
	}
	calls := e.in.recorded()
	if len(calls) != 1 {
		t.Fatalf("ingress saw %d messages, want 1", len(calls))
	}
	if diff := cmp.Diff(want, calls[0], protocmp.Transform()); diff != "" {
		t.Errorf("message to ingress (-want +got):\n%s", diff)
	}
	var reply chatv1.ChatReply
	if err := wire.Unmarshal(body, &reply); err != nil {
		t.Fatalf("reply %s is not a ChatReply: %v", body, err)
	}
	wantReply := &chatv1.ChatReply{
		Status:       chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED,
		CommandId:    "console/" + want.Id,
		JobId:        wire.JobID("console/" + want.Id),
		Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops", Thread: "pagerduty/P1X2"},
	}
	if diff := cmp.Diff(wantReply, &reply, protocmp.Transform()); diff != "" {
		t.Errorf("reply (-want +got):\n%s", diff)
	}
}

func TestPostMessageAnswersBadGatewayWhenTheCoreGivesNoReply(t *testing.T) {
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, s))
	c, err := New(Config{}, ingressFunc(func(context.Context, *chatv1.ChatMessage) *chatv1.ChatReply { return nil }), js, nil)
	if err != nil {
		t.Fatalf("new console: %v", err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/api/messages", strings.NewReader(`{"channel":"ops","id":"m1","user":"ana","text":"help"}`))
	req.Host = "127.0.0.1:8080"
	req.Header.Set("Content-Type", "application/json")
	c.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusBadGateway {
		t.Errorf("status = %d, want 502: %s", rec.Code, rec.Body)
	}
}

// ingressFunc adapts a function to Ingress.
type ingressFunc func(context.Context, *chatv1.ChatMessage) *chatv1.ChatReply

func (f ingressFunc) Handle(ctx context.Context, m *chatv1.ChatMessage) *chatv1.ChatReply {
	return f(ctx, m)
}

func TestTrustedUserHeaderOverridesTheUserTheBrowserSends(t *testing.T) {
	e := newEnv(t, Config{TrustedUserHeader: "X-Forwarded-User"})
	msg := map[string]any{"channel": "ops", "id": "m1", "user": "mallory", "text": "pager ack"}

	status, body := e.postMessage(t, msg, nil)
	if status != http.StatusUnauthorized {
		t.Errorf("without the header: status = %d, want 401: %s", status, body)
	}
	if status, _ := e.get(t, "/api/channels", nil); status != http.StatusUnauthorized {
		t.Errorf("reading channels without the header: status = %d, want 401", status)
	}

	status, body = e.postMessage(t, msg, map[string]string{"X-Forwarded-User": "ana@example.com"})
	if status != http.StatusOK {
		t.Fatalf("with the header: status = %d, want 200: %s", status, body)
	}
	calls := e.in.recorded()
	if len(calls) != 1 {
		t.Fatalf("ingress saw %d messages, want 1", len(calls))
	}
	want := &chatv1.Identity{Id: "console:ana@example.com", Name: "ana@example.com", Email: "ana@example.com"}
	if diff := cmp.Diff(want, calls[0].GetAuthor(), protocmp.Transform()); diff != "" {
		t.Errorf("author (-want +got):\n%s", diff)
	}

	status, body = e.get(t, "/api/me", map[string]string{"X-Forwarded-User": "ana@example.com"})
	var me meResponse
	if err := json.Unmarshal(body, &me); err != nil || status != http.StatusOK {
		t.Fatalf("/api/me: status %d, body %s, err %v", status, body, err)
	}
	if diff := cmp.Diff(meResponse{User: "ana@example.com", Trusted: true, History: 200}, me); diff != "" {
		t.Errorf("/api/me (-want +got):\n%s", diff)
	}
}

func TestMeWithoutAProxyLeavesTheNameToTheBrowser(t *testing.T) {
	e := newEnv(t, Config{History: 50})
	status, body := e.get(t, "/api/me", nil)
	var me meResponse
	if err := json.Unmarshal(body, &me); err != nil || status != http.StatusOK {
		t.Fatalf("/api/me: status %d, body %s, err %v", status, body, err)
	}
	if diff := cmp.Diff(meResponse{History: 50}, me); diff != "" {
		t.Errorf("/api/me (-want +got):\n%s", diff)
	}
}

func TestStreamReplaysHistoryInOrderThenLivePosts(t *testing.T) {
	e := newEnv(t, Config{History: 3})
	ctx := natstest.Context(t, waitTotal)
	var seqs []uint64
	for i := 1; i <= 5; i++ {
		seqs = append(seqs, publishPost(ctx, t, e.js, post("ops", fmt.Sprintf("h%d", i))))
	}

	s := e.openStream(t, "channel=ops", nil)
	s.waitPosts([]string{seqID(seqs[2], "h3"), seqID(seqs[3], "h4"), seqID(seqs[4], "h5")}, 3)

	live1 := publishPost(ctx, t, e.js, post("ops", "l1"))
	live2 := publishPost(ctx, t, e.js, post("ops", "l2"))
	s.waitPosts([]string{
		seqID(seqs[2], "h3"), seqID(seqs[3], "h4"), seqID(seqs[4], "h5"),
		seqID(live1, "l1"), seqID(live2, "l2"),
	}, 3)
}

func TestStreamOfAnEmptyChannelIsSyncedAtOnceAndThenLive(t *testing.T) {
	e := newEnv(t, Config{})
	s := e.openStream(t, "channel=quiet", nil)
	s.waitPosts(nil, 0)
	seq := publishPost(natstest.Context(t, waitTotal), t, e.js, post("quiet", "first"))
	s.waitPosts([]string{seqID(seq, "first")}, 0)
}

func TestStreamDoesNotDeliverPostsOfOtherChannels(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := natstest.Context(t, waitTotal)
	a := publishPost(ctx, t, e.js, post("ops", "ops-1"))
	publishPost(ctx, t, e.js, post("general", "general-1"))
	publishPost(ctx, t, e.js, post("ops-2", "similar-name-1")) // not a prefix match either
	other := post("ops", "slack-ops-1")
	other.Conversation.Adapter = "slack"
	publishPost(ctx, t, e.js, other)

	s := e.openStream(t, "channel=ops", nil)
	s.waitPosts([]string{seqID(a, "ops-1")}, 1)

	publishPost(ctx, t, e.js, post("general", "general-2"))
	b := publishPost(ctx, t, e.js, post("ops", "ops-2"))
	s.waitPosts([]string{seqID(a, "ops-1"), seqID(b, "ops-2")}, 1)
}

func TestStreamResumesExactlyAfterLastEventID(t *testing.T) {
	e := newEnv(t, Config{History: 2})
	ctx := natstest.Context(t, waitTotal)
	var seqs []uint64
	for i := 1; i <= 6; i++ {
		// Posts of another channel in between, so sequences have gaps.
		publishPost(ctx, t, e.js, post("general", fmt.Sprintf("g%d", i)))
		seqs = append(seqs, publishPost(ctx, t, e.js, post("ops", fmt.Sprintf("p%d", i))))
	}
	want := []string{seqID(seqs[3], "p4"), seqID(seqs[4], "p5"), seqID(seqs[5], "p6")}

	t.Run("with the Last-Event-ID header EventSource sends", func(t *testing.T) {
		s := e.openStream(t, "channel=ops", map[string]string{"Last-Event-ID": strconv.FormatUint(seqs[2], 10)})
		s.waitPosts(want, 3)
	})
	t.Run("with the after parameter the page sends itself", func(t *testing.T) {
		s := e.openStream(t, "channel=ops&after="+strconv.FormatUint(seqs[2], 10), nil)
		s.waitPosts(want, 3)
	})
	t.Run("with a sequence between two posts of the channel", func(t *testing.T) {
		s := e.openStream(t, "channel=ops", map[string]string{"Last-Event-ID": strconv.FormatUint(seqs[2]+1, 10)})
		s.waitPosts(want, 3)
	})
	t.Run("from the newest post, only live posts follow", func(t *testing.T) {
		s := e.openStream(t, "channel=ops", map[string]string{"Last-Event-ID": strconv.FormatUint(seqs[5], 10)})
		s.waitPosts(nil, 0)
		live := publishPost(ctx, t, e.js, post("ops", fmt.Sprintf("live-%s", t.Name())))
		s.waitPosts([]string{seqID(live, fmt.Sprintf("live-%s", t.Name()))}, 0)
	})
}

func TestStreamReplaysExactlyTheLastHistoryPostsOfBusyStreams(t *testing.T) {
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, s))
	ctx := natstest.Context(t, 30*time.Second)
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
	// Channel "c<n>" gets n posts, each followed by noise on another
	// channel, so the channel's posts are spread over the stream.
	counts := []int{1, 5, 10, 11, 20, 21, 97, 400}
	seqs := map[string][]uint64{}
	for i := 0; i < slices.Max(counts); i++ {
		for _, n := range counts {
			if i < n {
				ch := fmt.Sprintf("c%d", n)
				seqs[ch] = append(seqs[ch], publishPost(ctx, t, js, post(ch, fmt.Sprintf("%s-%d", ch, i))))
			}
		}
		publishPost(ctx, t, js, post("noise", fmt.Sprintf("noise-%d", i)))
	}
	tests := []struct {
		name    string
		posts   int
		history int
	}{
		{"a channel with fewer posts than History replays them all", 5, 10},
		{"a channel with exactly History posts replays them all", 10, 10},
		{"a channel with one post more than History drops the oldest", 11, 10},
		{"a channel with up to twice History posts reads and drops the extra", 20, 10},
		{"a channel just over twice History is searched", 21, 10},
		{"a channel of many posts is searched for the last 10", 400, 10},
		{"a channel of many posts is searched for the last one", 400, 1},
		{"a channel of many posts is searched for the last 97", 400, 97},
		{"History larger than the channel replays everything", 97, 200},
		{"a channel of one post with History one replays it", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := fmt.Sprintf("c%d", tt.posts)
			e := newEnvOn(t, js, Config{History: tt.history})
			all := seqs[ch]
			var want []string
			for i := max(0, len(all)-tt.history); i < len(all); i++ {
				want = append(want, seqID(all[i], fmt.Sprintf("%s-%d", ch, i)))
			}
			st := e.openStream(t, "channel="+ch, nil)
			st.waitPosts(want, len(want))
		})
	}
}

func TestStreamSendsHeartbeatsWhenQuiet(t *testing.T) {
	e := newEnv(t, Config{})
	e.console.heartbeat = 20 * time.Millisecond
	s := e.openStream(t, "channel=ops", nil)
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		for _, ev := range s.snapshot() {
			if ev.Comment == "heartbeat" {
				return nil
			}
		}
		return errors.New("no heartbeat comment yet")
	})
}

func TestStreamRefusesBadRequests(t *testing.T) {
	e := newEnv(t, Config{})
	tests := []struct {
		name    string
		query   string
		headers map[string]string
	}{
		{"a missing channel is refused", "", nil},
		{"a channel with a dot is refused, it would widen the subject", "channel=ops.x", nil},
		{"a wildcard channel is refused", "channel=%3E", nil},
		{"a Last-Event-ID that is not a sequence is refused", "channel=ops", map[string]string{"Last-Event-ID": "abc"}},
		{"an after that is negative is refused", "channel=ops&after=-1", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := e.get(t, "/api/stream?"+tt.query, tt.headers)
			if status != http.StatusBadRequest {
				t.Errorf("status = %d, want 400: %s", status, body)
			}
		})
	}
}

func TestPostedMessageComesBackOnTheStream(t *testing.T) {
	e := newEnv(t, Config{})
	s := e.openStream(t, "channel=ops", nil)
	s.waitPosts(nil, 0)
	status, body := e.postMessage(t, map[string]any{"channel": "ops", "id": "echo-1", "user": "ana", "text": "help"}, nil)
	if status != http.StatusOK {
		t.Fatalf("status = %d: %s", status, body)
	}
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		got, _ := s.posts()
		if len(got) != 1 || !strings.HasSuffix(got[0], ":echo-1") {
			return fmt.Errorf("posts %v, want the echo of echo-1", got)
		}
		return nil
	})
}

func TestChannelsListsConfiguredThenActiveChannels(t *testing.T) {
	e := newEnv(t, Config{Channels: []string{"ops", "general"}})
	ctx := natstest.Context(t, waitTotal)
	publishPost(ctx, t, e.js, post("zeta", "z1"))
	publishPost(ctx, t, e.js, post("incident-7", "i1"))
	publishPost(ctx, t, e.js, post("ops", "o1"))
	slack := post("C024BE91L", "s1")
	slack.Conversation.Adapter = "slack"
	publishPost(ctx, t, e.js, slack)

	status, body := e.get(t, "/api/channels", nil)
	if status != http.StatusOK {
		t.Fatalf("status = %d: %s", status, body)
	}
	var got channelsResponse
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	want := channelsResponse{Channels: []string{"ops", "general", "incident-7", "zeta"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("channels (-want +got):\n%s", diff)
	}
}

func TestHealthzReportsTheNATSConnection(t *testing.T) {
	e := newEnv(t, Config{})
	if status, body := e.get(t, "/healthz", nil); status != http.StatusOK {
		t.Errorf("healthz = %d, want 200: %s", status, body)
	}
	e.js.Conn().Close()
	if status, body := e.get(t, "/healthz", nil); status != http.StatusServiceUnavailable {
		t.Errorf("healthz after close = %d, want 503: %s", status, body)
	}
}

func TestPageAndAssetsAreServed(t *testing.T) {
	e := newEnv(t, Config{})
	tests := []struct {
		name, path, wantType, wantBody string
	}{
		{"the page is served at the root", "/", "text/html", `<script src="/static/console.js"`},
		{"the script is served", "/static/console.js", "text/javascript", "EventSource"},
		{"the style sheet is served", "/static/console.css", "text/css", "prefers-color-scheme: dark"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Get(e.url + tt.path)
			if err != nil {
				t.Fatalf("get %s: %v", tt.path, err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tt.wantType) {
				t.Errorf("Content-Type = %q, want %s", ct, tt.wantType)
			}
			if !strings.Contains(string(b), tt.wantBody) {
				t.Errorf("body does not contain %q", tt.wantBody)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
				t.Errorf("Content-Security-Policy = %q, want scripts from self only", csp)
			}
		})
	}
	if status, _ := e.get(t, "/nope", nil); status != http.StatusNotFound {
		t.Errorf("unknown path: status = %d, want 404", status)
	}
}

func TestRequestsFromOtherSitesAndNamesAreRefused(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		host       string
		headers    map[string]string
		wantStatus int
	}{
		{"a cross-site POST is refused", Config{}, "", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"a same-origin POST is accepted", Config{}, "", map[string]string{"Sec-Fetch-Site": "same-origin"}, 200},
		{"a DNS-rebound host name is refused on loopback", Config{}, "evil.example:8080", nil, 421},
		{"localhost is accepted on loopback", Config{}, "localhost:8080", nil, 200},
		{"an allowed host is accepted on loopback", Config{AllowedHosts: []string{"console.internal"}}, "console.internal", nil, 200},
		{"any host is accepted behind an authenticating proxy", Config{TrustedUserHeader: "X-User"}, "console.example.com", map[string]string{"X-User": "ana"}, 200},
		{"any host is accepted off loopback", Config{Addr: "0.0.0.0:8080"}, "console.example.com", nil, 200},
	}
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, s))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg, ingressFunc(func(context.Context, *chatv1.ChatMessage) *chatv1.ChatReply {
				return &chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_IGNORED}
			}), js, nil)
			if err != nil {
				t.Fatalf("new console: %v", err)
			}
			req := httptest.NewRequest(http.MethodPost, "/api/messages", strings.NewReader(`{"channel":"ops","id":"m1","user":"ana","text":"hi"}`))
			req.Header.Set("Content-Type", "application/json")
			if tt.host != "" {
				req.Host = tt.host
			} else {
				req.Host = "127.0.0.1:8080"
			}
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			c.Handler().ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
		})
	}
}

func TestServeStopsWithItsContextEvenWithOpenStreams(t *testing.T) {
	js := startJetStream(t)
	c, err := New(Config{}, &fakeIngress{t: t, js: js}, js, nil)
	if err != nil {
		t.Fatalf("new console: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, l) }()

	e := &env{url: "http://" + l.Addr().String()}
	status, _ := e.get(t, "/healthz", nil)
	if status != http.StatusOK {
		t.Fatalf("healthz = %d, want 200", status)
	}
	st := e.openStream(t, "channel=ops", nil)
	st.waitPosts(nil, 0)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v, want nil after its context ended", err)
		}
	case <-time.After(shutdownTimeout):
		t.Fatalf("Serve still running %v after its context ended", shutdownTimeout)
	}
}

func TestStreamOutlivesTheServerReadAndWriteTimeouts(t *testing.T) {
	js := startJetStream(t)
	c, err := New(Config{}, &fakeIngress{t: t, js: js}, js, testLogger(t))
	if err != nil {
		t.Fatalf("new console: %v", err)
	}
	c.readTimeout, c.writeTimeout, c.heartbeat = 100*time.Millisecond, 100*time.Millisecond, 20*time.Millisecond
	e := &env{url: serveConsole(t, c)}
	s := e.openStream(t, "channel=ops", nil)
	// Heartbeats for several times the timeouts show the stream is alive.
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		n := 0
		for _, ev := range s.snapshot() {
			if ev.Comment == "heartbeat" {
				n++
			}
		}
		if n < 25 {
			return fmt.Errorf("%d heartbeats so far", n)
		}
		return nil
	})
	seq := publishPost(natstest.Context(t, waitTotal), t, js, post("ops", "late"))
	s.waitPosts([]string{seqID(seq, "late")}, 0)
}

func TestConfigValidateNamesTheWrongKey(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"the zero config takes the defaults", Config{}, ""},
		{"the default config is valid", DefaultConfig(), ""},
		{"an address without a port is refused", Config{Addr: "localhost"}, "console.addr"},
		{"a channel with a capital is refused", Config{Channels: []string{"ops", "Oncall"}}, "console.channels[1]"},
		{"a channel listed twice is refused", Config{Channels: []string{"ops", "ops"}}, "console.channels[1]"},
		{"a negative history is refused", Config{History: -1}, "console.history"},
		{"a huge history is refused", Config{History: MaxHistory + 1}, "console.history"},
		{"a header name with a space is refused", Config{TrustedUserHeader: "X User"}, "console.trusted_user_header"},
		{"an empty allowed host is refused", Config{AllowedHosts: []string{""}}, "console.allowed_hosts[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestDefaultConfigServesOpsAndGeneralOnLoopback(t *testing.T) {
	want := Config{Addr: "127.0.0.1:8080", Channels: []string{"ops", "general"}, History: 200}
	if diff := cmp.Diff(want, DefaultConfig()); diff != "" {
		t.Errorf("DefaultConfig() (-want +got):\n%s", diff)
	}
}

// testLogger logs through t when SB_TEST_LOG=debug, and discards otherwise,
// as natstest does for the NATS server.
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("SB_TEST_LOG") != "debug" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
