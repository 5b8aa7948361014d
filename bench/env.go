// Package bench measures switchboard's command path beside the NATS and
// JetStream primitives it is made of, on one embedded server in one process,
// the way the all-in-one binary runs.
//
// The whole path of a no-op command is: chat ingress (parse, RBAC, audit) →
// a NATS request to the sys service's micro endpoint → the job created
// exactly once in KV → the handler → the job's end recorded → the result
// ChatPost on the CHAT stream → the egress delivering it to an adapter. The
// primitives are a bare request/reply, a KV Create, a JetStream publish and a
// consumer delivery, measured on the same server and connection, so a report
// can give the whole path as a ratio of its parts instead of as absolute
// numbers that depend on the machine.
//
// cmd/sbbench runs the measurements and prints a table; cmd/sbrss measures
// the all-in-one binary's start-up time and idle memory; the Go benchmarks in
// this package measure the same operations under `go test -bench`.
package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/telemetry"
	"github.com/switchboard-ops/switchboard/services/chat"
)

// AdapterName is the adapter of every conversation the benchmarks use.
const AdapterName = "bench"

// Options configure Start; the zero value is what the all-in-one binary
// runs, minus the web console.
type Options struct {
	// Dir holds the embedded server's store. Empty means a temporary
	// directory that Close removes.
	Dir string
	// NoTelemetry gives the service no-op tracer and meter. By default it
	// gets what the binary builds without an OTLP endpoint (kit/telemetry
	// Setup: every span sampled and then dropped, metrics collected for
	// /metrics), so its cost is part of the measurement.
	NoTelemetry bool
	// Log receives the service's and the server's logs; nil discards them.
	Log *slog.Logger
	// EgressShards is the egress's parallelism (0: the chat default).
	EgressShards int
	// InProcess connects the service to the server in-process instead of
	// over loopback TCP as the binary does (the Client stays on TCP).
	InProcess bool
}

// Env is a running switchboard chat service with its embedded JetStream
// server and a recording egress adapter.
type Env struct {
	// Embedded is the in-process NATS server.
	Embedded *bus.Embedded
	// NC is the chat service's connection. The binary has one connection
	// for everything, over loopback TCP; the primitives use it too.
	NC *nats.Conn
	// Client is a second connection, as a CLI process on the same host has.
	Client *nats.Conn
	// JS is JetStream over NC.
	JS jetstream.JetStream
	// Chat is the chat service (sys commands, ingress, CLI bridge, egress).
	Chat *chat.Service
	// Adapter receives every post addressed to the "bench" adapter.
	Adapter *Adapter

	// Phases is how long each step of Start took, in order.
	Phases []Phase

	tel    *telemetry.Telemetry
	dir    string
	ownDir bool
}

// Phase is one step of Start and its duration.
type Phase struct {
	Name string
	Took time.Duration
}

func (e *Env) phase(name string, since *time.Time) {
	now := time.Now()
	e.Phases = append(e.Phases, Phase{name, now.Sub(*since)})
	*since = now
}

// Start runs the embedded server, declares the streams, and starts a chat
// service with the bench adapter registered. Close undoes it.
func Start(ctx context.Context, o Options) (_ *Env, err error) {
	e := &Env{dir: o.Dir}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if e.dir == "" {
		e.dir, err = os.MkdirTemp("", "sbbench-")
		if err != nil {
			return nil, fmt.Errorf("bench: temp dir: %w", err)
		}
		e.ownDir = true
	}
	t := time.Now()
	// The binary's own embedded server: token auth, loopback, a free port.
	e.Embedded, err = bus.RunEmbedded(bus.EmbeddedConfig{DataDir: e.dir, Host: "127.0.0.1", Port: -1}, log)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	e.phase("embedded server ready", &t)
	if o.InProcess {
		e.NC, err = nats.Connect("", nats.InProcessServer(e.Embedded.Server), nats.Token(e.Embedded.Token), nats.Name("bench chat"))
	} else {
		e.NC, err = e.Embedded.Connect(ctx, "bench chat", log)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if e.Client, err = e.Embedded.Connect(ctx, "bench client", log); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if e.JS, err = jetstream.New(e.NC); err != nil {
		return nil, fmt.Errorf("bench: jetstream: %w", err)
	}
	e.phase("connections", &t)
	if err := bus.EnsureStreams(ctx, e.JS, bus.StreamOptions{Replicas: 1}); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	e.phase("bus.EnsureStreams", &t)
	var (
		tp trace.TracerProvider
		mt metric.Meter
	)
	if !o.NoTelemetry {
		e.tel, err = telemetry.Setup(ctx, "switchboard", func(string) string { return "" })
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		tp, mt = e.tel.TracerProvider(), e.tel.Meter("switchboard")
	}
	e.phase("telemetry", &t)
	cfg := chat.DefaultConfig()
	cfg.Console.Addr = ""
	svc, err := chat.New(ctx, cfg, chat.Deps{NC: e.NC, Log: log, Tracing: tp, Meter: mt})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	e.phase("chat.New", &t)
	if err := svc.Start(ctx, nil); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	e.phase("chat Start (sys commands, bridge, first discovery)", &t)
	e.Chat = svc
	e.Adapter = NewAdapter(AdapterName)
	if err := svc.AddAdapter(ctx, e.Adapter, chat.EgressOptions{Shards: o.EgressShards}); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	e.phase("AddAdapter (egress consumer)", &t)
	return e, nil
}

// Server is the embedded NATS server.
func (e *Env) Server() *server.Server { return e.Embedded.Server }

// Close stops the service and the server and removes a temporary store.
func (e *Env) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if e.Chat != nil {
		e.Chat.Stop(ctx)
	}
	for _, nc := range []*nats.Conn{e.Client, e.NC} {
		if nc != nil {
			nc.Close()
		}
	}
	if e.Embedded != nil {
		e.Embedded.Shutdown()
	}
	if e.tel != nil {
		e.tel.Shutdown(ctx)
	}
	if e.ownDir {
		os.RemoveAll(e.dir)
	}
}

// CountingWriter counts the lines written through it and passes them on to
// W (nothing when W is nil), so a run can say how much its service logged.
type CountingWriter struct {
	W io.Writer
	n atomic.Int64
}

// Write implements io.Writer.
func (c *CountingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(bytes.Count(p, []byte{'\n'})))
	if c.W == nil {
		return len(p), nil
	}
	return c.W.Write(p)
}

// Lines is how many lines were written so far.
func (c *CountingWriter) Lines() int64 { return c.n.Load() }
