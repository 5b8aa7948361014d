package deployer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/deployer/gitrepo/gitrepotest"
)

// The ENC on a git host: the deployer clones it over HTTPS or SSH with the
// credentials from files named in its config, commits through the enc
// commands, and keeps a person's push that lands between its reading the
// branch and its pack reaching the server.

func TestAnHTTPSRemoteIsClonedAndPushedWithTheTokenFileTrustingTheCAFile(t *testing.T) {
	e := newEnv(t, nil)
	srv := gitrepotest.RunHTTPS(t, e.remote, map[string]string{"switchboard": "tok-3f9a1c-bot", "rob": "rob-pw-77"})
	cfg := e.config()
	cfg.ENC.URL = srv.RepoURL
	cfg.ENC.Username = "switchboard"
	cfg.ENC.CredentialsFile = writeSecret(t, "enc-token", "tok-3f9a1c-bot\n")
	cfg.ENC.CAFile = srv.CAFile
	e.start(cfg)

	wantOK(t, e.run("enc set", map[string]string{"host": "web-0001", "sets": "ipv4=10.0.1.50"}, nil, false), "Committed")
	if got := gitCLI(t, e.remote, "show", "main:hosts/web-0001.yaml"); !strings.Contains(got, "ipv4: 10.0.1.50") {
		t.Fatalf("hosts/web-0001.yaml on the remote after enc set:\n%s", got)
	}

	// Rob works on a clone over the same HTTPS server, with the real git.
	person := filepath.Join(t.TempDir(), "person")
	gitrepotest.Git(t, t.TempDir(), "-c", "http.sslCAInfo="+srv.CAFile, "clone", "-q", srv.AuthURL("rob"), person)
	gitrepotest.Git(t, person, "config", "http.sslCAInfo", srv.CAFile)
	srv.BeforeNextPush(func() { personPushes(t, person) })
	p := e.run("enc set", map[string]string{"host": "web-0001", "sets": "parameters.ntp_server=ntp2"}, nil, false)
	wantOK(t, p, "Committed", "re-applied on a newer head")
	checkPersonKept(t, e.remote)
	gitrepotest.Git(t, person, "pull", "-q", "--ff-only")
}

func TestAnHTTPSRemoteRefusesAWrongTokenOrAnUntrustedCertificateAndNeverShowsTheSecret(t *testing.T) {
	e := newEnv(t, nil)
	const token = "tok-3f9a1c-bot"
	srv := gitrepotest.RunHTTPS(t, e.remote, map[string]string{"switchboard": token})
	where := strings.TrimPrefix(srv.RepoURL, "https://") // host:port/enc.git
	inURL, _ := url.Parse(srv.RepoURL)
	inURL.User = url.UserPassword("switchboard", "pw-in-the-url-9d2")
	for _, tc := range []struct {
		name    string
		set     func(c *ENCConfig)
		want    []string
		refused bool // by the server, for its credentials
	}{
		{"a wrong token in the credentials file", func(c *ENCConfig) {
			c.CredentialsFile = writeSecret(t, "wrong-token", "tok-wrong-51ab\n")
		}, []string{"git fetch https://" + where, "authentication required"}, true},
		{"a wrong password in the URL", func(c *ENCConfig) {
			c.URL, c.CredentialsFile = inURL.String(), ""
		}, []string{"git fetch https://switchboard@" + where, "authentication required"}, true},
		{"no ca_file for a certificate no system CA signed", func(c *ENCConfig) {
			c.CAFile = ""
		}, []string{"git fetch https://" + where, "certificate signed by unknown authority"}, false},
		{"a ca_file with no certificate in it", func(c *ENCConfig) {
			c.CAFile = writeSecret(t, "not-a-ca", "hello\n")
		}, []string{"deployer.enc.ca_file: no PEM certificate in"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			cfg.ENC.URL = srv.RepoURL
			cfg.ENC.Username = "switchboard"
			cfg.ENC.CredentialsFile = writeSecret(t, "token", token+"\n")
			cfg.ENC.CAFile = srv.CAFile
			tc.set(&cfg.ENC)
			refusedBefore := srv.Refused()
			err, logged := newDeployerErr(t, e, cfg)
			for _, w := range tc.want {
				if !strings.Contains(err, w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			for _, secret := range []string{token, "tok-wrong-51ab", "pw-in-the-url-9d2"} {
				if strings.Contains(err, secret) || strings.Contains(logged, secret) {
					t.Errorf("the secret %q is shown:\nerror: %s\nlog: %s", secret, err, logged)
				}
			}
			if refused := srv.Refused() > refusedBefore; refused != tc.refused {
				t.Errorf("the server refused the credentials: %v, want %v", refused, tc.refused)
			}
		})
	}
}

func TestAnSSHRemoteIsClonedAndPushedWithTheKeyFileCheckedAgainstKnownHosts(t *testing.T) {
	e := newEnv(t, nil)
	keyFile, pub := writeSSHKey(t, "id_ed25519")
	srv := gitrepotest.RunSSH(t, e.remote, pub)
	cfg := e.config()
	cfg.ENC.URL = srv.RepoURL
	cfg.ENC.CredentialsFile = keyFile
	// Only the Ed25519 host key, as OpenSSH's ssh records it: the server
	// also has an ECDSA key, which x/crypto/ssh would ask for by default.
	cfg.ENC.KnownHosts = writeKnownHosts(t, srv.Addr, srv.Ed25519HostKey)
	e.start(cfg)

	wantOK(t, e.run("enc set", map[string]string{"host": "web-0001", "sets": "ipv4=10.0.1.50"}, nil, false), "Committed")
	if got := gitCLI(t, e.remote, "show", "main:hosts/web-0001.yaml"); !strings.Contains(got, "ipv4: 10.0.1.50") {
		t.Fatalf("hosts/web-0001.yaml on the remote after enc set:\n%s", got)
	}

	// Rob pushes on the server's disk while the bot's push is under way:
	// receive-pack has advertised the old head to the bot.
	person := filepath.Join(t.TempDir(), "person")
	gitrepotest.Git(t, t.TempDir(), "clone", "-q", e.remote, person)
	srv.BeforeNextPush(func() { personPushes(t, person) })
	p := e.run("enc set", map[string]string{"host": "web-0001", "sets": "parameters.ntp_server=ntp2"}, nil, false)
	wantOK(t, p, "Committed", "re-applied on a newer head")
	checkPersonKept(t, e.remote)
}

func TestAnSSHRemoteRefusesAnUnknownOrChangedHostKeyAndAKeyItDoesNotAccept(t *testing.T) {
	e := newEnv(t, nil)
	keyFile, pub := writeSSHKey(t, "id_ed25519")
	srv := gitrepotest.RunSSH(t, e.remote, pub)
	_, impostor := writeSSHKey(t, "impostor")
	otherKeyFile, _ := writeSSHKey(t, "id_other")
	for _, tc := range []struct {
		name string
		set  func(c *ENCConfig)
		want []string
	}{
		{"a host key that does not match known_hosts", func(c *ENCConfig) {
			c.KnownHosts = writeKnownHosts(t, srv.Addr, impostor)
		}, []string{"the host key of " + srv.Addr + " does not match known_hosts", "refusing to connect"}},
		{"a host that is not in known_hosts", func(c *ENCConfig) {
			c.KnownHosts = writeKnownHosts(t, "git.example.com:22", srv.Ed25519HostKey)
		}, []string{srv.Addr + " is not in known_hosts"}},
		{"a key the server does not accept", func(c *ENCConfig) {
			c.CredentialsFile = otherKeyFile
		}, []string{"unable to authenticate"}},
		{"a known_hosts file that is missing", func(c *ENCConfig) {
			c.KnownHosts = filepath.Join(t.TempDir(), "known_hosts")
		}, []string{"deployer.enc.known_hosts:", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			cfg.ENC.URL = srv.RepoURL
			cfg.ENC.CredentialsFile = keyFile
			cfg.ENC.KnownHosts = writeKnownHosts(t, srv.Addr, srv.Ed25519HostKey)
			tc.set(&cfg.ENC)
			err, _ := newDeployerErr(t, e, cfg)
			for _, w := range tc.want {
				if !strings.Contains(err, w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if !strings.Contains(err, srv.Addr) && !strings.HasPrefix(err, "deployer: deployer.enc.") {
				t.Errorf("error %q names neither the remote %s nor the config key", err, srv.Addr)
			}
		})
	}
	if n := gitCLI(t, e.remote, "rev-list", "--count", "main"); n != "1" {
		t.Fatalf("%s commits on the remote, want the seed alone", n)
	}
}

// personPushes is Rob adding a comment to web-0002 and pushing, from a
// server goroutine: failures are reported with Error.
func personPushes(t *testing.T, person string) {
	f := filepath.Join(person, "hosts", "web-0002.yaml")
	data, err := os.ReadFile(f)
	if err == nil {
		err = os.WriteFile(f, append([]byte("# rebooted by rob for the kernel\n"), data...), 0o644)
	}
	if err != nil {
		t.Error(err)
		return
	}
	for _, args := range [][]string{{"pull", "-q", "--ff-only"}, {"commit", "-q", "-am", "web-0002: note the reboot"}, {"push", "-q", "origin", "main"}} {
		if _, err := gitrepotest.RunGit(person, args...); err != nil {
			t.Errorf("the person's push: %v", err)
			return
		}
	}
}

// checkPersonKept checks with the git CLI that the bot's last commit sits
// on the person's, in a linear history, with both changes in the tree.
func checkPersonKept(t *testing.T, remote string) {
	t.Helper()
	if merges := gitCLI(t, remote, "rev-list", "--merges", "main"); merges != "" {
		t.Fatalf("history has merges: %s", merges)
	}
	log := strings.Split(gitCLI(t, remote, "log", "-3", "--format=%H %P|%an|%cn|%s", "main"), "\n")
	if len(log) != 3 {
		t.Fatalf("log:\n%s\nwant the bot's first edit, the person's commit and the bot's second edit", strings.Join(log, "\n"))
	}
	top, mid := strings.Split(log[0], "|"), strings.Split(log[1], "|")
	if top[1] != "switchboard" || top[2] != "switchboard" || !strings.HasPrefix(top[3], "enc set web-0001 parameters.ntp_server=ntp2") {
		t.Fatalf("the bot's commit: %q", log[0])
	}
	if mid[1] != "Rob Person" || mid[3] != "web-0002: note the reboot" {
		t.Fatalf("the commit under the bot's is not the person's: %q", log[1])
	}
	if parent, person := strings.Fields(top[0])[1], strings.Fields(mid[0])[0]; parent != person {
		t.Fatalf("the bot's commit has parent %s, want the person's %s", parent, person)
	}
	if got := gitCLI(t, remote, "show", "main:hosts/web-0002.yaml"); !strings.HasPrefix(got, "# rebooted by rob") {
		t.Fatalf("the person's change was lost:\n%s", got)
	}
	if got := gitCLI(t, remote, "show", "main:hosts/web-0001.yaml"); !strings.Contains(got, "ntp_server: ntp2") || !strings.Contains(got, "ipv4: 10.0.1.50") {
		t.Fatalf("the bot's edits:\n%s", got)
	}
	if trailer := gitCLI(t, remote, "log", "-1", "--format=%(trailers:key=Co-authored-by,valueonly)", "main"); !strings.Contains(trailer, "Ana") {
		t.Fatalf("Co-authored-by trailer: %q", trailer)
	}
	gitCLI(t, remote, "fsck", "--strict")
}

// newDeployerErr starts a deployer replica that must fail to open its ENC
// and returns the error and what it logged.
func newDeployerErr(t *testing.T, e *env, cfg Config) (string, string) {
	t.Helper()
	var logged bytes.Buffer
	ctx := natstest.Context(t, time.Minute)
	s, err := New(ctx, cfg, Deps{NC: e.nc, Log: slog.New(slog.NewTextHandler(&logged, nil)), DataDir: t.TempDir(), Lease: testLease})
	if err == nil {
		s.Stop(context.Background())
		t.Fatal("the deployer opened the ENC, want a refusal")
	}
	return err.Error(), logged.String()
}

// writeSecret writes a file readable by its owner alone, as a token is.
func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeSSHKey writes a new Ed25519 private key in OpenSSH format, as
// ssh-keygen does, and returns its path and public key.
func writeSSHKey(t *testing.T, name string) (string, gossh.PublicKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "switchboard@test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return writeSecret(t, name, string(pem.EncodeToMemory(block))), signer.PublicKey()
}

// writeKnownHosts writes a known_hosts file with one line: key for addr.
func writeKnownHosts(t *testing.T, addr string, key gossh.PublicKey) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, []byte(knownhosts.Line([]string{knownhosts.Normalize(addr)}, key)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
