package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/config"
	"github.com/switchboard-ops/switchboard/services/chat"
	"github.com/switchboard-ops/switchboard/services/deployer"
	"github.com/switchboard-ops/switchboard/services/dns"
	"github.com/switchboard-ops/switchboard/services/incidents"
	"github.com/switchboard-ops/switchboard/services/lb"
	"github.com/switchboard-ops/switchboard/services/watcher"
)

// Config is switchboard's configuration file: one YAML document, every key
// overridable by SB_<PATH> in the environment (SB_NATS_URL, SB_CHAT_CONSOLE_ADDR…).
type Config struct {
	// DataDir holds the embedded NATS store and its credential.
	DataDir string `yaml:"data_dir"`
	Log     struct {
		Level string `yaml:"level"`
	} `yaml:"log"`
	// NATS to connect to; an empty url means the embedded server.
	NATS bus.Config `yaml:"nats"`
	// Embedded NATS server, used when nats.url is empty.
	Embedded bus.EmbeddedConfig `yaml:"embedded"`
	// Metrics serves Prometheus /metrics; empty addr turns it off.
	Metrics struct {
		Addr string `yaml:"addr"`
	} `yaml:"metrics"`
	Chat      chat.Config      `yaml:"chat"`
	LB        lb.Config        `yaml:"lb"`
	DNS       dns.Config       `yaml:"dns"`
	Incidents incidents.Config `yaml:"incidents"`
	Watcher   watcher.Config   `yaml:"watcher"`
	Deployer  deployer.Config  `yaml:"deployer"`
}

// defaultDataDir is $SB_DATA_DIR, else $XDG_DATA_HOME/switchboard, else
// ~/.local/share/switchboard: the same place for the server and the CLI.
func defaultDataDir(getenv func(string) string) string {
	if d := getenv("SB_DATA_DIR"); d != "" {
		return d
	}
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "switchboard")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "switchboard")
	}
	return filepath.Join(home, ".local", "share", "switchboard")
}

func defaultConfig(getenv func(string) string) Config {
	var c Config
	c.DataDir = defaultDataDir(getenv)
	c.Log.Level = "info"
	c.NATS.Replicas = 1
	c.Embedded.Host = "127.0.0.1"
	c.Embedded.Port = 4222
	c.Metrics.Addr = "127.0.0.1:9464"
	c.Chat = chat.DefaultConfig()
	c.LB = lb.DefaultConfig()
	c.DNS = dns.DefaultConfig()
	c.Incidents = incidents.DefaultConfig()
	c.Watcher = watcher.DefaultConfig()
	c.Deployer = deployer.DefaultConfig()
	return c
}

// Validate names the first wrong key.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return fmt.Errorf("data_dir: required")
	}
	if err := c.NATS.Validate(); err != nil {
		return err
	}
	for _, v := range []interface{ Validate() error }{c.LB, c.DNS, c.Incidents, c.Watcher, c.Deployer} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return c.Chat.Validate()
}

// LogValue keeps secrets out of the start-up log line.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("data_dir", c.DataDir),
		slog.Any("nats", c.NATS),
		slog.String("console", c.Chat.Console.Addr),
		slog.String("metrics", c.Metrics.Addr),
	)
}

func loadConfig(path string, getenv func(string) string) (Config, error) {
	c := defaultConfig(getenv)
	if path == "" {
		path = getenv("SB_CONFIG")
	}
	if err := config.Load(path, getenv, &c); err != nil {
		return c, err
	}
	if c.Embedded.DataDir == "" {
		c.Embedded.DataDir = c.DataDir
	}
	if t := getenv("SB_NATS_TOKEN"); t != "" {
		c.NATS.Token = t
	}
	return c, nil
}
