// Package natstest starts in-process NATS servers for tests: a single
// JetStream server, or a cluster whose nodes can be killed and restarted.
package natstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// options returns quiet loopback JetStream options with the store in dir.
// Logs are shown with SB_TEST_LOG=debug, as nats-server's NATS_LOGGING.
func options(dir string) server.Options {
	o := server.Options{
		Host:                  "127.0.0.1",
		Port:                  -1,
		NoLog:                 os.Getenv("SB_TEST_LOG") != "debug",
		NoSigs:                true,
		JetStream:             true,
		StoreDir:              dir,
		MaxControlLine:        4096,
		DisableShortFirstPing: true,
	}
	if !o.NoLog {
		o.Debug = true
	}
	return o
}

// RunServer starts a JetStream server on a random loopback port with its
// store in t.TempDir(), and shuts it down when the test ends. Use opts to
// change anything else (accounts, limits, a fixed port for restarts).
func RunServer(t testing.TB, opts ...func(*server.Options)) *server.Server {
	t.Helper()
	o := options(t.TempDir())
	for _, fn := range opts {
		fn(&o)
	}
	s := start(t, &o)
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

func start(t testing.TB, o *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("natstest: new server: %v", err)
	}
	if !o.NoLog {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("natstest: server %s not ready in 10s", o.ServerName)
	}
	return s
}

// Node is a single server that a test can restart with the same port and
// store, as a NATS server restart in production would.
type Node struct {
	*server.Server
	t    testing.TB
	opts *server.Options
}

// RunNode starts a restartable JetStream server on a fixed free port.
func RunNode(t testing.TB, opts ...func(*server.Options)) *Node {
	t.Helper()
	o := options(t.TempDir())
	o.Port = freePorts(t, 1)[0]
	for _, fn := range opts {
		fn(&o)
	}
	n := &Node{t: t, opts: &o}
	n.Server = start(t, o.Clone())
	t.Cleanup(func() { n.Stop() })
	return n
}

// Stop shuts the server down (a no-op when stopped).
func (n *Node) Stop() {
	if n.Server != nil {
		n.Server.Shutdown()
		n.Server.WaitForShutdown()
	}
}

// Restart stops the server and starts it again with its store.
func (n *Node) Restart() {
	n.t.Helper()
	n.Stop()
	n.Server = start(n.t, n.opts.Clone())
}

// URL is the client URL, stable across restarts.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

// Connect dials s and closes the connection when the test ends. It
// reconnects forever, as services do.
func Connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	return ConnectURL(t, s.ClientURL(), opts...)
}

// ConnectURL dials url (one or more comma-separated servers).
func ConnectURL(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	base := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		t.Fatalf("natstest: connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on nc.
func JetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return js
}

// Cluster is a JetStream cluster of in-process servers.
type Cluster struct {
	t     testing.TB
	opts  []*server.Options
	nodes []*server.Server
}

// RunCluster starts an n-node JetStream cluster on loopback and waits until
// it has a meta leader. Every node stops when the test ends.
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	clientPorts := freePorts(t, n)
	routePorts := freePorts(t, n)
	routes := ""
	for i, p := range routePorts {
		if i > 0 {
			routes += ","
		}
		routes += fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	for i := 0; i < n; i++ {
		o := options(t.TempDir())
		o.ServerName = fmt.Sprintf("n%d", i+1)
		o.Port = clientPorts[i]
		o.Cluster.Name = "sbtest"
		o.Cluster.Host = "127.0.0.1"
		o.Cluster.Port = routePorts[i]
		o.Routes = server.RoutesFromStr(routes)
		c.opts = append(c.opts, &o)
	}
	c.nodes = make([]*server.Server, n)
	for i, o := range c.opts {
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatalf("natstest: new cluster node %d: %v", i, err)
		}
		if !o.NoLog {
			s.ConfigureLogger()
		}
		go s.Start()
		c.nodes[i] = s
	}
	t.Cleanup(c.shutdown)
	for i, s := range c.nodes {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("natstest: cluster node %d not ready", i)
		}
	}
	c.WaitForMeta()
	return c
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: reserve port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// URL is a client URL listing every node, for clients that fail over.
func (c *Cluster) URL() string {
	u := ""
	for i, o := range c.opts {
		if i > 0 {
			u += ","
		}
		u += fmt.Sprintf("nats://127.0.0.1:%d", o.Port)
	}
	return u
}

// Node returns node i (nil while it is killed).
func (c *Cluster) Node(i int) *server.Server { return c.nodes[i] }

// Kill stops node i abruptly.
func (c *Cluster) Kill(i int) {
	if s := c.nodes[i]; s != nil {
		s.Shutdown()
		s.WaitForShutdown()
		c.nodes[i] = nil
	}
}

// Restart starts node i again with its store, after Kill (or kills it first).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Kill(i)
	s, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		c.t.Fatalf("natstest: restart node %d: %v", i, err)
	}
	if !c.opts[i].NoLog {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		c.t.Fatalf("natstest: restarted node %d not ready", i)
	}
	c.nodes[i] = s
}

// WaitForMeta waits until the cluster has a JetStream meta leader that sees
// every running node online: before that, creating an R3 stream can fail
// with "no suitable peers for placement".
func (c *Cluster) WaitForMeta() {
	c.t.Helper()
	running := 0
	for _, s := range c.nodes {
		if s != nil {
			running++
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range c.nodes {
			if s != nil && s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) >= running {
				return
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	c.t.Fatalf("natstest: no JetStream meta leader seeing %d nodes online in 20s", running)
}

func (c *Cluster) shutdown() {
	for i := range c.nodes {
		c.Kill(i)
	}
}

// WaitFor polls f every step until it returns nil or total passes, then
// fails the test with f's last error. It is for waiting on eventual state,
// never for asserting how fast something happens.
func WaitFor(t testing.TB, total, step time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: still failing after %v: %v", total, err)
		}
		time.Sleep(step)
	}
}

// Context returns a context that ends with the test (or after d).
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
