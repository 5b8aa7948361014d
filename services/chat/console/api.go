package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// idRe is what a message id may be: a UUID from the browser in practice.
// Command ids derive from it, so it is kept to a boring alphabet.
var idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// threadRe is what a thread id may be: the id of the thread's first post,
// which a service or an event source may have chosen ("pagerduty/P1X2"),
// so any printable ASCII without spaces.
var threadRe = regexp.MustCompile(`^[!-~]{1,256}$`)

// maxBodyBytes bounds a POST body: the text limit plus room for the JSON.
const maxBodyBytes = 64 << 10

// messageRequest is the JSON body of POST /api/messages.
type messageRequest struct {
	Channel string `json:"channel"`
	Thread  string `json:"thread"`
	ID      string `json:"id"`
	User    string `json:"user"`
	Text    string `json:"text"`
}

// errorBody is the JSON of every 4xx/5xx answer of the API.
type errorBody struct {
	Error string `json:"error"`
}

// postMessage hands a person's message to the chat core and answers with
// the core's ChatReply. The browser reuses the message id when it retries,
// so a retry after a lost answer is recognised by the core, not run twice.
func (c *Console) postMessage(w http.ResponseWriter, r *http.Request) {
	// Requiring JSON also makes a cross-site form post impossible without
	// a CORS preflight, which the console never grants.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "content type must be application/json")
		return
	}
	var req messageRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBodyBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "request body: invalid JSON: "+err.Error())
		return
	}
	user, status, err := c.user(r, req.User)
	if err != nil {
		writeError(w, status, err.Error())
		return
	}
	if err := validateMessage(req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	msg := &chatv1.ChatMessage{
		Id:           req.ID,
		Conversation: &chatv1.Conversation{Adapter: Adapter, Channel: req.Channel, Thread: req.Thread},
		Author:       &chatv1.Identity{Id: Adapter + ":" + user, Name: user},
		Text:         req.Text,
	}
	if c.cfg.TrustedUserHeader != "" && strings.Contains(user, "@") {
		// A proxy that signs people in usually knows their e-mail, which
		// RBAC and PagerDuty can match on. A self-declared name cannot be
		// trusted with that.
		msg.Author.Email = user
	}
	// The browser leaving must not cut a dispatch in half: the core gets
	// its own deadline, and the id makes a later retry safe anyway.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), handleTimeout)
	defer cancel()
	reply := c.in.Handle(ctx, msg)
	if reply == nil {
		c.log.Error("chat core gave no reply", "channel", req.Channel, "message_id", req.ID)
		writeError(w, http.StatusBadGateway, "the chat core gave no answer; try again")
		return
	}
	b, err := wire.Marshal(reply)
	if err != nil {
		c.log.Error("encode chat reply", "channel", req.Channel, "message_id", req.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "could not encode the chat core's answer")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// validateMessage checks everything of a request except the user.
func validateMessage(req messageRequest) error {
	if err := validateChannel(req.Channel); err != nil {
		return err
	}
	if !idRe.MatchString(req.ID) {
		return errors.New("id: required; want 1 to 128 letters, digits, '.', '_', ':' or '-' (the browser sends a UUID)")
	}
	if req.Thread != "" && !threadRe.MatchString(req.Thread) {
		return errors.New("thread: want the id of the thread's first post (printable ASCII, no spaces), or empty for the channel")
	}
	if strings.TrimSpace(req.Text) == "" {
		return errors.New("text: required")
	}
	if len(req.Text) > MaxTextBytes {
		return fmt.Errorf("text: %d bytes, at most %d allowed", len(req.Text), MaxTextBytes)
	}
	if !utf8.ValidString(req.Text) {
		return errors.New("text: not valid UTF-8")
	}
	return nil
}

// validateChannel checks a channel name.
func validateChannel(ch string) error {
	if !channelRe.MatchString(ch) {
		return fmt.Errorf("channel: %q: want 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter or digit", ch)
	}
	return nil
}

// validateUser checks a person's display name.
func validateUser(u string) error {
	switch {
	case u == "":
		return errors.New("user: required")
	case len(u) > MaxUserBytes:
		return fmt.Errorf("user: %d bytes, at most %d allowed", len(u), MaxUserBytes)
	case !utf8.ValidString(u):
		return errors.New("user: not valid UTF-8")
	case strings.IndexFunc(u, unicode.IsControl) >= 0:
		return errors.New("user: must not contain control characters")
	}
	return nil
}

// user establishes who is asking: the trusted proxy header when one is
// configured (whatever the browser claims), the browser's name otherwise.
// On error it also returns the HTTP status to answer with.
func (c *Console) user(r *http.Request, claimed string) (string, int, error) {
	if h := c.cfg.TrustedUserHeader; h != "" {
		u := strings.TrimSpace(r.Header.Get(h))
		if u == "" {
			return "", http.StatusUnauthorized, fmt.Errorf("not signed in: the %s header from the authenticating proxy is missing", h)
		}
		if err := validateUser(u); err != nil {
			return "", http.StatusUnauthorized, fmt.Errorf("%s header: %w", h, err)
		}
		return u, 0, nil
	}
	u := strings.TrimSpace(claimed)
	if err := validateUser(u); err != nil {
		return "", http.StatusBadRequest, err
	}
	return u, 0, nil
}

// authorised refuses API reads without the proxy's header when one is
// configured, so nobody reaches the conversation by going around the proxy.
func (c *Console) authorised(w http.ResponseWriter, r *http.Request) bool {
	if c.cfg.TrustedUserHeader == "" {
		return true
	}
	if _, status, err := c.user(r, ""); err != nil {
		writeError(w, status, err.Error())
		return false
	}
	return true
}

// meResponse is the JSON of GET /api/me.
type meResponse struct {
	// User is the signed-in person, empty unless the proxy says who it is.
	User string `json:"user"`
	// Trusted is true when the name comes from the proxy and the page must
	// not offer to change it.
	Trusted bool `json:"trusted"`
	// History is how many posts a channel shows when opened.
	History int `json:"history"`
}

// me tells the page who the person is when a proxy established it.
func (c *Console) me(w http.ResponseWriter, r *http.Request) {
	resp := meResponse{History: c.cfg.History}
	if c.cfg.TrustedUserHeader != "" {
		u, status, err := c.user(r, "")
		if err != nil {
			writeError(w, status, err.Error())
			return
		}
		resp.User, resp.Trusted = u, true
	}
	writeJSON(w, http.StatusOK, resp)
}

// channelsResponse is the JSON of GET /api/channels.
type channelsResponse struct {
	Channels []string `json:"channels"`
}

// channels lists the configured channels, then every other console channel
// that has posts on the CHAT stream, so a channel one person opens shows up
// for the others.
func (c *Console) channels(w http.ResponseWriter, r *http.Request) {
	if !c.authorised(w, r) {
		return
	}
	list := slices.Clone(c.cfg.Channels)
	ctx, cancel := context.WithTimeout(r.Context(), natsTimeout)
	defer cancel()
	found, err := c.activeChannels(ctx)
	if err != nil {
		// The configured list is still useful; the stream tells the page
		// about the problem soon enough.
		c.log.Warn("list console channels on the CHAT stream", "error", err)
	}
	for _, ch := range found {
		if !slices.Contains(list, ch) {
			list = append(list, ch)
		}
	}
	writeJSON(w, http.StatusOK, channelsResponse{Channels: list})
}

// activeChannels returns, sorted, the console channels with posts.
func (c *Console) activeChannels(ctx context.Context) ([]string, error) {
	prefix := wire.SubjectChatPostPrefix + "." + Adapter + "."
	s, err := c.js.Stream(ctx, wire.StreamChat)
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", wire.StreamChat, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("stream %s subjects: %w", wire.StreamChat, err)
	}
	var out []string
	for subj := range info.State.Subjects {
		if ch := strings.TrimPrefix(subj, prefix); channelRe.MatchString(ch) {
			out = append(out, ch)
		}
	}
	slices.Sort(out)
	return out, nil
}

// healthz answers 200 while the NATS connection is up, 503 otherwise: a
// console without NATS can show nothing and send nothing.
func (c *Console) healthz(w http.ResponseWriter, r *http.Request) {
	if nc := c.js.Conn(); nc == nil || !nc.IsConnected() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "not connected to NATS"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":"encode response"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError answers with {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}
