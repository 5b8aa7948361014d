package slack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/slack-go/slack"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"

	"github.com/switchboard-ops/switchboard/kit/bus"
)

// Name is the adapter's name in every Conversation it addresses and in
// the CHAT subjects of its posts (sb.chat.post.slack.<channel id>).
const Name = "slack"

// BucketPosts maps <channel>.<post id> → the ts of the Slack message a
// channel-level post became. Posts that thread under another post by its
// id (the router's later events of an incident, a digest's list) find
// their thread there on every chat replica and after a restart.
const BucketPosts = "sb_slack_posts"

// postsTTL is how long a post can be threaded under: an incident's
// events keep arriving for days, rarely for weeks.
const postsTTL = 30 * 24 * time.Hour

// Ingress is the chat core as the Slack adapter sees it: it parses,
// authorises, audits and dispatches a person's message. *chat.Service
// implements it.
type Ingress interface {
	Handle(ctx context.Context, msg *chatv1.ChatMessage) *chatv1.ChatReply
}

// Timeouts and sizes.
const (
	// apiTimeout bounds one Web API call (retries of 429 and 5xx are
	// bounded by the caller's context instead).
	apiTimeout = 10 * time.Second
	// handleTimeout bounds the chat core's handling of one message:
	// dispatch waits for a service's accept, never for the work.
	handleTimeout = 30 * time.Second
	// maxBody caps an Events API request body; Slack's are a few KiB.
	maxBody = 1 << 20
	// signatureWindow is how old (or new) a signed request may be.
	signatureWindow = 5 * time.Minute
	// queueSize and workers bound the messages acknowledged to Slack but
	// not yet handled; when the queue is full, requests are refused (503,
	// or no Socket Mode ack) so that Slack delivers them again.
	queueSize = 4096
	workers   = 32
)

// Option changes an adapter; tests use them.
type Option func(*Adapter)

// WithHTTPClient sets the HTTP client for the Web API and Socket Mode.
func WithHTTPClient(c *http.Client) Option { return func(a *Adapter) { a.http = c } }

// WithNow sets the clock used for signature windows and caches.
func WithNow(now func() time.Time) Option { return func(a *Adapter) { a.now = now } }

// WithJetStream keeps the Slack message of every channel-level post in
// the KV bucket BucketPosts (declared by Start, with replicas replicas),
// so a post that threads under another post's id lands in its thread
// whichever replica delivered the first. Without it the adapter
// remembers its own deliveries, for an hour.
func WithJetStream(js jetstream.JetStream, replicas int) Option {
	return func(a *Adapter) { a.js, a.replicas = js, replicas }
}

// Adapter connects switchboard to one Slack workspace: it receives
// messages (Socket Mode or the Events API), hands them to the chat core,
// and delivers the chat core's posts back (chat.Adapter and
// chat.BatchAdapter).
type Adapter struct {
	cfg  Config
	in   Ingress
	log  *slog.Logger
	api  *slack.Client
	http *http.Client
	now  func() time.Time

	botUser string
	team    string

	js       jetstream.JetStream
	replicas int
	// posts is BucketPosts; nil without WithJetStream.
	posts jetstream.KeyValue

	// ingress
	queue chan inbound
	seen  *cache[struct{}]
	ids   *identities

	// egress
	pace      *pacer
	progress  *cache[string] // job id → ts of its progress message
	delivered *cache[string] // post id → ts of the message it became
	dead      *cache[string] // channel → why it is undeliverable
	opsMu     sync.Mutex
	reported  map[string]bool

	runCtx context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	srv    *http.Server
}

// New prepares an adapter for cfg that hands messages to in. Start
// connects it.
func New(cfg Config, in Ingress, log *slog.Logger, opts ...Option) (*Adapter, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("chat.slack.bot_token: required (SB_CHAT_SLACK_BOT_TOKEN)")
	}
	if in == nil {
		return nil, errors.New("slack: ingress is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Adapter{
		cfg:      cfg,
		in:       in,
		log:      log.With("adapter", Name),
		http:     &http.Client{Timeout: apiTimeout},
		now:      time.Now,
		queue:    make(chan inbound, queueSize),
		reported: map[string]bool{},
	}
	for _, o := range opts {
		o(a)
	}
	apiOpts := []slack.Option{slack.OptionHTTPClient(a.http)}
	if cfg.APIURL != "" {
		apiOpts = append(apiOpts, slack.OptionAPIURL(cfg.APIURL))
	}
	if cfg.AppToken.Set() {
		apiOpts = append(apiOpts, slack.OptionAppLevelToken(cfg.AppToken.Reveal()))
	}
	a.api = slack.New(cfg.BotToken.Reveal(), apiOpts...)
	// Slack retries an unacknowledged event for up to about 6 minutes;
	// remembering events for 15 covers every retry.
	a.seen = newCache[struct{}](15*time.Minute, 100_000, a.now)
	a.ids = newIdentities(a.api, cfg.ProfileTTL, a.now, a.log)
	a.pace = newPacer(cfg.PostInterval)
	a.progress = newCache[string](24*time.Hour, 10_000, a.now)
	a.delivered = newCache[string](time.Hour, 100_000, a.now)
	a.dead = newCache[string](time.Minute, 10_000, a.now)
	return a, nil
}

// Name is "slack".
func (a *Adapter) Name() string { return Name }

// Start declares the posts bucket (with WithJetStream), asks Slack who
// the bot is, then receives events: over Socket Mode, or, in events mode,
// by serving HTTP on l (nil: listen on cfg.EventsAddr).
func (a *Adapter) Start(ctx context.Context, l net.Listener) error {
	if a.js != nil {
		kv, err := bus.EnsureBucket(ctx, a.js, a.replicas, jetstream.KeyValueConfig{
			Bucket:      BucketPosts,
			Description: "Slack adapter: channel.post id → ts of the Slack message the post became, for threading under it.",
			TTL:         postsTTL,
			History:     1,
		})
		if err != nil {
			return fmt.Errorf("slack: %w", err)
		}
		a.posts = kv
	} else {
		a.log.Warn("slack: no JetStream given; posts that thread under another post find it only when this replica delivered it in the last hour")
	}
	actx, cancel := context.WithTimeout(ctx, apiTimeout)
	auth, err := a.api.AuthTestContext(actx)
	cancel()
	if err != nil {
		return fmt.Errorf("slack: auth.test with the bot token: %w", err)
	}
	a.botUser, a.team = auth.UserID, auth.TeamID
	a.runCtx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for i := 0; i < workers; i++ {
		a.wg.Add(1)
		go a.work()
	}
	switch a.cfg.Mode {
	case ModeSocket:
		a.wg.Add(1)
		go a.runSocket(a.runCtx)
	case ModeEvents:
		if l == nil {
			if l, err = net.Listen("tcp", a.cfg.EventsAddr); err != nil {
				a.Stop(ctx)
				return fmt.Errorf("slack: listen on %s: %w", a.cfg.EventsAddr, err)
			}
		}
		a.srv = &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
			ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("slack events server stopped", "error", err)
			}
		}()
		a.log.Info("slack events API listening", "addr", l.Addr().String())
	}
	a.log.Info("slack adapter started", "mode", a.cfg.Mode, "team", a.team, "bot_user", a.botUser)
	return nil
}

// Stop stops receiving, lets handled messages finish, and returns.
func (a *Adapter) Stop(ctx context.Context) {
	if a.srv != nil {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		a.srv.Shutdown(sctx)
		cancel()
	}
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
}
