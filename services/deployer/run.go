package deployer

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
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
		if c.KnownHosts != "" {
			cb, err := knownhosts.New(c.KnownHosts)
			if err != nil {
				return nil, fmt.Errorf("deployer.enc.known_hosts: %w", err)
			}
			keys.HostKeyCallback = cb
		}
		return keys, nil
	case "http", "https":
		tok, err := os.ReadFile(c.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("deployer.enc.credentials_file: %w", err)
		}
		user := c.Username
		if user == "" {
			user = "git"
		}
		return &githttp.BasicAuth{Username: user, Password: strings.TrimSpace(string(tok))}, nil
	}
	return nil, nil
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
