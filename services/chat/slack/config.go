package slack

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// Secret is a credential. It prints, logs and marshals as "[redacted]", so
// a token that ends up in a log line, an error or a config dump shows
// nothing. Read it with Reveal, only where it is sent to Slack.
type Secret struct{ v string }

// NewSecret wraps a credential.
func NewSecret(s string) Secret { return Secret{strings.TrimSpace(s)} }

// Reveal returns the credential itself.
func (s Secret) Reveal() string { return s.v }

// Set reports whether the credential is not empty.
func (s Secret) Set() bool { return s.v != "" }

// String is "[redacted]", or "" when unset.
func (s Secret) String() string {
	if s.v == "" {
		return ""
	}
	return "[redacted]"
}

// GoString keeps %#v from printing the credential.
func (s Secret) GoString() string { return `slack.Secret("` + s.String() + `")` }

// LogValue keeps slog from printing the credential.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// UnmarshalText lets kit/config set it from YAML or SB_* variables.
func (s *Secret) UnmarshalText(b []byte) error { *s = NewSecret(string(b)); return nil }

// MarshalText never writes the credential.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Modes of receiving events.
const (
	// ModeSocket connects out to Slack over a WebSocket (an app-level
	// token; no public URL needed).
	ModeSocket = "socket"
	// ModeEvents serves the Events API and the slash command over HTTP
	// (a public HTTPS URL, requests signed with the signing secret).
	ModeEvents = "events"
)

// Config is the Slack adapter's configuration (the "chat.slack" key). The
// adapter is on when BotToken is set.
type Config struct {
	// BotToken (xoxb-…) calls the Web API. Set it from the environment:
	// SB_CHAT_SLACK_BOT_TOKEN.
	BotToken Secret `yaml:"bot_token"`
	// AppToken (xapp-…, scope connections:write) opens Socket Mode
	// connections: SB_CHAT_SLACK_APP_TOKEN.
	AppToken Secret `yaml:"app_token"`
	// SigningSecret verifies Events API requests: SB_CHAT_SLACK_SIGNING_SECRET.
	SigningSecret Secret `yaml:"signing_secret"`
	// Mode is "socket" (default) or "events".
	Mode string `yaml:"mode"`
	// EventsAddr is where the Events API and slash command requests are
	// served in events mode (POST /slack/events, POST /slack/commands).
	EventsAddr string `yaml:"events_addr"`
	// Prefixes that make a channel message a command ("sb:"). Mentions of
	// the bot and direct messages always are.
	Prefixes []string `yaml:"prefixes"`
	// SlashCommand is the slash command the app defines ("/sb").
	SlashCommand string `yaml:"slash_command"`
	// OpsChannel (a channel id) is told once per channel when posts cannot
	// be delivered there (archived, bot not invited). Empty: only logged.
	OpsChannel string `yaml:"ops_channel"`
	// ProfileTTL is how long a user's profile and groups are cached.
	ProfileTTL time.Duration `yaml:"profile_ttl"`
	// PostInterval paces chat.postMessage per channel (Slack allows about
	// one a second); 0 sends as fast as Slack accepts.
	PostInterval time.Duration `yaml:"post_interval"`
	// DigestAfter: when more posts than this wait for one channel, runs of
	// notices among them are coalesced into a digest.
	DigestAfter int `yaml:"digest_after"`
	// MaxTextBytes: longer text and code go up as a file instead.
	MaxTextBytes int `yaml:"max_text_bytes"`
	// APIURL is the Web API base URL (tests point it at a fake).
	APIURL string `yaml:"api_url"`
}

// DefaultConfig is the configuration for a workspace with one app: Socket
// Mode, the "sb:" prefix and the /sb command. The tokens come from the
// environment.
func DefaultConfig() Config {
	return Config{
		Mode:         ModeSocket,
		EventsAddr:   ":3000",
		Prefixes:     []string{"sb:"},
		SlashCommand: "/sb",
		ProfileTTL:   15 * time.Minute,
		PostInterval: time.Second,
		DigestAfter:  5,
		MaxTextBytes: 3000,
	}
}

// Enabled reports whether the Slack adapter should run.
func (c Config) Enabled() bool { return c.BotToken.Set() }

// Validate names the first wrong key. An adapter that is off is valid.
func (c Config) Validate() error {
	if !c.Enabled() {
		if c.AppToken.Set() || c.SigningSecret.Set() {
			return errors.New("chat.slack.bot_token: required when app_token or signing_secret is set (SB_CHAT_SLACK_BOT_TOKEN)")
		}
		return nil
	}
	if !strings.HasPrefix(c.BotToken.Reveal(), "xoxb-") {
		return errors.New("chat.slack.bot_token: want a bot token (xoxb-…)")
	}
	switch c.Mode {
	case ModeSocket:
		if !strings.HasPrefix(c.AppToken.Reveal(), "xapp-") {
			return errors.New("chat.slack.app_token: socket mode needs an app-level token (xapp-…, scope connections:write; SB_CHAT_SLACK_APP_TOKEN)")
		}
	case ModeEvents:
		if !c.SigningSecret.Set() {
			return errors.New("chat.slack.signing_secret: events mode needs the app's signing secret (SB_CHAT_SLACK_SIGNING_SECRET)")
		}
		if _, _, err := net.SplitHostPort(c.EventsAddr); err != nil {
			return fmt.Errorf("chat.slack.events_addr: %q: want host:port: %w", c.EventsAddr, err)
		}
	default:
		return fmt.Errorf("chat.slack.mode: %q: want %q or %q", c.Mode, ModeSocket, ModeEvents)
	}
	if c.SlashCommand != "" && !strings.HasPrefix(c.SlashCommand, "/") {
		return fmt.Errorf("chat.slack.slash_command: %q: want a leading /", c.SlashCommand)
	}
	if c.OpsChannel != "" && !channelID(c.OpsChannel) {
		return fmt.Errorf("chat.slack.ops_channel: %q: want a channel id (C…), not a name", c.OpsChannel)
	}
	if c.ProfileTTL < 0 || c.PostInterval < 0 || c.DigestAfter < 0 || c.MaxTextBytes < 0 {
		return errors.New("chat.slack: profile_ttl, post_interval, digest_after and max_text_bytes must not be negative")
	}
	return nil
}

// withDefaults fills zero values with DefaultConfig's, so a partly written
// YAML section works.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Mode == "" {
		c.Mode = d.Mode
	}
	if c.EventsAddr == "" {
		c.EventsAddr = d.EventsAddr
	}
	if c.Prefixes == nil {
		c.Prefixes = d.Prefixes
	}
	if c.ProfileTTL == 0 {
		c.ProfileTTL = d.ProfileTTL
	}
	if c.DigestAfter == 0 {
		c.DigestAfter = d.DigestAfter
	}
	if c.MaxTextBytes == 0 {
		c.MaxTextBytes = d.MaxTextBytes
	}
	return c
}

// LogValue shows the shape of the configuration, never a credential.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("mode", c.Mode), slog.Bool("bot_token", c.BotToken.Set()),
		slog.Bool("app_token", c.AppToken.Set()), slog.Bool("signing_secret", c.SigningSecret.Set()),
		slog.String("ops_channel", c.OpsChannel))
}

// channelID reports whether s looks like a Slack conversation id.
func channelID(s string) bool {
	if len(s) < 2 || len(s) > 32 || !strings.ContainsRune("CDG", rune(s[0])) {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
