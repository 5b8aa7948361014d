package lb

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/lb/haproxytest"
)

func TestAddPutsAServerBackIntoServiceOnEveryInstance(t *testing.T) {
	ins, _ := webFleet(t, 2, 0, "web1", "web2", "web3")
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2", "web3")
	svc := e.start(testConfig(ins...))
	if p, _ := e.run(req{cmd: "lb remove", args: map[string]string{"host": "web3", "backend": "www"}, text: "disk failing"}, 10*time.Second); p.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("remove: %v %q", p.GetKind(), p.GetText())
	}

	p, _ := e.run(req{cmd: "lb add", args: map[string]string{"host": "web3", "backend": "www"}, text: "disk replaced"}, 10*time.Second)
	want := "In service (ready): www/web3 → ready on lb1, lb2 (production). Reason: disk replaced.\nlb1: done (1 change)\nlb2: done (1 change)"
	if p.GetKind() != chatv1.Kind_KIND_RESULT || p.GetText() != want {
		t.Fatalf("add: %v %q, want a result %q", p.GetKind(), p.GetText(), want)
	}
	for i, in := range ins {
		if st, _ := in.State("www", "web3"); st != "ready" {
			t.Fatalf("web3 on lb%d is %s after lb add, want ready", i+1, st)
		}
	}
	d, _, err := svc.desired.server(context.Background(), "production", "www", "web3")
	if err != nil || d == nil || d.State != "ready" || d.Reason != "disk replaced" || d.By != "ana" || d.Command != "lb add" || len(d.Pending) != 0 {
		t.Fatalf("desired %+v %v, want ready by ana with the reason, confirmed everywhere", d, err)
	}
	evs := e.events("server.ready")
	if len(evs) != 1 {
		t.Fatalf("%d server.ready events, want 1", len(evs))
	}
	if f := evs[0].GetFields(); f["server"] != "web3" || f["backend"] != "www" || f["reason"] != "disk replaced" || f["by"] != "ana" || f["instances"] != "lb1=ok,lb2=ok" {
		t.Fatalf("server.ready event fields %v", f)
	}
}

// statusColumns splits the table into rows by server name; tabwriter pads
// columns with at least two spaces, and a value holds at most one.
func statusColumns(text string) map[string][]string {
	rows := map[string][]string{}
	sep := regexp.MustCompile(`\s{2,}`)
	for _, line := range strings.Split(text, "\n") {
		cols := sep.Split(strings.TrimSpace(line), -1)
		if len(cols) >= 6 && cols[0] == "www" {
			rows[cols[1]] = cols
		}
	}
	return rows
}

func TestStatusShowsStateHealthSessionsWeightAndReasonAndMarksDisagreement(t *testing.T) {
	web := haproxytest.StartHTTP(t, 0, "web1", "web2", "web3")
	servers := []haproxytest.Server{{Name: "web1", Addr: web["web1"].Addr}, {Name: "web2", Addr: web["web2"].Addr},
		{Name: "web3", Addr: web["web3"].Addr}, {Name: "web4", Addr: "127.0.0.1:1"}} // web4: nothing listens, its checks fail
	var ins []*haproxytest.Instance
	for range 2 {
		ins = append(ins, haproxytest.Start(t, haproxytest.Config{Backends: []haproxytest.Backend{{Name: "www", Check: true, Servers: servers}}}))
	}
	e := newTestEnv(t)
	e.seed("production", "www", "web1", "web2", "web3", "web4")
	e.start(testConfig(ins...))
	if p, _ := e.run(req{cmd: "lb drain", args: map[string]string{"hosts": "web2", "backend": "www"}, text: "kernel update"}, 10*time.Second); p.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("drain: %v %q", p.GetKind(), p.GetText())
	}
	if p, _ := e.run(req{cmd: "lb weight", args: map[string]string{"host": "web3", "backend": "www", "weight": "5"}}, 10*time.Second); p.GetKind() != chatv1.Kind_KIND_RESULT {
		t.Fatalf("weight: %v %q", p.GetKind(), p.GetText())
	}
	// A person changes web1 on lb2 by hand: the instances disagree.
	ins[1].Query("set server www/web1 state drain")
	// Sessions open on web1 through lb1.
	holdSessions(t, web["web1"], ins[0].URL)

	var text string
	var rows map[string][]string
	natstest.WaitFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		p, _ := e.run(req{cmd: "lb status", args: map[string]string{"target": "www"}}, 10*time.Second)
		text, rows = p.GetText(), statusColumns(p.GetText())
		if p.GetKind() != chatv1.Kind_KIND_RESULT || len(rows) != 4 {
			return errFmt("status %v %q, want a row for each of the 4 servers", p.GetKind(), text)
		}
		if !strings.HasPrefix(rows["web4"][3], "down") {
			return errFmt("web4's health is %q, want down once its checks fail", rows["web4"][3])
		}
		if n, _ := strconv.Atoi(rows["web1"][4]); n == 0 {
			return errFmt("web1 shows %q sessions, want the ones held open", rows["web1"][4])
		}
		return nil
	})
	t.Logf("lb status www:\n%s", text)
	lines := strings.Split(text, "\n")
	if len(lines) < 2 || lines[0] != "production (lb1, lb2)" || strings.Join(strings.Fields(lines[1]), " ") != "BACKEND SERVER STATE HEALTH SESS WEIGHT NOTE" {
		t.Fatalf("status %q, want the environment, its instances and the column names first", text)
	}
	tests := []struct {
		name         string
		server       string
		state, hlth  string
		weight, note string
	}{
		{"instances that disagree show each instance's value, marked", "web1", "lb1:ready lb2:drain", "up", "1", "≠ instances disagree"},
		{"a drained server shows its state and the reason", "web2", "drain", "up", "1", "lb drain by ana: kernel update"},
		{"a server with a new weight shows it and who set it", "web3", "ready", "up", "5", "lb weight by ana"},
		{"a server failing its checks shows its health", "web4", "ready", "down", "1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cols := rows[tt.server]
			note := ""
			if len(cols) > 6 {
				note = cols[6]
			}
			if cols[2] != tt.state || !strings.HasPrefix(cols[3], tt.hlth) || cols[5] != tt.weight || note != tt.note {
				t.Fatalf("row %q, want state %q, health %q…, weight %s, note %q", cols, tt.state, tt.hlth, tt.weight, tt.note)
			}
		})
	}
}
