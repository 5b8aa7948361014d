// Command sbbench measures a no-op command's whole path through switchboard
// (chat ingress → RBAC → micro request → job created exactly once → result
// ChatPost → egress delivered) beside the NATS and JetStream primitives it
// is made of, on one embedded server in one process, and prints the results
// as markdown tables.
//
//	go run ./bench/cmd/sbbench            # full run (2000 samples, 10 s per load step)
//	go run ./bench/cmd/sbbench -quick     # a few seconds, for a smoke test
//	go run ./bench/cmd/sbbench -cpuprofile cpu.out
//
// Latencies are measured one operation at a time (one sender); throughput
// with concurrent senders, each in its own channel, for a fixed duration.
// Nothing here judges the numbers: the tables state the targets beside them.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/switchboard-ops/switchboard/bench"
	"github.com/switchboard-ops/switchboard/kit/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sbbench: %v\n", err)
		os.Exit(1)
	}
}

type config struct {
	n, warmup     int
	duration      time.Duration
	senders       []int
	bridgeSenders int
	payload       int
	gap           time.Duration
	noTelemetry   bool
	cpuprofile    string
	verbose       bool
	quiet         time.Duration
	inProcess     bool
}

func parse(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("sbbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	quick := fs.Bool("quick", false, "a short run: 200 samples, 50 warm-up, 2s per load step")
	fs.IntVar(&c.n, "n", 2000, "timed samples per latency measurement")
	fs.IntVar(&c.warmup, "warmup", 200, "untimed operations before each latency measurement")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "duration of each throughput step")
	senders := fs.String("senders", "1,8,64", "concurrent senders of the throughput steps")
	fs.IntVar(&c.bridgeSenders, "bridge-senders", 64, "concurrent senders of the CLI-bridge throughput step (0: none)")
	fs.IntVar(&c.payload, "payload", 512, "payload bytes of the primitives (a CommandRequest or Job is 400-900)")
	fs.DurationVar(&c.gap, "gap", 0, "pause between latency samples (0: back to back)")
	fs.BoolVar(&c.noTelemetry, "no-telemetry", false, "no-op tracer and meter instead of the binary's (spans sampled and dropped)")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole-path measurements to this file")
	fs.BoolVar(&c.verbose, "v", false, "copy the service's logs to stderr")
	fs.BoolVar(&c.inProcess, "inprocess", false, "connect the service in-process instead of over loopback TCP as the binary does")
	fs.DurationVar(&c.quiet, "wait-quiet", 0, "before each measurement, wait up to this long for other processes to use < 0.1 core (a shared machine)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["n"] {
			c.n = 200
		}
		if !set["warmup"] {
			c.warmup = 50
		}
		if !set["duration"] {
			c.duration = 2 * time.Second
		}
	}
	for _, s := range strings.Split(*senders, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return c, fmt.Errorf("-senders: %q is not a positive number", s)
		}
		c.senders = append(c.senders, n)
	}
	if c.n < 1 {
		return c, errors.New("-n: at least 1")
	}
	return c, nil
}

// row is one line of the latency table.
type row struct {
	name string
	s    bench.Summary
	cpu  bench.CPUUse
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parse(args, stderr)
	if err != nil {
		return err
	}
	logs := &bench.CountingWriter{}
	if c.verbose {
		logs.W = stderr
	}
	// The binary's logger at its default level, so logging costs what it
	// costs there; the count of lines shows whether anything went wrong.
	log := logging.New(logs, slog.LevelInfo)
	started := time.Now()
	env, err := bench.Start(ctx, bench.Options{NoTelemetry: c.noTelemetry, Log: log, InProcess: c.inProcess})
	if err != nil {
		return err
	}
	defer env.Close()
	startup := time.Since(started)
	startLines := logs.Lines()
	prims, err := env.Primitives(ctx, c.payload)
	if err != nil {
		return err
	}
	defer prims.Close()

	out := bufio.NewWriter(stdout)
	defer out.Flush()
	header(out, c, startup, env.Phases)
	out.Flush()

	progress := func(format string, a ...any) { fmt.Fprintf(stderr, "sbbench: "+format+"\n", a...) }
	quiet := func() {
		if c.quiet > 0 && !bench.WaitQuiet(ctx, 0.1, c.quiet) {
			progress("other processes still busy after %v; measuring anyway", c.quiet)
		}
	}
	measure := func(name string, op func(context.Context) error) (row, error) {
		quiet()
		progress("%s: %d warm-up + %d samples", name, c.warmup, c.n)
		if _, err := bench.Sample(ctx, c.warmup, 0, bounded(op, c.gap)); err != nil {
			return row{}, fmt.Errorf("%s: %w", name, err)
		}
		cpu := bench.ReadCPU()
		d, err := bench.Sample(ctx, 0, c.n, bounded(op, c.gap))
		if err != nil {
			return row{}, fmt.Errorf("%s: %w", name, err)
		}
		return row{name: name, s: bench.Summarize(d), cpu: cpu.Since()}, nil
	}

	// 1. The primitives, one at a time.
	var rows []row
	for _, p := range []struct {
		name string
		op   func(context.Context) error
	}{
		{"NATS request/reply (trivial responder)", prims.Request},
		{"KV Create (unique key, sb_jobs settings)", prims.KVCreate},
		{"KV Get", prims.KVGet},
		{"JetStream publish (sync, msg id)", prims.JSPublish},
		{"consumer delivery (publish → Consume callback)", prims.Delivery},
	} {
		r, err := measure(p.name, p.op)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	rr, kvc, kvg, jsp, del := rows[0].s, rows[1].s, rows[2].s, rows[3].s, rows[4].s

	// 2. The whole path, one at a time, with the server's counters and the
	// allocations around it, and the CPU profile from here on.
	if c.cpuprofile != "" {
		f, err := os.Create(c.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var acks []time.Duration
	pathOp := func(ctx context.Context) error {
		r, err := env.Ping(ctx, "latency")
		acks = append(acks, r.Ack)
		return err
	}
	progress("whole path: %d warm-up + %d samples", c.warmup, c.n)
	if _, err := bench.Sample(ctx, c.warmup, 0, bounded(pathOp, c.gap)); err != nil {
		return fmt.Errorf("whole path: %w", err)
	}
	acks = acks[:0]
	quiet()
	before, err := env.Counters(ctx)
	if err != nil {
		return err
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu := bench.ReadCPU()
	d, err := bench.Sample(ctx, 0, c.n, bounded(pathOp, c.gap))
	if err != nil {
		return fmt.Errorf("whole path: %w", err)
	}
	wholeCPU := cpu.Since()
	runtime.ReadMemStats(&m1)
	after, err := env.Counters(ctx)
	if err != nil {
		return err
	}
	whole := row{name: "**whole path: Handle → egress delivered the result**", s: bench.Summarize(d), cpu: wholeCPU}
	ack := row{name: "  of which: Handle returned (job accepted)", s: bench.Summarize(acks)}

	bridgeRow, err := measure("CLI bridge: sb.chat.in request → egress delivered", func(ctx context.Context) error {
		_, err := env.PingBridge(ctx, "latency-bridge")
		return err
	})
	if err != nil {
		return err
	}
	f, err := env.Follow(ctx, "latency-say")
	if err != nil {
		return err
	}
	sayRow, err := measure("as `say ping`: sb.chat.in + echo post → ordered consumer read the result", func(ctx context.Context) error {
		_, err := f.Ping(ctx)
		return err
	})
	f.Stop()
	if err != nil {
		return err
	}
	rows = append(rows, whole, ack, bridgeRow, sayRow)
	latencyTable(out, c, rows)

	sum := rr.P50 + kvc.P50 + jsp.P50 + del.P50
	// The serial chain the result post waits for, read from the code (see
	// docs/benchmarks.md): 2 stream publishes (audit request, result
	// post), 3 KV writes (open marker, job create, job update), 1 KV read,
	// 1 request/reply, 1 delivery. The "accepted" and "result" audit
	// records and the marker delete are off this path.
	model := 2*jsp.P50 + 3*kvc.P50 + kvg.P50 + rr.P50 + del.P50
	fmt.Fprintf(out, "\n### Ratios (p50, same run)\n\n")
	fmt.Fprintf(out, "| | value |\n|---|---:|\n")
	fmt.Fprintf(out, "| sum of primitive p50s (request/reply + KV Create + JS publish + delivery) | %s |\n", dur(sum))
	fmt.Fprintf(out, "| whole path p50 | %s |\n", dur(whole.s.P50))
	fmt.Fprintf(out, "| **whole path ÷ sum of primitives** | **%.1f×** |\n", ratio(whole.s.P50, sum))
	fmt.Fprintf(out, "| serial chain from the code (2 publishes + 3 KV writes + 1 KV get + 1 request + 1 delivery) | %s |\n", dur(model))
	fmt.Fprintf(out, "| whole path ÷ serial chain | %.2f× |\n", ratio(whole.s.P50, model))
	fmt.Fprintf(out, "| CLI bridge p50 − whole path p50 | %s |\n", dur(bridgeRow.s.P50-whole.s.P50))
	fmt.Fprintf(out, "| target p50 ≤ 1 ms | %s |\n", verdict(whole.s.P50 <= time.Millisecond))
	fmt.Fprintf(out, "| target p99 ≤ 5 ms | %s |\n", verdict(whole.s.P99 <= 5*time.Millisecond))

	in, o, stored := after.Per(before, c.n)
	fmt.Fprintf(out, "\n### What one command costs (whole path, averaged over %d)\n\n", c.n)
	fmt.Fprintf(out, "| | per command |\n|---|---:|\n")
	names := make([]string, 0, len(stored))
	total := 0.0
	for k := range stored {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(out, "| messages stored in %s | %.2f |\n", k, stored[k])
		total += stored[k]
	}
	fmt.Fprintf(out, "| **JetStream writes, total** | **%.2f** |\n", total)
	fmt.Fprintf(out, "| bytes kept in those streams (KV keeps only the last value per key) | %.0f |\n", (float64(after.Bytes)-float64(before.Bytes))/float64(c.n))
	fmt.Fprintf(out, "| messages into the server | %.1f |\n", in)
	fmt.Fprintf(out, "| messages out of the server | %.1f |\n", o)
	fmt.Fprintf(out, "| heap allocated (server and service, same process) | %.0f KiB |\n", float64(m1.TotalAlloc-m0.TotalAlloc)/float64(c.n)/1024)
	fmt.Fprintf(out, "| GC cycles per 1000 commands | %.1f |\n", float64(m1.NumGC-m0.NumGC)*1000/float64(c.n))
	fmt.Fprintf(out, "| CPU time of the process (server + service + load) | %s |\n", dur(wholeCPU.SelfTime/time.Duration(c.n)))
	out.Flush()

	// 3. Throughput: concurrent senders for a fixed duration.
	var loads []load
	for _, n := range c.senders {
		quiet()
		progress("throughput: %d senders for %v", n, c.duration)
		cpu := bench.ReadCPU()
		r := bench.Load(ctx, n, c.duration, func(ctx context.Context, i int) (time.Duration, error) {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			r, err := env.Ping(ctx, "load-"+strconv.Itoa(i))
			return r.Delivered, err
		})
		loads = append(loads, load{"Handle", r, cpu.Since()})
	}
	if c.bridgeSenders > 0 {
		quiet()
		progress("throughput: %d senders over the CLI bridge for %v", c.bridgeSenders, c.duration)
		cpu := bench.ReadCPU()
		r := bench.Load(ctx, c.bridgeSenders, c.duration, func(ctx context.Context, i int) (time.Duration, error) {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			r, err := env.PingBridge(ctx, "bridge-"+strconv.Itoa(i))
			return r.Delivered, err
		})
		loads = append(loads, load{"CLI bridge", r, cpu.Since()})
	}
	throughputTable(out, c, loads)
	fmt.Fprintf(out, "\nService log lines during the measurements (info level and above): %d.\n", logs.Lines()-startLines)
	return ctx.Err()
}

// bounded gives each operation a generous deadline (a ceiling for a stuck
// run, never a judgement of speed) and pauses gap before it.
func bounded(op func(context.Context) error, gap time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		if gap > 0 {
			time.Sleep(gap)
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return op(ctx)
	}
}

func header(w io.Writer, c config, startup time.Duration, phases []bench.Phase) {
	fmt.Fprintf(w, "## sbbench %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "| | |\n|---|---|\n")
	fmt.Fprintf(w, "| CPU | %s × %d (GOMAXPROCS %d) |\n", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		fmt.Fprintf(w, "| kernel | Linux %s |\n", strings.TrimSpace(string(b)))
	}
	fmt.Fprintf(w, "| Go | %s |\n", runtime.Version())
	fmt.Fprintf(w, "| nats-server (embedded) | %s |\n", server.VERSION)
	fmt.Fprintf(w, "| nats.go | %s |\n", nats.Version)
	fmt.Fprintf(w, "| store | %s (%s) |\n", os.TempDir(), fsType(os.TempDir()))
	tel := "as the binary (spans sampled, not exported; Prometheus metrics)"
	if c.noTelemetry {
		tel = "off (no-op tracer and meter)"
	}
	fmt.Fprintf(w, "| telemetry | %s |\n", tel)
	conn := "loopback TCP, one connection (as the binary)"
	if c.inProcess {
		conn = "in-process (nats.InProcessServer)"
	}
	fmt.Fprintf(w, "| service connection | %s |\n", conn)
	fmt.Fprintf(w, "| samples | %d after %d warm-up, gap %v; load steps of %v |\n", c.n, c.warmup, c.gap, c.duration)
	var ph []string
	for _, p := range phases {
		ph = append(ph, fmt.Sprintf("%s %s", p.Name, dur(p.Took)))
	}
	fmt.Fprintf(w, "| start (server + streams + chat service) | %s: %s |\n", dur(startup), strings.Join(ph, ", "))
}

func latencyTable(w io.Writer, c config, rows []row) {
	fmt.Fprintf(w, "\n### Latency, one sender, same server and connection\n\n")
	fmt.Fprintf(w, "CPU is in cores over the timed samples: this process / every other process on the machine.\n\n")
	fmt.Fprintf(w, "| operation | n | p50 | p90 | p99 | max | mean | CPU self / others |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		cpu := ""
		if r.cpu != (bench.CPUUse{}) {
			cpu = r.cpu.String()
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", r.name, r.s.N, dur(r.s.P50), dur(r.s.P90), dur(r.s.P99), dur(r.s.Max), dur(r.s.Mean), cpu)
	}
}

// load is one throughput step.
type load struct {
	label string
	r     bench.LoadResult
	cpu   bench.CPUUse
}

func throughputTable(w io.Writer, c config, loads []load) {
	fmt.Fprintf(w, "\n### Throughput through the exactly-once path (each sender in its own channel, %v per step)\n\n", c.duration)
	fmt.Fprintf(w, "| entry | senders | commands/s | p50 | p90 | p99 | max | errors | CPU self / others | CPU per command |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, l := range loads {
		per := time.Duration(0)
		if l.r.Done > 0 {
			per = l.cpu.SelfTime / time.Duration(l.r.Done)
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %s | %s | %s | %s | %d | %s | %s |\n", l.label, l.r.Senders, l.r.PerSecond(),
			dur(l.r.Latency.P50), dur(l.r.Latency.P90), dur(l.r.Latency.P99), dur(l.r.Latency.Max), l.r.Errors, l.cpu, dur(per))
	}
	for _, l := range loads {
		if l.r.FirstErr != nil {
			fmt.Fprintf(w, "\nFirst error (%s, %d senders): %v\n", l.label, l.r.Senders, l.r.FirstErr)
		}
	}
	for _, l := range loads {
		if l.label == "Handle" && l.r.Senders == 64 {
			fmt.Fprintf(w, "\nTarget ≥ 2,000 commands/s with 64 senders: %s (%.0f/s); aim 5,000: %s.\n",
				verdict(l.r.PerSecond() >= 2000), l.r.PerSecond(), verdict(l.r.PerSecond() >= 5000))
		}
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// dur prints microseconds below 10 ms and milliseconds above.
func dur(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// fsType finds the file system dir lives on, from /proc/mounts.
func fsType(dir string) string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "unknown file system"
	}
	dir, _ = filepath.Abs(dir)
	best, typ := "", "unknown file system"
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best, typ = mp, f[2]
		}
	}
	return typ
}
