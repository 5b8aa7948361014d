// Package graphitetest runs a real Graphite for tests: Debian's carbon-cache
// (plaintext protocol on loopback, whisper files in a temporary directory,
// 10s/1m retention) and graphite-web's render API served by Python's wsgiref
// around graphite's own WSGI application, with a settings module that points
// every path at the temporary directory. No Apache, no system paths.
//
// It needs Debian's graphite-carbon and graphite-web packages (installed by
// scripts/test.sh). Without them a test fails when the CI environment
// variable is set and is skipped, loudly, otherwise.
//
// It imports nothing from switchboard.
package graphitetest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StorageSchemas is the storage-schemas.conf every instance gets: 10-second
// points for a day, then minutes for a week.
const StorageSchemas = `[default]
pattern = .*
retentions = 10s:1d,1m:7d
`

// Step is the finest resolution of StorageSchemas.
const Step = 10 * time.Second

// Graphite is a running carbon-cache and graphite-web.
type Graphite struct {
	t      testing.TB
	dir    string
	python string
	carbon string

	// URL of graphite-web ("http://127.0.0.1:port"); stable across Stop/Start.
	URL string
	// Plaintext is carbon's plaintext-protocol address; stable across Stop/Start.
	Plaintext string

	webPort, linePort, picklePort, queryPort int

	mu      sync.Mutex
	running []*proc
}

// proc is a started process and the channel closed when it exits.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// Binaries returns carbon-cache's path and the Python interpreter it runs
// under (the one that has graphite-web's modules), or an error saying
// what is missing.
func Binaries() (carbon, python string, err error) {
	carbon, err = exec.LookPath("carbon-cache")
	if err != nil {
		return "", "", errors.New("carbon-cache not found (apt-get install graphite-carbon graphite-web)")
	}
	// The interpreter in carbon-cache's shebang is the system Python with
	// Debian's python3-django and graphite modules, whatever python3 is
	// first on PATH (a pyenv shim, for example).
	f, err := os.Open(carbon)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	python = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#!"))
	if fields := strings.Fields(python); len(fields) > 0 {
		python = fields[0]
	}
	if python == "" || strings.HasSuffix(python, "env") {
		python = "/usr/bin/python3"
	}
	if out, err := exec.Command(python, "-c", "import graphite.settings, django, whisper").CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("graphite-web is not importable by %s (apt-get install graphite-web): %s", python, lastLine(out))
	}
	return carbon, python, nil
}

// Require returns the binaries or ends the test: a failure in CI, a loud
// skip elsewhere.
func Require(t testing.TB) (carbon, python string) {
	t.Helper()
	carbon, python, err := Binaries()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("graphitetest: %v", err)
		}
		t.Skipf("SKIPPED — NO REAL GRAPHITE: %v; this integration test did not run", err)
	}
	return carbon, python
}

// Start runs carbon-cache and graphite-web in t.TempDir() and stops them
// when the test ends.
func Start(t testing.TB) *Graphite {
	t.Helper()
	carbon, python := Require(t)
	g := &Graphite{t: t, dir: t.TempDir(), python: python, carbon: carbon}
	ports := freePorts(t, 4)
	g.webPort, g.linePort, g.picklePort, g.queryPort = ports[0], ports[1], ports[2], ports[3]
	g.URL = fmt.Sprintf("http://127.0.0.1:%d", g.webPort)
	g.Plaintext = fmt.Sprintf("127.0.0.1:%d", g.linePort)
	if err := g.writeConfig(); err != nil {
		t.Fatalf("graphitetest: %v", err)
	}
	t.Cleanup(g.Stop)
	g.Start()
	return g
}

// Dir is the instance's directory (whisper files under storage/whisper).
func (g *Graphite) Dir() string { return g.dir }

func (g *Graphite) writeConfig() error {
	for _, d := range []string{"conf", "storage/whisper", "storage/lists", "log/carbon", "log/webapp", "run"} {
		if err := os.MkdirAll(filepath.Join(g.dir, d), 0o755); err != nil {
			return err
		}
	}
	p := func(s string) string { return filepath.Join(g.dir, s) }
	carbonConf := fmt.Sprintf(`[cache]
STORAGE_DIR = %s/
LOCAL_DATA_DIR = %s/
WHITELISTS_DIR = %s/
CONF_DIR = %s/
LOG_DIR = %s/
PID_DIR = %s/
DATABASE = whisper
ENABLE_LOGROTATION = False
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = inf
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = %d
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = %d
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = %d
USE_FLOW_CONTROL = True
CACHE_WRITE_STRATEGY = sorted
WHISPER_AUTOFLUSH = False
WHISPER_FALLOCATE_CREATE = False
LOG_UPDATES = False
LOG_CREATES = False
`, p("storage"), p("storage/whisper"), p("storage/lists"), p("conf"), p("log/carbon"), p("run"), g.linePort, g.picklePort, g.queryPort)
	// graphite.settings imports the module named by GRAPHITE_SETTINGS_MODULE
	// over its defaults; everything it would write goes to the temp dir.
	settings := fmt.Sprintf(`SECRET_KEY = 'graphitetest-not-secret'
STORAGE_DIR = %q
WHISPER_DIR = %q
LOG_DIR = %q
INDEX_FILE = %q
CARBONLINK_HOSTS = ['127.0.0.1:%d']
CARBONLINK_TIMEOUT = 2.0
DATABASES = {'default': {'NAME': %q, 'ENGINE': 'django.db.backends.sqlite3'}}
TAGDB = ''
USE_WORKER_POOL = False
DEFAULT_XFILES_FACTOR = 0
`, p("storage"), p("storage/whisper"), p("log/webapp"), p("storage/index"), g.queryPort, p("storage/graphite.db"))
	// A threaded wsgiref server around graphite's WSGI application: all
	// graphite-web needs for the render API, without Apache.
	serve := `import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ['DJANGO_SETTINGS_MODULE'] = 'graphite.settings'
os.environ['GRAPHITE_SETTINGS_MODULE'] = 'graphitetest_settings'
from django.core.wsgi import get_wsgi_application
from wsgiref.simple_server import make_server, WSGIServer, WSGIRequestHandler
from socketserver import ThreadingMixIn
application = get_wsgi_application()
class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
srv = make_server('127.0.0.1', int(sys.argv[1]), application, server_class=Server, handler_class=Quiet)
print('graphite-web listening on', srv.server_port, flush=True)
srv.serve_forever()
`
	files := map[string]string{
		"conf/carbon.conf":             carbonConf,
		"conf/storage-schemas.conf":    StorageSchemas,
		"web/graphitetest_settings.py": settings,
		"web/serve.py":                 serve,
	}
	for name, body := range files {
		if err := os.MkdirAll(filepath.Dir(p(name)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p(name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Start starts carbon-cache and graphite-web (after Stop) on the same
// ports and storage, and waits until both answer.
func (g *Graphite) Start() {
	g.t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.running) > 0 {
		return
	}
	carbon := g.spawn("carbon", g.python, g.carbon, "--config="+filepath.Join(g.dir, "conf/carbon.conf"),
		"--pidfile="+filepath.Join(g.dir, "run/carbon.pid"), "--logdir="+filepath.Join(g.dir, "log/carbon"), "--nodaemon", "start")
	web := g.spawn("web", g.python, filepath.Join(g.dir, "web/serve.py"), fmt.Sprint(g.webPort))
	g.running = []*proc{carbon, web}
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := g.ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			g.stopLocked()
			g.t.Fatalf("graphitetest: graphite did not start within 60s: %v\ncarbon log:\n%s\nweb log:\n%s", err,
				tail(filepath.Join(g.dir, "log/carbon.out")), tail(filepath.Join(g.dir, "log/web.out")))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (g *Graphite) spawn(name string, argv ...string) *proc {
	g.t.Helper()
	out, err := os.OpenFile(filepath.Join(g.dir, "log", name+".out"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		g.t.Fatalf("graphitetest: %v", err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = g.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "PYTHONWARNINGS=ignore")
	// Own process group, so Stop ends twistd's and wsgiref's threads and
	// children together.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		g.t.Fatalf("graphitetest: start %s: %v", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); out.Close(); close(p.done) }()
	return p
}

// ready checks carbon's plaintext port and a render request.
func (g *Graphite) ready() error {
	c, err := net.DialTimeout("tcp", g.Plaintext, time.Second)
	if err != nil {
		return fmt.Errorf("carbon: %w", err)
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/render?target=graphitetest.ready&format=json&from=-1min", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("graphite-web: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("graphite-web: HTTP %d", resp.StatusCode)
	}
	return nil
}

// Stop stops graphite-web and carbon-cache (the whisper files stay). A
// render request then fails to connect, as when Graphite is down.
func (g *Graphite) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopLocked()
}

// StopWeb stops only graphite-web: carbon keeps receiving.
func (g *Graphite) StopWeb() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.running) == 2 {
		kill(g.running[1])
		g.running = g.running[:1]
	}
}

func (g *Graphite) stopLocked() {
	for _, c := range g.running {
		kill(c)
	}
	g.running = nil
}

// kill ends a process group: SIGTERM, then SIGKILL after 5s.
func kill(p *proc) {
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	}
	// Threads of wsgiref or twistd that outlived the leader.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// Point is one datapoint to feed.
type Point struct {
	Metric string
	Value  float64
	Time   time.Time
}

// Send feeds points to carbon over the plaintext protocol
// ("<metric> <value> <unix time>\n").
func (g *Graphite) Send(points ...Point) error {
	c, err := net.DialTimeout("tcp", g.Plaintext, 5*time.Second)
	if err != nil {
		return fmt.Errorf("graphitetest: dial carbon: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	w := bufio.NewWriter(c)
	for _, p := range points {
		fmt.Fprintf(w, "%s %g %d\n", p.Metric, p.Value, p.Time.Unix())
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("graphitetest: send to carbon: %w", err)
	}
	return nil
}

// WaitFor polls graphite-web until target has a non-null value at or after
// since (carbon's cache answers through carbonlink once it has the point).
func (g *Graphite) WaitFor(target string, since time.Time, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ok, err := g.has(target, since)
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("graphitetest: %s has no value since %s after %v (last error: %v)", target, since.Format(time.TimeOnly), within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (g *Graphite) has(target string, since time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u := fmt.Sprintf("%s/render?format=json&from=%d&until=now&target=%s", g.URL, since.Unix()-1, target)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var series []struct {
		Datapoints [][2]*float64 `json:"datapoints"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&series); err != nil {
		return false, err
	}
	for _, s := range series {
		for _, p := range s.Datapoints {
			if p[0] != nil {
				return true, nil
			}
		}
	}
	return false, nil
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("graphitetest: free port: %v", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
