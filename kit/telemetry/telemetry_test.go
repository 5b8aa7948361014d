package telemetry_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-ops/switchboard/kit/telemetry"
)

// env returns a getenv backed by m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// setup calls telemetry.Setup and shuts it down when the test ends.
func setup(t *testing.T, vars map[string]string) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.Setup(t.Context(), "sbtest", env(vars))
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return tel
}

func TestInjectExtractRoundTripsTheTraceThroughNATSHeaders(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tel := telemetry.NewForTest(sdktrace.NewSimpleSpanProcessor(exp))

	ctx, send := tel.Tracer("sender").Start(t.Context(), "publish")
	msg := nats.NewMsg("sb.cmd.lb.drain")
	telemetry.Inject(ctx, msg.Header)
	send.End()
	if msg.Header.Get("traceparent") == "" {
		t.Fatalf("Inject wrote no traceparent; headers: %v", msg.Header)
	}

	got := telemetry.Extract(context.Background(), msg.Header)
	if diff := cmp.Diff(telemetry.TraceID(ctx), telemetry.TraceID(got)); diff != "" {
		t.Errorf("trace id after round trip (-sent +received):\n%s", diff)
	}
	remote := trace.SpanContextFromContext(got)
	if !remote.IsRemote() || remote.SpanID() != send.SpanContext().SpanID() {
		t.Errorf("extracted span context = %+v, want the remote sender span %s", remote, send.SpanContext().SpanID())
	}

	// A span started on the receiving side is the sender's child.
	_, recv := tel.Tracer("receiver").Start(got, "handle")
	recv.End()
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("recorded %d spans, want 2", len(spans))
	}
	if parent := spans[1].Parent.SpanID(); parent != send.SpanContext().SpanID() {
		t.Errorf("receiver's parent = %s, want sender %s", parent, send.SpanContext().SpanID())
	}
}

func TestInjectAndExtractToleratePoorInput(t *testing.T) {
	t.Parallel()
	tel := telemetry.NewForTest(nil)
	withSpan, span := tel.Tracer("test").Start(t.Context(), "op")
	defer span.End()

	tests := []struct {
		name   string
		ctx    context.Context
		header nats.Header
		want   nats.Header
	}{
		{"a nil header is left alone", withSpan, nil, nil},
		{"a context without a span writes nothing", context.Background(), nats.Header{}, nats.Header{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			telemetry.Inject(tc.ctx, tc.header) // must not panic
			if diff := cmp.Diff(tc.want, tc.header); diff != "" {
				t.Errorf("header after Inject (-want +got):\n%s", diff)
			}
			if id := telemetry.TraceID(telemetry.Extract(context.Background(), tc.header)); id != "" {
				t.Errorf("Extract found trace %q in %v, want none", id, tc.header)
			}
		})
	}
}

func TestSetupWithoutAnEndpointStillMakesTraceIDs(t *testing.T) {
	t.Parallel()
	tel := setup(t, nil)

	if id := telemetry.TraceID(t.Context()); id != "" {
		t.Errorf("TraceID of a bare context = %q, want empty", id)
	}
	ctx, span := tel.TracerProvider().Tracer("test").Start(t.Context(), "op")
	defer span.End()
	// Nothing exports, so nothing is recorded; the trace id is still there
	// to log, propagate and quote.
	if !span.SpanContext().IsValid() || span.SpanContext().IsSampled() || span.IsRecording() {
		t.Fatalf("span context %+v: want valid, not sampled, not recording", span.SpanContext())
	}
	h := nats.Header{}
	telemetry.Inject(ctx, h)
	if got := telemetry.TraceID(telemetry.Extract(t.Context(), h)); got != span.SpanContext().TraceID().String() {
		t.Errorf("trace id through headers = %q, want %s", got, span.SpanContext().TraceID())
	}
	id := telemetry.TraceID(ctx)
	if len(id) != 32 || id != span.SpanContext().TraceID().String() {
		t.Errorf("TraceID = %q, want the span's 32-hex-digit trace id %s", id, span.SpanContext().TraceID())
	}
}

func TestMetricsHandlerServesCountersFromMeter(t *testing.T) {
	t.Parallel()
	// Two Telemetry values in one process must not collide, which they would
	// on Prometheus's global registry.
	tel := setup(t, nil)
	other := setup(t, nil)

	for _, tl := range []*telemetry.Telemetry{tel, other} {
		c, err := tl.Meter("test").Int64Counter("sbtest_commands", metric.WithDescription("Commands run."))
		if err != nil {
			t.Fatalf("create counter: %v", err)
		}
		c.Add(t.Context(), 3, metric.WithAttributes(attribute.String("command", "lb drain")))
	}

	srv := httptest.NewServer(tel.MetricsHandler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %s", resp.Status)
	}

	var found []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "sbtest_commands_total{") {
			found = append(found, line)
		}
	}
	if len(found) != 1 || !strings.Contains(found[0], `command="lb drain"`) || !strings.HasSuffix(found[0], " 3") {
		t.Errorf("sbtest_commands_total lines = %q, want one with command=\"lb drain\" and value 3", found)
	}

	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("gather default registry: %v", err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "sbtest_") {
			t.Errorf("%s leaked into the default Prometheus registry", mf.GetName())
		}
	}
}

// request is what the fake collector saw.
type request struct {
	method, path, contentType string
	bodyLen                   int
}

func TestSetupWithAnEndpointPostsSpansOverOTLP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		variable string
		suffix   string // appended to the collector's URL
		wantPath string
	}{
		{"the generic endpoint gets /v1/traces appended", "OTEL_EXPORTER_OTLP_ENDPOINT", "", "/v1/traces"},
		{"a trailing slash on the generic endpoint is not doubled", "OTEL_EXPORTER_OTLP_ENDPOINT", "/", "/v1/traces"},
		{"the traces endpoint is used as given", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/otlp/spans", "/otlp/spans"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan request, 10)
			collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				got <- request{r.Method, r.URL.Path, r.Header.Get("Content-Type"), len(body)}
				// An empty protobuf ExportTraceServiceResponse is a success.
				w.Header().Set("Content-Type", "application/x-protobuf")
				w.WriteHeader(http.StatusOK)
			}))
			defer collector.Close()

			tel, err := telemetry.Setup(t.Context(), "sbtest", env(map[string]string{tc.variable: collector.URL + tc.suffix}))
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			_, span := tel.Tracer("test").Start(t.Context(), "op")
			span.End()

			// The batch processor holds the span until Shutdown flushes it.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := tel.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			select {
			case r := <-got:
				if diff := cmp.Diff(request{"POST", tc.wantPath, "application/x-protobuf", r.bodyLen}, r, cmp.AllowUnexported(request{})); diff != "" {
					t.Errorf("collector request (-want +got):\n%s", diff)
				}
				if r.bodyLen == 0 {
					t.Errorf("collector got an empty body")
				}
			default:
				t.Fatalf("collector received nothing after Shutdown")
			}
		})
	}
}

func TestSetupRefusesAMalformedEndpoint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, variable, value string
	}{
		{"a bare host name is not a URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"},
		{"an unparsable traces URL", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://[::1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := telemetry.Setup(t.Context(), "sbtest", env(map[string]string{tc.variable: tc.value}))
			if err == nil || !strings.Contains(err.Error(), tc.variable) {
				t.Errorf("Setup error = %v, want one naming %s", err, tc.variable)
			}
		})
	}
}

func TestExtractReadsTraceparentInAnySpelling(t *testing.T) {
	t.Parallel()
	const (
		parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		want   = "4bf92f3577b34da6a3ce929d0e0e4736"
	)
	tests := []struct {
		name   string
		header nats.Header
	}{
		{"the W3C lower-case name other languages send", nats.Header{"traceparent": {parent}}},
		{"the canonical name propagation.HeaderCarrier writes", nats.Header{"Traceparent": {parent}}},
		{"an upper-case name", nats.Header{"TRACEPARENT": {parent}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := telemetry.TraceID(telemetry.Extract(context.Background(), tc.header)); got != want {
				t.Errorf("TraceID after Extract(%v) = %q, want %q", tc.header, got, want)
			}
		})
	}
}

func TestInjectReplacesATraceparentInAnotherSpelling(t *testing.T) {
	t.Parallel()
	tel := telemetry.NewForTest(nil)
	ctx, span := tel.Tracer("test").Start(t.Context(), "op")
	defer span.End()

	h := nats.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	telemetry.Inject(ctx, h)
	if len(h) != 1 || len(h["traceparent"]) != 1 {
		t.Fatalf("headers after Inject = %v, want exactly one traceparent", h)
	}
	if got := telemetry.TraceID(telemetry.Extract(context.Background(), h)); got != telemetry.TraceID(ctx) {
		t.Errorf("extracted trace %q, want the injected %q", got, telemetry.TraceID(ctx))
	}
}
