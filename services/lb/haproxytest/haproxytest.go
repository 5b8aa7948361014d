// Package haproxytest runs real HAProxy processes and real HTTP backends on
// loopback for tests: a generated configuration in a temporary directory,
// an admin socket ("stats socket … level admin"), a server-state-file, a map
// file for rate limits, and helpers to stop, start, restart and reload.
//
// It needs the haproxy binary (Debian's package, installed by
// scripts/test.sh). Without it a test fails when the CI environment
// variable is set and is skipped, loudly, otherwise.
//
// It imports nothing from switchboard, so every service's tests can use it.
package haproxytest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Binary returns the path of the haproxy binary, or ends the test: failed
// in CI, skipped elsewhere.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/haproxy", "/usr/local/sbin/haproxy"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("haproxy is not installed: CI must install Debian's haproxy (scripts/test.sh does)")
	}
	t.Skip("SKIPPING: haproxy is not installed; `apt-get install haproxy` to run this test against a real HAProxy")
	return ""
}

// HTTPServer is a real HTTP backend on loopback. It answers every request
// with its name after Delay, and counts requests.
type HTTPServer struct {
	Name string
	Addr string
	// Delay before each answer: keeps sessions open so a drain has
	// something to wait for.
	Delay  time.Duration
	served atomic.Int64
	active atomic.Int64
	srv    *http.Server

	mu      sync.Mutex
	held    chan struct{} // closed by Release; nil when not holding
	holding atomic.Int64
}

// Hold makes the server keep every request that arrives from now on open
// (health checks excepted) until Release: sessions that end only when the
// test says so, where a delay would race with a slow machine.
func (h *HTTPServer) Hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held == nil {
		h.held = make(chan struct{})
	}
}

// Release answers the requests Hold kept open, and the later ones at once.
func (h *HTTPServer) Release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held != nil {
		close(h.held)
		h.held = nil
	}
}

// Holding is the number of requests Hold keeps open now.
func (h *HTTPServer) Holding() int64 { return h.holding.Load() }

func (h *HTTPServer) gate() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// Served is the number of requests answered so far.
func (h *HTTPServer) Served() int64 { return h.served.Load() }

// Active is the number of requests being answered now.
func (h *HTTPServer) Active() int64 { return h.active.Load() }

// StartHTTP starts one HTTP backend per name; each stops when the test ends.
func StartHTTP(t testing.TB, delay time.Duration, names ...string) map[string]*HTTPServer {
	t.Helper()
	out := map[string]*HTTPServer{}
	for _, name := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen for backend %s: %v", name, err)
		}
		h := &HTTPServer{Name: name, Addr: ln.Addr().String(), Delay: delay}
		h.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.active.Add(1)
			defer h.active.Add(-1)
			if r.URL.Path != "/health" && h.Delay > 0 {
				time.Sleep(h.Delay)
			}
			if g := h.gate(); g != nil && r.URL.Path != "/health" {
				h.holding.Add(1)
				select {
				case <-g:
				case <-r.Context().Done():
				}
				h.holding.Add(-1)
			}
			if r.URL.Path != "/health" {
				h.served.Add(1)
			}
			fmt.Fprintln(w, h.Name)
		})}
		go h.srv.Serve(ln)
		t.Cleanup(func() { h.srv.Close() })
		// Runs before Close (cleanups are last in, first out), so held
		// requests end with an answer.
		t.Cleanup(h.Release)
		out[name] = h
	}
	return out
}

// Server is one server line of a backend; Name is the inventory host name.
type Server struct {
	Name string
	Addr string // host:port
	// Weight from the configuration (0: HAProxy's default, 1).
	Weight int
}

// Backend is one backend of the generated configuration.
type Backend struct {
	Name    string
	Servers []Server
	// Check turns on HTTP health checks (GET /health every 200ms).
	Check bool
}

// Config describes an instance.
type Config struct {
	Backends []Backend
	// Map is the initial content of the rate-limit map file.
	Map map[string]string
	// Level of the admin socket: "admin" when empty. "operator" or "user"
	// make HAProxy refuse changes, for error tests.
	Level string
	// TCP adds a second admin socket on a loopback TCP port.
	TCP bool
	// MapFile, when set, is the map file's path (instances sharing one
	// file, as on one machine); it is written from Map only if it does not
	// exist yet.
	MapFile string
}

// Instance is a running HAProxy (master-worker mode, in the foreground).
type Instance struct {
	t   testing.TB
	bin string
	cfg Config
	dir string
	// ConfigFile, Socket, StateFile and MapFile are paths in the
	// instance's directory.
	ConfigFile string
	Socket     string
	StateFile  string
	MapFile    string
	// TCPAddr is the TCP admin socket (Config.TCP).
	TCPAddr string
	// URL of the frontend, which routes to the first backend (and to any
	// backend named by the X-Backend request header).
	URL string

	masterSocket string

	mu       sync.Mutex
	logStart int // where the current master's output starts in logs
	loads    int // starts and reloads of the current master
	cmd      *exec.Cmd
	done     chan struct{}
	logs     bytes.Buffer
}

// Start writes the configuration and starts HAProxy; it stops when the
// test ends.
func Start(t testing.TB, cfg Config) *Instance {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	// A unix socket path must fit in 108 bytes; test names can make
	// t.TempDir() longer than that.
	sockDir := dir
	if len(filepath.Join(dir, "admin.sock")) > 100 {
		d, err := os.MkdirTemp("", "hap")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		sockDir = d
	}
	if cfg.Level == "" {
		cfg.Level = "admin"
	}
	in := &Instance{t: t, bin: bin, cfg: cfg, dir: dir,
		ConfigFile:   filepath.Join(dir, "haproxy.cfg"),
		Socket:       filepath.Join(sockDir, "admin.sock"),
		masterSocket: filepath.Join(sockDir, "master.sock"),
		StateFile:    filepath.Join(dir, "server-state"),
		MapFile:      filepath.Join(dir, "ratelimit.map"),
		URL:          "http://" + freeAddr(t),
	}
	if cfg.TCP {
		in.TCPAddr = freeAddr(t)
	}
	var m strings.Builder
	keys := make([]string, 0, len(cfg.Map))
	for k := range cfg.Map {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&m, "%s %s\n", k, cfg.Map[k])
	}
	if cfg.MapFile != "" {
		in.MapFile = cfg.MapFile
	}
	if _, err := os.Stat(in.MapFile); err != nil {
		must(t, os.WriteFile(in.MapFile, []byte(m.String()), 0o644))
	}
	must(t, os.WriteFile(in.StateFile, nil, 0o644))
	must(t, os.WriteFile(in.ConfigFile, []byte(in.config()), 0o644))
	t.Cleanup(func() {
		in.Stop()
		if t.Failed() {
			t.Logf("haproxy %s output:\n%s", in.Socket, in.Logs())
		}
	})
	in.Start()
	return in
}

func (in *Instance) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    stats socket %s mode 600 level %s
`, in.Socket, in.cfg.Level)
	if in.TCPAddr != "" {
		fmt.Fprintf(&b, "    stats socket ipv4@%s level %s\n", in.TCPAddr, in.cfg.Level)
	}
	fmt.Fprintf(&b, `    server-state-file %s
    stats timeout 30s

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file global

frontend fe
    bind %s
    http-request set-var(txn.ratelimit) req.hdr(x-client),map(%s,0)
    http-response set-header X-Rate-Limit %%[var(txn.ratelimit)]
`, in.StateFile, strings.TrimPrefix(in.URL, "http://"), in.MapFile)
	for i, be := range in.cfg.Backends {
		if i == 0 {
			fmt.Fprintf(&b, "    default_backend %s\n", be.Name)
		}
		fmt.Fprintf(&b, "    use_backend %s if { req.hdr(x-backend) -m str %s }\n", be.Name, be.Name)
	}
	for _, be := range in.cfg.Backends {
		fmt.Fprintf(&b, "\nbackend %s\n    balance roundrobin\n", be.Name)
		if be.Check {
			b.WriteString("    option httpchk GET /health\n")
		}
		for _, s := range be.Servers {
			fmt.Fprintf(&b, "    server %s %s", s.Name, s.Addr)
			if s.Weight > 0 {
				fmt.Fprintf(&b, " weight %d", s.Weight)
			}
			if be.Check {
				b.WriteString(" check inter 200ms rise 1 fall 2")
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Address is the admin socket as lb's configuration names it.
func (in *Instance) Address() string { return "unix:" + in.Socket }

// Start starts the instance if it is stopped and waits until its admin
// socket answers.
func (in *Instance) Start() {
	in.t.Helper()
	in.mu.Lock()
	if in.cmd != nil {
		in.mu.Unlock()
		return
	}
	cmd := exec.Command(in.bin, "-W", "-db", "-S", in.masterSocket, "-f", in.ConfigFile)
	cmd.Dir = in.dir
	cmd.Stdout = &lockedWriter{mu: &in.mu, w: &in.logs}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		in.mu.Unlock()
		in.t.Fatalf("start haproxy: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	in.logStart, in.loads = in.logs.Len(), 1
	in.cmd, in.done = cmd, done
	in.mu.Unlock()
	in.waitPid(func(int) bool { return true })
	in.waitMaster()
}

// waitMaster waits until the master has logged that loading succeeded as
// often as it has been started or reloaded: before that, it loses a SIGUSR2
// (found with 2.6: a reload sent at once after start re-executes the master
// but never forks the new worker).
func (in *Instance) waitMaster() {
	in.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		in.mu.Lock()
		n, want := strings.Count(in.logs.String()[in.logStart:], "Loading success."), in.loads
		in.mu.Unlock()
		if n >= want {
			time.Sleep(50 * time.Millisecond)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	in.t.Fatalf("haproxy master did not report loading success within 10s:\n%s", in.Logs())
}

// Stop stops the instance (SIGTERM to the master, then SIGKILL after 5s).
func (in *Instance) Stop() {
	in.mu.Lock()
	cmd, done := in.cmd, in.done
	in.cmd = nil
	in.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	os.Remove(in.Socket)
}

// Restart stops and starts the instance: a new process that knows only
// its configuration files (and the server-state-file if SaveState ran).
func (in *Instance) Restart() {
	in.t.Helper()
	in.Stop()
	in.Start()
}

// Reload asks the master for a new worker (the master CLI's "reload"; what
// "systemctl reload haproxy" does with SIGUSR2) and waits until the new
// worker answers. Runtime changes survive only through the
// server-state-file: call SaveState first to reload the way a careful
// operator does.
func (in *Instance) Reload() {
	in.t.Helper()
	old := in.Pid()
	in.mu.Lock()
	cmd := in.cmd
	in.mu.Unlock()
	if cmd == nil {
		in.t.Fatal("reload of a stopped haproxy")
	}
	in.mu.Lock()
	in.loads++
	in.mu.Unlock()
	// Through the master CLI rather than SIGUSR2: the master answers on
	// it only once it is ready to reload, whereas a signal sent soon after
	// start is lost (seen with 2.6: the master re-executes and never forks
	// the new worker).
	// The master re-creates its socket on every reload: wait for it.
	var err error
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, err = query(in.masterSocket, "reload"); err == nil {
			break
		}
	}
	if err != nil {
		in.t.Fatalf("reload haproxy through the master CLI: %v", err)
	}
	in.waitPid(func(pid int) bool { return pid != old })
	in.waitMaster()
}

// SaveState writes "show servers state" to the server-state-file.
func (in *Instance) SaveState() {
	in.t.Helper()
	out := in.Query("show servers state")
	must(in.t, os.WriteFile(in.StateFile, []byte(out+"\n"), 0o644))
}

// Pid is the worker's pid as "show info" reports it.
func (in *Instance) Pid() int {
	in.t.Helper()
	for _, line := range strings.Split(in.Query("show info"), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid: "); ok {
			pid, _ := strconv.Atoi(v)
			return pid
		}
	}
	in.t.Fatal("show info: no Pid")
	return 0
}

// Query runs one command on the admin socket and returns the raw reply.
func (in *Instance) Query(cmd string) string {
	in.t.Helper()
	out, err := query(in.Socket, cmd)
	if err != nil {
		in.t.Fatalf("haproxy %s: %s: %v", in.Socket, cmd, err)
	}
	return out
}

// State returns the admin state ("ready", "drain", "maint") and user
// weight of a server, read from "show servers state".
func (in *Instance) State(backend, server string) (state string, weight int) {
	in.t.Helper()
	out := in.Query("show servers state " + backend)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 7 && f[1] == backend && f[3] == server {
			flags, _ := strconv.Atoi(f[6])
			weight, _ = strconv.Atoi(f[7])
			switch {
			case flags&0x67 != 0:
				return "maint", weight
			case flags&0x18 != 0:
				return "drain", weight
			}
			return "ready", weight
		}
	}
	in.t.Fatalf("server %s/%s not found in:\n%s", backend, server, out)
	return "", 0
}

// MapValue returns the value of key in the rate-limit map ("" when absent).
func (in *Instance) MapValue(key string) string {
	in.t.Helper()
	for _, line := range strings.Split(in.Query("show map "+in.MapFile), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[1] == key {
			return f[2]
		}
	}
	return ""
}

// Logs is what HAProxy printed so far.
func (in *Instance) Logs() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.logs.String()
}

func (in *Instance) waitPid(ok func(int) bool) {
	in.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		in.mu.Lock()
		done := in.done
		in.mu.Unlock()
		select {
		case <-done:
			in.t.Fatalf("haproxy exited:\n%s", in.Logs())
		default:
		}
		out, err := query(in.Socket, "show info")
		if err == nil {
			for _, line := range strings.Split(out, "\n") {
				if v, found := strings.CutPrefix(line, "Pid: "); found {
					if pid, _ := strconv.Atoi(v); pid != 0 && ok(pid) {
						return
					}
				}
			}
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	in.t.Fatalf("haproxy did not answer on %s within 10s (last error %v):\n%s", in.Socket, last, in.Logs())
}

// query runs one command in non-interactive mode.
func query(socket, cmd string) (string, error) {
	conn, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	return strings.TrimRight(string(b), "\n"), err
}

// Traffic sends requests through an instance's frontend from several
// clients until Stop, and counts failures.
type Traffic struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	by         map[string]int64
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// StartTraffic starts n clients sending GET / to url in a loop.
func StartTraffic(url string, n int) *Traffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &Traffic{cancel: cancel, by: map[string]int64{}}
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < n; i++ {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for ctx.Err() == nil {
				resp, err := client.Get(url)
				if err != nil {
					tr.fail(err.Error())
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					tr.fail(fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body))))
					continue
				}
				tr.ok.Add(1)
				tr.mu.Lock()
				tr.by[strings.TrimSpace(string(body))]++
				tr.mu.Unlock()
			}
		}()
	}
	return tr
}

func (tr *Traffic) fail(msg string) {
	tr.failed.Add(1)
	tr.mu.Lock()
	if len(tr.errs) < 10 {
		tr.errs = append(tr.errs, msg)
	}
	tr.mu.Unlock()
}

// Served returns how many requests each backend server answered so far.
func (tr *Traffic) Served() map[string]int64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := make(map[string]int64, len(tr.by))
	for k, v := range tr.by {
		out[k] = v
	}
	return out
}

// Stop ends the traffic and returns the counts and the first errors.
func (tr *Traffic) Stop() (ok, failed int64, errs []string) {
	tr.cancel()
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.ok.Load(), tr.failed.Load(), tr.errs
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
