package gitrepotest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// SSHServer serves one bare repository over SSH.
type SSHServer struct {
	// Addr is the listener's host:port.
	Addr string
	// RepoURL is the repository's ssh:// URL, as user git.
	RepoURL string
	// ECDSAHostKey and Ed25519HostKey are the server's host keys. A stock
	// OpenSSH server has both (and an RSA one); x/crypto/ssh clients prefer
	// ECDSA, OpenSSH clients Ed25519, so a known_hosts file often holds
	// only the one a client would not pick by itself.
	ECDSAHostKey   ssh.PublicKey
	Ed25519HostKey ssh.PublicKey

	t          testing.TB
	bare       string
	authorized ssh.PublicKey
	config     *ssh.ServerConfig
	ln         net.Listener
	hook       pushHook
	wg         sync.WaitGroup
	mu         sync.Mutex
	conns      map[net.Conn]bool
}

// RunSSH serves the bare repository at bare over SSH on loopback until the
// test ends. Only the public key authorized may log in (as any user, as on
// a forge, where the key says who you are). An exec request for
// git-upload-pack or git-receive-pack '<path>' runs git on the repository
// when path names it (/enc.git, enc.git or ~/enc.git).
func RunSSH(t testing.TB, bare string, authorized ssh.PublicKey) *SSHServer {
	t.Helper()
	NeedGit(t)
	s := &SSHServer{t: t, bare: bare, authorized: authorized, conns: map[net.Conn]bool{}}
	s.config = &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		if bytes.Equal(key.Marshal(), s.authorized.Marshal()) {
			return nil, nil
		}
		return nil, errors.New("public key not authorized")
	}}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []any{ecKey, edKey} {
		signer, err := ssh.NewSignerFromKey(k)
		if err != nil {
			t.Fatal(err)
		}
		s.config.AddHostKey(signer)
		switch signer.PublicKey().Type() {
		case ssh.KeyAlgoED25519:
			s.Ed25519HostKey = signer.PublicKey()
		default:
			s.ECDSAHostKey = signer.PublicKey()
		}
	}
	if s.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s.Addr = s.ln.Addr().String()
	s.RepoURL = "ssh://git@" + s.Addr + "/" + filepath.Base(bare)
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

// BeforeNextPush makes the server call f once, when the next push's
// commands and pack arrive, after receive-pack has advertised the
// references and before it reads them: what a person pushing between a
// client's reading the references and its sending the pack looks like.
func (s *SSHServer) BeforeNextPush(f func()) { s.hook.set(f) }

func (s *SSHServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *SSHServer) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return // closed at the end of the test
		}
		s.mu.Lock()
		s.conns[conn] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(conn)
			s.mu.Lock()
			delete(s.conns, conn)
			s.mu.Unlock()
		}()
	}
}

func (s *SSHServer) serve(conn net.Conn) {
	defer conn.Close()
	sc, chans, reqs, err := ssh.NewServerConn(conn, s.config)
	if err != nil {
		// Refused keys and refused host keys end here, as they should.
		s.t.Logf("ssh server: handshake: %v", err)
		return
	}
	defer sc.Close()
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
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.session(ch, creqs)
		}()
	}
}

// session answers the first exec request of a session; git's protocol
// needs nothing else (env requests such as GIT_PROTOCOL are declined, so
// clients speak protocol v0).
func (s *SSHServer) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			req.Reply(false, nil)
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
			req.Reply(false, nil)
			return
		}
		req.Reply(true, nil)
		code := s.exec(ch, payload.Command)
		ch.CloseWrite()
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{code}))
		return
	}
}

// exec runs git-upload-pack or git-receive-pack the way sshd runs a
// forge's command: stdin, stdout and stderr on the channel.
func (s *SSHServer) exec(ch ssh.Channel, command string) uint32 {
	prog, arg, _ := strings.Cut(command, " ")
	repo := strings.Trim(arg, "'")
	repo = strings.TrimPrefix(repo, "~/")
	if path.Clean("/"+repo) != "/"+filepath.Base(s.bare) {
		fmt.Fprintf(ch.Stderr(), "fatal: '%s' does not appear to be a git repository\n", repo)
		return 128
	}
	var sub string
	switch prog {
	case "git-upload-pack":
		sub = "upload-pack"
	case "git-receive-pack":
		sub = "receive-pack"
	default:
		fmt.Fprintf(ch.Stderr(), "%s: only git-upload-pack and git-receive-pack are served here\n", prog)
		return 127
	}
	cmd := exec.Command("git", sub, s.bare)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+filepath.Dir(s.bare))
	cmd.Stdout = ch
	cmd.Stderr = io.MultiWriter(ch.Stderr(), testWriter{s.t})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		fmt.Fprintf(ch.Stderr(), "%v\n", err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(ch.Stderr(), "%v\n", err)
		return 1
	}
	// Not waited for: the client may keep its side open after git exits;
	// closing the channel ends this copy.
	go func() {
		defer stdin.Close()
		var in io.Reader = ch
		if sub == "receive-pack" {
			in = &firstRead{r: ch, before: s.hook.take}
		}
		io.Copy(stdin, in)
	}()
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return uint32(exit.ExitCode())
		}
		return 1
	}
	return 0
}

// firstRead calls the function before returns, if any, when the first
// bytes come from the client: receive-pack has advertised its references
// by then and has not yet read the client's update.
type firstRead struct {
	r      io.Reader
	before func() func()
	done   bool
}

func (f *firstRead) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 && !f.done {
		f.done = true
		if hook := f.before(); hook != nil {
			hook()
		}
	}
	return n, err
}
