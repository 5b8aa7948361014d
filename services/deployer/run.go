package deployer

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/switchboard-ops/switchboard/kit/command"
)

// repoAuth reads the credentials of an ssh or https remote from the file;
// local remotes need none.
func repoAuth(c ENCConfig) (transport.AuthMethod, error) {
	if c.URL == "" || c.CredentialsFile == "" {
		return nil, nil
	}
	ep, err := transport.NewEndpoint(c.URL)
	if err != nil {
		return nil, fmt.Errorf("deployer.enc.url: %w", err)
	}
	switch ep.Protocol {
	case "ssh":
		user := c.Username
		if user == "" {
			user = ep.User
		}
		if user == "" {
			user = "git"
		}
		keys, err := gitssh.NewPublicKeysFromFile(user, c.CredentialsFile, "")
		if err != nil {
			return nil, fmt.Errorf("deployer.enc.credentials_file: read ssh key: %w", err)
		}
		if keys.HostKeyCallback, keys.HostKeyAlgorithms, err = hostKeyCheck(c.KnownHosts, ep); err != nil {
			return nil, err
		}
		return keys, nil
	case "http", "https":
		tok, err := os.ReadFile(c.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("deployer.enc.credentials_file: %w", err)
		}
		password := strings.TrimSpace(string(tok))
		if password == "" {
			return nil, fmt.Errorf("deployer.enc.credentials_file: %s is empty", c.CredentialsFile)
		}
		user := c.Username
		if user == "" {
			user = "git"
		}
		return &githttp.BasicAuth{Username: user, Password: password}, nil
	}
	return nil, nil
}

// hostKeyCheck checks an ssh remote's host key against the known_hosts
// file (the ssh defaults when empty) and returns the host key algorithms to
// ask the server for: those of the keys known_hosts holds for the remote.
// Without that list x/crypto/ssh asks for an ECDSA key first, and a server
// that also has the Ed25519 key recorded in known_hosts (the one OpenSSH's
// ssh prefers and ssh-keyscan lists) would be refused as if its key had
// changed.
func hostKeyCheck(file string, ep *transport.Endpoint) (gossh.HostKeyCallback, []string, error) {
	var files []string
	shown := "the default known_hosts files"
	if file != "" {
		if _, err := os.Stat(file); err != nil {
			return nil, nil, fmt.Errorf("deployer.enc.known_hosts: %w", err)
		}
		files, shown = []string{file}, "known_hosts "+file
	}
	db, err := gitssh.NewKnownHostsDb(files...)
	if err != nil {
		return nil, nil, fmt.Errorf("deployer.enc.known_hosts: %w", err)
	}
	port := ep.Port
	if port == 0 {
		port = 22
	}
	check := db.HostKeyCallback()
	// The refusal names the file, so whoever reads it knows where to look;
	// it ends up in the chat when the deployer cannot reach its ENC.
	explained := func(host string, remote net.Addr, key gossh.PublicKey) error {
		err := check(host, remote, key)
		var ke *knownhosts.KeyError
		if !errors.As(err, &ke) {
			return err
		}
		if len(ke.Want) == 0 {
			return fmt.Errorf("%s is not in %s (add its host key once checked): %w", host, shown, err)
		}
		return fmt.Errorf("the host key of %s does not match %s: refusing to connect: %w", host, shown, err)
	}
	return explained, db.HostKeyAlgorithms(net.JoinHostPort(ep.Host, strconv.Itoa(port))), nil
}

// repoCA reads the certificates trusted for an https remote besides the
// system's.
func repoCA(c ENCConfig) ([]byte, error) {
	if c.CAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("deployer.enc.ca_file: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("deployer.enc.ca_file: no PEM certificate in %s", c.CAFile)
	}
	return pem, nil
}

// redactURL drops any password from a URL before it is logged.
func redactURL(u string) string {
	if p, err := url.Parse(u); err == nil && p.User != nil {
		p.User = url.User(p.User.Username())
		return p.String()
	}
	return u
}

// Commands returns the deployer's commands.
func (s *Service) Commands() []command.Command {
	return []command.Command{
		{Spec: deploySpec(s.cfg.Batch), Run: s.deploy},
		{Spec: deployStatusSpec, Run: s.deployStatus},
		{Spec: encGetSpec, Run: s.encGet},
		{Spec: encSetSpec, Run: s.encSet},
		{Spec: encLogSpec, Run: s.encLog},
		{Spec: encDiffSpec, Run: s.encDiff},
		{Spec: provisionSpec, Run: s.provision},
		{Spec: retireSpec, Run: s.retire},
	}
}

// Start publishes the inventory at the current head, serves the commands
// and starts the timer that catches commits made by people.
func (s *Service) Start(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := s.refresh(pctx, "")
	cancel()
	if err != nil {
		// The commands still work; the timer tries again.
		s.log.Warn("publish the inventory at start", "error", err)
	}
	srv, err := command.Serve(ctx, s.deps.NC, s.Commands(), command.Options{
		Service:     ServiceName,
		Description: "Deploys through the ENC; provisions and retires hosts.",
		Instance:    s.deps.Instance,
		Log:         s.deps.Log,
		Tracing:     s.deps.Tracing,
		Meter:       s.deps.Meter,
		Lease:       s.deps.Lease,
		StopGrace:   s.cfg.StopGrace,
	})
	if err != nil {
		return fmt.Errorf("deployer: %w", err)
	}
	s.srv = srv
	lctx, lcancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = lcancel
	s.wg.Add(1)
	go s.poll(lctx)
	s.log.Info("deployer started", "enc", redactURL(s.cfg.ENC.URL), "executor", s.cfg.Executor, "head", s.repo.Head().String())
	return nil
}

// Stop stops serving and the timer; running jobs get StopGrace to end.
func (s *Service) Stop(ctx context.Context) {
	if s.srv != nil {
		s.srv.Stop(ctx)
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
}

// Instance is the replica's id (empty before Start).
func (s *Service) Instance() string {
	if s.srv == nil {
		return ""
	}
	return s.srv.Instance()
}

func (s *Service) poll(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.ENC.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			if err := s.refresh(rctx, ""); err != nil {
				s.log.Warn("refresh the inventory", "error", err)
			}
			cancel()
		}
	}
}
