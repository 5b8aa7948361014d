// Package knottest runs a real Knot DNS server (Debian's knotd) for tests:
// a generated knot.conf in t.TempDir(), a free loopback port, a TSIG key,
// and an ACL that lets that key transfer and update the zones.
//
// A test that needs knotd fails when it is missing and the CI variable is
// set, and otherwise skips with a loud message (install Debian's "knot" and
// "knot-dnsutils").
package knottest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Zone is a zone to serve: its name and the body of its zone file. An empty
// body gets Default(name).
type Zone struct {
	Name string
	Body string
}

// Server is a running knotd.
type Server struct {
	// Addr is host:port on loopback (UDP and TCP).
	Addr string
	// KeyName, Algorithm and Secret are the TSIG key the ACL allows.
	KeyName, Algorithm, Secret string
	// Dir holds knot.conf, the zone files and Knot's databases.
	Dir string

	t      testing.TB
	cmd    *exec.Cmd
	exited chan error
}

// Binaries locates knotd; a missing one fails in CI and skips elsewhere.
func Binaries(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range append([]string{"knotd"}, names...) {
		if _, err := exec.LookPath(n); err != nil {
			for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
				if _, serr := os.Stat(filepath.Join(dir, n)); serr == nil {
					err = nil
					break
				}
			}
			if err == nil {
				continue
			}
			if os.Getenv("CI") != "" {
				t.Fatalf("knottest: %s not found and CI is set: install Debian's knot and knot-dnsutils (%v)", n, err)
			}
			t.Skipf("knottest: SKIPPING — %s not found; install Debian's knot, knot-dnsutils and knot-dnssecutils to run the Knot DNS integration tests (%v)", n, err)
		}
	}
}

func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	return name
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Default is a small zone: SOA, NS, the name server's address, and records a
// person made by hand (MX, TXT, a hand-made A) that tools must leave alone.
func Default(name string) string {
	name = dns.Fqdn(strings.ToLower(name))
	return fmt.Sprintf(`$ORIGIN %[1]s
$TTL 3600
@	IN SOA ns1.%[1]s hostmaster.%[1]s 1 3600 900 1209600 300
@	IN NS ns1.%[1]s
ns1	IN A 127.0.0.1
@	IN MX 10 mail.%[1]s
@	IN TXT "v=spf1 -all"
mail	IN A 192.0.2.25
`, name)
}

// Start runs knotd serving the zones and stops it when the test ends.
func Start(t testing.TB, zones ...Zone) *Server {
	t.Helper()
	Binaries(t)
	secret := make([]byte, 32)
	rand.Read(secret)
	s := &Server{
		KeyName: "switchboard-test.", Algorithm: "hmac-sha256",
		Secret: base64.StdEncoding.EncodeToString(secret),
		Dir:    t.TempDir(), t: t,
	}
	for _, z := range zones {
		body := z.Body
		if body == "" {
			body = Default(z.Name)
		}
		if err := os.WriteFile(s.ZoneFile(z.Name), []byte(body), 0o644); err != nil {
			t.Fatalf("knottest: write zone %s: %v", z.Name, err)
		}
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = s.start(zones); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("knottest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// ZoneFile is the path of a zone's file.
func (s *Server) ZoneFile(name string) string {
	return filepath.Join(s.Dir, strings.TrimSuffix(dns.Fqdn(strings.ToLower(name)), ".")+".zone")
}

func (s *Server) start(zones []Zone) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.Addr = net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	var conf strings.Builder
	fmt.Fprintf(&conf, `server:
    rundir: "%[1]s"
    listen: 127.0.0.1@%[2]d
    udp-workers: 1
    tcp-workers: 2
    background-workers: 1
control:
    listen: "%[1]s/knot.sock"
database:
    storage: "%[1]s/db"
log:
  - target: stderr
    any: warning
key:
  - id: %[3]s
    algorithm: %[4]s
    secret: %[5]s
acl:
  - id: switchboard
    key: %[3]s
    action: [transfer, update]
template:
  - id: default
    storage: "%[1]s"
    # Keep changes in the journal rather than rewriting the zone file after
    # every UPDATE: a 100,000-record zone would otherwise be rewritten each time.
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    semantic-checks: off
    acl: switchboard
zone:
`, s.Dir, port, s.KeyName, s.Algorithm, s.Secret)
	for _, z := range zones {
		fmt.Fprintf(&conf, "  - domain: %s\n    file: %q\n", dns.Fqdn(strings.ToLower(z.Name)), s.ZoneFile(z.Name))
	}
	// Knot refuses to open its journal when the storage directory is missing.
	if err := os.MkdirAll(filepath.Join(s.Dir, "db"), 0o755); err != nil {
		return fmt.Errorf("create knot database dir: %w", err)
	}
	confPath := filepath.Join(s.Dir, "knot.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o600); err != nil {
		return fmt.Errorf("write knot.conf: %w", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(lookPath("knotd"), "-c", confPath)
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start knotd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.cmd = cmd
	deadline := time.Now().Add(60 * time.Second)
	for _, z := range zones {
		for {
			if ok := s.answers(z.Name); ok {
				break
			}
			select {
			case err := <-exited:
				return fmt.Errorf("knotd exited (%v): %s", err, stderr.String())
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-exited
				return fmt.Errorf("knotd did not serve %s within a minute: %s", z.Name, stderr.String())
			}
		}
	}
	s.exited = exited
	return nil
}

// answers reports whether the server answers authoritatively for the zone.
func (s *Server) answers(name string) bool {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeSOA)
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	in, _, err := c.Exchange(m, s.Addr)
	return err == nil && in.Rcode == dns.RcodeSuccess && in.Authoritative && len(in.Answer) > 0
}

// Stop ends knotd.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
	}
}

// TSIGArg is the key in kdig's -y form: "hmac-sha256:name:secret".
func (s *Server) TSIGArg() string {
	return s.Algorithm + ":" + strings.TrimSuffix(s.KeyName, ".") + ":" + s.Secret
}

// Kdig runs kdig against the server with the test key and returns its
// output; the test fails if kdig does.
func (s *Server) Kdig(t testing.TB, args ...string) string {
	t.Helper()
	Binaries(t, "kdig")
	host, port, _ := net.SplitHostPort(s.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"@" + host, "-p", port, "-y", s.TSIGArg()}, args...)
	out, err := exec.CommandContext(ctx, lookPath("kdig"), full...).CombinedOutput()
	if err != nil {
		t.Fatalf("kdig %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Short asks the server an ordinary, unsigned question with kdig +short and
// returns the answers, one per line.
func (s *Server) Short(t testing.TB, args ...string) []string {
	t.Helper()
	Binaries(t, "kdig")
	host, port, _ := net.SplitHostPort(s.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"@" + host, "-p", port, "+short"}, args...)
	out, err := exec.CommandContext(ctx, lookPath("kdig"), full...).CombinedOutput()
	if err != nil {
		t.Fatalf("kdig %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var lines []string
	for l := range strings.SplitSeq(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// freePort finds a loopback port free for both UDP and TCP.
func freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, fmt.Errorf("find a free port: none free for both TCP and UDP")
}
