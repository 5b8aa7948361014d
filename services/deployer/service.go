// Package deployer is the deployer service: it owns the inventory, a Puppet
// ENC kept in a git repository (edited with go-git, published to KV
// sb_inventory after every commit and on a timer), deploys by pinning a
// version in the ENC and running Puppet on the role's hosts in batches
// through a configurable executor (Rundeck, SSH or a local command), and
// provisions hosts from the spare pool and retires them.
package deployer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/kit/jobs"
	"github.com/switchboard-ops/switchboard/services/deployer/enc"
	"github.com/switchboard-ops/switchboard/services/deployer/executor"
	execexec "github.com/switchboard-ops/switchboard/services/deployer/executor/exec"
	"github.com/switchboard-ops/switchboard/services/deployer/executor/rundeck"
	"github.com/switchboard-ops/switchboard/services/deployer/executor/ssh"
	"github.com/switchboard-ops/switchboard/services/deployer/gitrepo"
)

// ServiceName is the <service> of the deployer's command subjects.
const ServiceName = "deployer"

// BucketDeployer holds rollout progress: rollout.<job id>.
const BucketDeployer = "sb_deployer"

// Config is the deployer's configuration (the "deployer" key).
type Config struct {
	// ENC is the inventory repository.
	ENC ENCConfig `yaml:"enc"`
	// Executor picks how Puppet runs are started: exec, ssh or rundeck.
	// Swapping tools is this one line; each has its own section below.
	Executor string          `yaml:"executor"`
	Exec     execexec.Config `yaml:"exec"`
	SSH      ssh.Config      `yaml:"ssh"`
	Rundeck  rundeck.Config  `yaml:"rundeck"`
	// VersionPattern is a regular expression every deployed version must match.
	VersionPattern string `yaml:"version_pattern"`
	// Batch is the default batch size of deploy.
	Batch int `yaml:"batch"`
	// Ops is where problems found in the ENC (by the timer, in commits made
	// by people) are reported.
	Ops Conversation `yaml:"ops"`
	// DrainTimeout is how long host retire waits for lb drain --wait.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// StopGrace is how long Stop lets running jobs finish before leaving
	// them for another replica.
	StopGrace time.Duration `yaml:"stop_grace"`
}

// Conversation names a chat channel.
type Conversation struct {
	Adapter string `yaml:"adapter"`
	Channel string `yaml:"channel"`
}

// ENCConfig says where the ENC repository is.
type ENCConfig struct {
	// URL of the remote: empty for the local repository in the data dir
	// (<data_dir>/deployer/enc.git, created with an example inventory);
	// a path, ssh://, git@host:path or https:// otherwise.
	URL string `yaml:"url"`
	// Branch the bot follows and pushes to.
	Branch string `yaml:"branch"`
	// CredentialsFile: an SSH private key for ssh remotes, or a token
	// (password) for https ones. Never logged.
	CredentialsFile string `yaml:"credentials_file"`
	// Username for https ("git" when empty) or ssh (from the URL, else "git").
	Username string `yaml:"username"`
	// KnownHosts is the known_hosts file for ssh remotes (when empty,
	// $SSH_KNOWN_HOSTS, else ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts).
	KnownHosts string `yaml:"known_hosts"`
	// CAFile holds PEM certificates trusted for an https remote besides
	// the system's: a company CA, or a forge's self-signed certificate.
	CAFile string `yaml:"ca_file"`
	// PollInterval: how often to fetch to catch commits made by people.
	PollInterval time.Duration `yaml:"poll_interval"`
	// Author is the bot's name and e-mail in commits.
	AuthorName  string `yaml:"author_name"`
	AuthorEmail string `yaml:"author_email"`
}

// DefaultConfig is the all-in-one default: a local ENC, the exec executor.
func DefaultConfig() Config {
	return Config{
		ENC:      ENCConfig{Branch: "main", PollInterval: 30 * time.Second, AuthorName: "switchboard", AuthorEmail: "switchboard@localhost"},
		Executor: "exec",
		// Nothing real to run Puppet on in the embedded default: say what
		// would run. Real setups configure ssh or rundeck, or their tool here.
		Exec:           execexec.Config{Command: []string{"echo", "puppet agent --test on {host} ({service} {version}) tags={tags}"}, Parallel: 10, Timeout: 30 * time.Minute},
		SSH:            ssh.Config{Port: 22, Parallel: 10, Timeout: 30 * time.Minute},
		Rundeck:        rundeck.Config{APIVersion: 41, Timeout: 30 * time.Minute},
		VersionPattern: `^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$`,
		Batch:          10,
		Ops:            Conversation{Adapter: "console", Channel: "ops"},
		DrainTimeout:   15 * time.Minute,
		StopGrace:      10 * time.Second,
	}
}

// Validate names the first wrong key.
func (c Config) Validate() error {
	if _, err := regexp.Compile(c.VersionPattern); err != nil {
		return fmt.Errorf("deployer.version_pattern: %v", err)
	}
	switch c.Executor {
	case "exec":
		if len(c.Exec.Command) == 0 {
			return errors.New("deployer.exec.command: empty")
		}
	case "ssh":
		if c.SSH.User == "" || c.SSH.KeyFile == "" || c.SSH.KnownHosts == "" {
			return errors.New("deployer.ssh: user, key_file and known_hosts are required")
		}
	case "rundeck":
		if c.Rundeck.URL == "" || c.Rundeck.Job == "" || c.Rundeck.TokenFile == "" {
			return errors.New("deployer.rundeck: url, job and token_file are required")
		}
	default:
		return fmt.Errorf("deployer.executor: %q is not exec, ssh or rundeck", c.Executor)
	}
	if c.Batch < 1 || c.Batch > 500 {
		return fmt.Errorf("deployer.batch: %d is not between 1 and 500", c.Batch)
	}
	if c.ENC.PollInterval < time.Second {
		return fmt.Errorf("deployer.enc.poll_interval: %v is too short (at least 1s)", c.ENC.PollInterval)
	}
	if c.Ops.Adapter == "" || c.Ops.Channel == "" {
		return errors.New("deployer.ops: adapter and channel are required")
	}
	return nil
}

// Deps are what the deployer needs from its host process.
type Deps struct {
	NC      *nats.Conn
	Log     *slog.Logger
	Tracing trace.TracerProvider
	Meter   metric.Meter
	// Replicas of the deployer's own bucket (3 on a cluster).
	Replicas int
	// DataDir holds the ENC clone (and the local ENC when no URL is set).
	DataDir string
	// Instance id of this replica; random when empty.
	Instance string
	// Lease of the replica; must match bus.StreamOptions.ReplicaLease (tests shorten both).
	Lease time.Duration
	// Executor replaces the configured one (tests, benchmarks).
	Executor executor.Executor
}

// Service is one deployer replica.
type Service struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	js      jetstream.JetStream
	repo    *gitrepo.Repo
	loader  *enc.Loader
	exec    executor.Executor
	version *regexp.Regexp
	invKV   jetstream.KeyValue
	state   jetstream.KeyValue
	jobs    *jobs.Store

	pubMu     sync.Mutex // one publish at a time
	published string     // revision last published or found published
	reported  string     // revision whose problems were last reported

	srv    *command.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New opens (or creates) the ENC repository and the buckets; Start serves.
func New(ctx context.Context, cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.NC == nil {
		return nil, errors.New("deployer: no NATS connection")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.DataDir == "" {
		return nil, errors.New("deployer: no data dir")
	}
	s := &Service{cfg: cfg, deps: d, log: d.Log.With("service", ServiceName), loader: enc.NewLoader(),
		version: regexp.MustCompile(cfg.VersionPattern)}
	var err error
	if s.js, err = jetstream.New(d.NC); err != nil {
		return nil, fmt.Errorf("deployer: jetstream: %w", err)
	}
	if s.invKV, err = inventory.Bucket(ctx, s.js); err != nil {
		return nil, fmt.Errorf("deployer: %w", err)
	}
	if s.state, err = bus.EnsureBucket(ctx, s.js, d.Replicas, jetstream.KeyValueConfig{
		Bucket: BucketDeployer, Description: "Deployer rollout progress by job, so a take-over resumes at the next batch.",
		History: 1, TTL: 30 * 24 * time.Hour,
	}); err != nil {
		return nil, fmt.Errorf("deployer: %w", err)
	}
	if s.jobs, err = jobs.Open(ctx, s.js); err != nil {
		return nil, fmt.Errorf("deployer: %w", err)
	}
	if s.exec = d.Executor; s.exec == nil {
		if s.exec, err = newExecutor(cfg); err != nil {
			return nil, fmt.Errorf("deployer: %w", err)
		}
	}
	if s.repo, err = openRepo(ctx, cfg.ENC, d.DataDir, s.log); err != nil {
		return nil, fmt.Errorf("deployer: %w", err)
	}
	return s, nil
}

func newExecutor(cfg Config) (executor.Executor, error) {
	switch cfg.Executor {
	case "ssh":
		return ssh.New(cfg.SSH)
	case "rundeck":
		return rundeck.New(cfg.Rundeck, nil)
	default:
		c := cfg.Exec
		return execexec.New(c)
	}
}

// openRepo clones the configured ENC, or creates the local one.
func openRepo(ctx context.Context, c ENCConfig, dataDir string, log *slog.Logger) (*gitrepo.Repo, error) {
	dir := filepath.Join(dataDir, "deployer")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	bot := gitrepo.Signature{Name: c.AuthorName, Email: c.AuthorEmail}
	url := c.URL
	if url == "" {
		url = filepath.Join(dir, "enc.git")
		created, err := gitrepo.InitBare(url, c.Branch, bot, "Example inventory\n\nCreated by the deployer; replace it with yours.", enc.Example())
		if err != nil {
			return nil, fmt.Errorf("create the local ENC: %w", err)
		}
		if created {
			log.Info("created a local ENC repository with an example inventory", "path", url)
		}
	}
	auth, err := repoAuth(c)
	if err != nil {
		return nil, err
	}
	ca, err := repoCA(c)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return gitrepo.Open(octx, gitrepo.Options{URL: url, Branch: c.Branch, Dir: filepath.Join(dir, "clone.git"), Auth: auth, CABundle: ca, Committer: bot})
}
