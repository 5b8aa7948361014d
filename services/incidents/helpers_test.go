package incidents_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/incidents"
	"github.com/switchboard-ops/switchboard/services/incidents/pdtest"
	"github.com/switchboard-ops/switchboard/services/incidents/statuspage/statuspagetest"
)

const (
	waitTotal = 20 * time.Second
	waitStep  = 20 * time.Millisecond
	secretOld = "old-secret-RkYlQ2lE"
	secretNew = "new-secret-8fN2kq0Z"
)

// People of the tests, in chat and in PagerDuty.
var (
	rob    = &chatv1.Identity{Id: "console:rob", Name: "rob", Email: "Rob@example.com"}
	anon   = &chatv1.Identity{Id: "console:nobody", Name: "nobody"}
	pdRob  = pdtest.User{ID: "PROB001", Name: "Rob", Email: "rob@example.com"}
	pdAna  = pdtest.User{ID: "PANA001", Name: "Ana", Email: "ana@example.com"}
	pdBot  = pdtest.User{ID: "PBOT001", Name: "switchboard", Email: "bot@example.com"}
	svcAPI = pdtest.Service{ID: "PSVC001", Name: "carbonpickle"}
	svcEvt = pdtest.Service{ID: "PSVC002", Name: "graphite", RoutingKey: "R0UT1NGKEY000000000000000000000"}
)

type env struct {
	t    testing.TB
	nc   *nats.Conn
	js   jetstream.JetStream
	pd   *pdtest.Server
	sp   *statuspagetest.Server
	svc  *incidents.Service
	base string // http://127.0.0.1:port
	cfg  incidents.Config
}

func testLog() *slog.Logger {
	if os.Getenv("SB_TEST_LOG") == "debug" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newEnv starts NATS, a fake PagerDuty and Statuspage, and the service
// wired to them; change adjusts the configuration first. With inProcess,
// the service connects to NATS in-process, as in the all-in-one binary.
func newEnv(t testing.TB, change func(*incidents.Config), inProcess ...bool) *env {
	t.Helper()
	s := natstest.RunServer(t)
	var opts []nats.Option
	if len(inProcess) > 0 && inProcess[0] {
		opts = append(opts, nats.InProcessServer(s))
	}
	nc := natstest.Connect(t, s, opts...)
	js := natstest.JetStream(t, nc)
	if err := bus.EnsureStreams(natstest.Context(t, 10*time.Second), js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	fake := pdtest.NewServer(t)
	for _, u := range []pdtest.User{pdRob, pdAna, pdBot} {
		fake.AddUser(u)
	}
	fake.AddService(svcAPI)
	fake.AddService(svcEvt)
	sp := statuspagetest.NewServer(t)
	sp.AddComponent("cmpapi", "API")
	sp.AddComponent("cmpgraphs", "Graphs")

	cfg := incidents.DefaultConfig()
	cfg.CommandTimeout = 10 * time.Second
	cfg.PagerDuty.APIURL = fake.URL
	cfg.PagerDuty.EventsURL = fake.URL
	cfg.PagerDuty.Token = fake.Token
	cfg.PagerDuty.From = pdBot.Email
	cfg.PagerDuty.WebhookSecrets = []string{secretOld, secretNew}
	cfg.PagerDuty.Services = map[string]incidents.PagerService{
		"carbonpickle": {ID: svcAPI.ID},
		"graphite":     {ID: svcEvt.ID, RoutingKey: svcEvt.RoutingKey},
	}
	cfg.PagerDuty.Schedules = map[string]string{"ops": "PSCHED1"}
	cfg.StatusPage.APIURL = sp.URL
	cfg.StatusPage.PageID = sp.Page
	cfg.StatusPage.APIKey = sp.Key
	cfg.StatusPage.Components = map[string]string{"api": "cmpapi"}
	cfg.Hooks.Sources = map[string]incidents.HookSource{
		"github":   {Auth: "github", Token: "gh-hook-secret", Template: "github_actions", EventSource: "ci"},
		"circleci": {Auth: "bearer", Token: "circle-token-123", Template: "circleci", EventSource: "ci"},
	}
	if change != nil {
		change(&cfg)
	}
	ctx := natstest.Context(t, 10*time.Second)
	svc, err := incidents.New(ctx, cfg, incidents.Deps{NC: nc, Log: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx, l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Stop(context.Background()) })
	return &env{t: t, nc: nc, js: js, pd: fake, sp: sp, svc: svc, base: "http://" + l.Addr().String(), cfg: cfg}
}

// post sends a body to the service's HTTP API.
func (e *env) post(path string, body []byte, header map[string]string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.base+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// webhook delivers a PagerDuty webhook signed with the given secrets.
func (e *env) webhook(body []byte, secrets ...string) (int, string) {
	h := map[string]string{"X-Webhook-Id": "PWEBHOOK1", "User-Agent": "PagerDuty-Webhook/V3.0"}
	if len(secrets) > 0 {
		h["X-PagerDuty-Signature"] = pdtest.Signature(body, secrets...)
	}
	return e.post("/webhooks/pagerduty", body, h)
}

// events returns every event stored on EVENTS under the subject filter.
func (e *env) events(filter string) []*eventv1.Event {
	e.t.Helper()
	return natstest.Events(e.t, e.js, filter)
}

var cmdSeq atomic.Int64

// chatDispatchTimeout is the chat's default dispatch_timeout: the chat
// sets every request's Deadline this far out, and so does request.
const chatDispatchTimeout = 5 * time.Second

// request is the command request the chat sends when who types the
// command.
func request(who *chatv1.Identity, name string, args map[string]string, text string, dryRun bool) *commandv1.CommandRequest {
	id := fmt.Sprintf("test-%s-%d", strings.ReplaceAll(name, " ", "-"), cmdSeq.Add(1))
	raw := name
	for _, v := range args {
		raw += " " + v
	}
	if text != "" {
		raw += " -- " + text
	}
	return &commandv1.CommandRequest{
		Id: id, Command: name, Args: args, Text: text, DryRun: dryRun, Requester: who,
		Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops", Thread: id},
		Raw:          raw,
		Deadline:     timestamppb.New(time.Now().Add(chatDispatchTimeout)),
	}
}

// run sends a command as who and waits for its final post; it returns the
// final post and every post of the thread.
func (e *env) run(who *chatv1.Identity, name string, args map[string]string, text string, dryRun bool) (*chatv1.ChatPost, []*chatv1.ChatPost) {
	e.t.Helper()
	return e.send(request(who, name, args, text, dryRun))
}

// send dispatches a request as the chat does and waits for its final post.
func (e *env) send(req *commandv1.CommandRequest) (*chatv1.ChatPost, []*chatv1.ChatPost) {
	e.t.Helper()
	data, _ := wire.Marshal(req)
	name := req.GetCommand()
	resp, err := e.nc.Request(wire.CommandSubject("incidents", strings.Join(strings.Fields(name), "_")), data, 5*time.Second)
	if err != nil {
		e.t.Fatalf("request %s: %v", name, err)
	}
	var ack commandv1.CommandAck
	if err := wire.Unmarshal(resp.Data, &ack); err != nil {
		e.t.Fatal(err)
	}
	if ack.GetStatus() != commandv1.AckStatus_ACK_STATUS_ACCEPTED {
		e.t.Fatalf("%s: ack %s %s", name, ack.GetStatus(), ack.GetReason())
	}
	return natstest.WaitPost(e.t, e.js, wire.ChatPostSubject("console", "ops"), req.GetId(), waitTotal, waitStep, natstest.IsFinal)
}

// audits returns the audit records of a stage.
func (e *env) audits(stage string) []*auditv1.Record {
	e.t.Helper()
	return natstest.AuditRecords(e.t, e.js, wire.AuditSubject(stage))
}

func wantResult(t *testing.T, p *chatv1.ChatPost, contains ...string) {
	t.Helper()
	if p.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("got %s %q, want a result", p.GetKind(), p.GetText())
	}
	for _, c := range contains {
		if !strings.Contains(p.GetText(), c) {
			t.Errorf("result %q does not contain %q", p.GetText(), c)
		}
	}
}

func wantError(t *testing.T, p *chatv1.ChatPost, contains ...string) {
	t.Helper()
	if p.GetKind() != chatv1.Kind_KIND_ERROR {
		t.Fatalf("got %s %q, want an error", p.GetKind(), p.GetText())
	}
	for _, c := range contains {
		if !strings.Contains(p.GetText(), c) {
			t.Errorf("error %q does not contain %q", p.GetText(), c)
		}
	}
}
