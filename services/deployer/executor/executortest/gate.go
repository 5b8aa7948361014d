package executortest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/deployer/executor"
)

// gateArg is the first argument that makes a test binary a gate client.
const gateArg = "executortest-gate"

// GateMain makes the test binary a host run of a Gate when it was started
// as one (by GateCommand), and returns at once otherwise. Call it first in
// TestMain of a package whose tests use ParallelLimit:
//
//	func TestMain(m *testing.M) { executortest.GateMain(); os.Exit(m.Run()) }
func GateMain() {
	if len(os.Args) != 4 || os.Args[1] != gateArg {
		return
	}
	addr, host := os.Args[2], os.Args[3]
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gate %s: %v\n", addr, err)
		os.Exit(3)
	}
	fmt.Fprintf(c, "%s\n", host)
	// The gate answers when this run may end; a closed gate ends it too.
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "go\n" {
		fmt.Fprintf(os.Stderr, "gate %s closed before %s could end: %v\n", addr, host, err)
		os.Exit(3)
	}
	fmt.Printf("hello from %s\n", host)
	os.Exit(0)
}

// gate counts the host runs going on at once. Each run checks in over TCP
// and waits for the gate's word to end. The gate lets the oldest run end
// only when as many runs are waiting as the limit allows (or as many as
// are left) and a moment has passed for a run beyond the limit to show
// up. So an executor that keeps to its limit is seen at exactly the limit
// however slow the machine, and one that starts runs beyond it is seen
// above it. A run released is no longer counted though its process still
// has to exit, so the count is never above the executor's real one.
type gate struct {
	l            net.Listener
	hosts, limit int
	changed      chan struct{}
	done         chan struct{}
	wg           sync.WaitGroup

	mu       sync.Mutex
	held     []net.Conn
	released int
	max      int
}

// settle is how long the gate waits, once the limit is reached, before it
// lets a run end: time for a run started beyond the limit to check in.
const settle = 100 * time.Millisecond

func newGate(t *testing.T, hosts, limit int) *gate {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{l: l, hosts: hosts, limit: limit, changed: make(chan struct{}, 1), done: make(chan struct{})}
	g.wg.Add(2)
	go g.accept()
	go g.release()
	t.Cleanup(g.close)
	return g
}

func (g *gate) accept() {
	defer g.wg.Done()
	for {
		c, err := g.l.Accept()
		if err != nil {
			return
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
				c.Close()
				return
			}
			g.mu.Lock()
			g.held = append(g.held, c)
			g.max = max(g.max, len(g.held))
			g.mu.Unlock()
			select {
			case g.changed <- struct{}{}:
			default:
			}
		}()
	}
}

// release lets the oldest run end whenever every run that may run is running.
func (g *gate) release() {
	defer g.wg.Done()
	full := func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.held) > 0 && len(g.held) >= min(g.limit, g.hosts-g.released)
	}
	for {
		select {
		case <-g.done:
			return
		case <-g.changed:
		}
		for full() {
			select {
			case <-g.done:
				return
			case <-time.After(settle):
			}
			g.mu.Lock()
			first := g.held[0]
			g.held = g.held[1:]
			g.released++
			g.mu.Unlock()
			first.Write([]byte("go\n"))
			first.Close()
		}
	}
}

func (g *gate) most() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.max
}

func (g *gate) close() {
	close(g.done)
	g.l.Close()
	g.mu.Lock()
	for _, c := range g.held {
		c.Close()
	}
	g.held = nil
	g.mu.Unlock()
	g.wg.Wait()
}

func (g *gate) command() []string {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	return []string{self, gateArg, g.l.Addr().String(), "{host}"}
}

// ParallelLimit checks that an executor runs at most its parallelism limit
// of hosts at once, and that it does run that many. newExec makes the
// executor with command as its argv template (a run of this test binary,
// which must call GateMain in TestMain) and parallel as its limit.
func ParallelLimit(t *testing.T, parallel int, newExec func(t *testing.T, command []string, parallel int) executor.Executor) {
	t.Helper()
	hosts := 3*parallel + 1
	g := newGate(t, hosts, parallel)
	ex := newExec(t, g.command(), parallel)
	names := make([]string, hosts)
	for i := range names {
		names[i] = fmt.Sprintf("ok-%d", i+1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := map[string]executor.Result{}
	for r := range ex.Run(ctx, targets(names...), executor.Action{}) {
		got[r.Host] = r
	}
	if ctx.Err() != nil {
		t.Fatalf("the runs never ended: at most %d ran at once, and the gate lets one end only when %d run (or all that are left)", g.most(), parallel)
	}
	for _, n := range names {
		if r := got[n]; r.Status != executor.OK || !strings.Contains(r.Output, "hello from "+n) {
			t.Errorf("%s: %s (%s) %q, want ok", n, r.Status, r.Detail, r.Output)
		}
	}
	if m := g.most(); m != parallel {
		t.Fatalf("%d hosts ran at once, want at most (and, with %d hosts, exactly) parallel=%d", m, hosts, parallel)
	}
}
