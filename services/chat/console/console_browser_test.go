package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
)

// browserTimeout bounds a whole browser test; stepTimeout bounds each wait,
// so that a failed wait still leaves time for the failure screenshot.
const (
	browserTimeout = 60 * time.Second
	stepTimeout    = 20 * time.Second
)

// chromiumPath finds Chromium. Without it the test fails in CI, where the
// test script must install it, and skips loudly anywhere else.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found on PATH: the CI test script must install it (apt-get install -y chromium)")
	}
	t.Skip("SKIPPING browser test: chromium not installed; apt-get install -y chromium")
	return ""
}

// browser is a headless Chromium tab and what the page reported.
type browser struct {
	ctx context.Context

	mu         sync.Mutex
	exceptions []string
}

// newBrowser starts headless Chromium (as root, hence no sandbox) for at
// most browserTimeout, with a fresh profile. When the test fails it saves
// a screenshot of the page to $SB_TEST_ARTIFACTS, or t.TempDir().
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath(t)
	shots := os.Getenv("SB_TEST_ARTIFACTS")
	if shots == "" {
		shots = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	t.Cleanup(cancel)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	b := &browser{ctx: bctx}

	// Subscribing starts the browser; a broken install fails here.
	exceptions := chromedp.Events(bctx, runtime.ExceptionThrown)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.exceptions = append(b.exceptions, exceptionText(ev.ExceptionDetails))
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		sctx, cancel := context.WithTimeout(bctx, 5*time.Second)
		defer cancel()
		png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Logf("no failure screenshot: %v", err)
			return
		}
		file := filepath.Join(shots, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".png")
		if err := os.WriteFile(file, png, 0o644); err != nil {
			t.Logf("no failure screenshot: %v", err)
			return
		}
		t.Logf("screenshot of the page at failure: %s", file)
	})
	return b
}

// do runs steps, each group bounded by stepTimeout.
func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// checkNoExceptions fails the test if the page threw.
func (b *browser) checkNoExceptions(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.exceptions {
		t.Errorf("the page threw: %s", e)
	}
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d == nil {
		return "unknown exception"
	}
	s := d.Text
	if d.Exception != nil && d.Exception.Description != "" {
		s += " " + d.Exception.Description
	}
	return fmt.Sprintf("%s (%s:%d:%d)", s, d.URL, d.LineNumber+1, d.ColumnNumber+1)
}

// tinyPNG is an 8×8 blue square.
func tinyPNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			img.Set(x, y, color.RGBA{0x34, 0x51, 0xd1, 0xff})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatalf("encode png: %v", err)
	}
	return buf.Bytes()
}

func TestBrowserSendsACommandAndShowsTheReplyInItsThread(t *testing.T) {
	b := newBrowser(t)
	js := startJetStream(t)
	pic := tinyPNG(t)
	in := &fakeIngress{t: t, js: js, respond: func(msg *chatv1.ChatMessage) []*chatv1.ChatPost {
		return []*chatv1.ChatPost{{
			Id:           msg.GetId() + "/result",
			Conversation: &chatv1.Conversation{Adapter: Adapter, Channel: msg.GetConversation().GetChannel(), Thread: msg.GetId()},
			Kind:         chatv1.Kind_KIND_RESULT,
			Text:         "pong from fake",
			Author:       &chatv1.Identity{Id: "service:fake", Name: "fake", Automation: true},
			ReplyTo:      msg.GetId(),
			Reaction:     chatv1.Reaction_REACTION_SUCCEEDED,
			CreatedAt:    timestamppb.Now(),
			Attachments: []*chatv1.Attachment{{
				Name: "square.png", ContentType: "image/png", Data: pic, Title: "a blue square",
			}},
		}}
	}}
	c, err := New(DefaultConfig(), in, js, testLogger(t))
	if err != nil {
		t.Fatalf("new console: %v", err)
	}
	url := serveConsole(t, c)

	b.do(t, "open the page and give a name",
		chromedp.Navigate(url+"/#ops"),
		chromedp.WaitVisible(chromedp.ID("name-input")),
		chromedp.SendKeys(chromedp.ID("name-input"), "tester"),
		chromedp.Click(chromedp.ID("name-save")),
		chromedp.WaitNotVisible(chromedp.ID("name-dialog")),
		chromedp.WaitVisible(chromedp.CSS("#conn-status.conn-live")),
	)
	b.do(t, "type ping and press Enter",
		chromedp.SendKeys(chromedp.ID("composer-text"), "ping"),
		chromedp.SendKeys(chromedp.ID("composer-text"), kb.Enter),
	)

	var id string
	natstest.WaitFor(t, stepTimeout, waitStep, func() error {
		calls := in.recorded()
		if len(calls) == 0 {
			return errors.New("the console has not called the ingress yet")
		}
		id = calls[0].GetId()
		return nil
	})
	msg := in.recorded()[0]
	if got := msg.GetAuthor().GetName(); got != "tester" {
		t.Errorf("author = %q, want the name given in the page, tester", got)
	}
	if got := msg.GetText(); got != "ping" {
		t.Errorf("text = %q, want ping (Enter sends, and is not part of the text)", got)
	}
	if conv := msg.GetConversation(); conv.GetChannel() != "ops" || conv.GetThread() != "" {
		t.Errorf("conversation = %v, want channel ops at top level", conv)
	}

	// The page must show the reply inside the thread of that very message,
	// with its image decoded, and the success badge on the message.
	wait, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	check := `(() => {
		const m = document.querySelector('article.msg[data-id=' + ` + strconv.Quote(strconv.Quote(id)) + ` + ']');
		if (!m || m.classList.contains('pending')) return false;
		const thread = m.querySelector('.thread-posts');
		if (!thread || !thread.textContent.includes('pong from fake')) return false;
		const img = thread.querySelector('.attachment-image img');
		if (!img || !img.complete || img.naturalWidth === 0) return false;
		const badge = m.querySelector('.msg-head .badge');
		return badge ? badge.dataset.reaction : false;
	})()`
	reaction, err := chromedp.Run(wait, chromedp.Poll[string](check, chromedp.WithPollingTimeout(stepTimeout)))
	if err != nil {
		t.Fatalf("waiting for the reply with its image in the thread of message %s: %v", id, err)
	}
	if reaction != "REACTION_SUCCEEDED" {
		t.Errorf("badge on the message = %q, want REACTION_SUCCEEDED", reaction)
	}
	if n := len(in.recorded()); n != 1 {
		t.Errorf("ingress saw %d messages, want exactly 1", n)
	}
	b.checkNoExceptions(t)
}

func TestBrowserRecallsTheLastCommandAndRepliesInAThread(t *testing.T) {
	b := newBrowser(t)
	js := startJetStream(t)
	in := &fakeIngress{t: t, js: js}
	c, err := New(DefaultConfig(), in, js, testLogger(t))
	if err != nil {
		t.Fatalf("new console: %v", err)
	}
	url := serveConsole(t, c)

	b.do(t, "open the page, give a name and send a command",
		chromedp.Navigate(url+"/#general"),
		chromedp.WaitVisible(chromedp.ID("name-input")),
		chromedp.SendKeys(chromedp.ID("name-input"), "bob"),
		chromedp.Click(chromedp.ID("name-save")),
		chromedp.WaitVisible(chromedp.CSS("#conn-status.conn-live")),
		chromedp.SendKeys(chromedp.ID("composer-text"), "lb status www"),
		chromedp.SendKeys(chromedp.ID("composer-text"), kb.Enter),
	)
	var root string
	natstest.WaitFor(t, stepTimeout, waitStep, func() error {
		calls := in.recorded()
		if len(calls) != 1 {
			return fmt.Errorf("ingress saw %d messages, want 1", len(calls))
		}
		root = calls[0].GetId()
		return nil
	})
	sel := `article.msg[data-id="` + root + `"]`
	b.do(t, "wait for the echo and recall the command with the up arrow",
		chromedp.WaitVisible(chromedp.CSS(sel+`:not(.pending)`)),
		chromedp.SendKeys(chromedp.ID("composer-text"), kb.ArrowUp),
	)
	wait, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	recalled, err := chromedp.Run(wait, chromedp.Value(chromedp.ID("composer-text")))
	if err != nil {
		t.Fatalf("read the message box: %v", err)
	}
	if recalled != "lb status www" {
		t.Errorf("after the up arrow the message box holds %q, want the last command", recalled)
	}

	b.do(t, "reply in the thread of the command",
		chromedp.Evaluate[chromedp.Void](`document.getElementById('composer-text').value = ''`),
		chromedp.Click(chromedp.CSS(sel+` .msg-actions button`)),
		chromedp.WaitVisible(chromedp.ID("thread-target")),
		chromedp.SendKeys(chromedp.ID("composer-text"), "thanks"),
		chromedp.SendKeys(chromedp.ID("composer-text"), kb.Enter),
	)
	natstest.WaitFor(t, stepTimeout, waitStep, func() error {
		if n := len(in.recorded()); n != 2 {
			return fmt.Errorf("ingress saw %d messages, want 2", n)
		}
		return nil
	})
	reply := in.recorded()[1]
	if got := reply.GetConversation(); got.GetChannel() != "general" || got.GetThread() != root {
		t.Errorf("reply conversation = %v, want channel general, thread %s", got, root)
	}
	if reply.GetId() == root || reply.GetId() == "" {
		t.Errorf("reply id = %q, want a new id", reply.GetId())
	}
	check := `(() => {
		const r = document.querySelector(` + strconv.Quote(sel+` .thread-posts .reply[data-id="`+reply.GetId()+`"]`) + `);
		return !!r && !r.classList.contains('pending') && r.textContent.includes('thanks');
	})()`
	if _, err := chromedp.Run(wait, chromedp.Poll[bool](check, chromedp.WithPollingTimeout(stepTimeout))); err != nil {
		t.Fatalf("waiting for the echoed reply in the thread: %v", err)
	}
	b.checkNoExceptions(t)
}

func TestBrowserResumesWithoutLossOrRepeatsWhenTheConsoleRestarts(t *testing.T) {
	b := newBrowser(t)
	js := startJetStream(t)
	ctx := natstest.Context(t, browserTimeout)
	c, err := New(DefaultConfig(), &fakeIngress{t: t, js: js}, js, testLogger(t))
	if err != nil {
		t.Fatalf("new console: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	first, stopFirst := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- c.Serve(first, l) }()

	publishPost(ctx, t, js, post("ops", "before"))
	orphan := post("ops", "orphan-reply")
	orphan.Conversation.Thread = "older-root" // its first post is not on the stream
	publishPost(ctx, t, js, orphan)
	b.do(t, "open the page",
		chromedp.Navigate("http://"+addr+"/#ops"),
		chromedp.WaitVisible(chromedp.ID("name-input")),
		chromedp.SendKeys(chromedp.ID("name-input"), "eve"),
		chromedp.Click(chromedp.ID("name-save")),
		chromedp.WaitVisible(chromedp.CSS("#conn-status.conn-live")),
	)

	// The replica goes away; a post arrives while no console runs; another
	// replica takes over the address.
	stopFirst()
	if err := <-stopped; err != nil {
		t.Fatalf("serve: %v", err)
	}
	b.do(t, "notice the console is gone", chromedp.WaitVisible(chromedp.CSS("#conn-status:not(.conn-live)")))
	publishPost(ctx, t, js, post("ops", "while-down"))
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	second, stopSecond := context.WithCancel(ctx)
	stoppedAgain := make(chan error, 1)
	go func() { stoppedAgain <- c.Serve(second, l2) }()
	t.Cleanup(func() {
		stopSecond()
		if err := <-stoppedAgain; err != nil {
			t.Errorf("serve again: %v", err)
		}
	})
	publishPost(ctx, t, js, post("ops", "after"))

	wait, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	got, err := chromedp.Run(wait, chromedp.Poll[[]string](`(() => {
		const ids = [...document.querySelectorAll('#messages [data-id]')].map(e => e.dataset.id);
		return ids.includes('after') ? ids : false;
	})()`, chromedp.WithPollingTimeout(stepTimeout)))
	if err != nil {
		t.Fatalf("waiting for the post published after the restart: %v", err)
	}
	// The orphan's thread is held by a placeholder for its first post.
	want := []string{"before", "older-root", "orphan-reply", "while-down", "after"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("posts on the page (-want +got):\n%s", diff)
	}
	b.checkNoExceptions(t)
}

// TestPageRendersSamplePostsInLightAndDark renders a channel with every
// kind of post, in light and dark, without a page error. The screenshots go
// to $SB_CONSOLE_SCREENSHOT-light.png etc. when that is set (for people
// changing the page's look), else to a temporary directory.
func TestPageRendersSamplePostsInLightAndDark(t *testing.T) {
	prefix := os.Getenv("SB_CONSOLE_SCREENSHOT")
	if prefix == "" {
		prefix = filepath.Join(t.TempDir(), "console")
	}
	b := newBrowser(t)
	js := startJetStream(t)
	publishSamples(t, js)
	c, err := New(DefaultConfig(), &fakeIngress{t: t, js: js}, js, testLogger(t))
	if err != nil {
		t.Fatalf("new console: %v", err)
	}
	url := serveConsole(t, c)
	shoot := func(name string) {
		t.Helper()
		shot, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if !bytes.HasPrefix(shot, []byte("\x89PNG")) || len(shot) < 10000 {
			t.Fatalf("%s screenshot is not a rendered page (%d bytes)", name, len(shot))
		}
		file := prefix + "-" + name + ".png"
		if err := os.WriteFile(file, shot, 0o644); err != nil {
			t.Fatalf("write screenshot: %v", err)
		}
		t.Logf("wrote %s", file)
	}
	b.do(t, "open the page",
		chromedp.EmulateViewport(1280, 1000),
		chromedp.Navigate(url+"/#ops"),
		chromedp.WaitVisible(chromedp.ID("name-input")),
	)
	shoot("name")
	b.do(t, "render the samples",
		chromedp.SendKeys(chromedp.ID("name-input"), "ana"),
		chromedp.Click(chromedp.ID("name-save")),
		chromedp.WaitVisible(chromedp.CSS("#conn-status.conn-live")),
		chromedp.Poll[chromedp.Void](`[...document.images].every(i => i.complete)`),
		chromedp.SendKeys(chromedp.ID("composer-text"), "lb status www"),
	)
	for _, scheme := range []string{"light", "dark"} {
		b.do(t, "switch to "+scheme, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
			})
			return err
		}))
		shoot(scheme)
	}
	b.do(t, "scroll to the top", chromedp.Evaluate[chromedp.Void](`document.getElementById('messages').scrollTop = 0`))
	shoot("top")
	b.checkNoExceptions(t)
}

// publishSamples puts a realistic morning of #ops on CHAT.
func publishSamples(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := natstest.Context(t, waitTotal)
	base := time.Now().Add(-40 * time.Minute)
	at := func(min int) *timestamppb.Timestamp {
		return timestamppb.New(base.Add(time.Duration(min) * time.Minute))
	}
	person := func(name string) *chatv1.Identity { return &chatv1.Identity{Id: "console:" + name, Name: name} }
	service := func(name string) *chatv1.Identity {
		return &chatv1.Identity{Id: "service:" + name, Name: name, Automation: true}
	}
	conv := func(thread string) *chatv1.Conversation {
		return &chatv1.Conversation{Adapter: Adapter, Channel: "ops", Thread: thread}
	}
	posts := []*chatv1.ChatPost{
		{Id: "n1", Conversation: conv(""), Kind: chatv1.Kind_KIND_NOTICE, Author: service("pagerduty"), CreatedAt: at(0),
			Text: "Incident #4211 triggered: superagg p99 latency above 2s",
			Blocks: []*chatv1.Block{
				{Content: &chatv1.Block_Markdown{Markdown: "*Incident #4211* triggered: superagg p99 latency above 2s — on call: `ana`"}},
				{Content: &chatv1.Block_Link{Link: &chatv1.Link{Label: "Open in PagerDuty", Url: "https://example.pagerduty.com/incidents/4211"}}},
			}},
		{Id: "m1", Conversation: conv(""), Kind: chatv1.Kind_KIND_MESSAGE, Author: person("ana"), CreatedAt: at(2),
			Text: "lb drain web3,web4 www --wait -- kernel update"},
		{Id: "m1/1", Conversation: conv("m1"), Kind: chatv1.Kind_KIND_PROGRESS, Author: service("lb"), CreatedAt: at(2), ReplyTo: "m1",
			Reaction: chatv1.Reaction_REACTION_ACCEPTED, JobId: "3f9a1c", Seq: 1, Text: "Draining web3, web4 on lb1, lb2, lb3: 212 sessions left"},
		{Id: "m1/2", Conversation: conv("m1"), Kind: chatv1.Kind_KIND_PROGRESS, Author: service("lb"), CreatedAt: at(3), ReplyTo: "m1",
			JobId: "3f9a1c", Seq: 2, Text: "Draining web3, web4 on lb1, lb2, lb3: 37 sessions left"},
		{Id: "m1/3", Conversation: conv("m1"), Kind: chatv1.Kind_KIND_PROGRESS, Author: service("lb"), CreatedAt: at(4), ReplyTo: "m1",
			JobId: "3f9a1c", Seq: 3, Text: "Draining web3, web4 on lb1, lb2, lb3: 0 sessions left"},
		{Id: "m1/4", Conversation: conv("m1"), Kind: chatv1.Kind_KIND_RESULT, Author: service("lb"), CreatedAt: at(4), ReplyTo: "m1",
			Reaction: chatv1.Reaction_REACTION_SUCCEEDED, JobId: "3f9a1c", Seq: 4,
			Text: "web3 and web4 are in maintenance on every instance.",
			Blocks: []*chatv1.Block{
				{Content: &chatv1.Block_Markdown{Markdown: "**web3** and **web4** are in maintenance on every instance."}},
				{Content: &chatv1.Block_Fields{Fields: &chatv1.Fields{Items: []*chatv1.Field{
					{Title: "Backend", Value: "www", Short: true},
					{Title: "Instances", Value: "lb1, lb2, lb3", Short: true},
					{Title: "Took", Value: "2m 11s", Short: true},
				}}}},
			}},
		{Id: "m2", Conversation: conv(""), Kind: chatv1.Kind_KIND_MESSAGE, Author: person("bob"), CreatedAt: at(9),
			Text: "graphite render superagg.latency.p99 --from -1h"},
		{Id: "m2/1", Conversation: conv("m2"), Kind: chatv1.Kind_KIND_RESULT, Author: service("watcher"), CreatedAt: at(9), ReplyTo: "m2",
			Reaction: chatv1.Reaction_REACTION_SUCCEEDED, JobId: "77c0de", Seq: 1, Text: "superagg p99 over the last hour",
			Blocks: []*chatv1.Block{
				{Content: &chatv1.Block_Markdown{Markdown: "superagg p99 over the last hour, see https://graphite.example.com/render?target=superagg.latency.p99"}},
				{Content: &chatv1.Block_Code{Code: "time   p99_ms\n09:10  412\n09:20  1890\n09:30  2310\n09:40  655"}},
			},
			Attachments: []*chatv1.Attachment{
				{Name: "superagg.png", ContentType: "image/png", Data: chartPNG(t), Title: "superagg.latency.p99, last hour"},
				{Name: "superagg.csv", ContentType: "text/csv", Data: []byte("time,p99_ms\n09:10,412\n"), Title: "raw data"},
			}},
		{Id: "m3", Conversation: conv(""), Kind: chatv1.Kind_KIND_MESSAGE, Author: person("carol"), CreatedAt: at(15),
			Text: "dns apply plan-17"},
		{Id: "m3/1", Conversation: conv("m3"), Kind: chatv1.Kind_KIND_ERROR, Author: service("dns"), CreatedAt: at(15), ReplyTo: "m3",
			Reaction: chatv1.Reaction_REACTION_FAILED, JobId: "b41d2e", Seq: 1,
			Text: "Plan plan-17 is stale: the zone changed since it was made. Run `dns plan` again. (trace 4bf92f3577b34da6)"},
		{Id: "m4", Conversation: conv(""), Kind: chatv1.Kind_KIND_MESSAGE, Author: person("dave"), CreatedAt: at(21),
			Text: "deploy carbonpickle 0.2.9.11 to cops in production"},
		{Id: "m4/1", Conversation: conv("m4"), Kind: chatv1.Kind_KIND_PROGRESS, Author: service("deployer"), CreatedAt: at(22), ReplyTo: "m4",
			Reaction: chatv1.Reaction_REACTION_ACCEPTED, JobId: "c0ffee", Seq: 1, Text: "Rolling out to cop1–cop6: 2 of 6 done"},
	}
	for _, p := range posts {
		publishPost(ctx, t, js, p)
	}
}

// chartPNG draws a small latency chart, so screenshots show a real image.
func chartPNG(t *testing.T) []byte {
	t.Helper()
	const w, h = 360, 140
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	bg, grid, line := color.RGBA{0xfa, 0xfb, 0xfd, 0xff}, color.RGBA{0xe3, 0xe6, 0xeb, 0xff}, color.RGBA{0xd9, 0x48, 0x2b, 0xff}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := bg
			if y%35 == 0 || x%60 == 0 {
				c = grid
			}
			img.Set(x, y, c)
		}
	}
	prev := -1
	for x := 0; x < w; x++ {
		v := 0.25 + 0.6*math.Exp(-math.Pow(float64(x-200)/45, 2)) + 0.05*math.Sin(float64(x)/7)
		y := h - 10 - int(v*float64(h-20))
		if prev >= 0 {
			lo, hi := min(prev, y), max(prev, y)
			for yy := lo; yy <= hi; yy++ {
				img.Set(x, yy, line)
				img.Set(x, yy+1, line)
			}
		}
		prev = y
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatalf("encode chart: %v", err)
	}
	return buf.Bytes()
}
