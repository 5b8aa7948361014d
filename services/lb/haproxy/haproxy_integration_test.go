package haproxy_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
	"github.com/switchboard-ops/switchboard/services/lb/haproxytest"
)

func TestAgainstARealHAProxy(t *testing.T) {
	web := haproxytest.StartHTTP(t, 0, "web1", "web2")
	in := haproxytest.Start(t, haproxytest.Config{
		Backends: []haproxytest.Backend{{Name: "www", Check: true, Servers: []haproxytest.Server{{Name: "web1", Addr: web["web1"].Addr}, {Name: "web2", Addr: web["web2"].Addr}}}},
		Map:      map[string]string{"team-a": "100"},
		TCP:      true,
	})
	ctx := context.Background()
	for _, c := range []*haproxy.Client{haproxy.NewClient("unix", in.Socket), haproxy.NewClient("tcp", in.TCPAddr)} {
		snap, err := c.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if snap.Info.Pid == 0 || len(snap.Servers) != 2 {
			t.Fatalf("snapshot over %s: %+v", c.Addr(), snap)
		}
	}
	c := haproxy.NewClient("unix", in.Socket, haproxy.WithTimeout(2*time.Second))
	errs, err := c.Apply(ctx, []haproxy.Change{
		{Kind: haproxy.SetState, Backend: "www", Server: "web1", State: haproxy.StateDrain},
		{Kind: haproxy.SetWeight, Backend: "www", Server: "web2", Weight: 42},
		{Kind: haproxy.SetState, Backend: "www", Server: "web9", State: haproxy.StateMaint},
		{Kind: haproxy.SetState, Backend: "nope", Server: "web1", State: haproxy.StateMaint},
		{Kind: haproxy.SetMap, Map: in.MapFile, Key: "team-a", Value: "150"},
		{Kind: haproxy.SetMap, Map: in.MapFile, Key: "team-b", Value: "30"},
		{Kind: haproxy.SetMap, Map: "/no/such.map", Key: "x", Value: "1"},
		{Kind: haproxy.DelMap, Map: in.MapFile, Key: "never-there"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []error{nil, nil, haproxy.ErrNoSuchServer, haproxy.ErrNoSuchBackend, nil, nil, haproxy.ErrNoSuchMap, nil}
	for i, w := range want {
		if (w == nil) != (errs[i] == nil) || (w != nil && !errors.Is(errs[i], w)) {
			t.Errorf("change %d: err %v, want %v", i, errs[i], w)
		}
	}
	if st, _ := in.State("www", "web1"); st != "drain" {
		t.Fatalf("web1 is %s, want drain", st)
	}
	if _, w := in.State("www", "web2"); w != 42 {
		t.Fatalf("web2 weight %d, want 42", w)
	}
	entries, err := c.Map(ctx, in.MapFile)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Key] = e.Value
	}
	if got["team-a"] != "150" || got["team-b"] != "30" || len(entries) != 2 {
		t.Fatalf("map entries %v, want team-a=150 team-b=30 (set, and added once)", entries)
	}
	maps, err := c.Maps(ctx)
	if err != nil || len(maps) != 1 || maps[0] != in.MapFile {
		t.Fatalf("maps %v %v, want [%s]", maps, err, in.MapFile)
	}

	// A reload without saving the state loses the runtime change; with
	// the server-state-file it keeps it.
	in.Reload()
	if st, _ := in.State("www", "web1"); st != "ready" {
		t.Fatalf("after a plain reload web1 is %s, want ready (runtime state lost)", st)
	}
	c.Apply(ctx, []haproxy.Change{{Kind: haproxy.SetState, Backend: "www", Server: "web1", State: haproxy.StateMaint}})
	in.SaveState()
	in.Reload()
	if st, _ := in.State("www", "web1"); st != "maint" {
		t.Fatalf("after save state and reload web1 is %s, want maint", st)
	}
}

func TestARealHAProxyRefusesChangesOnANonAdminSocket(t *testing.T) {
	in := haproxytest.Start(t, haproxytest.Config{
		Backends: []haproxytest.Backend{{Name: "www", Servers: []haproxytest.Server{{Name: "web1", Addr: "127.0.0.1:1"}}}},
		Level:    "user",
	})
	errs, err := haproxy.NewClient("unix", in.Socket).Apply(context.Background(), []haproxy.Change{{Kind: haproxy.SetState, Backend: "www", Server: "web1", State: haproxy.StateDrain}})
	if err != nil || !errors.Is(errs[0], haproxy.ErrPermissionDenied) {
		t.Fatalf("apply on a user-level socket: %v %v, want permission denied", err, errs)
	}
}
