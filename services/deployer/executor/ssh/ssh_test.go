package ssh_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/switchboard-ops/switchboard/services/deployer/executor"
	"github.com/switchboard-ops/switchboard/services/deployer/executor/executortest"
	sbssh "github.com/switchboard-ops/switchboard/services/deployer/executor/ssh"
)

// server is an SSH server on loopback that accepts one client key and runs
// every exec request with /bin/sh -c, as sshd does with a POSIX login shell.
type server struct {
	addr     string
	hostKey  ssh.Signer
	mu       sync.Mutex
	commands []string
}

func startServer(t *testing.T, clientKey ssh.PublicKey) *server {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hk, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) == string(clientKey.Marshal()) {
			return nil, nil
		}
		return nil, os.ErrPermission
	}}
	cfg.AddHostKey(hk)
	// Like a stock sshd, the server has an ECDSA host key too, which
	// x/crypto/ssh asks for by default; known_hosts lists the Ed25519 one
	// (hostKey), as OpenSSH's ssh records it.
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecSigner, err := ssh.NewSignerFromKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AddHostKey(ecSigner)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: l.Addr().String(), hostKey: hk}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); s.serve(c, cfg) }()
		}
	}()
	return s
}

func (s *server) serve(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range creqs {
				if req.Type != "exec" {
					req.Reply(false, nil)
					continue
				}
				n := binary.BigEndian.Uint32(req.Payload)
				cmdline := string(req.Payload[4 : 4+n])
				req.Reply(true, nil)
				s.mu.Lock()
				s.commands = append(s.commands, cmdline)
				s.mu.Unlock()
				cmd := osexec.Command("/bin/sh", "-c", cmdline)
				cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
				cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
				if err := cmd.Start(); err != nil {
					return
				}
				done := make(chan struct{})
				go func() {
					// The client closing the channel (a cancel, a timeout)
					// ends the command, as sshd does by closing its pipes.
					for range creqs {
					}
					select {
					case <-done:
					default:
						syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					}
				}()
				code := 0
				if err := cmd.Wait(); err != nil {
					if ee, ok := err.(*osexec.ExitError); ok {
						code = ee.ExitCode()
					} else {
						code = 255
					}
				}
				close(done)
				st := make([]byte, 4)
				binary.BigEndian.PutUint32(st, uint32(code))
				ch.SendRequest("exit-status", false, st)
				return
			}
		}()
	}
}

type rig struct {
	srv        *server
	keyFile    string
	knownHosts string
	port       int
}

func newRig(t *testing.T) *rig {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519")
	os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600)
	sshPub, _ := ssh.NewPublicKey(pub)
	srv := startServer(t, sshPub)
	_, portStr, _ := net.SplitHostPort(srv.addr)
	kh := filepath.Join(dir, "known_hosts")
	os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(srv.addr)}, srv.hostKey.PublicKey())+"\n"), 0o600)
	var port int
	for _, c := range portStr {
		port = port*10 + int(c-'0')
	}
	return &rig{srv: srv, keyFile: keyFile, knownHosts: kh, port: port}
}

func (r *rig) executor(t *testing.T, cmd []string) *sbssh.Executor {
	t.Helper()
	return r.executorWith(t, cmd, 4)
}

func (r *rig) executorWith(t *testing.T, cmd []string, parallel int) *sbssh.Executor {
	t.Helper()
	ex, err := sbssh.New(sbssh.Config{User: "deploy", Port: r.port, KeyFile: r.keyFile, KnownHosts: r.knownHosts, Command: cmd, Parallel: parallel, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func TestMain(m *testing.M) {
	executortest.GateMain()
	os.Exit(m.Run())
}

func TestConformance(t *testing.T) {
	executortest.Run(t, func(t *testing.T) executor.Executor {
		return newRig(t).executor(t, []string{"/bin/sh", "-c", executortest.Script, "sh", "{host}"})
	})
}

func TestAtMostParallelHostsRunAtOnce(t *testing.T) {
	r := newRig(t)
	executortest.ParallelLimit(t, 3, func(t *testing.T, command []string, parallel int) executor.Executor {
		return r.executorWith(t, command, parallel)
	})
}

func TestArgumentsArriveIntactThroughTheRemoteShell(t *testing.T) {
	r := newRig(t)
	ex := r.executor(t, []string{"printf", "[%s]", "{host}", "it's $HOME; `id` \"q\"", "--tags", "{tags}"})
	var got []executor.Result
	for res := range ex.Run(context.Background(), []executor.Host{{Name: "web-1", Address: "127.0.0.1"}}, executor.Action{Tags: []string{"nginx", "role::web"}}) {
		got = append(got, res)
	}
	want := "[web-1][it's $HOME; `id` \"q\"][--tags][nginx,role::web]"
	if len(got) != 1 || got[0].Output != want || got[0].Status != executor.OK {
		t.Fatalf("got %+v, want output %q", got, want)
	}
}

func TestAHostKeyNotInKnownHostsIsRefused(t *testing.T) {
	r := newRig(t)
	other := newRig(t) // a different server key under the first server's address
	os.WriteFile(r.knownHosts, []byte(knownhosts.Line([]string{knownhosts.Normalize(r.srv.addr)}, other.srv.hostKey.PublicKey())+"\n"), 0o600)
	ex := r.executor(t, []string{"true"})
	for res := range ex.Run(context.Background(), []executor.Host{{Name: "web-1", Address: "127.0.0.1"}}, executor.Action{}) {
		if res.Status != executor.Unreachable || !strings.Contains(res.Detail, "does not match known_hosts") {
			t.Fatalf("got %s %q, want unreachable because the host key does not match", res.Status, res.Detail)
		}
	}
	r.srv.mu.Lock()
	defer r.srv.mu.Unlock()
	if len(r.srv.commands) != 0 {
		t.Fatalf("a command ran on a server with the wrong key: %v", r.srv.commands)
	}
}

func TestShellQuote(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"puppet", "agent"}, `'puppet' 'agent'`},
		{[]string{"it's"}, `'it'\''s'`},
		{[]string{""}, `''`},
	} {
		if got := sbssh.ShellQuote(tc.in); got != tc.want {
			t.Errorf("ShellQuote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
