package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
	"github.com/switchboard-ops/switchboard/services/lb/haproxytest"
)

// These tests run deploy/nats as it ships: three nats-server processes
// (built from the nats-server module this repository pins) with
// deploy/nats/node.conf and accounts.conf, TLS, and the nkey users that
// `switchboard nkeys` generates.

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// binaries builds nats-server and switchboard once per test process.
func binaries(t testing.TB) (natsServer, switchboard string) {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "sb-cluster-bin-")
		if binErr != nil {
			return
		}
		for _, b := range []struct{ out, pkg string }{
			{"nats-server", "github.com/nats-io/nats-server/v2"},
			{"switchboard", "."},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.out), b.pkg)
			if out, err := cmd.CombinedOutput(); err != nil {
				binErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "nats-server"), filepath.Join(binDir, "switchboard")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// natsCluster is three nats-server processes run from deploy/nats.
type natsCluster struct {
	t       testing.TB
	bin     string
	dir     string
	ca      string
	clients [3]string
	envs    [3][]string
	procs   [3]*exec.Cmd
	logs    [3]*syncBuffer
}

func startNATSCluster(t testing.TB) *natsCluster { return startNATSClusterWith(t, nil) }

// startNATSClusterWith lets a benchmark change node.conf (edit) to compare.
func startNATSClusterWith(t testing.TB, edit func(string) string) *natsCluster {
	t.Helper()
	bin, _ := binaries(t)
	dir := t.TempDir()
	for _, f := range []string{"node.conf", "accounts.conf"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "node.conf" && edit != nil {
			b = []byte(edit(string(b)))
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := nkeysCmd([]string{"--out", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	ca := writeCerts(t, dir)
	// A port that freeAddr handed out can be taken by another test process
	// before the node binds it, and then the cluster never forms: start
	// again on fresh ports, once.
	for attempt := 1; ; attempt++ {
		c := &natsCluster{t: t, bin: bin, dir: dir, ca: ca}
		err := c.startNodes(filepath.Join(dir, fmt.Sprintf("attempt-%d", attempt)))
		if err == nil {
			return c
		}
		logs := ""
		for i := range 3 {
			logs += fmt.Sprintf("nats-%d:\n%s\n", i+1, c.logs[i])
			c.kill(i)
		}
		if attempt == 2 {
			t.Fatalf("the NATS cluster did not form: %v\n%s", err, logs)
		}
		t.Logf("the NATS cluster did not form (%v); starting it again on other ports:\n%s", err, logs)
	}
}

// startNodes starts the three nodes with their stores under storeDir and
// waits until JetStream answers through the cluster with a meta leader.
func (c *natsCluster) startNodes(storeDir string) error {
	t := c.t
	var routes [3]string
	var clusterAddrs [3]string
	for i := range 3 {
		c.clients[i] = freeAddr(t)
		clusterAddrs[i] = freeAddr(t)
		routes[i] = "nats-route://" + clusterAddrs[i]
	}
	for i := range 3 {
		c.envs[i] = []string{
			"SB_NATS_NAME=nats-" + fmt.Sprint(i+1),
			"SB_NATS_LISTEN=" + c.clients[i],
			"SB_NATS_HTTP=" + freeAddr(t),
			"SB_NATS_CLUSTER_LISTEN=" + clusterAddrs[i],
			"SB_NATS_ROUTE_1=" + routes[0], "SB_NATS_ROUTE_2=" + routes[1], "SB_NATS_ROUTE_3=" + routes[2],
			"SB_NATS_STORE=" + filepath.Join(storeDir, fmt.Sprintf("store-%d", i+1)),
			"SB_NATS_TLS_CA=" + c.ca,
			"SB_NATS_TLS_CERT=" + filepath.Join(c.dir, "server.pem"),
			"SB_NATS_TLS_KEY=" + filepath.Join(c.dir, "server-key.pem"),
		}
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range 3 {
			c.kill(i)
		}
	})
	seed, err := nats.NkeyOptionFromSeed(c.creds("admin"))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		err := func() error {
			nc, err := nats.Connect(c.url(), seed, nats.RootCAs(c.ca))
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err = js.AccountInfo(ctx)
			return err
		}()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *natsCluster) start(i int) {
	c.logs[i] = &syncBuffer{}
	cmd := exec.Command(c.bin, "-c", filepath.Join(c.dir, "node.conf"))
	cmd.Env = append(os.Environ(), c.envs[i]...)
	cmd.Stdout, cmd.Stderr = c.logs[i], c.logs[i]
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.procs[i] = cmd
}

// kill stops node i with SIGKILL, as a power cut would.
func (c *natsCluster) kill(i int) {
	if p := c.procs[i]; p != nil {
		p.Process.Signal(syscall.SIGKILL)
		p.Wait()
		c.procs[i] = nil
	}
}

func (c *natsCluster) url() string {
	return "nats://" + strings.Join(c.clients[:], ",nats://")
}

func (c *natsCluster) creds(user string) string { return filepath.Join(c.dir, user+".nk") }

// connect connects as one of the users of accounts.conf, recording
// asynchronous errors (permission violations) in errs.
func (c *natsCluster) connect(user string) *nats.Conn {
	nc, _ := c.connectErrs(user)
	return nc
}

func (c *natsCluster) connectErrs(user string) (*nats.Conn, *errList) {
	c.t.Helper()
	errs := &errList{}
	seed, err := nats.NkeyOptionFromSeed(c.creds(user))
	if err != nil {
		c.t.Fatal(err)
	}
	var nc *nats.Conn
	waitFor(c.t, 30*time.Second, func() error {
		nc, err = nats.Connect(c.url(), seed, nats.RootCAs(c.ca), nats.MaxReconnects(-1),
			nats.ReconnectWait(100*time.Millisecond),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs.add(err) }))
		return err
	})
	c.t.Cleanup(nc.Close)
	return nc, errs
}

type errList struct {
	mu   sync.Mutex
	errs []error
}

func (l *errList) add(err error) { l.mu.Lock(); l.errs = append(l.errs, err); l.mu.Unlock() }
func (l *errList) find(sub string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.errs {
		if strings.Contains(e.Error(), sub) {
			return e
		}
	}
	return nil
}

func waitFor(t testing.TB, total time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s: %v", total, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeCerts writes a CA and one certificate for every node (they all run
// on 127.0.0.1), good for client and route TLS, and returns the CA's path.
func writeCerts(t testing.TB, dir string) string {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "switchboard test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", "CERTIFICATE", caDER)
	write("server.pem", "CERTIFICATE", der)
	write("server-key.pem", "EC PRIVATE KEY", keyDER)
	return filepath.Join(dir, "ca.pem")
}

func ensureR3(t testing.TB, c *natsCluster) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(c.connect("admin"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	return js
}

func TestNATSPermissionsOfDeployConfig(t *testing.T) {
	c := startNATSCluster(t)
	js := ensureR3(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Anything published on a command subject would arrive here.
	admin := c.connect("admin")
	leaked, err := admin.SubscribeSync("sb.cmd.>")
	if err != nil {
		t.Fatal(err)
	}
	admin.Flush()

	t.Run("CI may publish its events and nothing else", func(t *testing.T) {
		ci, errs := c.connectErrs("ci")
		cijs, _ := jetstream.New(ci)
		if _, err := cijs.Publish(ctx, "sb.event.ci.build.failed", []byte(`{"id":"b1","source":"ci","type":"build.failed"}`)); err != nil {
			t.Fatalf("CI publishing its event: %v", err)
		}
		if err := ci.Publish("sb.cmd.lb.drain", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		ci.Flush()
		waitFor(t, 5*time.Second, func() error {
			if e := errs.find(`Permissions Violation for Publish to "sb.cmd.lb.drain"`); e == nil {
				return errors.New("no permission violation reported for a CI publish to sb.cmd.lb.drain")
			}
			return nil
		})
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := cijs.Publish(pctx, "sb.event.pagerduty.incident.triggered", []byte(`{}`)); err == nil {
			t.Error("CI could publish a PagerDuty event")
		}
	})

	t.Run("a service reads only its own commands and cannot read CHAT", func(t *testing.T) {
		lb, errs := c.connectErrs("lb")
		if _, err := lb.SubscribeSync("sb.cmd.lb.>"); err != nil {
			t.Fatal(err)
		}
		if _, err := lb.SubscribeSync("sb.cmd.dns.>"); err != nil {
			t.Fatal(err)
		}
		lb.Flush()
		waitFor(t, 5*time.Second, func() error {
			if errs.find(`Subscription to "sb.cmd.dns.>"`) == nil {
				return errors.New("no violation for lb subscribing to dns commands")
			}
			return nil
		})
		if e := errs.find(`"sb.cmd.lb.>"`); e != nil {
			t.Errorf("lb may not read its own commands: %v", e)
		}
		if err := lb.Publish("sb.cmd.dns.apply", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		lb.Flush()
		lbjs, _ := jetstream.New(lb)
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		defer ccancel()
		if _, err := lbjs.OrderedConsumer(cctx, wire.StreamChat, jetstream.OrderedConsumerConfig{}); err == nil {
			t.Error("the lb user could create a consumer on CHAT")
		}
		// Nor can it remove the chat egress's durable consumer.
		if err := lbjs.DeleteConsumer(cctx, wire.StreamChat, "chat-egress-console"); err == nil || errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Errorf("deleting a CHAT consumer as lb: %v, want a permission error", err)
		}
		// The service's own work goes through: a KV write and an audit record.
		kv, err := lbjs.KeyValue(ctx, wire.BucketJobs)
		if err != nil {
			t.Fatalf("lb opening sb_jobs: %v", err)
		}
		if _, err := kv.Put(ctx, "open.lb.permtest", []byte("x")); err != nil {
			t.Fatalf("lb writing sb_jobs: %v", err)
		}
		if _, err := emit.Audit(ctx, lbjs, &auditv1.Record{Stage: auditv1.Stage_STAGE_RESULT, Outcome: "permission test"}); err != nil {
			t.Fatalf("lb writing an audit record: %v", err)
		}
	})

	t.Run("a service writes only the KV buckets it owns", func(t *testing.T) {
		// The services' own buckets, as their first replica would declare them.
		for _, b := range []string{"sb_confirm", "sb_route_threads", "sb_slack_posts", "sb_lb_desired", "sb_dns_plans", "sb_deployer", "sb_incidents_seen", "sb_watcher"} {
			if _, err := bus.EnsureBucket(ctx, js, 3, jetstream.KeyValueConfig{Bucket: b, History: 1}); err != nil {
				t.Fatal(err)
			}
		}
		owns := map[string][]string{
			"chat":      {"sb_jobs", "sb_replicas", "sb_confirm", "sb_route_threads", "sb_slack_posts"},
			"lb":        {"sb_jobs", "sb_replicas", "sb_lb_desired"},
			"dns":       {"sb_jobs", "sb_replicas", "sb_dns_plans"},
			"deployer":  {"sb_jobs", "sb_replicas", "sb_deployer", "sb_inventory"},
			"incidents": {"sb_jobs", "sb_replicas", "sb_incidents_seen"},
			"watcher":   {"sb_jobs", "sb_replicas", "sb_watcher"},
		}
		all := []string{"sb_jobs", "sb_replicas", "sb_inventory", "sb_confirm", "sb_route_threads", "sb_slack_posts", "sb_lb_desired", "sb_dns_plans", "sb_deployer", "sb_incidents_seen", "sb_watcher"}
		for user, mine := range owns {
			nc, errs := c.connectErrs(user)
			ujs, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			var denied []string
			for _, b := range all {
				subj := "$KV." + b + ".permtest." + user
				if !slices.Contains(mine, b) {
					// A refused publish gets no answer: look for the
					// server's violation notice instead of waiting out a
					// timeout for each.
					if err := nc.Publish(subj, []byte("x")); err != nil {
						t.Fatal(err)
					}
					denied = append(denied, subj)
					continue
				}
				kv, err := ujs.KeyValue(ctx, b)
				if err != nil {
					t.Fatalf("%s opening %s: %v", user, b, err)
				}
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err = kv.Put(pctx, "permtest."+user, []byte("x"))
				pcancel()
				if err != nil {
					t.Errorf("%s writing its own bucket %s: %v", user, b, err)
				}
			}
			nc.Flush()
			waitFor(t, 10*time.Second, func() error {
				for _, subj := range denied {
					if errs.find(`Permissions Violation for Publish to "`+subj+`"`) == nil {
						return fmt.Errorf("no violation reported for %s publishing %s", user, subj)
					}
				}
				return nil
			})
		}
		// Nothing refused was stored.
		for _, b := range all {
			kv, err := js.KeyValue(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			for user, mine := range owns {
				if _, err := kv.Get(ctx, "permtest."+user); !slices.Contains(mine, b) && !errors.Is(err, jetstream.ErrKeyNotFound) {
					t.Errorf("%s's refused write to %s: %v", user, b, err)
				}
			}
		}
		// Only the deployer says what the inventory is, even on EVENTS.
		ijs, _ := jetstream.New(c.connect("incidents"))
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := ijs.Publish(pctx, wire.SubjectInventoryChanged, []byte(`{}`)); err == nil {
			t.Error("the incidents user could publish an inventory change")
		}
	})

	t.Run("doctor says what a service user may do", func(t *testing.T) {
		var out, errOut syncBuffer
		env := map[string]string{"HOME": t.TempDir(), "SB_NATS_TLS_CA": c.ca, "SB_NATS_REPLICAS": "3"}
		code := run(ctx, []string{"switchboard", "doctor", "--nats", c.url(), "--creds", c.creds("lb"), "--as", "lb"}, func(k string) string { return env[k] }, nil, &out, &errOut)
		o := out.String()
		for _, want := range []string{"ok    connected", "ok    stream CHAT", "ok    bucket sb_jobs", "ok    as lb: may receive its commands (sb.cmd.lb.>)", "ok    as lb: may not read other services' commands", "FAIL  no switchboard service answers"} {
			if !strings.Contains(o, want) {
				t.Errorf("doctor output lacks %q:\n%s%s", want, o, errOut.String())
			}
		}
		if code != exitFailed {
			t.Errorf("doctor with no service running exited %d, want %d", code, exitFailed)
		}
		// Every service user may read exactly the subjects its service serves.
		for _, svc := range []string{"chat", "dns", "deployer", "incidents", "watcher"} {
			out = syncBuffer{}
			run(ctx, []string{"switchboard", "doctor", "--nats", c.url(), "--creds", c.creds(svc), "--as", svc}, func(k string) string { return env[k] }, nil, &out, &errOut)
			if strings.Contains(out.String(), "FAIL  as "+svc) || !strings.Contains(out.String(), "ok    as "+svc+": may receive") {
				t.Errorf("doctor --as %s:\n%s", svc, out.String())
			}
		}
		out = syncBuffer{}
		code = run(ctx, []string{"switchboard", "doctor", "--nats", c.url(), "--creds", c.creds("ci")}, func(k string) string { return env[k] }, nil, &out, &errOut)
		if code != exitFailed || !strings.Contains(out.String(), "may not use the JetStream API") {
			t.Errorf("doctor as CI: exit %d:\n%s", code, out.String())
		}
	})

	if m, err := leaked.NextMsg(500 * time.Millisecond); err == nil {
		t.Errorf("a denied publish reached %s", m.Subject)
	}
	_ = js
}

// TestClusterSurvivesANodeAndAReplicaKilled is the end-to-end test of
// issue 9: chat replicas as separate `switchboard serve` processes with their
// own credentials over the three-node TLS cluster, a steady stream of
// commands, one NATS node and one replica killed with SIGKILL mid-stream.
func TestClusterSurvivesANodeAndAReplicaKilled(t *testing.T) {
	c := startNATSCluster(t)
	js := ensureR3(t, c)

	// One real service beside the chat: lb, against a real HAProxy.
	hap := haproxytest.Start(t, haproxytest.Config{Backends: []haproxytest.Backend{{Name: "www", Servers: []haproxytest.Server{
		{Name: "web1", Addr: "127.0.0.1:1"}, {Name: "web2", Addr: "127.0.0.1:2"}, {Name: "web3", Addr: "127.0.0.1:3"},
	}}}})
	seedInventory(t, js, "production", "www", "web1", "web2", "web3")
	cfgFile := filepath.Join(t.TempDir(), "switchboard.yaml")
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf("lb:\n  environments:\n    production:\n      instances:\n        - {name: lb1, address: %q}\n  ops: {adapter: cli, channel: ops}\n", hap.Address())), 0o600); err != nil {
		t.Fatal(err)
	}
	startReplica := func(service, creds string) *replica { return startServe(t, c, service, creds, cfgFile) }
	chats := []*replica{startReplica("chat", "chat"), startReplica("chat", "chat")}
	lbs := []*replica{startReplica("lb", "lb"), startReplica("lb", "lb")}

	// doctor, as the admin, sees both replicas of every service and their
	// version; `say`, with the CLI's own credentials over TLS, runs a
	// command and follows its thread to the answer.
	env := map[string]string{"HOME": t.TempDir(), "SB_NATS_TLS_CA": c.ca, "SB_NATS_REPLICAS": "3"}
	getenv := func(k string) string { return env[k] }
	var doctorOut string
	deadline := time.Now().Add(90 * time.Second)
	for {
		var out, errOut syncBuffer
		code := run(context.Background(), []string{"switchboard", "doctor", "--nats", c.url(), "--creds", c.creds("admin")}, getenv, nil, &out, &errOut)
		doctorOut = out.String() + errOut.String()
		if code == 0 && strings.Contains(doctorOut, "ok    service lb: 2 replica(s), version ") && strings.Contains(doctorOut, "ok    service sys: 2 replica(s), version ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("doctor never saw two healthy replicas of lb and sys (last exit %d):\n%s", code, doctorOut)
		}
		time.Sleep(500 * time.Millisecond)
	}
	var sayOut, sayErr syncBuffer
	if code := run(context.Background(), []string{"switchboard", "say", "--nats", c.url(), "--creds", c.creds("cli"), "--channel", "say", "--timeout", "60s", "ping"}, getenv, nil, &sayOut, &sayErr); code != exitOK || !strings.Contains(sayOut.String(), "pong") {
		t.Fatalf("say ping as the cli user over TLS: exit %d\n%s%s", code, sayOut.String(), sayErr.String())
	}

	cli := c.connect("cli")
	// The test reads the channels with admin rights.
	chat, err := js.Stream(context.Background(), wire.StreamChat)
	if err != nil {
		t.Fatal(err)
	}
	// Channels c0 and c1 ping the chat's own sys service; c2 sets web1's
	// weight to 1, 2, 3… through the lb replicas, so HAProxy must end at the
	// last value and every job must have answered once.
	const channels, perChannel = 3, 20
	type sent struct {
		channel string
		id      string
		job     string
	}
	var mu sync.Mutex
	var all []sent
	var firstAfterKill time.Duration
	killed := make(chan time.Time, 1)
	var wg sync.WaitGroup
	errc := make(chan error, channels)
	for ch := range channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			channel := fmt.Sprintf("c%d", ch)
			for i := range perChannel {
				if ch == 0 && i == perChannel/3 {
					// Mid-stream: a NATS node and a chat replica die.
					c.kill(1)
					chats[0].cmd.Process.Signal(syscall.SIGKILL)
					lbs[0].cmd.Process.Signal(syscall.SIGKILL)
					killed <- time.Now()
				}
				msg := &chatv1.ChatMessage{
					Id:           fmt.Sprintf("e2e-%s-%d", channel, i),
					Conversation: &chatv1.Conversation{Adapter: "cli", Channel: channel},
					Author:       &chatv1.Identity{Id: "cli:ana", Name: "ana"},
					Text:         "ping",
				}
				if ch == 2 {
					msg.Text = fmt.Sprintf("lb weight web1 www %d", i+1)
				}
				data, _ := wire.Marshal(msg)
				// Retry the same message id until the chat answers: the
				// retry after a lost reply must not run the command again.
				var reply chatv1.ChatReply
				deadline := time.Now().Add(20 * time.Second)
				for {
					resp, err := cli.Request(wire.ChatInSubject("cli"), data, 3*time.Second)
					if err == nil && wire.Unmarshal(resp.Data, &reply) == nil &&
						(reply.GetStatus() == chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED || reply.GetStatus() == chatv1.IngressStatus_INGRESS_STATUS_EXISTING) {
						break
					}
					if time.Now().After(deadline) {
						errc <- fmt.Errorf("%s: no acceptance within 60s (last: %v %q %v)", msg.Id, reply.GetStatus(), reply.GetMessage(), err)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
				// Like a person, wait until the answer is in the channel
				// (stored in CHAT, where the egress reads it) before the
				// next command. A core subscription is not enough: it sees a
				// publish that the stream stores only on a later retry.
				if err := waitStoredAnswer(chat, wire.ChatPostSubject("cli", channel), reply.GetJobId(), 120*time.Second); err != nil {
					errc <- fmt.Errorf("%s: %w", msg.Id, err)
					return
				}
				mu.Lock()
				all = append(all, sent{channel, msg.Id, reply.GetJobId()})
				if ch == 0 && i == perChannel/3 {
					firstAfterKill = time.Since(<-killed)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		t.Fatalf("replica logs:\nchat: %s\nchat: %s\nlb: %s\nlb: %s", chats[0].out, chats[1].out, lbs[0].out, lbs[1].out)
	}
	t.Logf("the command sent right after the node and the replica died was accepted %s later", firstAfterKill)

	// Every command has exactly one result post, in its channel, in the
	// order the commands were sent; and a complete audit trail.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var results map[string][]*chatv1.ChatPost
	waitFor(t, 60*time.Second, func() error {
		results = map[string][]*chatv1.ChatPost{}
		for _, p := range readAll[*chatv1.ChatPost](t, ctx, js, wire.StreamChat, func() *chatv1.ChatPost { return &chatv1.ChatPost{} }) {
			if p.GetKind() == chatv1.Kind_KIND_RESULT || p.GetKind() == chatv1.Kind_KIND_ERROR {
				results[p.GetJobId()] = append(results[p.GetJobId()], p)
			}
		}
		for _, s := range all {
			if len(results[s.job]) == 0 {
				return fmt.Errorf("no result yet for %s (job %s); lb replica logs:\n%s\n%s", s.id, s.job, lbs[0].out.String(), lbs[1].out.String())
			}
		}
		return nil
	})
	for _, s := range all {
		if n := len(results[s.job]); n != 1 {
			t.Errorf("%s (job %s) has %d results, want exactly 1", s.id, s.job, n)
		}
		if p := results[s.job][0]; p.GetConversation().GetChannel() != s.channel {
			t.Errorf("%s answered in %s, want %s", s.id, p.GetConversation().GetChannel(), s.channel)
		}
	}
	// Per channel, results come in the order the commands were sent (each
	// sent after the previous one ended), except
	// a job whose replica died: another replica answers it after taking it
	// over (its posts are numbered from 100 up), later than the commands sent
	// after it. Within every attempt of a job, posts come in their own order.
	chatPosts := readAll[*chatv1.ChatPost](t, ctx, js, wire.StreamChat, func() *chatv1.ChatPost { return &chatv1.ChatPost{} })
	order := map[string][]string{}
	takenOver := map[string]bool{}
	lastSeq := map[string]uint32{}
	for _, p := range chatPosts {
		if p.GetJobId() == "" {
			continue // the chat's own answers (a refusal while a replica was gone)
		}
		// Posts of one attempt come in order. A take-over numbers its posts
		// from 100 up; a post the stopped attempt published just before it
		// died may be stored after the take-over's first notice.
		attempt := fmt.Sprintf("%s/%d", p.GetJobId(), p.GetSeq()/100)
		if last, ok := lastSeq[attempt]; ok && p.GetSeq() <= last {
			t.Errorf("job %s: post %d after post %d of the same attempt", p.GetJobId(), p.GetSeq(), last)
		}
		lastSeq[attempt] = p.GetSeq()
		if p.GetSeq() >= 100 {
			takenOver[p.GetJobId()] = true
		}
		if p.GetKind() == chatv1.Kind_KIND_RESULT || p.GetKind() == chatv1.Kind_KIND_ERROR {
			order[p.GetConversation().GetChannel()] = append(order[p.GetConversation().GetChannel()], p.GetJobId())
		}
	}
	want := map[string][]string{}
	for _, s := range all {
		if !takenOver[s.job] {
			want[s.channel] = append(want[s.channel], s.job)
		}
	}
	for ch, jobs := range want {
		var got []string
		for _, j := range order[ch] {
			if !takenOver[j] {
				got = append(got, j)
			}
		}
		if strings.Join(got, ",") != strings.Join(jobs, ",") {
			t.Errorf("channel %s: results in order %v, sent %v", ch, got, jobs)
		}
	}
	t.Logf("%d of %d jobs were taken over from the killed replicas", len(takenOver), len(all))
	// The result record may be stored just after the result post (they go
	// to different streams): wait until every job has one.
	var stages map[string]map[string]int
	waitFor(t, 30*time.Second, func() error {
		stages = map[string]map[string]int{}
		for _, r := range readAll[*auditv1.Record](t, ctx, js, wire.StreamAudit, func() *auditv1.Record { return &auditv1.Record{} }) {
			// The request record is written before the command is known, so
			// it has no job id yet: go by the command id.
			if r.GetCommandId() == "" {
				continue
			}
			job := wire.JobID(r.GetCommandId())
			if stages[job] == nil {
				stages[job] = map[string]int{}
			}
			stages[job][strings.TrimPrefix(r.GetStage().String(), "STAGE_")]++
		}
		for _, s := range all {
			if stages[s.job]["RESULT"] == 0 {
				return fmt.Errorf("no result record yet for %s", s.id)
			}
		}
		return nil
	})
	for _, s := range all {
		got := stages[s.job]
		if got["REQUEST"] < 1 || got["DECISION"] < 1 || got["ACCEPTED"] < 1 || got["RESULT"] != 1 {
			t.Errorf("%s (job %s): audit stages %v, want request, decision, accepted and exactly one result", s.id, s.job, got)
		}
	}
	if got := hap.Query("get weight www/web1"); !strings.HasPrefix(got, fmt.Sprintf("%d ", perChannel)) {
		t.Errorf("HAProxy weight of www/web1 = %q, want %d: a weight command was lost or ran late", got, perChannel)
	}
	for _, s := range all {
		if p := results[s.job][0]; s.channel == "c2" && p.GetKind() != chatv1.Kind_KIND_RESULT && !strings.Contains(p.GetText(), "stopped while running") {
			t.Errorf("%s failed: %s", s.id, p.GetText())
		}
	}
	if t.Failed() {
		t.Logf("surviving chat replica log:\n%s\nsurviving lb replica log:\n%s", chats[1].out.String(), lbs[1].out.String())
	}
}

// TestEveryServiceRunsUnderItsOwnCredentials starts each service (default
// configuration) as its own `switchboard serve` process with its own seed,
// under deploy/nats's permissions, and runs a command that makes each one
// write what it owns: the deployer its inventory and rollout state, dns a
// plan, the watcher a mute. A permission the shipped accounts.conf forgot
// would show here as a command that fails or never ends.
func TestEveryServiceRunsUnderItsOwnCredentials(t *testing.T) {
	c := startNATSCluster(t)
	ensureR3(t, c)
	for _, svc := range []string{"chat", "deployer", "dns", "watcher", "incidents", "lb"} {
		startServe(t, c, svc, svc, "")
	}
	env := map[string]string{"HOME": t.TempDir(), "SB_NATS_TLS_CA": c.ca, "SB_NATS_REPLICAS": "3"}
	getenv := func(k string) string { return env[k] }
	say := func(text ...string) string {
		t.Helper()
		var out, errOut syncBuffer
		args := append([]string{"switchboard", "say", "--nats", c.url(), "--creds", c.creds("cli"), "--channel", "perm", "--timeout", "90s"}, text...)
		if code := run(context.Background(), args, getenv, nil, &out, &errOut); code != exitOK {
			t.Fatalf("say %v as the cli user: exit %d\n%s%s", text, code, out.String(), errOut.String())
		}
		return out.String()
	}
	// The deployer publishes its example inventory at start (sb_inventory,
	// sb.event.inventory.changed); wait for it through a command that reads it.
	waitFor(t, 60*time.Second, func() error {
		var out, errOut syncBuffer
		args := []string{"switchboard", "say", "--nats", c.url(), "--creds", c.creds("cli"), "--channel", "perm", "--timeout", "30s", "enc", "get", "web@production"}
		if code := run(context.Background(), args, getenv, nil, &out, &errOut); code != exitOK || !strings.Contains(out.String(), "web-0001") {
			return fmt.Errorf("enc get: exit %d %s%s", code, out.String(), errOut.String())
		}
		return nil
	})
	if out := say("dns", "plan"); !strings.Contains(out, "DNS plan ") {
		t.Fatalf("dns plan:\n%s", out)
	}
	if out := say("deploy", "frontend", "web@production", "--version=1.0.1"); !strings.Contains(out, "host(s) ok") {
		t.Fatalf("deploy:\n%s", out)
	}
	if out := say("watcher", "mute", "web-0001", "10m"); !strings.Contains(out, "web-0001") {
		t.Fatalf("watcher mute:\n%s", out)
	}
}

func seedInventory(t testing.TB, js jetstream.JetStream, env, backend string, hosts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := inventory.Bucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	var hs []*inventoryv1.Host
	for _, h := range hosts {
		hs = append(hs, &inventoryv1.Host{Name: h, Environment: env, Role: "web", Backends: []string{backend}, State: inventoryv1.HostState_HOST_STATE_ACTIVE})
	}
	if _, err := inventory.Publish(ctx, kv, "e2e", hs, nil); err != nil {
		t.Fatal(err)
	}
}

// waitStoredAnswer waits until the final answer of job is stored among the
// last posts of the CHAT stream (a retried publish of the thread's echo may
// be stored after it).
func waitStoredAnswer(st jetstream.Stream, subject, job string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := st.GetLastMsgForSubject(ctx, subject)
		for back := uint64(0); err == nil && back < 50 && m.Sequence > back; back++ {
			var p chatv1.ChatPost
			if g, gerr := st.GetMsg(ctx, m.Sequence-back); gerr == nil && g.Subject == subject && wire.Unmarshal(g.Data, &p) == nil &&
				p.GetJobId() == job && (p.GetKind() == chatv1.Kind_KIND_RESULT || p.GetKind() == chatv1.Kind_KIND_ERROR) {
				cancel()
				return nil
			}
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no answer for job %s stored within %s", job, within)
}

// replica is one `switchboard serve` process.
type replica struct {
	cmd *exec.Cmd
	out *syncBuffer
}

// startServe runs `switchboard serve service` against the cluster as the
// NATS user creds, and waits until it is ready.
func startServe(t testing.TB, c *natsCluster, service, creds, cfgFile string) *replica {
	t.Helper()
	_, sbBin := binaries(t)
	r := &replica{out: &syncBuffer{}}
	home := t.TempDir()
	args := []string{"serve", service, "--nats", c.url(), "--creds", c.creds(creds)}
	if cfgFile != "" {
		args = append(args, "--config", cfgFile)
	}
	r.cmd = exec.Command(sbBin, args...)
	r.cmd.Env = append(os.Environ(), "HOME="+home, "SB_DATA_DIR="+home, "SB_NATS_REPLICAS=3", "SB_NATS_TLS_CA="+c.ca,
		"SB_CHAT_CONSOLE_ADDR=127.0.0.1:0", "SB_METRICS_ADDR=127.0.0.1:0", "SB_INCIDENTS_HTTP_ADDR=127.0.0.1:0", "SB_LOG_LEVEL=warn")
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cmd.Process.Signal(syscall.SIGKILL); r.cmd.Wait() })
	waitFor(t, 60*time.Second, func() error {
		if !strings.Contains(r.out.String(), "switchboard is ready") {
			return fmt.Errorf("replica of %s not ready:\n%s", service, r.out.String())
		}
		return nil
	})
	return r
}

// readAll decodes every message of a stream, in stream order. It reads by
// sequence from the stream leader rather than through a consumer: with a
// node down, a new consumer may be placed on it and never start.
func readAll[M proto.Message](t *testing.T, ctx context.Context, js jetstream.JetStream, stream string, mk func() M) []M {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("read %s: %v", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("read %s: %v", stream, err)
	}
	var out []M
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("read %s #%d: %v", stream, seq, err)
		}
		v := mk()
		if err := wire.Unmarshal(m.Data, v); err == nil {
			out = append(out, v)
		}
	}
	return out
}
