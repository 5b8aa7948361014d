package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"testing/slogtest"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-ops/switchboard/kit/logging"
)

// traced returns a context carrying a fixed, valid span context.
func traced(t *testing.T) context.Context {
	t.Helper()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	return trace.ContextWithSpanContext(context.Background(), sc)
}

// decode parses one JSON log line, dropping the time so lines compare.
func decode(t *testing.T, line []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("log line %q is not JSON: %v", line, err)
	}
	delete(m, slog.TimeKey)
	return m
}

func TestNewAddsTraceIDsOnlyWithATracedContext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		log  func(l *slog.Logger, ctx context.Context)
		want map[string]any
	}{
		{
			name: "a record logged with a traced context carries trace_id and span_id",
			log:  func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "drained", "instance", "lb1") },
			want: map[string]any{"level": "INFO", "msg": "drained", "instance": "lb1",
				"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"},
		},
		{
			name: "a record logged without a context carries no trace",
			log:  func(l *slog.Logger, _ context.Context) { l.Info("drained", "instance", "lb1") },
			want: map[string]any{"level": "INFO", "msg": "drained", "instance": "lb1"},
		},
		{
			name: "a record logged with an untraced context carries no trace",
			log:  func(l *slog.Logger, _ context.Context) { l.InfoContext(context.Background(), "drained") },
			want: map[string]any{"level": "INFO", "msg": "drained"},
		},
		{
			name: "attributes from With are kept",
			log: func(l *slog.Logger, ctx context.Context) {
				l.With("service", "lb").InfoContext(ctx, "drained")
			},
			want: map[string]any{"level": "INFO", "msg": "drained", "service": "lb",
				"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"},
		},
		{
			name: "trace ids stay at the top level inside a group",
			log: func(l *slog.Logger, ctx context.Context) {
				l.With("service", "lb").WithGroup("job").With("id", "j1").InfoContext(ctx, "drained", "step", 2)
			},
			want: map[string]any{"level": "INFO", "msg": "drained", "service": "lb",
				"job":      map[string]any{"id": "j1", "step": float64(2)},
				"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"},
		},
		{
			name: "a group without a traced context still nests",
			log: func(l *slog.Logger, _ context.Context) {
				l.WithGroup("job").Info("drained", "id", "j1")
			},
			want: map[string]any{"level": "INFO", "msg": "drained", "job": map[string]any{"id": "j1"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			tc.log(logging.New(&buf, slog.LevelInfo), traced(t))
			if diff := cmp.Diff(tc.want, decode(t, buf.Bytes())); diff != "" {
				t.Errorf("log line (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewDropsRecordsBelowTheLevel(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := logging.New(&buf, slog.LevelWarn)
	log.InfoContext(traced(t), "quiet")
	log.WarnContext(traced(t), "loud")
	if got := strings.Count(buf.String(), "\n"); got != 1 || !strings.Contains(buf.String(), `"msg":"loud"`) {
		t.Errorf("output = %q, want only the warning", buf.String())
	}
}

// TestNewHandlerFollowsTheSlogHandlerRules runs the standard library's
// conformance suite (WithAttrs, WithGroup, empty groups, …) on the wrapper.
func TestNewHandlerFollowsTheSlogHandlerRules(t *testing.T) {
	var buf bytes.Buffer
	h := logging.NewHandler(slog.NewJSONHandler(&buf, nil))
	results := func() []map[string]any {
		var ms []map[string]any
		for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("log line %q is not JSON: %v", line, err)
			}
			ms = append(ms, m)
		}
		return ms
	}
	if err := slogtest.TestHandler(h, results); err != nil {
		t.Error(err)
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    slog.Level
		wantErr bool
	}{
		{"debug is debug", "debug", slog.LevelDebug, false},
		{"info is info", "info", slog.LevelInfo, false},
		{"warn is warn", "warn", slog.LevelWarn, false},
		{"error is error", "error", slog.LevelError, false},
		{"case and surrounding space do not matter", " WARN ", slog.LevelWarn, false},
		{"an unknown level is an error", "verbose", 0, true},
		{"an empty level is an error", "", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := logging.ParseLevel(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseLevel(%q) error = %v, want error: %v", tc.in, err, tc.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), `"`+tc.in+`"`) {
					t.Errorf("error %q does not quote the input %q", err, tc.in)
				}
				return
			}
			if got != tc.want {
				t.Errorf("ParseLevel(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}
