package watcher

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/watcher/graphitetest"
)

// scenario is canary data fed to a real Graphite to record its render
// response: per host, which 10-second intervals of the last 8 minutes
// have a point (offsets in seconds before the recording, and a clock skew).
type scenario struct {
	name string
	// has reports whether host h sent the point of the interval that
	// started ago seconds before now.
	has func(h string, ago int) bool
	// skew shifts a host's timestamps (its clock is off).
	skew map[string]int
}

var recordHosts = []string{"h1", "h2", "h3", "h4"}

var scenarios = []scenario{
	{name: "healthy", has: func(string, int) bool { return true }},
	{name: "one-stopped", has: func(h string, ago int) bool { return h != "h3" || ago > 180 }},
	{name: "gaps", has: func(h string, ago int) bool {
		switch h {
		case "h2":
			return ago != 120 && ago != 240 && ago != 200
		case "h4":
			return ago != 150
		}
		return true
	}},
	// The whole pipeline is 90 seconds late; h3 stopped 4 minutes ago.
	{name: "late", has: func(h string, ago int) bool { return ago > 90 && (h != "h3" || ago > 240) }},
	// h4's clock is 20s ahead, h3's 20s behind.
	{name: "skew", has: func(string, int) bool { return true }, skew: map[string]int{"h4": 20, "h3": -20}},
	// Nothing for 20 minutes: the whisper files exist, the window is all null.
	{name: "outage", has: func(string, int) bool { return false }},
}

// TestRecordRenderResponses refreshes testdata/render-*.json from a real
// Graphite: SB_WATCHER_RECORD=1 go test -run TestRecordRenderResponses ./services/watcher
func TestRecordRenderResponses(t *testing.T) {
	if os.Getenv("SB_WATCHER_RECORD") == "" {
		t.Skip("set SB_WATCHER_RECORD=1 to record render responses from a real Graphite")
	}
	g := graphitetest.Start(t)
	now := time.Now().Truncate(graphitetest.Step)
	for _, sc := range scenarios {
		var pts []graphitetest.Point
		for _, h := range recordHosts {
			metric := fmt.Sprintf("rec.%s.%s.points", sc.name, h)
			// One old point, so the whisper file exists even when the
			// scenario sends nothing recent.
			pts = append(pts, graphitetest.Point{Metric: metric, Value: 1, Time: now.Add(-20 * time.Minute)})
			for ago := 480; ago >= 10; ago -= 10 {
				if sc.has(h, ago) {
					ts := now.Add(time.Duration(-ago+sc.skew[h]) * time.Second)
					pts = append(pts, graphitetest.Point{Metric: metric, Value: 1, Time: ts})
				}
			}
		}
		if err := g.Send(pts...); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.WaitFor("rec.healthy.h1.points", now.Add(-10*time.Second), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the rest of the batch
	for _, sc := range scenarios {
		target := fmt.Sprintf("aliasByNode(rec.%s.{h1,h2,h3,h4}.points,2)", sc.name)
		v := url.Values{"target": {target}, "format": {"json"}, "from": {"-8min"}, "until": {"now"}}
		resp, err := http.PostForm(g.URL+"/render", v)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, b, "", " "); err != nil {
			t.Fatalf("%s: %v: %s", sc.name, err, b)
		}
		if err := os.WriteFile(filepath.Join("testdata", "render-"+sc.name+".json"), pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
