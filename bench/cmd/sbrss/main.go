// Command sbrss measures the all-in-one switchboard binary as an operator
// meets it: how long from exec until it says it is ready, how long until a
// `switchboard say ping` run right after comes back with the pong, and how
// much memory it holds once idle.
//
//	go run ./bench/cmd/sbrss              # from the repository root: 5 runs
//	go run ./bench/cmd/sbrss -runs 1 -idle 1s
//
// It builds ./cmd/switchboard into a temporary directory, then for each run
// starts it with a fresh SB_DATA_DIR, an embedded NATS server on a free
// port, the web console and /metrics on free loopback ports, and stops it
// with SIGTERM at the end. It prints markdown tables.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sbrss: %v\n", err)
		os.Exit(1)
	}
}

// sample is what one start of the binary measured.
type sample struct {
	ready     time.Duration // exec → "switchboard is ready" on stdout
	firstPong time.Duration // exec → the first `say ping` exited 0
	say       time.Duration // that say's own run time (a process of its own)
	sayWarm   time.Duration // a second say, after the idle period
	rssReady  int64         // kB, when ready
	rssIdle   int64         // kB, after the pong and the idle period
	hwm       int64         // kB, peak resident set so far
	stop      time.Duration // SIGTERM → exit
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sbrss", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "", "repository root (default: the nearest directory above with go.work)")
	runs := fs.Int("runs", 5, "how many times to start the binary")
	idle := fs.Duration("idle", 5*time.Second, "idle time before reading the resident set")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *root == "" {
		r, err := findRoot()
		if err != nil {
			return err
		}
		*root = r
	}
	tmp, err := os.MkdirTemp("", "sbrss-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "switchboard")
	fmt.Fprintf(stderr, "sbrss: go build -o %s ./cmd/switchboard (in %s)\n", bin, *root)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/switchboard")
	build.Dir = *root
	build.Stdout, build.Stderr = stderr, stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	info, err := os.Stat(bin)
	if err != nil {
		return err
	}

	var samples []sample
	for i := 0; i < *runs; i++ {
		fmt.Fprintf(stderr, "sbrss: run %d of %d\n", i+1, *runs)
		s, err := once(ctx, bin, filepath.Join(tmp, "data-"+strconv.Itoa(i)), *idle)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		samples = append(samples, s)
	}

	w := bufio.NewWriter(stdout)
	defer w.Flush()
	fmt.Fprintf(w, "## sbrss %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "Binary: `go build -o switchboard ./cmd/switchboard`, %.1f MB. %d runs, %v idle before reading VmRSS.\n\n",
		float64(info.Size())/1e6, *runs, *idle)
	fmt.Fprintf(w, "| measurement | median | max | target |\n|---|---:|---:|---|\n")
	col := func(f func(sample) time.Duration) (time.Duration, time.Duration) {
		var v []time.Duration
		for _, s := range samples {
			v = append(v, f(s))
		}
		slices.Sort(v)
		return v[len(v)/2], v[len(v)-1]
	}
	kb := func(f func(sample) int64) (int64, int64) {
		var v []int64
		for _, s := range samples {
			v = append(v, f(s))
		}
		slices.Sort(v)
		return v[len(v)/2], v[len(v)-1]
	}
	med, mx := col(func(s sample) time.Duration { return s.ready })
	fmt.Fprintf(w, "| exec → \"switchboard is ready\" | %s | %s | ≤ 1 s: %s |\n", ms(med), ms(mx), verdict(mx <= time.Second))
	med, mx = col(func(s sample) time.Duration { return s.firstPong })
	fmt.Fprintf(w, "| exec → first `say ping` answered (pong) | %s | %s | |\n", ms(med), ms(mx))
	med, mx = col(func(s sample) time.Duration { return s.say })
	fmt.Fprintf(w, "| first `say ping`, its own run time | %s | %s | |\n", ms(med), ms(mx))
	med, mx = col(func(s sample) time.Duration { return s.sayWarm })
	fmt.Fprintf(w, "| a later `say ping` (after the idle period) | %s | %s | |\n", ms(med), ms(mx))
	k1, k2 := kb(func(s sample) int64 { return s.rssReady })
	fmt.Fprintf(w, "| VmRSS when ready | %s | %s | |\n", mb(k1), mb(k2))
	k1, k2 = kb(func(s sample) int64 { return s.rssIdle })
	fmt.Fprintf(w, "| **VmRSS idle** (after one ping and %v) | %s | %s | ≤ 80 MB: %s |\n", *idle, mb(k1), mb(k2), verdict(k2*1024 <= 80e6))
	k1, k2 = kb(func(s sample) int64 { return s.hwm })
	fmt.Fprintf(w, "| VmHWM (peak) | %s | %s | |\n", mb(k1), mb(k2))
	med, mx = col(func(s sample) time.Duration { return s.stop })
	fmt.Fprintf(w, "| SIGTERM → exit | %s | %s | |\n", ms(med), ms(mx))
	fmt.Fprintf(w, "\nMB are 10⁶ bytes (VmRSS is reported in KiB).\n")
	return nil
}

// once starts the binary, measures, and stops it.
func once(ctx context.Context, bin, data string, idle time.Duration) (s sample, err error) {
	env := append(os.Environ(),
		"SB_DATA_DIR="+data,
		"SB_EMBEDDED_PORT=-1",
		"SB_CHAT_CONSOLE_ADDR=127.0.0.1:0",
		"SB_METRICS_ADDR=127.0.0.1:0",
	)
	cmd := exec.Command(bin)
	cmd.Env = env
	var logs tail
	cmd.Stderr = &logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		return s, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return s, err
	}
	exited := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "switchboard is ready") {
				signalled = true
				close(ready)
			}
		}
		exited <- cmd.Wait()
	}()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
		if err != nil {
			err = fmt.Errorf("%w\nlast log lines:\n%s", err, logs.String())
		}
	}()
	select {
	case <-ready:
		s.ready = time.Since(t0)
	case err := <-exited:
		return s, fmt.Errorf("switchboard exited before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		return s, errors.New("switchboard not ready after 60s")
	case <-ctx.Done():
		return s, ctx.Err()
	}
	pid := cmd.Process.Pid
	if s.rssReady, err = status(pid, "VmRSS"); err != nil {
		return s, err
	}
	if s.say, err = say(ctx, bin, env); err != nil {
		return s, err
	}
	s.firstPong = time.Since(t0)
	select {
	case <-time.After(idle):
	case <-ctx.Done():
		return s, ctx.Err()
	}
	if s.rssIdle, err = status(pid, "VmRSS"); err != nil {
		return s, err
	}
	if s.hwm, err = status(pid, "VmHWM"); err != nil {
		return s, err
	}
	if s.sayWarm, err = say(ctx, bin, env); err != nil {
		return s, err
	}
	t1 := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		s.stop = time.Since(t1)
		if err != nil {
			return s, fmt.Errorf("switchboard exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		return s, errors.New("switchboard still running 30s after SIGTERM")
	}
	return s, nil
}

// say runs `switchboard say ping` and returns how long it took; it must
// exit 0 having printed the pong.
func say(ctx context.Context, bin string, env []string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, bin, "say", "ping")
	c.Env = env
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	t0 := time.Now()
	err := c.Run()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("say ping: %v: %s", err, out.String())
	}
	if !strings.Contains(out.String(), "pong") {
		return d, fmt.Errorf("say ping answered without a pong: %s", out.String())
	}
	return d, nil
}

// status reads a kB field of /proc/<pid>/status.
func status(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the current directory; give -root")
		}
		dir = parent
	}
}

// tail keeps the last lines written to it, for error messages.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 8192 {
		t.buf = t.buf[len(t.buf)-8192:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func mb(kb int64) string { return fmt.Sprintf("%.1f MB", float64(kb)*1024/1e6) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}
