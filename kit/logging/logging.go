// Package logging builds switchboard's slog loggers: JSON lines that carry
// the trace_id and span_id of the context they were logged with, so a log
// line leads to its trace and a trace id from chat leads to its log lines.
//
// There is no package-level logger; main builds one with New and passes it
// to every constructor.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// New returns a logger writing JSON to w at level and above. Records logged
// with a context (log.InfoContext(ctx, …)) whose span is valid get top-level
// trace_id and span_id attributes.
func New(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(NewHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})))
}

// NewHandler wraps h so that records logged with a traced context carry
// trace_id and span_id. Use it to add trace ids to a handler other than
// New's (a text handler on a terminal, a test handler).
func NewHandler(h slog.Handler) slog.Handler {
	return &traceHandler{inner: h, base: h}
}

// ParseLevel parses "debug", "info", "warn" or "error" in any case, the
// values config files and SB_LOG_LEVEL take.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("parse log level %q: want debug, info, warn or error", s)
}

// traceHandler adds trace_id and span_id to records logged with a traced
// context.
//
// The ids must stay top-level keys after WithGroup, or searching logs for
// trace_id would miss every line logged inside a group. So the handler keeps
// base, the handler before the first group, and replays the WithAttrs and
// WithGroup calls made since (ops) on top of base.WithAttrs(ids). Loggers
// without groups, the common case, take the cheap path of adding the ids
// to the record.
type traceHandler struct {
	inner slog.Handler                      // base with ops applied
	base  slog.Handler                      // handler before the first WithGroup
	ops   []func(slog.Handler) slog.Handler // calls since the first WithGroup
}

var _ slog.Handler = (*traceHandler)(nil)

// Enabled reports whether the wrapped handler handles level.
func (h *traceHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// Handle adds the trace attributes, when ctx has a valid span, and passes
// the record on.
func (h *traceHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return h.inner.Handle(ctx, r)
	}
	ids := []slog.Attr{
		slog.String("trace_id", sc.TraceID().String()),
		slog.String("span_id", sc.SpanID().String()),
	}
	if len(h.ops) == 0 {
		r = r.Clone() // the caller's record may be shared with other handlers
		r.AddAttrs(ids...)
		return h.inner.Handle(ctx, r)
	}
	inner := h.base.WithAttrs(ids)
	for _, op := range h.ops {
		inner = op(inner)
	}
	return inner.Handle(ctx, r)
}

// WithAttrs returns a handler whose records also carry attrs.
func (h *traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(h.ops) == 0 {
		inner := h.inner.WithAttrs(attrs)
		return &traceHandler{inner: inner, base: inner}
	}
	return h.with(func(next slog.Handler) slog.Handler { return next.WithAttrs(attrs) })
}

// WithGroup returns a handler that nests later attributes under name; the
// trace attributes stay at the top level.
func (h *traceHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h // slog.Handler contract: an empty group is no group
	}
	return h.with(func(next slog.Handler) slog.Handler { return next.WithGroup(name) })
}

// with returns a copy of h with op applied and recorded for replay.
func (h *traceHandler) with(op func(slog.Handler) slog.Handler) *traceHandler {
	ops := make([]func(slog.Handler) slog.Handler, len(h.ops), len(h.ops)+1)
	copy(ops, h.ops)
	return &traceHandler{inner: op(h.inner), base: h.base, ops: append(ops, op)}
}
