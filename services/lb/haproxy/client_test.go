package haproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSocket is a scripted Runtime API on a unix socket: the socket
// equivalent of httptest. reply maps a command to its reply (without the
// terminating empty line); a command it does not know gets "Unknown
// command.". hang makes it read but never answer; closeAfter closes the
// connection after that many commands.
type fakeSocket struct {
	path       string
	reply      func(cmd string) string
	hang       bool
	closeAfter int
	conns      atomic.Int32
}

func newFakeSocket(t *testing.T, reply func(string) string) *fakeSocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "hapfake")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeSocket{path: filepath.Join(dir, "admin.sock"), reply: reply}
	ln, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.conns.Add(1)
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakeSocket) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	prompt := false
	n := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if f.hang {
			continue
		}
		cmd := strings.TrimSpace(line)
		out := ""
		switch cmd {
		case "prompt":
			prompt = true
		case "quit":
			return
		default:
			n++
			if f.closeAfter > 0 && n > f.closeAfter {
				return
			}
			out = f.reply(cmd)
			if out != "" {
				out += "\n"
			}
		}
		out += "\n"
		if prompt {
			out += "> "
		}
		c.Write([]byte(out))
		if !prompt {
			return
		}
	}
}

func TestApplyPipelinesOnOneConnectionAndReportsEachReply(t *testing.T) {
	f := newFakeSocket(t, func(cmd string) string {
		switch {
		case strings.Contains(cmd, "/web9 "):
			return "No such server."
		case strings.HasPrefix(cmd, "set server"), strings.HasPrefix(cmd, "set weight"):
			return ""
		case strings.HasPrefix(cmd, "set map") && strings.Contains(cmd, " new "):
			return "entry not found."
		case strings.HasPrefix(cmd, "set map"), strings.HasPrefix(cmd, "add map"):
			return ""
		case strings.HasPrefix(cmd, "del map"):
			return "Key not found."
		}
		return "Unknown command, but maybe one of the following ones is a better match:"
	})
	c := NewClient("unix", f.path, WithTimeout(2*time.Second))
	errs, err := c.Apply(context.Background(), []Change{
		{Kind: SetState, Backend: "www", Server: "web1", State: StateDrain},
		{Kind: SetState, Backend: "www", Server: "web9", State: StateDrain},
		{Kind: SetWeight, Backend: "www", Server: "web2", Weight: 10},
		{Kind: SetMap, Map: "/rl.map", Key: "old", Value: "5"},
		{Kind: SetMap, Map: "/rl.map", Key: "new", Value: "7"},
		{Kind: DelMap, Map: "/rl.map", Key: "gone"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if i == 1 {
			if !errors.Is(e, ErrNoSuchServer) || !strings.Contains(e.Error(), "No such server.") {
				t.Errorf("change 1: err %v, want ErrNoSuchServer quoting HAProxy", e)
			}
			continue
		}
		if e != nil {
			t.Errorf("change %d: unexpected error %v", i, e)
		}
	}
	// One connection for the changes, one more to add the missing map key.
	if n := f.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

func TestPerCommandModeUsesOneConnectionPerCommand(t *testing.T) {
	f := newFakeSocket(t, func(string) string { return "" })
	c := NewClient("unix", f.path, WithoutPipelining())
	errs, err := c.Apply(context.Background(), []Change{
		{Kind: SetState, Backend: "www", Server: "web1", State: StateDrain},
		{Kind: SetState, Backend: "www", Server: "web2", State: StateDrain},
		{Kind: SetState, Backend: "www", Server: "web3", State: StateDrain},
	})
	if err != nil || errors.Join(errs...) != nil {
		t.Fatalf("apply: %v %v", err, errs)
	}
	if n := f.conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

func TestAHangingHAProxyTimesOut(t *testing.T) {
	f := newFakeSocket(t, func(string) string { return "" })
	f.hang = true
	c := NewClient("unix", f.path, WithTimeout(200*time.Millisecond))
	_, err := c.Apply(context.Background(), []Change{{Kind: SetState, Backend: "www", Server: "web1", State: StateDrain}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want a deadline error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	c = NewClient("unix", f.path, WithTimeout(time.Minute))
	if _, err := c.Snapshot(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want cancelled", err)
	}
}

func TestAConnectionClosedPartWayFailsOnlyTheUnansweredChanges(t *testing.T) {
	f := newFakeSocket(t, func(string) string { return "" })
	f.closeAfter = 2
	c := NewClient("unix", f.path)
	errs, err := c.Apply(context.Background(), []Change{
		{Kind: SetState, Backend: "www", Server: "web1", State: StateDrain},
		{Kind: SetState, Backend: "www", Server: "web2", State: StateDrain},
		{Kind: SetState, Backend: "www", Server: "web3", State: StateDrain},
	})
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], ErrNoReply) {
		t.Fatalf("errs %v, want the first two applied and the third without reply", errs)
	}
}

func TestUnreachableAndPermissionDenied(t *testing.T) {
	c := NewClient("unix", filepath.Join(t.TempDir(), "none.sock"))
	if _, err := c.Apply(context.Background(), []Change{{Kind: SetState, Backend: "www", Server: "web1", State: StateDrain}}); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("err %v, want a connect error", err)
	}
	f := newFakeSocket(t, func(string) string { return "Permission denied" })
	errs, err := NewClient("unix", f.path).Apply(context.Background(), []Change{{Kind: SetState, Backend: "www", Server: "web1", State: StateDrain}})
	if err != nil || !errors.Is(errs[0], ErrPermissionDenied) {
		t.Fatalf("err %v %v, want permission denied", err, errs)
	}
}

func TestParseAddress(t *testing.T) {
	tests := []struct{ in, network, addr string }{
		{"unix:/run/haproxy/admin.sock", "unix", "/run/haproxy/admin.sock"},
		{"/run/haproxy/admin.sock", "unix", "/run/haproxy/admin.sock"},
		{"tcp:10.0.0.1:9999", "tcp", "10.0.0.1:9999"},
		{"lb1.example.com:9999", "tcp", "lb1.example.com:9999"},
	}
	for _, tt := range tests {
		n, a, err := ParseAddress(tt.in)
		if err != nil || n != tt.network || a != tt.addr {
			t.Errorf("ParseAddress(%q) = %q %q %v", tt.in, n, a, err)
		}
	}
	for _, bad := range []string{"tcp:", "unix:", "tcp:nohost"} {
		if _, _, err := ParseAddress(bad); err == nil {
			t.Errorf("ParseAddress(%q) accepted", bad)
		}
	}
}
