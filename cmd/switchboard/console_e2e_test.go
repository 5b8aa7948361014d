package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// TestConsoleRunsACommandEndToEnd opens the real all-in-one switchboard's
// web console in headless Chromium, types ping, and waits for the sys
// service's pong in the thread of that message.
func TestConsoleRunsACommandEndToEnd(t *testing.T) {
	chromium := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium not found: the test script must install it (apt-get install -y chromium)")
		}
		t.Skip("SKIPPING end-to-end browser test: chromium not installed; apt-get install -y chromium")
	}
	_, out := startSwitchboardOutput(t)
	url := regexp.MustCompile(`Web console: (\S+)`).FindStringSubmatch(out)
	if url == nil {
		t.Fatalf("switchboard did not print the console URL:\n%s", out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	err := chromedp.Do(bctx,
		chromedp.Navigate(url[1]+"#ops"),
		chromedp.WaitVisible(chromedp.ID("name-input")),
		chromedp.SendKeys(chromedp.ID("name-input"), "ana"),
		chromedp.Click(chromedp.ID("name-save")),
		chromedp.WaitVisible(chromedp.CSS("#conn-status.conn-live")),
		chromedp.SendKeys(chromedp.ID("composer-text"), "ping"),
		chromedp.SendKeys(chromedp.ID("composer-text"), kb.Enter),
	)
	if err != nil {
		t.Fatalf("open the console and send ping: %v", err)
	}
	// The reply must be in the thread of the message that said ping, and
	// the message must carry the success badge.
	check := `(() => {
		for (const m of document.querySelectorAll('article.msg')) {
			const thread = m.querySelector('.thread-posts');
			if (!thread || !thread.textContent.includes('pong from sys replica')) continue;
			const badge = m.querySelector('.msg-head .badge');
			return badge ? badge.dataset.reaction : 'no badge';
		}
		return false;
	})()`
	wctx, wcancel := context.WithTimeout(bctx, 30*time.Second)
	defer wcancel()
	reaction, err := chromedp.Run(wctx, chromedp.Poll[string](check, chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		page, _ := chromedp.Run(bctx, chromedp.Text("body"))
		t.Fatalf("no pong in the thread of the ping message: %v\npage text:\n%s", err, page)
	}
	if reaction != "REACTION_SUCCEEDED" {
		t.Errorf("badge on the ping message = %q, want REACTION_SUCCEEDED", reaction)
	}
}
