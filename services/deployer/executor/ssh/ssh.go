// Package ssh is the executor that runs Puppet (or a configured argv
// template) on each host over SSH with golang.org/x/crypto/ssh. Host keys
// are checked against a known_hosts file; there is no "accept anything"
// mode. SSH carries a command as one string that the remote shell parses,
// so every argv element is quoted for a POSIX shell here, and tags are
// checked before they get that far. It imports nothing from switchboard.
package ssh

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/switchboard-ops/switchboard/services/deployer/executor"
)

// DefaultCommand runs Puppet once, in the foreground, with detailed exit codes.
var DefaultCommand = []string{"sudo", "-n", "puppet", "agent", "--test", "--tags", "{tags}"}

// Config configures the SSH executor.
type Config struct {
	// User to log in as.
	User string `yaml:"user"`
	// Port of the SSH servers (default 22).
	Port int `yaml:"port"`
	// KeyFile is the private key (OpenSSH or PEM, unencrypted).
	KeyFile string `yaml:"key_file"`
	// KnownHosts is the known_hosts file the host keys are checked against.
	KnownHosts string `yaml:"known_hosts"`
	// Command is the argv template (default DefaultCommand).
	Command []string `yaml:"command"`
	// Parallel is how many hosts run at once (default 10).
	Parallel int `yaml:"parallel"`
	// Timeout per host, connection included (default 30m).
	Timeout time.Duration `yaml:"timeout"`
	// ConnectTimeout bounds the TCP connect and SSH handshake (default 10s).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// Executor runs commands over SSH.
type Executor struct {
	cfg    Config
	client *ssh.ClientConfig
}

var _ executor.Executor = (*Executor)(nil)

// New reads the key and the known_hosts file.
func New(cfg Config) (*Executor, error) {
	if cfg.User == "" {
		return nil, errors.New("ssh executor: user is required")
	}
	if cfg.KeyFile == "" || cfg.KnownHosts == "" {
		return nil, errors.New("ssh executor: key_file and known_hosts are required")
	}
	if cfg.Port == 0 {
		cfg.Port = 22
	}
	if len(cfg.Command) == 0 {
		cfg.Command = DefaultCommand
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Minute
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	pem, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("ssh executor: read key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		return nil, fmt.Errorf("ssh executor: parse key %s: %w", cfg.KeyFile, err)
	}
	hostKeys, err := knownhosts.New(cfg.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("ssh executor: read known_hosts: %w", err)
	}
	return &Executor{cfg: cfg, client: &ssh.ClientConfig{
		User:            cfg.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hostKeys,
		Timeout:         cfg.ConnectTimeout,
	}}, nil
}

// Run runs the command on every host, at most Parallel at a time.
func (e *Executor) Run(ctx context.Context, hosts []executor.Host, a executor.Action) <-chan executor.Result {
	timeout := e.cfg.Timeout
	if a.Timeout > 0 {
		timeout = a.Timeout
	}
	if err := executor.CheckTags(a.Tags); err != nil {
		return executor.Parallel(ctx, hosts, len(hosts), func(context.Context, executor.Host) executor.Result {
			return executor.Result{Status: executor.Failed, ExitCode: -1, Detail: err.Error()}
		})
	}
	return executor.Parallel(ctx, hosts, e.cfg.Parallel, func(ctx context.Context, h executor.Host) executor.Result {
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		res := e.runOne(hctx, h, a)
		if hctx.Err() != nil && res.Status != executor.OK {
			res.ExitCode = -1
			if ctx.Err() != nil {
				res.Status, res.Detail = executor.Cancelled, "cancelled"
			} else {
				res.Status, res.Detail = executor.TimedOut, fmt.Sprintf("no result within %s", timeout)
			}
		}
		return res
	})
}

func (e *Executor) runOne(ctx context.Context, h executor.Host, a executor.Action) executor.Result {
	addr := h.Address
	if addr == "" {
		addr = h.Name
	}
	addr = net.JoinHostPort(addr, strconv.Itoa(e.cfg.Port))
	d := net.Dialer{Timeout: e.cfg.ConnectTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return executor.Result{Status: executor.Unreachable, ExitCode: -1, Detail: fmt.Sprintf("connect to %s: %v", addr, err)}
	}
	// Closing the connection is how a timeout or a cancel stops the run.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(e.cfg.ConnectTimeout))
	hostCfg := *e.client
	hostCfg.HostKeyAlgorithms = knownAlgorithms(e.client.HostKeyCallback, addr)
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, &hostCfg)
	if err != nil {
		detail := fmt.Sprintf("ssh handshake with %s: %v", addr, err)
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) {
			if len(ke.Want) == 0 {
				detail = fmt.Sprintf("%s is not in known_hosts %s", addr, e.cfg.KnownHosts)
			} else {
				detail = fmt.Sprintf("host key of %s does not match known_hosts %s: refusing to connect", addr, e.cfg.KnownHosts)
			}
		}
		return executor.Result{Status: executor.Unreachable, ExitCode: -1, Detail: detail}
	}
	conn.SetDeadline(time.Time{})
	client := ssh.NewClient(cc, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return executor.Result{Status: executor.Unreachable, ExitCode: -1, Detail: fmt.Sprintf("open ssh session on %s: %v", addr, err)}
	}
	defer sess.Close()
	// stdout and stderr are copied by two goroutines into one buffer.
	out := &lockedBuffer{}
	sess.Stdout, sess.Stderr = out, out
	err = sess.Run(ShellQuote(executor.Expand(e.cfg.Command, h, a)))
	res := executor.Result{ExitCode: -1, Output: executor.Tail(out.Bytes(), 4096)}
	var ee *ssh.ExitError
	switch {
	case err == nil:
		res.ExitCode = 0
		res.Status, res.Detail = executor.Puppet(0)
	case errors.As(err, &ee):
		res.ExitCode = ee.ExitStatus()
		res.Status, res.Detail = executor.Puppet(res.ExitCode)
	default:
		res.Status, res.Detail = executor.Unreachable, fmt.Sprintf("run on %s: %v", addr, err)
	}
	return res
}

// knownAlgorithms returns the algorithms of the host keys known_hosts
// holds for addr, to ask the server for one of those. Without the list
// x/crypto/ssh asks for an ECDSA key first, and a server that also has the
// Ed25519 key recorded in known_hosts (the one OpenSSH's ssh prefers and
// ssh-keyscan lists first) would be refused as if its key had changed. For
// a host known_hosts does not list, the defaults stay (and the check then
// refuses it).
func knownAlgorithms(check ssh.HostKeyCallback, addr string) []string {
	// The callback answers a key it cannot match with every key it knows
	// for the host: ask it with a key of no real type.
	var ke *knownhosts.KeyError
	if err := check(addr, &net.TCPAddr{IP: net.IPv4zero}, placeholderKey{}); !errors.As(err, &ke) {
		return nil
	}
	known := slices.Clone(ke.Want)
	slices.SortFunc(known, func(a, b knownhosts.KnownKey) int {
		return cmp.Or(strings.Compare(a.Filename, b.Filename), a.Line-b.Line)
	})
	var algos []string
	for _, k := range known {
		typ := k.Key.Type()
		if typ == ssh.KeyAlgoRSA {
			// An RSA key signs with SHA-2 too (RFC 8332); prefer those.
			algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		}
		algos = append(algos, typ)
	}
	return algos
}

// placeholderKey is a public key of no real type, matching no known_hosts line.
type placeholderKey struct{}

func (placeholderKey) Type() string                        { return "placeholder" }
func (placeholderKey) Marshal() []byte                     { return []byte("placeholder") }
func (placeholderKey) Verify([]byte, *ssh.Signature) error { return errors.New("placeholder key") }

// ShellQuote joins argv into one command line that a POSIX shell splits
// back into exactly argv: every element is single-quoted.
func ShellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
