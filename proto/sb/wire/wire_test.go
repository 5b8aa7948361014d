package wire_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// update rewrites testdata/*.json from the messages below:
//
//	go test ./sb/wire -run TestGoldenFilesDecodeToTheExpectedMessage -update
var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// kvKey is the character set JetStream accepts in a KV key
// (nats.go jetstream/kv.go validKeyRe).
var kvKey = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)

// subjectToken is what one token of a subject may be: non-empty, and neither
// a separator, a wildcard nor white space. Token promises the stricter
// [A-Za-z0-9_-] so the result is also safe in a KV key and a stream name.
var subjectToken = regexp.MustCompile(`^[-_a-zA-Z0-9]+$`)

var hashed = regexp.MustCompile(`^x[0-9a-f]{16}$`)

// diff shows two messages in a form a person can compare.
func diff(got, want proto.Message) string {
	o := prototext.MarshalOptions{Multiline: true}
	return fmt.Sprintf("got:\n%s\nwant:\n%s", o.Format(got), o.Format(want))
}

func checkToken(t *testing.T, in, tok string) {
	t.Helper()
	if !subjectToken.MatchString(tok) {
		t.Errorf("Token(%q) = %q, not a safe subject token", in, tok)
	}
	if !kvKey.MatchString(tok) {
		t.Errorf("Token(%q) = %q, not a valid KV key", in, tok)
	}
	if len(tok) > 64 {
		t.Errorf("Token(%q) = %q, longer than 64 characters", in, tok)
	}
}

func TestToken(t *testing.T) {
	t.Parallel()
	safe64 := strings.Repeat("a", 64)
	tests := []struct {
		name string
		in   string
		kept bool
	}{
		{"a lower-case word is kept", "ops", true},
		{"a Slack channel id is kept", "C024BE91L", true},
		{"dashes and underscores are kept", "web-ops_2", true},
		{"64 safe characters are kept", safe64, true},
		{"an already hashed token is kept", "x0123456789abcdef", true},
		{"an empty string is hashed", "", false},
		{"a dot is hashed", "build.failed", false},
		{"a space is hashed", "my channel", false},
		{"a tab is hashed", "a\tb", false},
		{"a newline is hashed", "a\nb", false},
		{"a star wildcard is hashed", "*", false},
		{"a full wildcard is hashed", ">", false},
		{"a wildcard inside a word is hashed", "a>b", false},
		{"a slash is hashed", "T1/C2", false},
		{"a dollar is hashed", "$SYS", false},
		{"65 safe characters are hashed", safe64 + "a", false},
		{"accented letters are hashed", "café", false},
		{"non-Latin letters are hashed", "運用", false},
		{"an emoji is hashed", "🚀", false},
		{"invalid UTF-8 is hashed", "\xff\xfe", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := wire.Token(tt.in)
			checkToken(t, tt.in, got)
			if tt.kept && got != tt.in {
				t.Errorf("Token(%q) = %q, want it kept", tt.in, got)
			}
			if !tt.kept && !hashed.MatchString(got) {
				t.Errorf("Token(%q) = %q, want x and 16 hex digits", tt.in, got)
			}
			if again := wire.Token(tt.in); again != got {
				t.Errorf("Token(%q) is not deterministic: %q then %q", tt.in, got, again)
			}
			if again := wire.Token(got); again != got {
				t.Errorf("Token(Token(%q)) = %q, want %q unchanged", tt.in, again, got)
			}
		})
	}
}

func TestTokenKeepsDifferentUnsafeStringsApart(t *testing.T) {
	t.Parallel()
	ins := []string{"", " ", "a.b", "a b", "a*b", "a>b", "ops.eu", "ops eu", "café", "cafe\u0301", strings.Repeat("a", 65), strings.Repeat("a", 66)}
	seen := map[string]string{}
	for _, in := range ins {
		tok := wire.Token(in)
		if prev, ok := seen[tok]; ok {
			t.Errorf("Token(%q) = Token(%q) = %q", in, prev, tok)
		}
		seen[tok] = in
	}
}

// FuzzToken checks the promises of Token for any input: the seeds run with
// every `go test`; `go test -fuzz FuzzToken ./sb/wire` explores further.
func FuzzToken(f *testing.F) {
	for _, s := range []string{"", "ops", "a.b", "*", ">", " ", "é", "x0123456789abcdef", strings.Repeat("z", 64), strings.Repeat("z", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := wire.Token(s)
		checkToken(t, s, tok)
		if tok != s && !hashed.MatchString(tok) {
			t.Errorf("Token(%q) = %q: neither kept nor hashed", s, tok)
		}
		if tok == s && (s == "" || len(s) > 64 || !subjectToken.MatchString(s)) {
			t.Errorf("Token(%q) kept an unsafe string", s)
		}
		if wire.Token(s) != tok {
			t.Errorf("Token(%q) is not deterministic", s)
		}
	})
}

func TestJobID(t *testing.T) {
	t.Parallel()
	twelveHex := regexp.MustCompile(`^[0-9a-f]{12}$`)
	ids := []string{
		"T1/C2/1700000000.123456",
		"T1/C2/1700000000.123457",
		"console:ana:01HZX3",
		"cli:root:1",
		"",
		"with spaces and * > . and ünïcode",
	}
	seen := map[string]string{}
	for _, id := range ids {
		j := wire.JobID(id)
		if !twelveHex.MatchString(j) {
			t.Errorf("JobID(%q) = %q, want 12 hex digits", id, j)
		}
		if !kvKey.MatchString("job." + j) {
			t.Errorf("JobID(%q) = %q does not make a valid KV key", id, j)
		}
		if again := wire.JobID(id); again != j {
			t.Errorf("JobID(%q) is not deterministic: %q then %q", id, j, again)
		}
		if prev, ok := seen[j]; ok {
			t.Errorf("JobID(%q) = JobID(%q) = %q", id, prev, j)
		}
		seen[j] = id
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		got    string
		want   string
		prefix string // the wildcard subject it must fall under
	}{
		{"a console post goes to its adapter and channel", wire.ChatPostSubject("console", "ops"), "sb.chat.post.console.ops", wire.SubjectChatPosts},
		{"a Slack post keeps the channel id", wire.ChatPostSubject("slack", "C024BE91L"), "sb.chat.post.slack.C024BE91L", wire.SubjectChatPosts},
		{"a channel with a space is hashed into one token", wire.ChatPostSubject("cli", "my channel"), "sb.chat.post.cli." + wire.Token("my channel"), wire.SubjectChatPosts},
		{"a channel with a dot does not add a token", wire.ChatPostSubject("console", "ops.eu"), "sb.chat.post.console." + wire.Token("ops.eu"), wire.SubjectChatPosts},
		{"a command is service then verb", wire.CommandSubject("lb", "drain"), "sb.cmd.lb.drain", "sb.cmd.>"},
		{"a command with a wildcard verb is hashed", wire.CommandSubject("lb", "*"), "sb.cmd.lb." + wire.Token("*"), "sb.cmd.>"},
		{"an event type's dots become subject tokens", wire.EventSubject("ci", "build.failed"), "sb.event.ci.build.failed", wire.SubjectEvents},
		{"a PagerDuty event", wire.EventSubject("pagerduty", "incident.triggered"), "sb.event.pagerduty.incident.triggered", wire.SubjectEvents},
		{"a one-word event type", wire.EventSubject("watcher", "finding"), "sb.event.watcher.finding", wire.SubjectEvents},
		{"an empty part of an event type is hashed, not left empty", wire.EventSubject("ci", "build..failed"), "sb.event.ci.build." + wire.Token("") + ".failed", wire.SubjectEvents},
		{"a space in an event type is hashed", wire.EventSubject("ci", "build failed"), "sb.event.ci." + wire.Token("build failed"), wire.SubjectEvents},
		{"an audit stage", wire.AuditSubject("request"), "sb.audit.request", wire.SubjectAudit},
		{"an audit stage with a wildcard is hashed", wire.AuditSubject(">"), "sb.audit." + wire.Token(">"), wire.SubjectAudit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.got != tt.want {
				t.Errorf("subject = %q, want %q", tt.got, tt.want)
			}
			if !strings.HasPrefix(tt.got, strings.TrimSuffix(tt.prefix, ">")) {
				t.Errorf("subject %q is not under %q", tt.got, tt.prefix)
			}
			for _, tok := range strings.Split(tt.got, ".") {
				if !subjectToken.MatchString(tok) {
					t.Errorf("subject %q has an unsafe token %q", tt.got, tok)
				}
			}
		})
	}
}

func TestTypeNameIsTheFullProtobufName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		m    proto.Message
		want string
	}{
		{&chatv1.ChatPost{}, "sb.chat.v1.ChatPost"},
		{&chatv1.ChatMessage{}, "sb.chat.v1.ChatMessage"},
		{&commandv1.CommandRequest{}, "sb.command.v1.CommandRequest"},
		{&eventv1.Event{}, "sb.event.v1.Event"},
		{&auditv1.Record{}, "sb.audit.v1.Record"},
	}
	for _, tt := range tests {
		if got := wire.TypeName(tt.m); got != tt.want {
			t.Errorf("TypeName(%T) = %q, want %q", tt.m, got, tt.want)
		}
	}
}

// The messages below fill every field (every oneof case, repeated and map
// fields, nested messages) so the round trips and golden files cover them.

func ts(s string) *timestamppb.Timestamp {
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return timestamppb.New(tm)
}

func ana() *chatv1.Identity {
	return &chatv1.Identity{
		Id:     "slack:U024BE7LH",
		Name:   "Ana",
		Email:  "ana@example.com",
		Groups: []string{"ops", "oncall"},
		Roles:  []string{"operator"},
	}
}

func thread() *chatv1.Conversation {
	return &chatv1.Conversation{Adapter: "slack", Channel: "C024BE91L", Thread: "1700000000.123456"}
}

func chatPost() *chatv1.ChatPost {
	return &chatv1.ChatPost{
		Id:           "7bfb4d06dcb7/2",
		Conversation: thread(),
		Kind:         chatv1.Kind_KIND_RESULT,
		Text:         "web3, web4 drained in www on 2 instances",
		Blocks: []*chatv1.Block{
			{Content: &chatv1.Block_Markdown{Markdown: "*drained* `web3`, `web4`"}},
			{Content: &chatv1.Block_Code{Code: "www/web3  ready → drain\nwww/web4  ready → drain"}},
			{Content: &chatv1.Block_Fields{Fields: &chatv1.Fields{Items: []*chatv1.Field{
				{Title: "backend", Value: "www", Short: true},
				{Title: "instances", Value: "2", Short: true},
				{Title: "reason", Value: "kernel update"},
			}}}},
			{Content: &chatv1.Block_Link{Link: &chatv1.Link{Label: "trace", Url: "https://traces.example.com/t/4bf92f3577b34da6a3ce929d0e0e4736"}}},
		},
		Attachments: []*chatv1.Attachment{
			{Name: "plan.diff", ContentType: "text/plain", Data: []byte("- web3 ready\n+ web3 drain\n"), Title: "The plan"},
			{Name: "superagg.png", ContentType: "image/png", Url: "https://graphite.example.com/render?target=superagg", Title: "superagg, last hour"},
		},
		Reaction:  chatv1.Reaction_REACTION_SUCCEEDED,
		Author:    &chatv1.Identity{Id: "service:lb", Name: "lb", Automation: true},
		CommandId: "T1/C024BE91L/1700000000.123456",
		JobId:     "7bfb4d06dcb7",
		Seq:       2,
		CreatedAt: ts("2026-03-14T09:26:53.589793Z"),
		TraceId:   "4bf92f3577b34da6a3ce929d0e0e4736",
		ReplyTo:   "1700000000.123456",
	}
}

func chatMessage() *chatv1.ChatMessage {
	return &chatv1.ChatMessage{
		Id:           "cli:root:01HZX3K9",
		Conversation: &chatv1.Conversation{Adapter: "cli", Channel: "ops"},
		Author:       &chatv1.Identity{Id: "cli:root", Name: "root"},
		Text:         "lb drain web3,web4 www --wait -- kernel update",
	}
}

func chatReply() *chatv1.ChatReply {
	return &chatv1.ChatReply{
		Status:       chatv1.IngressStatus_INGRESS_STATUS_EXISTING,
		CommandId:    "cli:root:01HZX3K9",
		JobId:        "3fa9c1e2b7d4",
		Message:      "That command is already running as job 3fa9c1e2b7d4.",
		Conversation: &chatv1.Conversation{Adapter: "cli", Channel: "ops", Thread: "cli:root:01HZX3K9"},
		JobState:     "running",
	}
}

func commandRequest() *commandv1.CommandRequest {
	return &commandv1.CommandRequest{
		Id:           "T1/C024BE91L/1700000000.123456",
		Requester:    ana(),
		Source:       "slack",
		Conversation: thread(),
		Command:      "lb drain",
		Args:         map[string]string{"hosts": "web3,web4", "backend": "www"},
		Flags:        map[string]string{"wait": "true", "timeout": "10m0s"},
		Raw:          "lb drain web3,web4 www --wait --timeout 10m -- kernel update",
		DryRun:       true,
		Deadline:     ts("2026-03-14T09:36:53Z"),
		Text:         "kernel update",
		MessageId:    "1700000000.123456",
		SentAt:       ts("2026-03-14T09:26:53.001Z"),
	}
}

func job() *commandv1.Job {
	return &commandv1.Job{
		Id:              "7bfb4d06dcb7",
		CommandId:       "T1/C024BE91L/1700000000.123456",
		Service:         "lb",
		Command:         "lb drain",
		State:           commandv1.JobState_JOB_STATE_CANCELLED,
		Requester:       ana(),
		Conversation:    thread(),
		Request:         commandRequest(),
		Owner:           "lb-3f9a1c2e7b4d",
		Attempt:         2,
		CreatedAt:       ts("2026-03-14T09:26:53.1Z"),
		UpdatedAt:       ts("2026-03-14T09:27:10Z"),
		FinishedAt:      ts("2026-03-14T09:27:10Z"),
		Result:          "cancelled by Rob after web3 was drained",
		TraceId:         "4bf92f3577b34da6a3ce929d0e0e4736",
		CancelRequested: true,
		CancelledBy:     &chatv1.Identity{Id: "slack:U0ROB", Name: "Rob"},
		DryRun:          false,
		Posts:           3,
	}
}

func commandAck() *commandv1.CommandAck {
	return &commandv1.CommandAck{
		Status: commandv1.AckStatus_ACK_STATUS_EXISTING,
		JobId:  "7bfb4d06dcb7",
		Reason: "",
		Job:    job(),
	}
}

func commandSpec() *commandv1.CommandSpec {
	return &commandv1.CommandSpec{
		Name:    "lb drain",
		Aliases: []string{"drain"},
		Usage:   "lb drain <host,host,…> [backend] [--wait] [--timeout 10m] [-- reason]",
		Summary: "Drain hosts in a load-balancer backend.",
		Help:    "Puts each host into drain on every HAProxy instance; with --wait, into maint once its sessions reach zero.",
		Example: "lb drain web3,web4 www --wait -- kernel update",
		Args: []*commandv1.ArgSpec{
			{Name: "hosts", Type: commandv1.ArgType_ARG_TYPE_HOST_LIST, Required: true, Help: "Hosts to drain."},
			{Name: "backend", Type: commandv1.ArgType_ARG_TYPE_BACKEND, Help: "Backend (all by default)."},
			{Name: "mode", Type: commandv1.ArgType_ARG_TYPE_ENUM, Choices: []string{"soft", "hard"}},
			{Name: "batch", Type: commandv1.ArgType_ARG_TYPE_INT, Min: 1, Max: 9007199254740993, Variadic: true},
		},
		Flags: []*commandv1.FlagSpec{
			{Name: "wait", Type: commandv1.ArgType_ARG_TYPE_BOOL, Help: "Wait for sessions to end."},
			{Name: "timeout", Type: commandv1.ArgType_ARG_TYPE_DURATION, Default: "10m0s"},
			{Name: "parallel", Type: commandv1.ArgType_ARG_TYPE_INT, Min: -5, Max: 50, Choices: []string{"1", "5"}},
		},
		RequiredRole:   "operator",
		Confirm:        commandv1.ConfirmPolicy_CONFIRM_POLICY_ALWAYS,
		SupportsDryRun: true,
		Mutating:       true,
		Service:        "lb",
		Subject:        "sb.cmd.lb.drain",
		TextRequired:   true,
		TextName:       "reason",
		Resumable:      true,
	}
}

func event() *eventv1.Event {
	return &eventv1.Event{
		Id:            "build-48213",
		Source:        "ci",
		Type:          "build.failed",
		Severity:      eventv1.Severity_SEVERITY_ERROR,
		Title:         "carbonpickle main #48213 failed",
		Text:          "test ./aggregator/... failed: TestRollup",
		Url:           "https://ci.example.com/carbonpickle/48213",
		Fields:        map[string]string{"branch": "main", "commit": "9f3c2ab"},
		OccurredAt:    ts("2026-03-14T09:26:53Z"),
		CorrelationId: "carbonpickle/main",
		CommandId:     "T1/C024BE91L/1700000000.123456",
	}
}

func auditRecord() *auditv1.Record {
	return &auditv1.Record{
		Id:           "0f8e2a4c6b1d3e5f7a9b0c2d4e6f8a1b",
		Stage:        auditv1.Stage_STAGE_DECISION,
		Time:         ts("2026-03-14T09:26:53.2Z"),
		Identity:     ana(),
		Conversation: thread(),
		CommandId:    "T1/C024BE91L/1700000000.123456",
		JobId:        "7bfb4d06dcb7",
		Command:      "lb drain",
		Raw:          "lb drain web3,web4 www --wait -- kernel update",
		Outcome:      "denied",
		Detail:       "lb drain in production needs the operator role.",
		Service:      "chat",
		Instance:     "chat-1a2b3c4d5e6f",
		TraceId:      "4bf92f3577b34da6a3ce929d0e0e4736",
		DryRun:       true,
	}
}

// messages is every message type on the bus, by its full name (which is
// also its golden file's name and its Sb-Type header).
var messages = []func() proto.Message{
	func() proto.Message { return chatPost() },
	func() proto.Message { return chatMessage() },
	func() proto.Message { return chatReply() },
	func() proto.Message { return commandRequest() },
	func() proto.Message { return commandAck() },
	func() proto.Message { return job() },
	func() proto.Message { return commandSpec() },
	func() proto.Message { return event() },
	func() proto.Message { return auditRecord() },
}

// empty returns a new empty message of m's type.
func empty(m proto.Message) proto.Message {
	return m.ProtoReflect().New().Interface()
}

func TestMarshalThenUnmarshalGivesTheSameMessage(t *testing.T) {
	t.Parallel()
	for _, mk := range messages {
		want := mk()
		t.Run(wire.TypeName(want), func(t *testing.T) {
			t.Parallel()
			b, err := wire.Marshal(want)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got := empty(want)
			if err := wire.Unmarshal(b, got); err != nil {
				t.Fatalf("Unmarshal(%s): %v", b, err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("round trip changed the message\n%s", diff(got, want))
			}
		})
	}
}

func TestMarshalOfAnEmptyMessageRoundTrips(t *testing.T) {
	t.Parallel()
	for _, mk := range messages {
		want := empty(mk())
		b, err := wire.Marshal(want)
		if err != nil {
			t.Fatalf("Marshal(empty %s): %v", wire.TypeName(want), err)
		}
		if strings.TrimSpace(string(b)) != "{}" {
			t.Errorf("Marshal(empty %s) = %s, want {}", wire.TypeName(want), b)
		}
		got := empty(want)
		if err := wire.Unmarshal(b, got); err != nil || !proto.Equal(got, want) {
			t.Errorf("Unmarshal(%s) = %v, %v; want an empty %s", b, got, err, wire.TypeName(want))
		}
	}
}

// TestMarshalWritesJSONThatPeopleCanRead pins the parts of protojson that
// `nats sub` users and other teams' code rely on.
func TestMarshalWritesJSONThatPeopleCanRead(t *testing.T) {
	t.Parallel()
	decode := func(t *testing.T, m proto.Message) map[string]any {
		t.Helper()
		b, err := wire.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("Marshal wrote invalid JSON %s: %v", b, err)
		}
		return v
	}
	ev := decode(t, event())
	spec := decode(t, commandSpec())
	post := decode(t, chatPost())
	arg := spec["args"].([]any)[3].(map[string]any)
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"enums are written by name", ev["severity"], "SEVERITY_ERROR"},
		{"timestamps are RFC 3339 in UTC", ev["occurredAt"], "2026-03-14T09:26:53Z"},
		{"timestamps keep their fraction", post["createdAt"], "2026-03-14T09:26:53.589793Z"},
		{"field names are lowerCamelCase", ev["correlationId"], "carbonpickle/main"},
		{"maps are JSON objects", ev["fields"], map[string]any{"branch": "main", "commit": "9f3c2ab"}},
		{"int64 is a string, so JavaScript keeps every digit", arg["max"], "9007199254740993"},
		{"uint32 is a number", post["seq"], float64(2)},
		{"bytes are base64", post["attachments"].([]any)[0].(map[string]any)["data"], "LSB3ZWIzIHJlYWR5Cisgd2ViMyBkcmFpbgo="},
		{"a oneof is written under its case's name", post["blocks"].([]any)[1].(map[string]any)["code"], "www/web3  ready → drain\nwww/web4  ready → drain"},
		{"zero values are left out", decode(t, commandAck())["reason"], nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fmt.Sprint(tt.got) != fmt.Sprint(tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}
}

// TestUnmarshalAcceptsWhatPeopleWriteByHand: the JSON a person types for
// `nats pub` rarely looks like protojson's own output.
func TestUnmarshalAcceptsWhatPeopleWriteByHand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		json string
		into proto.Message
		want proto.Message
	}{
		{
			"field names as in the .proto file",
			`{"id": "b1", "source": "ci", "type": "build.failed", "occurred_at": "2026-03-14T09:26:53Z", "correlation_id": "c"}`,
			&eventv1.Event{},
			&eventv1.Event{Id: "b1", Source: "ci", Type: "build.failed", OccurredAt: ts("2026-03-14T09:26:53Z"), CorrelationId: "c"},
		},
		{
			"an enum by number",
			`{"severity": 3}`,
			&eventv1.Event{},
			&eventv1.Event{Severity: eventv1.Severity_SEVERITY_ERROR},
		},
		{
			"a timestamp with a zone offset",
			`{"occurredAt": "2026-03-14T10:26:53+01:00"}`,
			&eventv1.Event{},
			&eventv1.Event{OccurredAt: ts("2026-03-14T09:26:53Z")},
		},
		{
			"int64 as a JSON number",
			`{"args": [{"name": "n", "min": 1, "max": 10}]}`,
			&commandv1.CommandSpec{},
			&commandv1.CommandSpec{Args: []*commandv1.ArgSpec{{Name: "n", Min: 1, Max: 10}}},
		},
		{
			"null for a field that is not set",
			`{"id": "m1", "author": null, "text": "ping"}`,
			&chatv1.ChatMessage{},
			&chatv1.ChatMessage{Id: "m1", Text: "ping"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := wire.Unmarshal([]byte(tt.json), tt.into); err != nil {
				t.Fatalf("Unmarshal(%s): %v", tt.json, err)
			}
			if !proto.Equal(tt.into, tt.want) {
				t.Errorf("Unmarshal(%s)\n%s", tt.json, diff(tt.into, tt.want))
			}
		})
	}
}

// TestUnmarshalIgnoresWhatANewerWriterAdded is the rolling-upgrade promise:
// a replica one version behind keeps decoding what a newer one writes.
func TestUnmarshalIgnoresWhatANewerWriterAdded(t *testing.T) {
	t.Parallel()
	for _, mk := range messages {
		want := mk()
		t.Run(wire.TypeName(want)+" with a new top-level field", func(t *testing.T) {
			t.Parallel()
			b, err := wire.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			var v map[string]any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			v["addedInAFutureVersion"] = map[string]any{"nested": []any{1, "two", true}}
			v["added_scalar"] = 42
			newer, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			got := empty(want)
			if err := wire.Unmarshal(newer, got); err != nil {
				t.Fatalf("Unmarshal of a newer writer's %s: %v", newer, err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("Unmarshal of a newer writer's message\n%s", diff(got, want))
			}
		})
	}

	tests := []struct {
		name string
		json string
		into proto.Message
		want proto.Message
	}{
		{
			"a new field in a nested message",
			`{"id": "p1", "conversation": {"adapter": "console", "channel": "ops", "workspace": "eu"}}`,
			&chatv1.ChatPost{},
			&chatv1.ChatPost{Id: "p1", Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops"}},
		},
		{
			"a new oneof case leaves the block empty",
			`{"id": "p1", "blocks": [{"markdown": "hi"}, {"image": {"url": "https://example.com/a.png"}}]}`,
			&chatv1.ChatPost{},
			&chatv1.ChatPost{Id: "p1", Blocks: []*chatv1.Block{{Content: &chatv1.Block_Markdown{Markdown: "hi"}}, {}}},
		},
		{
			"a new enum value reads as unspecified",
			`{"id": "p1", "kind": "KIND_DIGEST", "text": "3 events"}`,
			&chatv1.ChatPost{},
			&chatv1.ChatPost{Id: "p1", Text: "3 events"},
		},
		{
			"a new job state reads as unspecified",
			`{"id": "j1", "state": "JOB_STATE_PAUSED"}`,
			&commandv1.Job{},
			&commandv1.Job{Id: "j1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := wire.Unmarshal([]byte(tt.json), tt.into); err != nil {
				t.Fatalf("Unmarshal(%s): %v", tt.json, err)
			}
			if !proto.Equal(tt.into, tt.want) {
				t.Errorf("Unmarshal(%s)\n%s", tt.json, diff(tt.into, tt.want))
			}
		})
	}
}

func TestUnmarshalRefusesWhatIsNotTheMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		json string
	}{
		{"text that is not JSON", `lb drain web3`},
		{"truncated JSON", `{"id": "b1", "source": "ci"`},
		{"a JSON array", `[{"id": "b1"}]`},
		{"a number where a string goes", `{"id": 7}`},
		{"a timestamp that is not RFC 3339", `{"occurredAt": "14/03/2026 09:26"}`},
		{"a map that is not an object", `{"fields": ["a", "b"]}`},
		{"a field given twice", `{"id": "a", "id": "b"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := wire.Unmarshal([]byte(tt.json), &eventv1.Event{}); err == nil {
				t.Errorf("Unmarshal(%s) = nil error, want one", tt.json)
			}
		})
	}
}

// TestGoldenFilesDecodeToTheExpectedMessage reads testdata/<type>.json,
// written the way a person publishing with `nats pub` would write it, and
// checks it decodes to the message above. With -update it rewrites the files
// from those messages. protojson's output varies its white space on purpose,
// so it is re-indented with encoding/json to keep the files stable.
func TestGoldenFilesDecodeToTheExpectedMessage(t *testing.T) {
	for _, mk := range messages {
		want := mk()
		name := wire.TypeName(want)
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", name+".json")
			if *update {
				b, err := wire.Marshal(want)
				if err != nil {
					t.Fatal(err)
				}
				var out bytes.Buffer
				if err := json.Indent(&out, b, "", "  "); err != nil {
					t.Fatal(err)
				}
				out.WriteByte('\n')
				if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			got := empty(want)
			if err := wire.Unmarshal(b, got); err != nil {
				t.Fatalf("Unmarshal(%s): %v", path, err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("%s decodes to a different message (run with -update if the change is intended)\n%s", path, diff(got, want))
			}
		})
	}
}
