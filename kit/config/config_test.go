package config_test

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/switchboard-ops/switchboard/kit/config"
)

// testConfig is shaped like cmd/switchboard's composed configuration.
type testConfig struct {
	NATS     natsConfig `yaml:"nats"`
	Chat     chatConfig `yaml:"chat"`
	LogLevel slog.Level `yaml:"log_level"`
	Secret   string     `yaml:"-"`
}

type natsConfig struct {
	URL     string        `yaml:"url"`
	Timeout time.Duration `yaml:"timeout"`
	Seeds   []string      `yaml:"seeds"`
}

type chatConfig struct {
	Console consoleConfig `yaml:"console"`
	Admins  []string      `yaml:"admins"`
	Advise  bool          `yaml:"advise-only"`
	Burst   uint8         `yaml:"burst"`
	Ratio   float64       `yaml:"ratio"`
}

type consoleConfig struct {
	Addr string `yaml:"addr"`
	Port int    `yaml:"port"`
}

func defaultConfig() testConfig {
	return testConfig{
		NATS: natsConfig{URL: "nats://127.0.0.1:4222", Timeout: 5 * time.Second},
		Chat: chatConfig{Console: consoleConfig{Addr: "127.0.0.1", Port: 8080}, Burst: 10, Ratio: 0.5},
	}
}

// Validate follows STYLE.md: a value receiver, and errors name the key.
func (c testConfig) Validate() error {
	if c.Chat.Console.Port < 1 || c.Chat.Console.Port > 65535 {
		return fmt.Errorf("chat.console.port: %d is not a port (1-65535)", c.Chat.Console.Port)
	}
	return nil
}

// writeFile writes a config file into a fresh directory and returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "switchboard.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		file    string // written to a file when not empty; no file otherwise
		env     map[string]string
		want    func(*testConfig) // applied to defaultConfig()
		wantErr string            // substring of the error
	}{
		{
			name: "defaults stay when there is no file and no environment",
			want: func(*testConfig) {},
		},
		{
			name: "the file overrides defaults and keeps the keys it does not mention",
			file: "nats:\n  url: nats://nats.internal:4222\nchat:\n  admins: [alice, bob]\n",
			want: func(c *testConfig) {
				c.NATS.URL = "nats://nats.internal:4222"
				c.Chat.Admins = []string{"alice", "bob"}
			},
		},
		{
			name: "the environment overrides the file",
			file: "nats:\n  url: nats://from-file:4222\nchat:\n  console:\n    port: 9000\n",
			env:  map[string]string{"SB_NATS_URL": "nats://from-env:4222", "SB_CHAT_CONSOLE_PORT": "9100"},
			want: func(c *testConfig) {
				c.NATS.URL = "nats://from-env:4222"
				c.Chat.Console.Port = 9100
			},
		},
		{
			name: "an empty variable does not override",
			file: "nats:\n  url: nats://from-file:4222\n",
			env:  map[string]string{"SB_NATS_URL": ""},
			want: func(c *testConfig) { c.NATS.URL = "nats://from-file:4222" },
		},
		{
			name: "durations decode from yaml strings like 10m",
			file: "nats:\n  timeout: 10m\n",
			want: func(c *testConfig) { c.NATS.Timeout = 10 * time.Minute },
		},
		{
			name:    "a bare number is not a duration in yaml",
			file:    "nats:\n  timeout: 10\n",
			wantErr: "line 2: cannot unmarshal !!int `10` into time.Duration",
		},
		{
			name: "durations decode from the environment",
			env:  map[string]string{"SB_NATS_TIMEOUT": "1m30s"},
			want: func(c *testConfig) { c.NATS.Timeout = 90 * time.Second },
		},
		{
			name: "string lists come from comma separated variables",
			file: "nats:\n  seeds: [nats://a:4222]\n",
			env:  map[string]string{"SB_NATS_SEEDS": "nats://b:4222, nats://c:4222,"},
			want: func(c *testConfig) { c.NATS.Seeds = []string{"nats://b:4222", "nats://c:4222"} },
		},
		{
			name: "bools, unsigned integers, floats and dashed keys come from the environment",
			env: map[string]string{"SB_CHAT_ADVISE_ONLY": "true", "SB_CHAT_BURST": "200",
				"SB_CHAT_RATIO": "0.25", "SB_CHAT_CONSOLE_ADDR": "0.0.0.0"},
			want: func(c *testConfig) {
				c.Chat.Advise = true
				c.Chat.Burst = 200
				c.Chat.Ratio = 0.25
				c.Chat.Console.Addr = "0.0.0.0"
			},
		},
		{
			name: "text unmarshalers such as slog.Level decode from the file and the environment",
			file: "log_level: warn\n",
			env:  map[string]string{"SB_LOG_LEVEL": "debug"},
			want: func(c *testConfig) { c.LogLevel = slog.LevelDebug },
		},
		{
			name: "fields tagged yaml:\"-\" ignore the environment",
			env:  map[string]string{"SB_SECRET": "hunter2"},
			want: func(*testConfig) {},
		},
		{
			name:    "an unknown key is an error naming the key and its line",
			file:    "nats:\n  url: nats://x:4222\n  urls: nats://y:4222\n",
			wantErr: "line 3: field urls not found",
		},
		{
			name:    "a bad variable names the variable and the key",
			env:     map[string]string{"SB_CHAT_CONSOLE_PORT": "x"},
			wantErr: `SB_CHAT_CONSOLE_PORT: parse "x" as int for chat.console.port: invalid syntax`,
		},
		{
			name:    "an out of range variable says so",
			env:     map[string]string{"SB_CHAT_BURST": "300"},
			wantErr: `SB_CHAT_BURST: parse "300" as uint8 for chat.burst: value out of range`,
		},
		{
			name:    "a bad duration variable names the variable and the key",
			env:     map[string]string{"SB_NATS_TIMEOUT": "soon"},
			wantErr: `SB_NATS_TIMEOUT: parse "soon" as duration for nats.timeout`,
		},
		{
			name:    "every bad variable is reported at once",
			env:     map[string]string{"SB_CHAT_CONSOLE_PORT": "x", "SB_CHAT_ADVISE_ONLY": "maybe"},
			wantErr: "for chat.console.port: invalid syntax\nSB_CHAT_ADVISE_ONLY: parse \"maybe\" as bool for chat.advise-only",
		},
		{
			name:    "Validate runs after the environment is applied",
			file:    "chat:\n  console:\n    port: 9000\n",
			env:     map[string]string{"SB_CHAT_CONSOLE_PORT": "70000"},
			wantErr: "config: chat.console.port: 70000 is not a port (1-65535)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			got := defaultConfig()
			err := config.Load(path, env(tc.env), &got)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Load error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := defaultConfig()
			tc.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadEmptyFileKeepsDefaults(t *testing.T) {
	t.Parallel()
	got := defaultConfig()
	if err := config.Load(writeFile(t, "# nothing yet\n"), nil, &got); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if diff := cmp.Diff(defaultConfig(), got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestLoadMissingFileIsAClearError(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nope.yaml")
	got := defaultConfig()
	err := config.Load(path, nil, &got)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "config: read "+path) {
		t.Errorf("Load error = %v, want fs.ErrNotExist naming %s", err, path)
	}
}

// pointerConfig declares Validate on the pointer receiver.
type pointerConfig struct {
	Name string `yaml:"name"`
}

var errNoName = errors.New("name: required")

func (c *pointerConfig) Validate() error {
	if c.Name == "" {
		return errNoName
	}
	return nil
}

func TestLoadCallsAPointerReceiverValidate(t *testing.T) {
	t.Parallel()
	var c pointerConfig
	if err := config.Load("", nil, &c); !errors.Is(err, errNoName) {
		t.Errorf("Load error = %v, want it to wrap %v", err, errNoName)
	}
	if err := config.Load("", env(map[string]string{"SB_NAME": "lb"}), &c); err != nil {
		t.Errorf("Load with SB_NAME set: %v", err)
	}
}

func TestLoadRefusesADestinationThatIsNotAStructPointer(t *testing.T) {
	t.Parallel()
	var c testConfig
	var nilPtr *testConfig
	for _, dst := range []any{c, nilPtr, new(int), nil} {
		if err := config.Load("", nil, dst); err == nil {
			t.Errorf("Load into %T succeeded, want an error", dst)
		}
	}
}

func TestEnvName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path, want string
	}{
		{"a top-level key", "nats", "SB_NATS"},
		{"dots become underscores", "chat.console.addr", "SB_CHAT_CONSOLE_ADDR"},
		{"dashes become underscores", "chat.advise-only", "SB_CHAT_ADVISE_ONLY"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := config.EnvName(tc.path); got != tc.want {
				t.Errorf("EnvName(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}
