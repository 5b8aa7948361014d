// Package telemetry sets up OpenTelemetry traces and metrics for a
// switchboard process and carries trace context through NATS headers.
//
// Nothing here touches otel's global providers or propagator: a process may
// run every service side by side (cmd/switchboard), and tests run many
// Telemetry values in parallel, so each one is passed around explicitly.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// The OTLP endpoint variables from the OpenTelemetry specification. The
// generic one is a base URL the exporter appends /v1/traces to; the
// traces-specific one is used exactly as given and wins over the generic one.
const (
	envEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
)

// Telemetry holds a process's tracer and meter providers and the Prometheus
// registry its /metrics handler serves. Create it with Setup (or NewForTest)
// and call Shutdown before the process exits so buffered spans are sent.
type Telemetry struct {
	tp      *sdktrace.TracerProvider
	mp      *sdkmetric.MeterProvider
	metrics http.Handler
}

// Setup builds the Telemetry for service, reading the OTLP endpoint through
// getenv (os.Getenv in main, a map in tests).
//
// Spans are exported over OTLP/HTTP in batches only when
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is set.
// Otherwise spans are still created and sampled but go nowhere, so logs and
// "internal error, trace <id>" replies keep carrying real trace ids. Other
// OTLP settings (headers, timeout, TLS files) are read by the exporter itself
// from the process environment.
//
// Metrics are collected by the OTel Prometheus exporter into a registry of
// this Telemetry's own, served by MetricsHandler.
func Setup(ctx context.Context, service string, getenv func(string) string) (*Telemetry, error) {
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(
		semconv.SchemaURL, semconv.ServiceName(service)))
	if err != nil {
		return nil, fmt.Errorf("telemetry: build resource for %s: %w", service, err)
	}
	// With no exporter nothing would read a recorded span: sample none, which
	// still gives every command a trace id to log, propagate and quote.
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sdktrace.NeverSample())}

	endpoint, err := tracesEndpoint(getenv)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	if endpoint != "" {
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
		if err != nil {
			return nil, fmt.Errorf("telemetry: create otlp exporter for %s: %w", endpoint, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	}

	t, err := newTelemetry(res, opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	return t, nil
}

// NewForTest returns a Telemetry whose spans all go to sp, typically
// sdktrace.NewSimpleSpanProcessor(tracetest.NewInMemoryExporter()), so a
// test can inspect what was recorded. A nil sp records nowhere. It panics
// only if the Prometheus exporter cannot be built, which would be a bug.
func NewForTest(sp sdktrace.SpanProcessor) *Telemetry {
	var opts []sdktrace.TracerProviderOption
	if sp != nil {
		opts = append(opts, sdktrace.WithSpanProcessor(sp))
	}
	t, err := newTelemetry(resource.Empty(), opts...)
	if err != nil {
		panic(fmt.Sprintf("telemetry: NewForTest: %v", err))
	}
	return t
}

// newTelemetry wires the providers shared by Setup and NewForTest.
func newTelemetry(res *resource.Resource, opts ...sdktrace.TracerProviderOption) (*Telemetry, error) {
	// A registry of our own, not prometheus.DefaultRegisterer: two
	// Telemetry values in one process (tests, or a library that also
	// registers globally) would otherwise collide on duplicate collectors.
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("create prometheus exporter: %w", err)
	}

	// Sample everything that is exported: a small team's command volume is
	// tiny, and a failed command must always be able to point at its trace.
	// (Later options win, so Setup's choice overrides this default.)
	opts = append([]sdktrace.TracerProviderOption{sdktrace.WithSampler(sdktrace.AlwaysSample())}, opts...)
	return &Telemetry{
		tp: sdktrace.NewTracerProvider(opts...),
		mp: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res)),
		metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			Registry: reg, // counts its own scrape errors
		}),
	}, nil
}

// tracesEndpoint returns the full URL spans are posted to, or "" when no
// endpoint is configured.
func tracesEndpoint(getenv func(string) string) (string, error) {
	name, endpoint := envTracesEndpoint, getenv(envTracesEndpoint)
	if endpoint == "" {
		name, endpoint = envEndpoint, getenv(envEndpoint)
		if endpoint == "" {
			return "", nil
		}
		// The generic endpoint is a base URL; the signal path is appended
		// (OTLP exporter specification, "Endpoint URLs for OTLP/HTTP").
		endpoint = strings.TrimSuffix(endpoint, "/") + "/v1/traces"
	}
	// otlptracehttp only logs a malformed URL and carries on with defaults;
	// refuse it here instead, so a typo fails at start-up.
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", name, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("parse %s: %q is not an http(s) URL", name, endpoint)
	}
	return endpoint, nil
}

// Tracer returns a tracer named after the instrumenting package, such as
// "github.com/switchboard-ops/switchboard/services/lb".
func (t *Telemetry) Tracer(name string) trace.Tracer { return t.tp.Tracer(name) }

// Meter returns a meter named after the instrumenting package.
func (t *Telemetry) Meter(name string) metric.Meter { return t.mp.Meter(name) }

// TracerProvider returns the tracer provider, for libraries that take one
// (otelhttp and similar).
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// MetricsHandler serves every metric recorded through Meter, plus Go runtime
// and process metrics, in the Prometheus text format; mount it on /metrics.
func (t *Telemetry) MetricsHandler() http.Handler { return t.metrics }

// Shutdown flushes buffered spans to the exporter and stops both providers.
// Give it a context with a deadline: an unreachable collector would
// otherwise hold up the process's exit.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	if err := t.tp.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shut down tracer provider: %w", err))
	}
	if err := t.mp.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shut down meter provider: %w", err))
	}
	return errors.Join(errs...)
}
