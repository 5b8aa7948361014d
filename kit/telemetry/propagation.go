package telemetry

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Trace context travels in W3C traceparent/tracestate headers (DESIGN.md,
// "Wire format"). propagation.TraceContext is stateless, so a value is used
// directly instead of otel's global propagator.

// natsCarrier adapts a nats.Header for the propagator. nats.Header converts
// to propagation.HeaderCarrier (both are map[string][]string), but that
// carrier canonicalises keys the HTTP way and writes "Traceparent", while
// NATS headers are case-sensitive and the W3C name, used as-is by senders
// in other languages, is "traceparent". natsCarrier writes the exact names
// the propagator asks for and reads any spelling.
type natsCarrier nats.Header

var _ propagation.TextMapCarrier = natsCarrier(nil)

// Get returns the first value of key, matching its case exactly first and
// then ignoring case (a sender using HeaderCarrier writes "Traceparent").
func (c natsCarrier) Get(key string) string {
	if v := nats.Header(c).Get(key); v != "" {
		return v
	}
	for k, vs := range c {
		if strings.EqualFold(k, key) && len(vs) > 0 {
			return vs[0]
		}
	}
	return ""
}

// Set replaces every spelling of key with the single value, so a header
// never carries two different traceparents.
func (c natsCarrier) Set(key, value string) {
	for k := range c {
		if strings.EqualFold(k, key) {
			delete(c, k)
		}
	}
	nats.Header(c).Set(key, value)
}

// Keys lists the header names.
func (c natsCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx's span into h. The caller must
// allocate h (nats.NewMsg does; &nats.Msg{} does not): writing to a nil map
// would panic, so Inject does nothing when h is nil.
func Inject(ctx context.Context, h nats.Header) {
	if h == nil {
		return
	}
	propagation.TraceContext{}.Inject(ctx, natsCarrier(h))
}

// Extract returns ctx carrying the remote span context found in h, so spans
// started from it join the sender's trace. Without valid headers (h may be
// nil) ctx is returned unchanged.
func Extract(ctx context.Context, h nats.Header) context.Context {
	return propagation.TraceContext{}.Extract(ctx, natsCarrier(h))
}

// TraceID returns the hex trace id of ctx's span (local or extracted), or ""
// when ctx has none. It is what a failed command tells the person.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}
