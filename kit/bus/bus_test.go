package bus_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/natstest"
)

var discard = slog.New(slog.DiscardHandler)

// declared is what EnsureStreams declares, as the stream configs say it.
type declared struct {
	Subjects   []string
	Replicas   int
	Storage    jetstream.StorageType
	MaxAge     time.Duration
	Duplicates time.Duration
}

func streamConfig(t *testing.T, ctx context.Context, js jetstream.JetStream, name string) declared {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	c := info.Config
	return declared{Subjects: c.Subjects, Replicas: c.Replicas, Storage: c.Storage, MaxAge: c.MaxAge, Duplicates: c.Duplicates}
}

func checkDeclared(t *testing.T, ctx context.Context, js jetstream.JetStream, replicas int) {
	t.Helper()
	day := 24 * time.Hour
	want := map[string]declared{
		wire.StreamChat:   {Subjects: []string{"sb.chat.post.>"}, Replicas: replicas, Storage: jetstream.FileStorage, MaxAge: 14 * day, Duplicates: 2 * time.Minute},
		wire.StreamEvents: {Subjects: []string{"sb.event.>"}, Replicas: replicas, Storage: jetstream.FileStorage, MaxAge: 30 * day, Duplicates: 2 * time.Minute},
		wire.StreamAudit:  {Subjects: []string{"sb.audit.>"}, Replicas: replicas, Storage: jetstream.FileStorage, MaxAge: 365 * day, Duplicates: 2 * time.Minute},
	}
	for name, w := range want {
		if diff := cmp.Diff(w, streamConfig(t, ctx, js, name)); diff != "" {
			t.Errorf("stream %s (-want +got):\n%s", name, diff)
		}
	}

	buckets := []struct {
		name    string
		ttl     time.Duration
		storage jetstream.StorageType
	}{
		{wire.BucketJobs, 30 * day, jetstream.FileStorage},
		{wire.BucketReplicas, bus.ReplicaLease, jetstream.MemoryStorage},
	}
	for _, b := range buckets {
		kv, err := js.KeyValue(ctx, b.name)
		if err != nil {
			t.Errorf("bucket %s: %v", b.name, err)
			continue
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatalf("bucket %s status: %v", b.name, err)
		}
		c := st.Config()
		if c.TTL != b.ttl || c.History != 1 || c.Storage != b.storage || c.Replicas != replicas {
			t.Errorf("bucket %s: TTL %v history %d storage %v replicas %d; want TTL %v history 1 storage %v replicas %d",
				b.name, c.TTL, c.History, c.Storage, c.Replicas, b.ttl, b.storage, replicas)
		}
	}
}

func TestEnsureStreamsDeclaresEveryStreamAndBucketAndIsIdempotent(t *testing.T) {
	t.Parallel()
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, s))
	ctx := natstest.Context(t, 30*time.Second)
	for i := 1; i <= 2; i++ {
		if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
			t.Fatalf("EnsureStreams, call %d: %v", i, err)
		}
	}
	checkDeclared(t, ctx, js, 1)

	// Every message kind lands in its stream.
	for subj, stream := range map[string]string{
		wire.ChatPostSubject("console", "ops"):  wire.StreamChat,
		wire.EventSubject("ci", "build.failed"): wire.StreamEvents,
		wire.AuditSubject("request"):            wire.StreamAudit,
	} {
		ack, err := js.Publish(ctx, subj, []byte("{}"))
		if err != nil {
			t.Fatalf("publish to %s: %v", subj, err)
		}
		if ack.Stream != stream {
			t.Errorf("%s went to stream %s, want %s", subj, ack.Stream, stream)
		}
	}
}

func TestEnsureStreamsKeepsTheMessagesWhenCalledAgain(t *testing.T) {
	t.Parallel()
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, s))
	ctx := natstest.Context(t, 30*time.Second)
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, wire.AuditSubject("request"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, wire.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("AUDIT holds %d messages after a second EnsureStreams, want 1", info.State.Msgs)
	}
}

func TestEnsureStreamsFromTwoConnectionsAtOnce(t *testing.T) {
	t.Parallel()
	s := natstest.RunServer(t)
	ctx := natstest.Context(t, 30*time.Second)
	// Two replicas starting at the same moment, each running two services.
	replicas := []jetstream.JetStream{
		natstest.JetStream(t, natstest.Connect(t, s)),
		natstest.JetStream(t, natstest.Connect(t, s)),
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		js := replicas[i%2]
		wg.Go(func() { errs[i] = bus.EnsureStreams(ctx, js, bus.StreamOptions{}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("EnsureStreams on connection %d: %v", i, err)
		}
	}
	checkDeclared(t, ctx, natstest.JetStream(t, natstest.Connect(t, s)), 1)
}

func TestEnsureStreamsTakesTheOptions(t *testing.T) {
	t.Parallel()
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, s))
	ctx := natstest.Context(t, 30*time.Second)
	o := bus.StreamOptions{ChatMaxAge: time.Hour, EventsMaxAge: 2 * time.Hour, AuditMaxAge: 3 * time.Hour, JobsMaxAge: 4 * time.Hour, ReplicaLease: 5 * time.Second}
	if err := bus.EnsureStreams(ctx, js, o); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]time.Duration{wire.StreamChat: time.Hour, wire.StreamEvents: 2 * time.Hour, wire.StreamAudit: 3 * time.Hour} {
		if got := streamConfig(t, ctx, js, name).MaxAge; got != want {
			t.Errorf("stream %s MaxAge = %v, want %v", name, got, want)
		}
	}
	for name, want := range map[string]time.Duration{wire.BucketJobs: 4 * time.Hour, wire.BucketReplicas: 5 * time.Second} {
		kv, err := js.KeyValue(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.TTL() != want {
			t.Errorf("bucket %s TTL = %v, want %v", name, st.TTL(), want)
		}
	}
}

func TestEnsureStreamsOnAThreeNodeCluster(t *testing.T) {
	t.Parallel()
	c := natstest.RunCluster(t, 3)
	js := natstest.JetStream(t, natstest.ConnectURL(t, c.URL()))
	ctx := natstest.Context(t, 60*time.Second)
	// A young cluster under load may briefly refuse to place replicated
	// assets ("no suitable peers for placement"): ask again until the
	// first call goes through; the second must then succeed at once.
	natstest.WaitFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return bus.EnsureStreams(ctx, js, bus.StreamOptions{Replicas: 3})
	})
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{Replicas: 3}); err != nil {
		t.Fatalf("EnsureStreams R3, second call: %v", err)
	}
	checkDeclared(t, ctx, js, 3)
	for _, name := range []string{wire.StreamChat, wire.StreamEvents, wire.StreamAudit, "KV_" + wire.BucketJobs, "KV_" + wire.BucketReplicas} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		// The peers are placed at once; wait only for them to report in.
		natstest.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			info, err := st.Info(ctx)
			if err != nil {
				return err
			}
			if info.Cluster == nil || info.Cluster.Leader == "" {
				return errors.New("no leader yet")
			}
			if got := len(info.Cluster.Replicas) + 1; got != 3 {
				t.Fatalf("stream %s runs on %d servers, want 3", name, got)
			}
			return nil
		})
	}
}

func TestRunEmbeddedListeningOnLoopback(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data") // RunEmbedded creates it
	e, err := bus.RunEmbedded(bus.EmbeddedConfig{DataDir: dir, Port: -1}, discard)
	if err != nil {
		t.Fatalf("RunEmbedded: %v", err)
	}
	t.Cleanup(e.Shutdown)

	if !strings.HasPrefix(e.URL, "nats://127.0.0.1:") {
		t.Errorf("URL = %q, want a loopback URL", e.URL)
	}
	tokenPath := filepath.Join(dir, bus.TokenFileName)
	fi, err := os.Stat(tokenPath)
	if err != nil {
		t.Fatalf("token file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode = %v, want 0600", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(tokenPath); strings.TrimSpace(string(b)) != e.Token || len(e.Token) < 32 {
		t.Errorf("token file holds %q, Token = %q; want the same, at least 32 characters", b, e.Token)
	}
	urlPath := filepath.Join(dir, bus.URLFileName)
	if b, err := os.ReadFile(urlPath); err != nil || strings.TrimSpace(string(b)) != e.URL {
		t.Errorf("url file = %q, %v; want %q", b, err, e.URL)
	}

	// Without the token the server refuses; with it, it serves JetStream.
	if nc, err := nats.Connect(e.URL, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Errorf("connect without the token succeeded")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("connect without the token: %v, want an authorization error", err)
	}
	if nc, err := nats.Connect(e.URL, nats.Token("wrong"), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Errorf("connect with a wrong token succeeded")
	}
	ctx := natstest.Context(t, 30*time.Second)
	nc, err := e.Connect(ctx, "test", discard)
	if err != nil {
		t.Fatalf("Embedded.Connect: %v", err)
	}
	t.Cleanup(nc.Close)
	if err := bus.EnsureStreams(ctx, natstest.JetStream(t, nc), bus.StreamOptions{}); err != nil {
		t.Fatalf("EnsureStreams on the embedded server: %v", err)
	}

	e.Shutdown()
	if _, err := os.Stat(urlPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("url file after Shutdown: %v, want it removed", err)
	}
	if _, err := os.Stat(tokenPath); err != nil {
		t.Errorf("token file after Shutdown: %v, want it kept", err)
	}
}

func TestRunEmbeddedReusesTheTokenAndTheStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := natstest.Context(t, 30*time.Second)

	first, err := bus.RunEmbedded(bus.EmbeddedConfig{DataDir: dir, Port: -1}, discard)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := first.Connect(ctx, "first", discard)
	if err != nil {
		first.Shutdown()
		t.Fatal(err)
	}
	js := natstest.JetStream(t, nc)
	err = bus.EnsureStreams(ctx, js, bus.StreamOptions{})
	if err == nil {
		_, err = js.Publish(ctx, wire.AuditSubject("request"), []byte("{}"))
	}
	nc.Close()
	first.Shutdown()
	if err != nil {
		t.Fatal(err)
	}

	second, err := bus.RunEmbedded(bus.EmbeddedConfig{DataDir: dir, Port: -1}, discard)
	if err != nil {
		t.Fatalf("second RunEmbedded on the same dir: %v", err)
	}
	t.Cleanup(second.Shutdown)
	if second.Token != first.Token {
		t.Errorf("second start made a new token %q, want the first's %q", second.Token, first.Token)
	}
	nc2, err := second.Connect(ctx, "second", discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc2.Close)
	st, err := natstest.JetStream(t, nc2).Stream(ctx, wire.StreamAudit)
	if err != nil {
		t.Fatalf("AUDIT after restart: %v", err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("AUDIT after restart: %+v, %v; want 1 message", info, err)
	}
}

func TestRunEmbeddedWithoutListeningServesInProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e, err := bus.RunEmbedded(bus.EmbeddedConfig{DataDir: dir, Port: 0}, discard)
	if err != nil {
		t.Fatalf("RunEmbedded: %v", err)
	}
	t.Cleanup(e.Shutdown)
	if e.URL != "" {
		t.Errorf("URL = %q, want none for a server that does not listen", e.URL)
	}
	if e.Server.Addr() != nil {
		t.Errorf("server listens on %v, want no listener", e.Server.Addr())
	}
	if _, err := os.Stat(filepath.Join(dir, bus.URLFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("url file: %v, want none", err)
	}
	ctx := natstest.Context(t, 30*time.Second)
	nc, err := e.Connect(ctx, "test", discard)
	if err != nil {
		t.Fatalf("Embedded.Connect in-process: %v", err)
	}
	t.Cleanup(nc.Close)
	js := natstest.JetStream(t, nc)
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		t.Fatalf("EnsureStreams in-process: %v", err)
	}
	if _, err := js.Publish(ctx, wire.EventSubject("ci", "build.failed"), []byte("{}")); err != nil {
		t.Fatalf("publish in-process: %v", err)
	}
}

func TestRunEmbeddedRefusesBadSettings(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	port := busy.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name string
		cfg  bus.EmbeddedConfig
		want string
	}{
		{"no data dir", bus.EmbeddedConfig{Port: -1}, "data_dir"},
		{"a port in use", bus.EmbeddedConfig{DataDir: t.TempDir(), Port: port}, "port " + strconv.Itoa(port)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := bus.RunEmbedded(tt.cfg, discard)
			if err == nil {
				e.Shutdown()
				t.Fatalf("RunEmbedded(%+v) succeeded, want an error", tt.cfg)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RunEmbedded(%+v) = %v, want it to mention %q", tt.cfg, err, tt.want)
			}
		})
	}
}

func TestConnectReachesAServerWithAToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e, err := bus.RunEmbedded(bus.EmbeddedConfig{DataDir: dir, Port: -1}, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	ctx := natstest.Context(t, 30*time.Second)
	tests := []struct {
		name string
		cfg  bus.Config
	}{
		{"the token given directly", bus.Config{URL: e.URL, Token: e.Token}},
		{"the token read from a file", bus.Config{URL: e.URL, TokenFile: filepath.Join(dir, bus.TokenFileName)}},
		{"the token in the URL", bus.Config{URL: strings.Replace(e.URL, "nats://", "nats://"+e.Token+"@", 1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := bus.Connect(ctx, tt.cfg, discard)
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer nc.Close()
			if !nc.IsConnected() {
				t.Errorf("Connect returned a connection that is not connected")
			}
		})
	}
	if _, err := bus.Connect(ctx, bus.Config{URL: e.URL, TokenFile: filepath.Join(dir, "missing")}, discard); err == nil || !strings.Contains(err.Error(), "token file") {
		t.Errorf("Connect with a missing token file = %v, want an error about the token file", err)
	}
}

// silentServer accepts connections and never says anything, like a firewall
// that swallows packets: nats.Connect waits for the server's INFO.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "nats://" + l.Addr().String()
}

func TestConnectHonoursTheContext(t *testing.T) {
	t.Parallel()
	s := natstest.RunServer(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	t.Cleanup(cancel2)

	tests := []struct {
		name string
		ctx  context.Context
		url  string
		want error
	}{
		{"a cancelled context with a healthy server", cancelled, s.ClientURL(), context.Canceled},
		{"a cancelled context with a server that never answers", cancelled, silentServer(t), context.Canceled},
		{"a deadline that passes while the server never answers", short, silentServer(t), context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nc, err := bus.Connect(tt.ctx, bus.Config{URL: tt.url}, discard)
			if err == nil {
				nc.Close()
				t.Fatalf("Connect succeeded, want %v", tt.want)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Connect = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), "connect to nats "+tt.url) {
				t.Errorf("Connect = %q, want it to say which server", err)
			}
		})
	}
}

func TestConnectErrorsDoNotShowPasswords(t *testing.T) {
	t.Parallel()
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := l.Addr().String()
	l.Close()

	tests := []struct {
		name string
		url  string
	}{
		{"a refused connection", "nats://bob:s3cret@" + hostPort},
		{"several servers", "nats://bob:s3cret@" + hostPort + ",nats://al:s3cret@" + hostPort},
		{"a URL without a scheme", "bob:s3cret@" + hostPort},
		{"a token as the user", "nats://s3cret@" + hostPort},
		{"a malformed port", "nats://bob:s3cret@127.0.0.1:notaport"},
		{"a malformed escape", "nats://bob:s3%cret@" + hostPort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := natstest.Context(t, 30*time.Second)
			nc, err := bus.Connect(ctx, bus.Config{URL: tt.url}, discard)
			if err == nil {
				nc.Close()
				t.Fatalf("Connect(%s) succeeded", tt.url)
			}
			if strings.Contains(err.Error(), "s3") || strings.Contains(err.Error(), "bob") {
				t.Errorf("Connect error shows the credentials: %v", err)
			}
			if !strings.Contains(err.Error(), "[redacted]") {
				t.Errorf("Connect error = %v, want the URL with [redacted] credentials", err)
			}
		})
	}
}

func TestConfigValidateNamesTheKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  bus.Config
		want string // "" for valid
	}{
		{"the zero config is valid (embedded server)", bus.Config{}, ""},
		{"a cluster with a token is valid", bus.Config{URL: "nats://a:4222,nats://b:4222", Token: "t", Replicas: 3}, ""},
		{"a client certificate with its key is valid", bus.Config{TLS: bus.TLSConfig{CA: "ca.pem", Cert: "c.pem", Key: "k.pem"}}, ""},
		{"negative replicas", bus.Config{Replicas: -1}, "nats.replicas"},
		{"more than five replicas", bus.Config{Replicas: 7}, "nats.replicas"},
		{"a certificate without a key", bus.Config{TLS: bus.TLSConfig{Cert: "c.pem"}}, "nats.tls"},
		{"a key without a certificate", bus.Config{TLS: bus.TLSConfig{Key: "k.pem"}}, "nats.tls"},
		{"creds and a token", bus.Config{Creds: "sb.creds", Token: "t"}, "nats.creds"},
		{"creds and a token file", bus.Config{Creds: "sb.creds", TokenFile: "/run/token"}, "nats.creds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Errorf("Validate() = nil, want an error naming %s", tt.want)
			case tt.want != "" && !strings.HasPrefix(err.Error(), tt.want+":"):
				t.Errorf("Validate() = %q, want it to start with %q", err, tt.want+":")
			}
		})
	}
}

func TestConfigLogValueHidesSecrets(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	cfg := bus.Config{
		URL:      "nats://bob:hunter2@nats.example.com:4222",
		Token:    "tok-s3cret",
		Creds:    "/etc/sb/sb.creds",
		Replicas: 3,
	}
	log.Info("starting", "nats", cfg)
	out := buf.String()
	for _, secret := range []string{"tok-s3cret", "hunter2"} {
		if strings.Contains(out, secret) {
			t.Errorf("log shows a secret %q: %s", secret, out)
		}
	}
	for _, want := range []string{`"token":true`, `"replicas":3`, `nats.example.com:4222`, `/etc/sb/sb.creds`} {
		if !strings.Contains(out, want) {
			t.Errorf("log = %s, want it to contain %s", out, want)
		}
	}
}
