package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
)

// Ingress is the chat core as the console sees it: it parses, authorises,
// audits and dispatches a person's message. Everything the person then sees —
// the echo of their own message, errors, progress, results — arrives as
// ChatPosts on the CHAT stream, so every browser on every replica sees the same.
type Ingress interface {
	Handle(ctx context.Context, msg *chatv1.ChatMessage) *chatv1.ChatReply
}

// Adapter is the adapter name of the console in every Conversation it
// addresses and in the CHAT subjects it reads (sb.chat.post.console.<channel>).
const Adapter = "console"

// Limits the console enforces on what a person sends, so that a pasted log
// file or a runaway script cannot flood the chat core or the CHAT stream.
const (
	// MaxTextBytes is the largest message text accepted.
	MaxTextBytes = 4000
	// MaxUserBytes is the longest user name accepted.
	MaxUserBytes = 64
	// MaxHistory is the largest Config.History accepted.
	MaxHistory = 10000
)

// Timeouts of the HTTP server and of the work a request starts.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	// writeTimeout bounds every response except the event stream, which
	// instead sets a deadline before each write so a stuck browser is
	// dropped without capping how long a healthy one stays connected.
	writeTimeout    = 30 * time.Second
	idleTimeout     = 2 * time.Minute
	shutdownTimeout = 10 * time.Second
	// handleTimeout bounds one call of Ingress.Handle: dispatch waits only
	// for a service's accept, never for the work itself.
	handleTimeout = 30 * time.Second
	// natsTimeout bounds each JetStream request the console makes itself.
	natsTimeout = 10 * time.Second
	// heartbeatInterval is how long an event stream stays silent before a
	// comment line keeps proxies and browsers from calling it dead.
	heartbeatInterval = 15 * time.Second
)

// channelRe is what a console channel name may be. It is also a valid
// subject token as is, so wire.Token never has to hash it.
var channelRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Config configures the console. Zero values take the defaults of
// DefaultConfig, so a partly filled YAML section works.
type Config struct {
	// Addr is where Serve's caller should listen: "127.0.0.1:8080" by default.
	// Keep it on loopback unless an authenticating proxy sits in front.
	Addr string `yaml:"addr"`
	// Channels are listed in the sidebar for everyone; people can open others.
	// Default: ["ops", "general"].
	Channels []string `yaml:"channels"`
	// History is how many posts of a channel a browser is shown when it
	// opens the channel (oldest first). Default 200.
	History int `yaml:"history"`
	// TrustedUserHeader names the request header an authenticating proxy
	// sets to the signed-in person ("X-Forwarded-User"). When set, identity
	// comes only from it, every /api request without it is refused, and the
	// name a browser sends is ignored.
	TrustedUserHeader string `yaml:"trusted_user_header"`
	// AllowedHosts are extra Host header values accepted when Addr is a
	// loopback address and no TrustedUserHeader is set. Such a console has no
	// authentication, so it refuses other Host values: a web page could
	// otherwise DNS-rebind its own name to 127.0.0.1 and run commands.
	// Add the name a local reverse proxy passes through, if any.
	AllowedHosts []string `yaml:"allowed_hosts"`
}

// DefaultConfig returns the configuration of a console for one small team
// on the machine it runs on.
func DefaultConfig() Config {
	return Config{
		Addr:     "127.0.0.1:8080",
		Channels: []string{"ops", "general"},
		History:  200,
	}
}

// withDefaults fills the zero values with DefaultConfig's.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if len(c.Channels) == 0 {
		c.Channels = d.Channels
	}
	if c.History == 0 {
		c.History = d.History
	}
	return c
}

// Validate reports the first wrong key, named as in the YAML.
func (c Config) Validate() error {
	c = c.withDefaults()
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("console.addr: %q: want host:port: %w", c.Addr, err)
	}
	seen := map[string]bool{}
	for i, ch := range c.Channels {
		if !channelRe.MatchString(ch) {
			return fmt.Errorf("console.channels[%d]: %q: want lower-case letters, digits, - and _ (at most 64, not starting with - or _)", i, ch)
		}
		if seen[ch] {
			return fmt.Errorf("console.channels[%d]: %q is listed twice", i, ch)
		}
		seen[ch] = true
	}
	if c.History < 0 || c.History > MaxHistory {
		return fmt.Errorf("console.history: %d, want 1 to %d (0 for the default)", c.History, MaxHistory)
	}
	if h := c.TrustedUserHeader; h != "" && !validHeaderName(h) {
		return fmt.Errorf("console.trusted_user_header: %q is not a header name", h)
	}
	for i, h := range c.AllowedHosts {
		if h == "" || strings.ContainsAny(h, " /\t") {
			return fmt.Errorf("console.allowed_hosts[%d]: %q is not a host name", i, h)
		}
	}
	return nil
}

// validHeaderName reports whether s is an HTTP token (RFC 9110 §5.6.2).
func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

//go:embed static
var staticFiles embed.FS

// Console serves the web console: the page, its JSON API and the event
// streams of posts. It keeps no conversation state of its own; the CHAT
// stream is the only source of what a page shows.
type Console struct {
	cfg Config
	in  Ingress
	js  jetstream.JetStream
	log *slog.Logger

	// heartbeat, readTimeout and writeTimeout are the constants of the
	// same names; tests shorten them.
	heartbeat, readTimeout, writeTimeout time.Duration
	// loopbackOnly is set when the console must refuse non-loopback Host
	// headers (see Config.AllowedHosts).
	loopbackOnly bool
	handler      http.Handler
}

// New returns a console that dispatches messages to in and reads posts from
// the CHAT stream through js. A nil log discards logs.
func New(cfg Config, in Ingress, js jetstream.JetStream, log *slog.Logger) (*Console, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("console config: %w", err)
	}
	if in == nil {
		return nil, errors.New("console: ingress is required")
	}
	if js == nil {
		return nil, errors.New("console: jetstream is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Console{
		cfg:          cfg,
		in:           in,
		js:           js,
		log:          log.With("adapter", Adapter),
		heartbeat:    heartbeatInterval,
		readTimeout:  readTimeout,
		writeTimeout: writeTimeout,
	}
	if host, _, err := net.SplitHostPort(cfg.Addr); err == nil && cfg.TrustedUserHeader == "" {
		if isLoopbackHost(host) {
			c.loopbackOnly = true
		} else {
			c.log.Warn("console listens beyond loopback without an authenticating proxy: anyone who reaches it can run commands under any name",
				"addr", cfg.Addr)
		}
	}
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, fmt.Errorf("console: embedded files: %w", err)
	}
	c.handler = c.routes(static)
	return c, nil
}

// Handler returns the console's HTTP handler: the page at /, its assets
// under /static/, the JSON API under /api/ and /healthz.
func (c *Console) Handler() http.Handler { return c.handler }

// Serve serves the console on l until ctx ends, then shuts down gracefully:
// open event streams end at once (browsers reconnect to another replica
// with Last-Event-ID), other requests get shutdownTimeout to finish.
// It returns nil after a shutdown caused by ctx.
func (c *Console) Serve(ctx context.Context, l net.Listener) error {
	// Request contexts derive from baseCtx, so cancelling it ends the
	// long-lived event streams that Shutdown would otherwise wait for.
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	srv := &http.Server{
		Handler:           c.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       c.readTimeout,
		WriteTimeout:      c.writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	c.log.Info("console listening", "addr", l.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("console: serve on %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}
	cancelBase()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("console: shut down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("console: serve on %s: %w", l.Addr(), err)
	}
	return nil
}

// routes builds the handler tree.
func (c *Console) routes(static fs.FS) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, static, "index.html")
	})
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	mux.Handle("GET /static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Embedded files have no modification time, so ask browsers to
		// revalidate: a new release must not run with last week's script.
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /healthz", c.healthz)
	mux.HandleFunc("GET /api/me", c.me)
	mux.HandleFunc("GET /api/channels", c.channels)
	mux.HandleFunc("POST /api/messages", c.postMessage)
	mux.HandleFunc("GET /api/stream", c.stream)

	// Anything that changes state is a POST with a JSON body; refusing
	// cross-origin ones stops another web page from typing commands into
	// this console through the visitor's browser (CSRF).
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
	}))
	return c.secure(csrf.Handler(mux))
}

// secure sets headers every response gets and applies the Host check.
func (c *Console) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Scripts and styles come only from the console itself; images
		// may come from anywhere because attachments link to them.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob: http: https:; "+
			"media-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if c.loopbackOnly && !c.hostAllowed(r.Host) {
			writeError(w, http.StatusMisdirectedRequest, fmt.Sprintf(
				"host %q refused: this console has no authentication and answers only on loopback names; add it to console.allowed_hosts if a local proxy uses it", r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hostAllowed reports whether a Host header names this loopback console.
func (c *Console) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if isLoopbackHost(host) {
		return true
	}
	return slices.ContainsFunc(c.cfg.AllowedHosts, func(a string) bool {
		return strings.EqualFold(a, host) || strings.EqualFold(a, hostport)
	})
}

// isLoopbackHost reports whether host is "localhost" (or a name under it)
// or a loopback IP address.
func isLoopbackHost(host string) bool {
	host = strings.ToLower(strings.Trim(host, "[]"))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
