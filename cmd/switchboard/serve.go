package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/logging"
	"github.com/switchboard-ops/switchboard/kit/telemetry"
	"github.com/switchboard-ops/switchboard/kit/version"
	"github.com/switchboard-ops/switchboard/services/chat"
	"github.com/switchboard-ops/switchboard/services/deployer"
	"github.com/switchboard-ops/switchboard/services/dns"
	"github.com/switchboard-ops/switchboard/services/incidents"
	"github.com/switchboard-ops/switchboard/services/lb"
	"github.com/switchboard-ops/switchboard/services/watcher"
)

// services are the services compiled into this binary, in start order.
var services = []string{"chat", "deployer", "lb", "dns", "incidents", "watcher"}

// runAll is the all-in-one mode: the embedded NATS server (unless nats.url
// is set), every service, and the web console.
func runAll(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", "", "configuration file (YAML)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return start(ctx, *cfgPath, services, getenv, stdout, stderr, true)
}

// serve runs chosen services against an external NATS cluster, so each can
// run as several replicas on several machines.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", "", "configuration file (YAML)")
	url := fs.String("nats", "", "NATS server URL(s), comma-separated")
	creds := fs.String("creds", "", "NATS credentials file")
	var names []string
	// Flags and service names may come in any order.
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		names = append(names, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(names) == 0 {
		return usageError{fmt.Errorf("name the services to run (%s)", strings.Join(services, ", "))}
	}
	for _, n := range names {
		if !slices.Contains(services, n) {
			return usageError{fmt.Errorf("unknown service %q (this binary has: %s)", n, strings.Join(services, ", "))}
		}
	}
	if *url != "" {
		getenv = overlay(getenv, map[string]string{"SB_NATS_URL": *url})
	}
	if *creds != "" {
		getenv = overlay(getenv, map[string]string{"SB_NATS_CREDS": *creds})
	}
	return start(ctx, *cfgPath, names, getenv, stdout, stderr, false)
}

func overlay(getenv func(string) string, m map[string]string) func(string) string {
	return func(k string) string {
		if v, ok := m[k]; ok {
			return v
		}
		return getenv(k)
	}
}

func start(ctx context.Context, cfgPath string, names []string, getenv func(string) string, stdout, stderr io.Writer, allInOne bool) error {
	began := time.Now()
	cfg, err := loadConfig(cfgPath, getenv)
	if err != nil {
		return err
	}
	level, err := logging.ParseLevel(cfg.Log.Level)
	if err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	log := logging.New(stderr, level)
	log.Info("starting switchboard", "version", version.String(), "services", names, "config", cfg)

	tel, err := telemetry.Setup(ctx, "switchboard", getenv)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tel.Shutdown(sctx)
	}()

	var nc *nats.Conn
	if cfg.NATS.URL == "" {
		if !allInOne {
			return usageError{errors.New("serve needs --nats (or nats.url in the config): the embedded server is for the all-in-one mode")}
		}
		emb, err := bus.RunEmbedded(cfg.Embedded, log)
		if err != nil {
			return fmt.Errorf("%w (another switchboard may be running; set SB_EMBEDDED_PORT to use another port)", err)
		}
		defer emb.Shutdown()
		nc, err = emb.Connect(ctx, "switchboard", log)
		if err != nil {
			return err
		}
	} else {
		cfg.NATS.Name = "switchboard " + strings.Join(names, ",")
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		nc, err = bus.Connect(cctx, cfg.NATS, log)
		cancel()
		if err != nil {
			return err
		}
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = bus.EnsureStreams(ectx, js, bus.StreamOptions{Replicas: cfg.NATS.Replicas, Log: log})
	cancel()
	if err != nil {
		return err
	}

	var stops []func(context.Context)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i](sctx)
		}
	}()
	consoleURL := ""
	var chatSvc *chat.Service
	meter := tel.Meter("switchboard")
	for _, name := range names {
		var stop func(context.Context)
		var err error
		switch name {
		case "chat":
			var svc *chat.Service
			if svc, err = chat.New(ctx, cfg.Chat, chat.Deps{NC: nc, Log: log, Tracing: tel.TracerProvider(), Meter: meter, Replicas: cfg.NATS.Replicas}); err != nil {
				break
			}
			var l net.Listener
			if cfg.Chat.Console.Addr != "" {
				if l, err = net.Listen("tcp", cfg.Chat.Console.Addr); err != nil {
					err = fmt.Errorf("chat.console.addr: listen on %s: %w (set SB_CHAT_CONSOLE_ADDR to use another address)", cfg.Chat.Console.Addr, err)
					break
				}
				consoleURL = "http://" + l.Addr().String() + "/"
			}
			if err = svc.Start(ctx, l); err != nil {
				break
			}
			stop, chatSvc = svc.Stop, svc
		case "lb":
			stop, err = started(lb.New(ctx, cfg.LB, lb.Deps{NC: nc, Log: log, Tracing: tel.TracerProvider(), Meter: meter, Replicas: cfg.NATS.Replicas, DataDir: cfg.DataDir}))(ctx)
		case "dns":
			stop, err = started(dns.New(ctx, cfg.DNS, dns.Deps{NC: nc, Log: log, Tracing: tel.TracerProvider(), Meter: meter, Replicas: cfg.NATS.Replicas, DataDir: cfg.DataDir}))(ctx)
		case "deployer":
			stop, err = started(deployer.New(ctx, cfg.Deployer, deployer.Deps{NC: nc, Log: log, Tracing: tel.TracerProvider(), Meter: meter, Replicas: cfg.NATS.Replicas, DataDir: cfg.DataDir}))(ctx)
		case "watcher":
			stop, err = started(watcher.New(ctx, cfg.Watcher, watcher.Deps{NC: nc, Log: log, Tracing: tel.TracerProvider(), Meter: meter, Replicas: cfg.NATS.Replicas, DataDir: cfg.DataDir}))(ctx)
		case "incidents":
			var svc *incidents.Service
			if svc, err = incidents.New(ctx, cfg.Incidents, incidents.Deps{NC: nc, Log: log, Tracing: tel.TracerProvider(), Meter: meter, Replicas: cfg.NATS.Replicas, DataDir: cfg.DataDir}); err != nil {
				break
			}
			if err = svc.Start(ctx, nil); err != nil {
				err = fmt.Errorf("%w (set SB_INCIDENTS_HTTP_ADDR to use another address)", err)
				break
			}
			stop = svc.Stop
		}
		if err != nil {
			return err
		}
		stops = append(stops, stop)
	}
	if chatSvc != nil && len(names) > 1 {
		// The chat started first and found no other service yet.
		if err := chatSvc.Discover(ctx); err != nil {
			log.Warn("command discovery after start", "error", err)
		}
	}
	if cfg.Metrics.Addr != "" {
		srv := &http.Server{Addr: cfg.Metrics.Addr, Handler: metricsMux(tel), ReadHeaderTimeout: 5 * time.Second}
		l, err := net.Listen("tcp", cfg.Metrics.Addr)
		if err != nil {
			log.Warn("metrics: cannot listen; /metrics is off", "addr", cfg.Metrics.Addr, "error", err)
		} else {
			go srv.Serve(l)
			stops = append(stops, func(ctx context.Context) { srv.Shutdown(ctx) })
		}
	}
	log.Info("switchboard ready", "took", time.Since(began).Round(time.Millisecond).String())
	if consoleURL != "" {
		fmt.Fprintf(stdout, "switchboard is ready. Web console: %s\nFrom a shell: go run ./cmd/switchboard say ping\n", consoleURL)
	} else {
		fmt.Fprintf(stdout, "switchboard is ready (%s).\n", strings.Join(names, ", "))
	}
	<-ctx.Done()
	log.Info("stopping switchboard")
	return nil
}

// started takes what a service's New returned and gives the function that
// starts it and returns how to stop it: started(lb.New(…))(ctx).
func started[S interface {
	Start(context.Context) error
	Stop(context.Context)
}](s S, err error) func(context.Context) (func(context.Context), error) {
	return func(ctx context.Context) (func(context.Context), error) {
		if err != nil {
			return nil, err
		}
		if err := s.Start(ctx); err != nil {
			return nil, err
		}
		return s.Stop, nil
	}
}

func metricsMux(tel *telemetry.Telemetry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", tel.MetricsHandler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return mux
}
