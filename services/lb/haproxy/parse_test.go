package haproxy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// one reply as Exec returns it: without its terminating empty line.
func oneReply(t *testing.T, name string) string {
	t.Helper()
	r := splitReplies([]byte(readTestdata(t, name)), false)
	if len(r) != 1 {
		t.Fatalf("%s: %d replies, want 1", name, len(r))
	}
	return r[0]
}

func TestParseServersStateOfHAProxy26(t *testing.T) {
	got, err := ParseServersState(oneReply(t, "show_servers_state_2.6.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Server{
		{Backend: "www", Name: "web1", Addr: "127.0.0.1", Port: 18081, State: StateDrain, AdminFlags: 8, Operational: 0, Weight: 1, InitialWeight: 1},
		{Backend: "www", Name: "web2", Addr: "127.0.0.1", Port: 18082, State: StateReady, Operational: 0, Weight: 20, InitialWeight: 50},
		{Backend: "api", Name: "api1", Addr: "127.0.0.1", Port: 18083, State: StateMaint, AdminFlags: 1, Operational: 0, Weight: 1, InitialWeight: 1},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("servers (-want +got):\n%s", d)
	}
}

func TestParseStatOfHAProxy26(t *testing.T) {
	got, err := ParseStat(oneReply(t, "show_stat_2.6.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("got %d server rows, want 3 (no FRONTEND/BACKEND rows): %v", len(got), got)
	}
	if s := got["www/web1"]; s.Status != "DOWN" || s.Sessions != 0 {
		t.Fatalf("www/web1 = %+v, want status DOWN (drained, and its check fails) and 0 sessions", s)
	}
	if s := got["api/api1"]; s.Status != "MAINT" {
		t.Fatalf("api/api1 = %+v, want status MAINT", s)
	}
	if s := got["www/web2"]; s.Weight != 20 || s.CheckStatus != "L4CON" {
		t.Fatalf("www/web2 = %+v, want weight 20 and check L4CON", s)
	}
}

func TestParseInfoAndMaps(t *testing.T) {
	info, err := parseInfo(oneReply(t, "show_info_2.6.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Pid == 0 || !strings.HasPrefix(info.Version, "2.6") {
		t.Fatalf("info = %+v, want a pid and version 2.6", info)
	}
	entries := parseMap(oneReply(t, "show_map_2.6.txt"))
	if d := cmp.Diff([]MapEntry{{"a", "10"}, {"b", "20"}}, entries); d != "" {
		t.Fatalf("map entries (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"/tmp/hx/rl.map"}, parseMapList(oneReply(t, "show_map_list_2.6.txt"))); d != "" {
		t.Fatalf("map list (-want +got):\n%s", d)
	}
}

func TestPipelinedRepliesSplitInOrder(t *testing.T) {
	r := splitReplies([]byte(readTestdata(t, "pipelined_2.6.txt")), true)
	if len(r) != 5 {
		t.Fatalf("%d replies, want 5 (prompt + 4 commands): %q", len(r), r)
	}
	if r[0] != "" || r[1] != "" || r[4] != "" {
		t.Fatalf("prompt and the two successful changes should have empty replies: %q", r)
	}
	if !errors.Is(replyError(r[2]), ErrNoSuchServer) {
		t.Fatalf("reply 2 %q is not no-such-server", r[2])
	}
	if _, err := ParseServersState(r[3]); err != nil {
		t.Fatalf("reply 3 does not parse as servers state: %v", err)
	}
}

func TestErrorRepliesOfHAProxy26AreRecognised(t *testing.T) {
	tests := []struct {
		file string
		want error
	}{
		{"no_such_server.txt", ErrNoSuchServer},
		{"no_such_backend.txt", ErrNoSuchBackend},
		{"weight_range.txt", ErrBadArgument},
		{"unknown_map.txt", ErrNoSuchMap},
		{"entry_not_found.txt", ErrNoSuchKey},
		{"key_not_found.txt", ErrNoSuchKey},
		{"bad_state.txt", ErrBadArgument},
		{"unknown_command.txt", ErrUnknownCommand},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			if got := replyError(oneReply(t, filepath.Join("errors", tt.file))); !errors.Is(got, tt.want) {
				t.Fatalf("replyError = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestChangesRefuseArgumentsThatWouldChangeTheCommand(t *testing.T) {
	bad := []Change{
		{Kind: SetState, Backend: "www", Server: "web1;shutdown sessions", State: StateDrain},
		{Kind: SetState, Backend: "www", Server: "web1", State: "up"},
		{Kind: SetWeight, Backend: "www", Server: "web1", Weight: 257},
		{Kind: SetMap, Map: "/etc/rl.map", Key: "a b", Value: "1"},
		{Kind: DelMap, Map: "/etc/rl.map", Key: ""},
		{Kind: SetMap, Map: "/etc/rl.map", Key: "k", Value: "1\nshow info"},
	}
	for _, c := range bad {
		if _, err := c.Command(); !errors.Is(err, ErrBadArgument) {
			t.Errorf("%+v: err %v, want ErrBadArgument", c, err)
		}
	}
}
