package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// doctor checks what a switchboard deployment needs from NATS and says what
// is wrong in plain words. It exits 0 when everything it checked is fine,
// 1 when something is wrong, 2 on bad usage.
func doctor(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", "", "configuration file (YAML)")
	url := fs.String("nats", "", "NATS server URL(s)")
	creds := fs.String("creds", "", "NATS credentials (nkey seed or JWT creds file)")
	as := fs.String("as", "", "check the permissions this service needs (chat, lb, dns, deployer, incidents, watcher)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "switchboard doctor: bad usage\n\n%s", usage)
		return exitUsage
	}
	cfg, err := loadConfig(*cfgPath, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard doctor: %v\n", err)
		return exitUsage
	}
	nc := cfg.NATS
	if *url != "" {
		nc.URL = *url
	}
	if *creds != "" {
		nc.Creds = *creds
	}
	if nc.URL == "" {
		// The all-in-one server on this machine, as `say` finds it.
		b, err := os.ReadFile(filepath.Join(cfg.DataDir, bus.URLFileName))
		if err != nil {
			fmt.Fprintf(stdout, "FAIL  no NATS to check: give --nats (or nats.url), or start switchboard here\n")
			return exitFailed
		}
		nc.URL = strings.TrimSpace(string(b))
		if nc.Token == "" && nc.Creds == "" {
			nc.TokenFile = filepath.Join(cfg.DataDir, bus.TokenFileName)
		}
	}
	replicas := max(nc.Replicas, 1)
	d := &doc{out: stdout}
	d.run(ctx, nc, replicas, *as)
	if d.failed > 0 {
		fmt.Fprintf(stdout, "\n%d problem(s) found.\n", d.failed)
		return exitFailed
	}
	fmt.Fprintf(stdout, "\nEverything checked is fine.\n")
	return exitOK
}

type doc struct {
	out    io.Writer
	failed int

	mu     sync.Mutex
	errors []error
}

func (d *doc) ok(format string, args ...any) { fmt.Fprintf(d.out, "ok    "+format+"\n", args...) }
func (d *doc) warn(format string, args ...any) {
	fmt.Fprintf(d.out, "WARN  "+format+"\n", args...)
}
func (d *doc) fail(format string, args ...any) {
	d.failed++
	fmt.Fprintf(d.out, "FAIL  "+format+"\n", args...)
}

func (d *doc) run(ctx context.Context, cfg bus.Config, replicas int, as string) {
	cfg.Name = "switchboard doctor"
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	nc, err := bus.Connect(cctx, cfg, slog.New(slog.DiscardHandler))
	cancel()
	if err != nil {
		d.fail("connect to NATS: %s", explainConnect(err))
		return
	}
	defer nc.Close()
	// Permission violations come back asynchronously; collect them.
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		d.mu.Lock()
		d.errors = append(d.errors, err)
		d.mu.Unlock()
	})
	d.ok("connected to %s (server %s, version %s)", nc.ConnectedUrlRedacted(), nc.ConnectedServerName(), nc.ConnectedServerVersion())
	if nc.ConnectedClusterName() == "" && replicas > 1 {
		d.fail("nats.replicas is %d but the server is not in a cluster: streams cannot have %d replicas", replicas, replicas)
	}

	js, err := jetstream.New(nc)
	if err != nil {
		d.fail("JetStream: %v", err)
		return
	}
	jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	info, err := js.AccountInfo(jctx)
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		d.fail("JetStream is not enabled for this account: switchboard keeps jobs, posts and audit in it (see deploy/nats/accounts.conf)")
		return
	case err != nil && isPermission(err, d.violations()):
		d.fail("these credentials may not use the JetStream API ($JS.API.>): every service needs it")
		return
	case err != nil:
		d.fail("JetStream: %v", err)
		return
	}
	d.ok("JetStream: %d streams, %d consumers, %s stored", info.Streams, info.Consumers, bytesText(info.Store))

	for _, name := range []string{wire.StreamChat, wire.StreamEvents, wire.StreamAudit} {
		d.stream(ctx, js, name, replicas)
	}
	for _, name := range []string{wire.BucketJobs, wire.BucketReplicas, wire.BucketInventory} {
		d.stream(ctx, js, "KV_"+name, replicas)
	}
	d.services(ctx, nc)
	if as != "" {
		d.permissions(ctx, nc, as)
	}
}

func (d *doc) stream(ctx context.Context, js jetstream.JetStream, name string, replicas int) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(sctx, name)
	what := "stream " + name
	if strings.HasPrefix(name, "KV_") {
		what = "bucket " + strings.TrimPrefix(name, "KV_")
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		d.fail("%s does not exist: start a switchboard service once (it declares it), or run `switchboard serve`", what)
		return
	}
	if err != nil {
		d.fail("%s: %v", what, err)
		return
	}
	si := s.CachedInfo()
	if si.Config.Replicas != replicas {
		d.fail("%s has %d replica(s) but nats.replicas is %d: restart a service with the right nats.replicas to update it", what, si.Config.Replicas, replicas)
		return
	}
	if si.Cluster != nil && si.Config.Replicas > 1 {
		if si.Cluster.Leader == "" {
			d.fail("%s has no leader: too few of its %d servers are up", what, si.Config.Replicas)
			return
		}
		current := 0
		for _, p := range si.Cluster.Replicas {
			if p.Current && !p.Offline {
				current++
			}
		}
		if current+1 < si.Config.Replicas {
			d.warn("%s: only %d of %d replicas are current (a node is down or catching up)", what, current+1, si.Config.Replicas)
			return
		}
	}
	d.ok("%s: %d message(s), %d replica(s)", what, si.State.Msgs, si.Config.Replicas)
}

// services lists the micro services that answer $SRV.INFO, by name, with
// their versions and instance counts.
func (d *doc) services(ctx context.Context, nc *nats.Conn) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		d.fail("discover services: %v", err)
		return
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.INFO", inbox, nil); err != nil {
		d.fail("discover services: %v", err)
		return
	}
	type svc struct {
		versions  map[string]int
		instances int
		commands  int
	}
	found := map[string]*svc{}
	for wait := time.Second; ; wait = 200 * time.Millisecond {
		wctx, cancel := context.WithTimeout(ctx, wait)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			break
		}
		var info micro.Info
		if json.Unmarshal(m.Data, &info) != nil {
			continue
		}
		s := found[info.Name]
		if s == nil {
			s = &svc{versions: map[string]int{}}
			found[info.Name] = s
		}
		s.instances++
		s.versions[info.Version]++
		s.commands = len(info.Endpoints)
	}
	if len(found) == 0 {
		d.fail("no switchboard service answers: none is running, or these credentials may not publish $SRV.INFO")
		return
	}
	names := make([]string, 0, len(found))
	for n := range found {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := found[n]
		var vs []string
		for v, c := range s.versions {
			vs = append(vs, fmt.Sprintf("%s×%d", v, c))
		}
		slices.Sort(vs)
		if len(s.versions) > 1 {
			d.warn("service %s: %d replica(s) running different versions (%s): an upgrade in progress?", n, s.instances, strings.Join(vs, ", "))
			continue
		}
		note := ""
		if s.instances == 1 {
			note = " (no second replica: a crash stops its commands until it restarts)"
		}
		d.ok("service %s: %d replica(s), version %s, %d command(s)%s", n, s.instances, strings.Join(vs, ", "), s.commands, note)
	}
}

// permissions checks what a service's NATS user must and must not be
// allowed to do, without publishing anything a service would act on.
func (d *doc) permissions(ctx context.Context, nc *nats.Conn, service string) {
	// A service's commands are sb.cmd.<service>.<verb>; the lb process
	// also serves the ratelimit commands.
	verbs := map[string][]string{
		"chat": {"sys"}, "lb": {"lb", "ratelimit"}, "dns": {"dns"}, "deployer": {"deployer"},
		"incidents": {"incidents"}, "watcher": {"watcher"},
	}[service]
	if verbs == nil {
		d.fail("--as %s: not a switchboard service (chat, lb, dns, deployer, incidents, watcher)", service)
		return
	}
	for _, v := range verbs {
		subj := wire.SubjectCommandPrefix + "." + v + ".>"
		if err := d.probeSub(ctx, nc, subj); err != nil {
			d.fail("as %s: may not subscribe to %s, so it cannot receive its commands: %v", service, subj, err)
		} else {
			d.ok("as %s: may receive its commands (%s)", service, subj)
		}
	}
	if service == "chat" {
		if err := d.probeSub(ctx, nc, wire.SubjectChatInAll); err != nil {
			d.fail("as chat: may not subscribe to %s, so the CLI and the bridges cannot reach the chat: %v", wire.SubjectChatInAll, err)
		} else {
			d.ok("as chat: may receive the CLI's and the bridges' messages (%s)", wire.SubjectChatInAll)
		}
		return
	}
	// Another service's commands must be out of reach.
	other := "sb.cmd.sys.>"
	if err := d.probeSub(ctx, nc, other); err == nil {
		d.fail("as %s: may also read %s, which is the chat service's: the user's permissions are too wide", service, other)
	} else {
		d.ok("as %s: may not read other services' commands", service)
	}
}

// probeSub subscribes and unsubscribes, and reports a permission violation
// the server sends back.
func (d *doc) probeSub(ctx context.Context, nc *nats.Conn, subject string) error {
	before := len(d.violations())
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		return err
	}
	// The violation is sent before the PONG, but handed to the error
	// handler on another goroutine.
	time.Sleep(50 * time.Millisecond)
	for _, e := range d.violations()[before:] {
		if strings.Contains(e.Error(), subject) {
			return e
		}
	}
	return nil
}

func (d *doc) violations() []error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.errors)
}

func isPermission(err error, async []error) bool {
	if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(err.Error()), "permission") {
		return true
	}
	for _, e := range async {
		if errors.Is(e, nats.ErrPermissionViolation) {
			return true
		}
	}
	return errors.Is(err, context.DeadlineExceeded) && len(async) > 0
}

func explainConnect(err error) string {
	s := err.Error()
	switch {
	case strings.Contains(s, "connection refused"):
		return s + " — is nats-server running there, and is the port right?"
	case strings.Contains(s, "Authorization Violation"), strings.Contains(s, "authorization violation"):
		return s + " — the server refused these credentials: check --creds (or nats.creds) and that nkeys.conf on the servers has this user's public key"
	case strings.Contains(s, "certificate"), strings.Contains(s, "tls"):
		return s + " — TLS failed: check nats.tls.ca (the CA that signed the servers' certificates) and the URL's host name"
	default:
		return s
	}
}

func bytesText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
