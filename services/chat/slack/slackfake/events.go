package slackfake

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Event is the inner event of an Events API callback: a message or an
// app_mention.
type Event struct {
	Type        string `json:"type"` // "message" or "app_mention"
	Channel     string `json:"channel"`
	ChannelType string `json:"channel_type,omitempty"` // "channel", "group", "im"
	User        string `json:"user,omitempty"`
	Text        string `json:"text"`
	TS          string `json:"ts"`
	ThreadTS    string `json:"thread_ts,omitempty"`
	Subtype     string `json:"subtype,omitempty"`
	BotID       string `json:"bot_id,omitempty"`
	Team        string `json:"team,omitempty"`
}

// Callback wraps an event in the event_callback envelope Slack sends, as
// JSON.
func Callback(ev Event) []byte {
	b, _ := json.Marshal(map[string]any{
		"token": "verification-token-unused", "team_id": TeamID, "api_app_id": AppID,
		"type": "event_callback", "event_id": "Ev" + strings.ReplaceAll(ev.TS, ".", ""),
		"event_time": time.Now().Unix(), "event": ev,
	})
	return b
}

// Sign returns the X-Slack-Request-Timestamp and X-Slack-Signature headers
// of body, signed with secret at time at (signature version v0).
func Sign(secret string, at time.Time, body []byte) (timestamp, signature string) {
	timestamp = strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("v0:" + timestamp + ":"))
	mac.Write(body)
	return timestamp, "v0=" + hex.EncodeToString(mac.Sum(nil))
}

// PostSigned sends body to an Events API or slash command URL the way
// Slack does: signed with secret at time at, as JSON (events) or a form
// (slash commands, when body parses as one), with X-Slack-Retry-Num when
// retry > 0.
func PostSigned(ctx context.Context, client *http.Client, target, secret string, at time.Time, body []byte, retry int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	ts, sig := Sign(secret, at, body)
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", sig)
	if json.Valid(body) {
		req.Header.Set("Content-Type", "application/json")
	} else {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if retry > 0 {
		req.Header.Set("X-Slack-Retry-Num", strconv.Itoa(retry))
		req.Header.Set("X-Slack-Retry-Reason", "http_timeout")
	}
	return client.Do(req)
}

// SlashCommand is the form body of a slash command invocation.
func SlashCommand(command, text, channel, user, triggerID string) []byte {
	return []byte(url.Values{
		"token": {"verification-token-unused"}, "team_id": {TeamID}, "channel_id": {channel},
		"user_id": {user}, "command": {command}, "text": {text}, "trigger_id": {triggerID},
		"api_app_id": {AppID}, "response_url": {"http://127.0.0.1:1/unused"},
	}.Encode())
}

// SlashCommandJSON is a slash command as Socket Mode's payload carries it.
func SlashCommandJSON(command, text, channel, user, triggerID string) []byte {
	b, _ := json.Marshal(map[string]string{
		"team_id": TeamID, "channel_id": channel, "user_id": user, "command": command,
		"text": text, "trigger_id": triggerID, "api_app_id": AppID,
	})
	return b
}
