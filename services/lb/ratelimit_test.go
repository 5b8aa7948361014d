package lb

import (
	"os"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"

	"github.com/switchboard-ops/switchboard/services/lb/haproxytest"
)

func TestRateLimitsAreSetLiveOnEveryInstanceAndSurviveARestart(t *testing.T) {
	web := haproxytest.StartHTTP(t, 0, "web1", "web2")
	// Two instances on one machine, sharing the map file switchboard
	// rewrites (write_map_file).
	mapFile := t.TempDir() + "/ratelimit.map"
	var ins []*haproxytest.Instance
	for i := 0; i < 2; i++ {
		ins = append(ins, haproxytest.Start(t, haproxytest.Config{MapFile: mapFile, Map: map[string]string{"free": "10"},
			Backends: []haproxytest.Backend{{Name: "www", Servers: []haproxytest.Server{{Name: "web1", Addr: web["web1"].Addr}, {Name: "web2", Addr: web["web2"].Addr}}}}}))
	}
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2")
	cfg := testConfig(ins...)
	ec := cfg.Environments["production"]
	ec.WriteMapFile = true
	cfg.Environments["production"] = ec
	e.start(cfg)

	p, _ := e.run(req{cmd: "ratelimit set", args: map[string]string{"env": "production", "limits": "paid=500,free=20"}, dry: true}, 10*time.Second)
	if !strings.Contains(p.GetText(), "free: 10") && !strings.Contains(p.GetText(), "free: (new) → 20") {
		t.Fatalf("dry run %q", p.GetText())
	}
	if v := ins[0].MapValue("paid"); v != "" {
		t.Fatalf("a dry run set paid=%s", v)
	}
	p, _ = e.run(req{cmd: "ratelimit set", args: map[string]string{"env": "production", "limits": "paid=500,free=20"}, text: "launch"}, 10*time.Second)
	if p.GetKind() != chatv1.Kind_KIND_RESULT || !strings.Contains(p.GetText(), "lb1: done") || !strings.Contains(p.GetText(), "lb2: done") {
		t.Fatalf("ratelimit set %v %q", p.GetKind(), p.GetText())
	}
	for _, in := range ins {
		if in.MapValue("paid") != "500" || in.MapValue("free") != "20" {
			t.Fatalf("map on %s: paid=%q free=%q", in.Socket, in.MapValue("paid"), in.MapValue("free"))
		}
	}
	b, err := os.ReadFile(ins[0].MapFile)
	if err != nil || !strings.Contains(string(b), "paid 500") || !strings.Contains(string(b), "free 20") {
		t.Fatalf("map file %q %v, want the limits written", b, err)
	}
	// A restart reads the file: the limits are there before any
	// reconciliation (the interval is an hour here).
	ins[0].Restart()
	if v := ins[0].MapValue("paid"); v != "500" {
		t.Fatalf("after a restart paid=%q, want 500 from the map file", v)
	}
	p, _ = e.run(req{cmd: "ratelimit show", args: map[string]string{"env": "production"}}, 10*time.Second)
	if !strings.Contains(p.GetText(), "paid") || !strings.Contains(p.GetText(), "Last set by ana") {
		t.Fatalf("ratelimit show %q", p.GetText())
	}
	if evs := e.events("ratelimit.set"); len(evs) != 1 || evs[0].GetFields()["limits"] != "free=20,paid=500" {
		t.Fatalf("events %v", evs)
	}
}

func TestWriteMapFileKeepsOtherLines(t *testing.T) {
	path := t.TempDir() + "/rl.map"
	os.WriteFile(path, []byte("# limits\nfree 10\nother 7\n"), 0o644)
	if err := writeMapFile(path, map[string]string{"free": "20", "paid": "500"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if got, want := string(b), "# limits\nfree 20\nother 7\npaid 500\n"; got != want {
		t.Fatalf("map file %q, want %q", got, want)
	}
}
