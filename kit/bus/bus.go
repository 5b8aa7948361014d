// Package bus connects switchboard components to NATS: to an external
// cluster, or to a JetStream server embedded in the process. It also declares
// the streams and buckets every service relies on.
package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// Config says how to reach NATS. An empty URL means the embedded server.
type Config struct {
	// URL lists one or more servers, comma-separated ("nats://a:4222,nats://b:4222").
	URL string `yaml:"url"`
	// Creds is a NATS credentials file: a user JWT with its seed (operator
	// mode), or an nkey seed alone (the nkey users of deploy/nats, written by
	// `switchboard nkeys`).
	Creds string `yaml:"creds"`
	// TokenFile holds a token; Token may come from SB_NATS_TOKEN instead.
	TokenFile string `yaml:"token_file"`
	Token     string `yaml:"-"`
	// TLS client settings; CA alone is enough for server verification.
	TLS TLSConfig `yaml:"tls"`
	// Replicas of streams and buckets: 1 for one server, 3 for a cluster.
	Replicas int `yaml:"replicas"`
	// Name identifies the connection in the server's monitoring.
	Name string `yaml:"-"`
}

// TLSConfig names PEM files for TLS to NATS.
type TLSConfig struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// LogValue hides the token.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", redact(c.URL)),
		slog.String("creds", c.Creds),
		slog.Bool("token", c.Token != "" || c.TokenFile != ""),
		slog.Int("replicas", c.Replicas),
	)
}

// Validate reports the first wrong key.
func (c Config) Validate() error {
	if c.Replicas < 0 || c.Replicas > 5 {
		return fmt.Errorf("nats.replicas: %d, want 1 to 5", c.Replicas)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("nats.tls: cert and key go together")
	}
	if c.Creds != "" && (c.Token != "" || c.TokenFile != "") {
		return errors.New("nats.creds: use either creds or a token, not both")
	}
	return nil
}

// Connect dials NATS and returns once connected. It reconnects forever
// afterwards, buffering publishes while disconnected, and logs every
// disconnect and reconnect.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*nats.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", redact(cfg.URL), err)
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.ReconnectBufSize(64 << 20),
		nats.Timeout(5 * time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			log.Warn("nats disconnected; reconnecting", "error", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats async error", "subject", subj, "error", err)
		}),
	}
	if cfg.Creds != "" {
		o, err := credsOption(cfg.Creds)
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	}
	token := cfg.Token
	if token == "" && cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("read nats token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token != "" {
		opts = append(opts, nats.Token(token))
	}
	if cfg.TLS.CA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLS.CA))
	}
	if cfg.TLS.Cert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLS.Cert, cfg.TLS.Key))
	}
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(cfg.URL, opts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			// A malformed URL comes back as a *url.Error quoting it whole,
			// password included.
			var ue *url.Error
			if errors.As(r.err, &ue) {
				ue.URL = redact(ue.URL)
			}
			return nil, fmt.Errorf("connect to nats %s: %w", redact(cfg.URL), r.err)
		}
		log.Info("nats connected", "server", r.nc.ConnectedUrlRedacted())
		return r.nc, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("connect to nats %s: %w", redact(cfg.URL), ctx.Err())
	}
}

// credsOption tells an nkey seed file from a JWT credentials file.
func credsOption(path string) (nats.Option, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read nats credentials: %w", err)
	}
	if s := strings.TrimSpace(string(b)); strings.HasPrefix(s, "SU") && !strings.Contains(s, "\n") {
		o, err := nats.NkeyOptionFromSeed(path)
		if err != nil {
			return nil, fmt.Errorf("nats credentials %s: %w", path, err)
		}
		return o, nil
	}
	return nats.UserCredentials(path), nil
}

// redact drops user info from URLs before they reach a log.
func redact(urls string) string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			// nats.go also takes "user:pass@host:4222" without a scheme.
			start := 0
			if i := strings.Index(u, "://"); i >= 0 && i < at {
				start = i + 3
			}
			u = u[:start] + "[redacted]" + u[at:]
		}
		out = append(out, u)
	}
	return strings.Join(out, ",")
}

// EmbeddedConfig describes the NATS server switchboard starts in-process
// when no URL is configured.
type EmbeddedConfig struct {
	// DataDir holds the JetStream store and the generated credential.
	DataDir string `yaml:"data_dir"`
	// Host is where it listens; loopback unless you mean otherwise.
	Host string `yaml:"host"`
	// Port to listen on: 4222 by default, -1 for any free port, 0 to not listen
	// for TCP at all (in-process connections only).
	Port int `yaml:"port"`
}

// TokenFileName and URLFileName are written to the data dir, so that
// `switchboard say` on the same machine finds the embedded server.
const (
	TokenFileName = "nats.token"
	URLFileName   = "nats.url"
)

// Embedded is a running in-process NATS server.
type Embedded struct {
	Server *server.Server
	// URL clients use to connect.
	URL string
	// Token clients must present.
	Token string
	dir   string
}

// RunEmbedded starts a JetStream server in the process, with a random token
// kept in DataDir/nats.token (mode 0600), and waits until it is ready.
func RunEmbedded(cfg EmbeddedConfig, log *slog.Logger) (*Embedded, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("embedded nats: data_dir is required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: create data dir: %w", err)
	}
	token, err := loadOrCreateToken(filepath.Join(cfg.DataDir, TokenFileName))
	if err != nil {
		return nil, err
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	o := &server.Options{
		ServerName:             "switchboard",
		Host:                   host,
		Port:                   cfg.Port,
		DontListen:             cfg.Port == 0,
		NoSigs:                 true,
		JetStream:              true,
		StoreDir:               filepath.Join(cfg.DataDir, "jetstream"),
		Authorization:          token,
		MaxPayload:             8 << 20,
		NoSystemAccount:        false,
		DisableJetStreamBanner: true,
	}
	if cfg.Port == 0 {
		o.Port = -1
	}
	if cfg.Port > 0 {
		// nats-server only logs a busy port and then never becomes ready;
		// say it at once instead.
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(cfg.Port)))
		if err != nil {
			return nil, fmt.Errorf("embedded nats: port %d: %w", cfg.Port, err)
		}
		l.Close()
	}
	s, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.SetLoggerV2(slogLogger{log.With("component", "nats-server")}, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats: not ready within 10s (is the port in use?)")
	}
	e := &Embedded{Server: s, Token: token, dir: cfg.DataDir}
	if !o.DontListen {
		addr := s.Addr().(*net.TCPAddr)
		e.URL = "nats://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
		if err := os.WriteFile(filepath.Join(cfg.DataDir, URLFileName), []byte(e.URL+"\n"), 0o600); err != nil {
			s.Shutdown()
			return nil, fmt.Errorf("embedded nats: write url file: %w", err)
		}
	}
	return e, nil
}

// Connect opens an in-process client connection to the embedded server:
// the services of the all-in-one binary skip loopback TCP (it halved the
// command path's latency in bench/), while the CLI uses the listener.
func (e *Embedded) Connect(ctx context.Context, name string, log *slog.Logger) (*nats.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect in-process to embedded nats: %w", err)
	}
	nc, err := nats.Connect("", nats.InProcessServer(e.Server), nats.Token(e.Token), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect in-process to embedded nats: %w", err)
	}
	log.Debug("nats connected in-process", "server", "embedded")
	return nc, nil
}

// Shutdown stops the server and waits for it; the URL file is removed so the
// CLI does not try a dead server.
func (e *Embedded) Shutdown() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
	os.Remove(filepath.Join(e.dir, URLFileName))
}

func loadOrCreateToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("embedded nats: read token: %w", err)
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("embedded nats: generate token: %w", err)
	}
	t := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("embedded nats: write token: %w", err)
	}
	return t, nil
}

// StreamOptions tune EnsureStreams; zero values take the defaults.
type StreamOptions struct {
	// Replicas of every stream and bucket (1 or 3 usually).
	Replicas int
	// MaxAge of CHAT posts (default 14 days), EVENTS (30 days), AUDIT (1 year)
	// and jobs (30 days).
	ChatMaxAge, EventsMaxAge, AuditMaxAge, JobsMaxAge time.Duration
	// ReplicaLease is the TTL of a replica's lease (default ReplicaLease);
	// command.Options.Lease must match it.
	ReplicaLease time.Duration
	// Log receives the warning when an existing stream or bucket keeps more
	// replicas than Replicas asks for; nil discards it.
	Log *slog.Logger
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.ChatMaxAge == 0 {
		o.ChatMaxAge = 14 * 24 * time.Hour
	}
	if o.EventsMaxAge == 0 {
		o.EventsMaxAge = 30 * 24 * time.Hour
	}
	if o.AuditMaxAge == 0 {
		o.AuditMaxAge = 365 * 24 * time.Hour
	}
	if o.JobsMaxAge == 0 {
		o.JobsMaxAge = 30 * 24 * time.Hour
	}
	if o.ReplicaLease == 0 {
		o.ReplicaLease = ReplicaLease
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// ReplicaLease is how long a replica's entry in sb_replicas lives without a
// refresh; a replica refreshes it every third of that.
const ReplicaLease = 6 * time.Second

// EnsureStreams declares the CHAT, EVENTS and AUDIT streams and the sb_jobs,
// sb_replicas and sb_inventory buckets. It is idempotent: every replica calls
// it at start. It raises the replication of existing ones to o.Replicas,
// keeping their data, but never lowers it (see replicasFor).
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	o = o.withDefaults()
	streams := []jetstream.StreamConfig{
		{
			Name:        wire.StreamChat,
			Description: "Every post a person sees: replies, progress, notices.",
			Subjects:    []string{wire.SubjectChatPosts},
			MaxAge:      o.ChatMaxAge,
			Duplicates:  2 * time.Minute,
		},
		{
			Name:        wire.StreamEvents,
			Description: "Events from outside and from services: pages, builds, findings.",
			Subjects:    []string{wire.SubjectEvents},
			MaxAge:      o.EventsMaxAge,
			Duplicates:  2 * time.Minute,
		},
		{
			Name:        wire.StreamAudit,
			Description: "The audit trail: every request, decision and result.",
			Subjects:    []string{wire.SubjectAudit},
			MaxAge:      o.AuditMaxAge,
			Duplicates:  2 * time.Minute,
		},
	}
	for _, sc := range streams {
		sc.Storage = jetstream.FileStorage
		err := retryPlacement(ctx, func() error {
			var err error
			if sc.Replicas, err = replicasFor(ctx, js, sc.Name, o.Replicas); err != nil {
				return err
			}
			_, err = js.CreateOrUpdateStream(ctx, sc)
			return err
		})
		if err != nil {
			return fmt.Errorf("declare stream %s: %w", sc.Name, err)
		}
		if sc.Replicas > o.Replicas {
			o.Log.Warn(keptReplicasWarning, "stream", sc.Name, "replicas", sc.Replicas, "configured_replicas", o.Replicas)
		}
	}
	buckets := []jetstream.KeyValueConfig{
		{Bucket: wire.BucketJobs, Description: "Jobs by id, and the open ones by service.", TTL: o.JobsMaxAge, History: 1},
		{Bucket: wire.BucketReplicas, Description: "Live replicas, each a lease.", TTL: o.ReplicaLease, History: 1, Storage: jetstream.MemoryStorage},
		{Bucket: wire.BucketInventory, Description: "The inventory parsed from the ENC: host.<name> and meta.", History: 1},
	}
	for _, kc := range buckets {
		err := retryPlacement(ctx, func() error {
			var err error
			if kc.Replicas, err = replicasFor(ctx, js, bucketStream(kc.Bucket), o.Replicas); err != nil {
				return err
			}
			_, err = js.CreateOrUpdateKeyValue(ctx, kc)
			return err
		})
		if err != nil {
			return fmt.Errorf("declare bucket %s: %w", kc.Bucket, err)
		}
		if kc.Replicas > o.Replicas {
			o.Log.Warn(keptReplicasWarning, "bucket", kc.Bucket, "replicas", kc.Replicas, "configured_replicas", o.Replicas)
		}
	}
	return nil
}

const keptReplicasWarning = "nats.replicas is lower than the replication in use; keeping the larger one " +
	"(is this replica's config stale?). To lower it on purpose, edit the stream or bucket with the nats CLI"

// replicasFor returns the replication to declare stream name with: the
// configured one, or the stream's current one when that is larger.
// Raising is how an install moves onto a cluster (nats.replicas: 3), and
// JetStream copies the existing messages to the new peers. Lowering is
// refused because the usual cause is a replica started with a stale config:
// whichever replica started last would decide, silently undoing the
// operator's choice and dropping copies of the data. An operator who means
// to lower it does so once by hand.
func replicasFor(ctx context.Context, js jetstream.JetStream, name string, configured int) (int, error) {
	st, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return configured, nil
	}
	if err != nil {
		return 0, fmt.Errorf("look up the replication of stream %s: %w", name, err)
	}
	return max(configured, st.CachedInfo().Config.Replicas), nil
}

// bucketStream is the stream behind KV bucket b, as JetStream names it.
func bucketStream(b string) string { return "KV_" + b }

// errNoPeers is JetStream's "no suitable peers for placement" (10005): a
// cluster that has just formed, or lost a node, cannot place replicas yet.
const errNoPeers = 10005

// retryPlacement retries f while the cluster cannot place replicas, until
// ctx ends; any other error returns at once.
func retryPlacement(ctx context.Context, f func() error) error {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		err := f()
		var apiErr *jetstream.APIError
		if err == nil || !errors.As(err, &apiErr) || apiErr.ErrorCode != errNoPeers {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// slogLogger adapts nats-server logging to slog.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l slogLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l slogLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l slogLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l slogLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l slogLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }

// EnsureBucket declares a service's own KV bucket with the cluster's
// replication, idempotently, retrying while a young cluster cannot place it.
// Like EnsureStreams it raises the replication of an existing bucket but
// never lowers it. It does not warn: a stale nats.replicas is the same for
// the shared buckets, and EnsureStreams, which serve runs first, has said so.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, replicas int, kc jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if replicas <= 0 {
		replicas = 1
	}
	var kv jetstream.KeyValue
	err := retryPlacement(ctx, func() error {
		var err error
		if kc.Replicas, err = replicasFor(ctx, js, bucketStream(kc.Bucket), replicas); err != nil {
			return err
		}
		kv, err = js.CreateOrUpdateKeyValue(ctx, kc)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("declare bucket %s: %w", kc.Bucket, err)
	}
	return kv, nil
}
