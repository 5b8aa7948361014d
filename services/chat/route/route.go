// Package route turns events into chat posts: it consumes the EVENTS
// stream, matches each event's subject against configured rules, renders
// it with the rule's template, and publishes a ChatPost on the CHAT stream
// addressed to the rule's channel, where the egress delivers it like any
// other post.
//
// Three promises, each with its mechanism:
//
//   - One delivery across chat replicas: a durable consumer ("chat-route")
//     with a pinned priority group gives one replica at a time all the
//     events; another takes over when it stops pulling. An event is
//     acknowledged only after the post that carries it is stored, so a
//     replica that dies loses nothing (a post may then repeat).
//   - Threads: the first post about a correlation id (a PagerDuty incident,
//     a CI branch) goes to the channel; later ones go into its thread. The
//     mapping correlation id → thread lives in KV sb_route_threads, so every
//     replica and every restart agrees. A thread id is the id of the
//     thread's first post, which is what adapters thread on.
//   - Storms are digested, never dropped: a channel gets at most one post
//     per Interval (Slack allows about one a second). Events that arrive
//     while a channel waits are queued; when its turn comes, one queued
//     event is posted as itself, several as one digest: a headline at the
//     channel level ("14 more PagerDuty events: 9 triggered, 5 resolved —
//     list in thread") and, in the next slot, the list of every one of them
//     as a reply in the headline's thread (which an adapter may make a
//     file when it is long).
//
// The package imports only kit and proto, so the chat service wires it in
// without the router knowing the chat.
package route

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/emit"
)

// BucketThreads maps adapter.channel.correlation id → thread id.
const BucketThreads = "sb_route_threads"

// ConsumerName is the durable consumer on EVENTS. Renaming it makes a new
// consumer (which starts at new events, not at the start of the stream).
const ConsumerName = "chat-route"

// DefaultFormat shows an event's title, and its text on a second line.
const DefaultFormat = "{{.Title}}{{with .Text}}\n{{.}}{{end}}"

// Config is the router's configuration (the chat's "route" key).
type Config struct {
	// Rules, tried in order; every rule that matches gets the event (one
	// event can go to several channels).
	Rules []Rule `yaml:"rules"`
	// Interval is the least time between two posts to one channel
	// (default 1s, Slack's rate limit for posting to a channel).
	Interval time.Duration `yaml:"interval"`
	// MaxDigest is the most events one digest lists (default 500); more
	// waiting events make more digests, one per Interval.
	MaxDigest int `yaml:"max_digest"`
}

// Rule sends the events whose subject matches to one channel.
type Rule struct {
	// Subject is a NATS subject pattern: "sb.event.pagerduty.>",
	// "sb.event.ci.build.failed", "sb.event.*.incident.*".
	Subject string `yaml:"subject"`
	// Adapter and Channel address the posts ("slack", "C024BE91L").
	Adapter string `yaml:"adapter"`
	Channel string `yaml:"channel"`
	// Name names the events in digests ("PagerDuty"); default: the
	// event's source.
	Name string `yaml:"name"`
	// Format is a text/template over the event (.Title, .Text, .Url,
	// .Fields.x, .Type, .Source, .Severity, .CorrelationId, and .Verb, the
	// last part of the type with a capital). Default: DefaultFormat.
	Format string `yaml:"format"`
	// Thread: "correlation" (default) threads events of one correlation id
	// under the first; "none" posts every event to the channel.
	Thread string `yaml:"thread"`
}

// DefaultConfig routes nothing until rules are configured.
func DefaultConfig() Config { return Config{Interval: time.Second, MaxDigest: 500} }

func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.MaxDigest == 0 {
		c.MaxDigest = 500
	}
	return c
}

// Validate names the first wrong key.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Interval < 0 || c.Interval > time.Minute {
		return fmt.Errorf("route.interval: %v, want up to 1m", c.Interval)
	}
	if c.MaxDigest < 2 || c.MaxDigest > 5000 {
		return fmt.Errorf("route.max_digest: %d, want 2 to 5000", c.MaxDigest)
	}
	for i, r := range c.Rules {
		if _, err := compile(r); err != nil {
			return fmt.Errorf("route.rules[%d]: %w", i, err)
		}
	}
	return nil
}

// rule is a compiled Rule.
type rule struct {
	Rule
	pattern []string
	tmpl    *template.Template
}

func compile(r Rule) (*rule, error) {
	if !strings.HasPrefix(r.Subject, "sb.event.") && r.Subject != wire.SubjectEvents {
		return nil, fmt.Errorf("subject: %q is not under sb.event", r.Subject)
	}
	toks := strings.Split(r.Subject, ".")
	for i, t := range toks {
		if t == "" || t == ">" && i != len(toks)-1 || strings.ContainsAny(t, " \t") || len(t) > 1 && strings.ContainsAny(t, "*>") {
			return nil, fmt.Errorf("subject: %q is not a subject pattern", r.Subject)
		}
	}
	if r.Adapter == "" || r.Channel == "" {
		return nil, errors.New("adapter and channel are required")
	}
	if r.Thread != "" && r.Thread != "correlation" && r.Thread != "none" {
		return nil, fmt.Errorf("thread: %q, want correlation or none", r.Thread)
	}
	format := r.Format
	if format == "" {
		format = DefaultFormat
	}
	t, err := template.New(r.Subject).Funcs(funcs).Option("missingkey=zero").Parse(format)
	if err != nil {
		return nil, fmt.Errorf("format: %w", err)
	}
	return &rule{Rule: r, pattern: toks, tmpl: t}, nil
}

var funcs = template.FuncMap{
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"title": capital,
}

func capital(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// matches is NATS subject matching: "*" is one token, ">" the rest.
func (r *rule) matches(subject []string) bool {
	for i, p := range r.pattern {
		if p == ">" {
			return len(subject) > i
		}
		if i >= len(subject) || p != "*" && p != subject[i] {
			return false
		}
	}
	return len(subject) == len(r.pattern)
}

// View is what a rule's format sees: the event, plus Verb and Subject.
type View struct {
	*eventv1.Event
	// Verb is the last part of the type, capitalised ("Triggered").
	Verb    string
	Subject string
}

func (r *rule) render(ev *eventv1.Event, subject string) string {
	var b strings.Builder
	if err := r.tmpl.Execute(&b, View{Event: ev, Verb: capital(verb(ev.GetType())), Subject: subject}); err != nil {
		// A template that fails on one event must not hold the event
		// back: show what there is.
		return fmt.Sprintf("%s %s: %s (format error: %v)", ev.GetSource(), ev.GetType(), ev.GetTitle(), err)
	}
	s := strings.TrimSpace(strings.ReplaceAll(b.String(), "<no value>", ""))
	if s == "" {
		s = fmt.Sprintf("%s %s %s", ev.GetSource(), ev.GetType(), ev.GetId())
	}
	return s
}

func verb(typ string) string { return typ[strings.LastIndexByte(typ, '.')+1:] }

// Options are the router's dependencies.
type Options struct {
	Log *slog.Logger
	// Replicas of the thread bucket (3 on a cluster).
	Replicas int
	// PinnedTTL: when the pinned replica stops pulling for this long,
	// another takes over (default 10s).
	PinnedTTL time.Duration
}

// Router routes events to channels. New prepares it, Start consumes, Stop
// ends.
type Router struct {
	cfg     Config
	rules   []*rule
	js      jetstream.JetStream
	log     *slog.Logger
	threads jetstream.KeyValue
	o       Options

	ctx    context.Context
	cancel context.CancelFunc
	cc     jetstream.ConsumeContext
	wg     sync.WaitGroup

	mu       sync.Mutex
	channels map[string]*channel
}

// New validates cfg and declares the thread bucket.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, o Options) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.PinnedTTL <= 0 {
		o.PinnedTTL = 10 * time.Second
	}
	r := &Router{cfg: cfg, js: js, log: o.Log.With("component", "route"), o: o, channels: map[string]*channel{}}
	for _, rc := range cfg.Rules {
		cr, _ := compile(rc)
		r.rules = append(r.rules, cr)
	}
	kv, err := bus.EnsureBucket(ctx, js, o.Replicas, jetstream.KeyValueConfig{
		Bucket:      BucketThreads,
		Description: "Routed events: adapter.channel.correlation id → thread (the id of its first post).",
		TTL:         30 * 24 * time.Hour,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	r.threads = kv
	return r, nil
}

// Start declares the durable consumer and starts routing. With no rules it
// does nothing.
func (r *Router) Start(ctx context.Context) error {
	if len(r.rules) == 0 {
		return nil
	}
	cons, err := r.js.CreateOrUpdateConsumer(ctx, wire.StreamEvents, jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "Routes events to chat channels.",
		FilterSubject: wire.SubjectEvents,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		// Events wait in a channel's queue for their turn; queued ones are
		// kept alive with InProgress.
		AckWait:        2 * time.Minute,
		MaxAckPending:  20000,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{"route"},
		PinnedTTL:      r.o.PinnedTTL,
	})
	if err != nil {
		return fmt.Errorf("route: declare consumer %s: %w", ConsumerName, err)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.cc, err = cons.Consume(r.receive, jetstream.PullPriorityGroup("route"),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				r.log.Debug("route consume", "error", err)
			}
		}))
	if err != nil {
		r.cancel()
		return fmt.Errorf("route: consume: %w", err)
	}
	return nil
}

// Stop stops consuming and waits for the channel workers; events not yet
// posted are redelivered (to this or another replica) after AckWait.
func (r *Router) Stop(ctx context.Context) {
	if r.cc != nil {
		r.cc.Stop()
	}
	if r.cancel != nil {
		r.cancel()
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// item is one event on its way to one channel.
type item struct {
	ev      *eventv1.Event
	subject string
	rule    *rule
	text    string
	msg     *delivery
}

// delivery acknowledges an event once every channel it goes to has it.
type delivery struct {
	m       jetstream.Msg
	pending atomic.Int32
}

func (d *delivery) done() {
	if d.pending.Add(-1) == 0 {
		d.m.Ack()
	}
}

// receive runs on the consumer's goroutine: it must not block.
func (r *Router) receive(m jetstream.Msg) {
	var ev eventv1.Event
	if err := wire.Unmarshal(m.Data(), &ev); err != nil {
		r.log.Warn("undecodable event; terminated", "subject", m.Subject(), "error", err)
		m.TermWithReason("undecodable event")
		return
	}
	subject := m.Subject()
	toks := strings.Split(subject, ".")
	var targets []*rule
	for _, rl := range r.rules {
		if rl.matches(toks) {
			targets = append(targets, rl)
		}
	}
	if len(targets) == 0 {
		m.Ack()
		return
	}
	d := &delivery{m: m}
	d.pending.Store(int32(len(targets)))
	for _, rl := range targets {
		r.channel(rl.Adapter, rl.Channel).push(&item{ev: &ev, subject: subject, rule: rl, text: rl.render(&ev, subject), msg: d})
	}
}

// channel is one adapter channel's queue and its worker.
type channel struct {
	r                *Router
	adapter, channel string
	mu               sync.Mutex
	queue            []*item
	wake             chan struct{}

	// list is a digest's list, posted in the slot after its headline. The
	// listed events stay at the head of the queue (kept alive by
	// inProgress) until it is stored. Only the worker touches these.
	list   *chatv1.ChatPost
	listed int
}

func (r *Router) channel(adapter, name string) *channel {
	key := adapter + "\x00" + name
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.channels[key]
	if !ok {
		c = &channel{r: r, adapter: adapter, channel: name, wake: make(chan struct{}, 1)}
		r.channels[key] = c
		r.wg.Add(1)
		go c.work(r.ctx)
	}
	return c
}

func (c *channel) push(it *item) {
	c.mu.Lock()
	c.queue = append(c.queue, it)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// work posts the channel's queue, at most one post per Interval.
func (c *channel) work(ctx context.Context) {
	defer c.r.wg.Done()
	var last time.Time
	keepAlive := time.NewTicker(30 * time.Second)
	defer keepAlive.Stop()
	for {
		c.mu.Lock()
		n := len(c.queue)
		c.mu.Unlock()
		if n == 0 {
			select {
			case <-ctx.Done():
				return
			case <-c.wake:
				continue
			case <-keepAlive.C:
				continue
			}
		}
		if wait := time.Until(last.Add(c.r.cfg.Interval)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			case <-keepAlive.C:
				t.Stop()
				c.inProgress()
				continue
			}
		}
		done, ok := c.next(ctx)
		if !ok {
			return // stopping: the events are redelivered later
		}
		last = time.Now()
		c.mu.Lock()
		finished := c.queue[:done]
		c.queue = c.queue[done:]
		c.mu.Unlock()
		for _, it := range finished {
			it.msg.done()
		}
	}
}

// next makes the channel's next post: a digest's pending list, or the
// queued events, one as itself or several as a digest's headline. It
// returns how many events from the head of the queue are now posted, and
// false when the router stops first.
func (c *channel) next(ctx context.Context) (int, bool) {
	if c.list != nil {
		list, n := c.list, c.listed
		if !c.retry(ctx, n, func() error { return c.post(ctx, list) }) {
			return 0, false
		}
		c.list, c.listed = nil, 0
		return n, true
	}
	c.mu.Lock()
	batch := c.queue[:min(len(c.queue), c.r.cfg.MaxDigest)]
	c.mu.Unlock()
	if len(batch) == 1 {
		return 1, c.retry(ctx, 1, func() error { return c.single(ctx, batch[0]) })
	}
	head, list := c.digest(batch)
	if !c.retry(ctx, len(batch), func() error { return c.post(ctx, head) }) {
		return 0, false
	}
	c.list, c.listed = list, len(batch)
	return 0, true
}

// inProgress keeps queued events from being redelivered while they wait.
func (c *channel) inProgress() {
	c.mu.Lock()
	q := append([]*item(nil), c.queue...)
	c.mu.Unlock()
	for _, it := range q {
		it.msg.m.InProgress()
	}
}

// retry runs f, which stores a post about that many events, until it
// succeeds or the router stops.
func (c *channel) retry(ctx context.Context, events int, f func() error) bool {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil {
			return true
		}
		c.r.log.Warn("route: post to channel; retrying", "adapter", c.adapter, "channel", c.channel, "events", events, "error", err)
		t := time.NewTimer(min(100*time.Millisecond<<min(attempt, 5), 5*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// post stores one post on the CHAT stream.
func (c *channel) post(ctx context.Context, p *chatv1.ChatPost) error {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := emit.Post(pctx, c.r.js, p)
	return err
}

func (c *channel) author(name string) *chatv1.Identity {
	return &chatv1.Identity{Id: "service:route", Name: name, Automation: true}
}

func ruleName(it *item) string {
	if it.rule.Name != "" {
		return it.rule.Name
	}
	return it.ev.GetSource()
}

// postID is the same for the same event in the same channel, so a
// redelivered event is dropped by the CHAT stream's duplicate window.
func postID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// single posts one event, in its correlation's thread when there is one.
func (c *channel) single(ctx context.Context, it *item) error {
	ev := it.ev
	post := &chatv1.ChatPost{
		Id:           "ev-" + postID(ev.GetSource(), ev.GetId(), c.adapter, c.channel),
		Conversation: &chatv1.Conversation{Adapter: c.adapter, Channel: c.channel},
		Kind:         chatv1.Kind_KIND_NOTICE,
		Text:         it.text,
		Author:       c.author(ruleName(it)),
		CommandId:    ev.GetCommandId(),
	}
	post.Blocks = []*chatv1.Block{{Content: &chatv1.Block_Markdown{Markdown: it.text}}}
	if ev.GetUrl() != "" {
		post.Blocks = append(post.Blocks, &chatv1.Block{Content: &chatv1.Block_Link{Link: &chatv1.Link{Label: "Details", Url: ev.GetUrl()}}})
	}
	if it.rule.Thread != "none" && ev.GetCorrelationId() != "" {
		thread, err := c.thread(ctx, ev.GetCorrelationId(), post.Id)
		if err != nil {
			return err
		}
		if thread != post.Id {
			post.Conversation.Thread = thread
		}
	}
	return c.post(ctx, post)
}

// thread returns the thread of a correlation id in this channel, claiming
// it for root (the id of the post about to be made) when there is none.
func (c *channel) thread(ctx context.Context, correlation, root string) (string, error) {
	key := wire.Token(c.adapter) + "." + wire.Token(c.channel) + "." + wire.Token(correlation)
	kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for range 3 {
		e, err := c.r.threads.Get(kctx, key)
		if err == nil {
			return string(e.Value()), nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return "", fmt.Errorf("look up thread of %s: %w", correlation, err)
		}
		_, err = c.r.threads.Create(kctx, key, []byte(root))
		if err == nil {
			return root, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", fmt.Errorf("record thread of %s: %w", correlation, err)
		}
		// Another replica claimed it a moment ago: read theirs.
	}
	return "", fmt.Errorf("record thread of %s: conflicting writers", correlation)
}

// digest makes the two posts of a digest of many events: a headline for
// the channel that counts them by kind ("14 more PagerDuty events: 9
// triggered, 5 resolved — list in thread"), and the list of every one of
// them as a reply in the headline's thread. In Slack a long list would be
// a wall of text in the channel; in the thread it is out of the way, and
// the adapter turns a long one into a file there.
func (c *channel) digest(batch []*item) (headline, list *chatv1.ChatPost) {
	name := ruleName(batch[0])
	counts := map[string]int{}
	ids := make([]string, 0, len(batch)+2)
	ids = append(ids, c.adapter, c.channel)
	var lines strings.Builder
	for _, it := range batch {
		if ruleName(it) != name {
			name = ""
		}
		counts[verb(it.ev.GetType())]++
		ids = append(ids, it.ev.GetSource()+"/"+it.ev.GetId())
		line, _, _ := strings.Cut(it.text, "\n")
		if r := []rune(line); len(r) > 200 {
			line = string(r[:200]) + "…"
		}
		lines.WriteString("\n• " + line)
	}
	kinds := make([]string, 0, len(counts))
	for k := range counts {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		if counts[kinds[i]] != counts[kinds[j]] {
			return counts[kinds[i]] > counts[kinds[j]]
		}
		return kinds[i] < kinds[j]
	})
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], strings.ReplaceAll(k, "_", " ")))
	}
	label := "events"
	if name != "" {
		label = name + " events"
	}
	id := "digest-" + postID(ids...)
	headline = &chatv1.ChatPost{
		Id:           id,
		Conversation: &chatv1.Conversation{Adapter: c.adapter, Channel: c.channel},
		Kind:         chatv1.Kind_KIND_NOTICE,
		Text:         fmt.Sprintf("%d more %s: %s — list in thread", len(batch), label, strings.Join(parts, ", ")),
		Author:       c.author(name),
	}
	// The list threads under the headline by its post id, which is what
	// adapters thread on (Slack looks up the message it became).
	list = &chatv1.ChatPost{
		Id:           id + "-list",
		Conversation: &chatv1.Conversation{Adapter: c.adapter, Channel: c.channel, Thread: id},
		Kind:         chatv1.Kind_KIND_NOTICE,
		Text:         fmt.Sprintf("The %d %s:", len(batch), label) + lines.String(),
		Author:       c.author(name),
	}
	return headline, list
}
