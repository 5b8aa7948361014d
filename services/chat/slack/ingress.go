package slack

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"html"
	"io"
	"log"
	"net/http"
	"net/url"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
)

// inbound is a message from Slack on its way to the chat core.
type inbound struct {
	team, channel, channelType, user, text, ts, threadTS string
	// kind is "app_mention", "message" or "slash".
	kind string
	// subtype and botID mark message events that are not a person typing.
	subtype, botID string
	// triggerID identifies a slash command invocation (it has no ts).
	triggerID string
	// retry is Slack's redelivery count (X-Slack-Retry-Num, retry_attempt).
	retry int
}

// slashInfix marks the message id of a slash command, "<team>-slash-<trigger
// id>": the chat core threads its answers under that id, but in Slack they
// go to the channel, since a slash command leaves no message.
const slashInfix = "-slash-"

func isSlashID(s string) bool { return strings.Contains(s, slashInfix) }

// key identifies the message Slack is telling about, whichever event,
// retry or connection brings it.
func (in inbound) key() string {
	if in.kind == "slash" {
		return in.team + "/" + in.channel + "/slash/" + in.triggerID
	}
	return in.team + "/" + in.channel + "/" + in.ts
}

// eventCallback is the part of an Events API payload the adapter reads.
type eventCallback struct {
	Type      string `json:"type"`
	Challenge string `json:"challenge"`
	TeamID    string `json:"team_id"`
	Event     struct {
		Type        string `json:"type"`
		Subtype     string `json:"subtype"`
		Channel     string `json:"channel"`
		ChannelType string `json:"channel_type"`
		User        string `json:"user"`
		BotID       string `json:"bot_id"`
		Text        string `json:"text"`
		TS          string `json:"ts"`
		ThreadTS    string `json:"thread_ts"`
		Team        string `json:"team"`
	} `json:"event"`
}

func (e *eventCallback) inbound() (inbound, bool) {
	ev := e.Event
	if e.Type != "event_callback" || (ev.Type != "message" && ev.Type != "app_mention") {
		return inbound{}, false
	}
	team := e.TeamID
	if team == "" {
		team = ev.Team
	}
	return inbound{team: team, channel: ev.Channel, channelType: ev.ChannelType, user: ev.User, text: ev.Text,
		ts: ev.TS, threadTS: ev.ThreadTS, kind: ev.Type, subtype: ev.Subtype, botID: ev.BotID}, true
}

// Handler serves the Events API (POST /slack/events) and the slash
// command (POST /slack/commands). Every request is verified with the
// signing secret, then acknowledged at once; the message is handled after
// the acknowledgement, so Slack's 3-second limit holds whatever the
// command takes.
func (a *Adapter) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /slack/events", a.serveEvents)
	mux.HandleFunc("POST /slack/commands", a.serveCommand)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	return mux
}

// verified reads the body and checks Slack's v0 signature over it and the
// request timestamp, which must be within five minutes of now. It writes
// the 4xx answer itself when the request is refused.
//
// Hand-written rather than slack.NewSecretsVerifier so the clock is
// injectable (the stale-request test) and the body is capped first.
func (a *Adapter) verified(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		return nil, false
	}
	tsHdr := r.Header.Get("X-Slack-Request-Timestamp")
	sig := r.Header.Get("X-Slack-Signature")
	ts, err := strconv.ParseInt(tsHdr, 10, 64)
	ok := err == nil && strings.HasPrefix(sig, "v0=")
	if ok {
		age := a.now().Sub(time.Unix(ts, 0))
		ok = age < signatureWindow && age > -signatureWindow
	}
	if ok {
		mac := hmac.New(sha256.New, []byte(a.cfg.SigningSecret.Reveal()))
		mac.Write([]byte("v0:" + tsHdr + ":"))
		mac.Write(body)
		want := mac.Sum(nil)
		got, err := hex.DecodeString(strings.TrimPrefix(sig, "v0="))
		ok = err == nil && hmac.Equal(got, want)
	}
	if !ok {
		// Neither the signature nor the body is logged: a forged request
		// deserves no space in the log beyond the fact.
		a.log.Warn("slack: refused a request with a bad or stale signature", "path", r.URL.Path, "remote", r.RemoteAddr)
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return nil, false
	}
	return body, true
}

func (a *Adapter) serveEvents(w http.ResponseWriter, r *http.Request) {
	body, ok := a.verified(w, r)
	if !ok {
		return
	}
	var cb eventCallback
	if err := json.Unmarshal(body, &cb); err != nil {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	switch cb.Type {
	case "url_verification":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"challenge": cb.Challenge})
		return
	case "app_rate_limited":
		a.log.Warn("slack: Slack is dropping events for this app (app_rate_limited)")
	case "event_callback":
		if in, ok := cb.inbound(); ok {
			in.retry, _ = strconv.Atoi(r.Header.Get("X-Slack-Retry-Num"))
			if !a.enqueue(in) {
				// Slack tries again; nothing is lost.
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (a *Adapter) serveCommand(w http.ResponseWriter, r *http.Request) {
	body, ok := a.verified(w, r)
	if !ok {
		return
	}
	f, err := url.ParseQuery(string(body))
	if err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	in := inbound{kind: "slash", team: f.Get("team_id"), channel: f.Get("channel_id"), user: f.Get("user_id"),
		text: f.Get("text"), triggerID: f.Get("trigger_id")}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(a.slashAck(in))
}

// slashAck enqueues a slash command and returns the ephemeral answer that
// acknowledges it.
func (a *Adapter) slashAck(in inbound) map[string]string {
	if in.triggerID == "" || in.channel == "" || in.user == "" {
		return map[string]string{"response_type": "ephemeral", "text": "That slash command request was incomplete."}
	}
	if !a.enqueue(in) {
		return map[string]string{"response_type": "ephemeral", "text": "switchboard is busy; please try again in a moment."}
	}
	return map[string]string{"response_type": "ephemeral", "text": "On it: `" + a.cfg.SlashCommand + " " + in.text + "` — answers follow in this channel."}
}

// enqueue hands a message to the workers without waiting.
func (a *Adapter) enqueue(in inbound) bool {
	select {
	case a.queue <- in:
		return true
	default:
		a.log.Warn("slack: ingress queue full; Slack will deliver again", "channel", in.channel)
		return false
	}
}

func (a *Adapter) work() {
	defer a.wg.Done()
	for {
		select {
		case in := <-a.queue:
			a.process(a.runCtx, in)
		case <-a.runCtx.Done():
			// Messages already acknowledged to Slack are handled before
			// the adapter stops.
			for {
				select {
				case in := <-a.queue:
					a.process(context.WithoutCancel(a.runCtx), in)
				default:
					return
				}
			}
		}
	}
}

// process turns one Slack message into a ChatMessage for the chat core.
func (a *Adapter) process(ctx context.Context, in inbound) {
	defer func() {
		if p := recover(); p != nil {
			a.log.Error("panic handling a slack message", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	text, ok := a.commandText(in)
	if !ok {
		return
	}
	// Redeliveries (X-Slack-Retry-Num, Socket Mode retries, the
	// app_mention and message events of one message) stop here on this
	// replica; on another, the command id makes kit/command's KV Create
	// refuse a second job.
	if !a.seen.add(in.key(), struct{}{}) {
		a.log.Debug("slack: message already handled", "channel", in.channel, "ts", in.ts, "retry", in.retry)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, handleTimeout)
	defer cancel()
	who := a.ids.identity(ctx, in.user)
	msg := &chatv1.ChatMessage{
		Conversation: &chatv1.Conversation{Adapter: Name, Channel: in.channel},
		Author:       who,
		Text:         text,
	}
	if in.kind == "slash" {
		// A slash command leaves no message to thread under or react to;
		// its answers go to the channel.
		msg.Id = in.team + slashInfix + in.triggerID
	} else {
		msg.Id = in.team + "-" + in.ts
		msg.Conversation.Thread = in.ts
		if in.threadTS != "" {
			msg.Conversation.Thread = in.threadTS
		}
		// 👀 before the chat core sees it: any answer (and its ✅/❌)
		// comes after, so the reactions cannot land out of order.
		a.react(ctx, in.channel, in.ts, reactionAccepted, true)
	}
	reply := a.in.Handle(ctx, msg)
	a.log.Debug("slack: message handled", "channel", in.channel, "command_id", reply.GetCommandId(), "status", reply.GetStatus().String())
	// Not a command after all, or a redelivery of one that has ended
	// already (its ✅/❌ is there): 👀 would claim work that is not going on.
	st := reply.GetStatus()
	if in.kind != "slash" && (st == chatv1.IngressStatus_INGRESS_STATUS_IGNORED ||
		st == chatv1.IngressStatus_INGRESS_STATUS_EXISTING && reply.GetFinal()) {
		a.react(ctx, in.channel, in.ts, reactionAccepted, false)
	}
}

// commandText decides whether a message is addressed to switchboard and
// returns the command in it, with Slack's markup undone.
func (a *Adapter) commandText(in inbound) (string, bool) {
	mention := "<@" + a.botUser + ">"
	t := strings.TrimSpace(in.text)
	switch in.kind {
	case "slash":
		return unescape(t), true
	case "app_mention":
		if !strings.HasPrefix(t, mention) {
			return "", false // mentioned in passing, not asked
		}
		return cleanAfterMention(unescape(strings.TrimPrefix(t, mention))), true
	}
	if in.subtype != "" || in.botID != "" || in.user == "" || in.user == a.botUser {
		return "", false // edits, joins, bots (ourselves included)
	}
	if in.channelType == "im" || strings.HasPrefix(in.channel, "D") {
		return cleanAfterMention(unescape(strings.TrimPrefix(t, mention))), true
	}
	if strings.HasPrefix(t, mention) {
		return "", false // the app_mention event of the same message handles it
	}
	u := unescape(t)
	for _, p := range a.cfg.Prefixes {
		if len(u) >= len(p) && strings.EqualFold(u[:len(p)], p) {
			return strings.TrimSpace(u[len(p):]), true
		}
	}
	return "", false
}

func cleanAfterMention(s string) string {
	return strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(s), ":,"))
}

// markup matches Slack's <…> references: links, users, channels, groups.
var markup = regexp.MustCompile(`<([^<>|]*)(?:\|([^<>]*))?>`)

// unescape undoes Slack's message formatting so the parser sees what the
// person typed: "<http://web3.example.com|web3.example.com>" → the label,
// "<#C1|ops>" → "#ops", "<@U1>" → "@U1", and &amp; &lt; &gt;.
func unescape(s string) string {
	s = markup.ReplaceAllStringFunc(s, func(m string) string {
		sub := markup.FindStringSubmatch(m)
		target, label := sub[1], sub[2]
		switch {
		case strings.HasPrefix(target, "#"):
			if label != "" {
				return "#" + label
			}
			return target
		case strings.HasPrefix(target, "@"), strings.HasPrefix(target, "!"):
			if label != "" {
				return strings.TrimPrefix(label, "@")
			}
			return "@" + strings.TrimLeft(target, "@!")
		case label != "":
			return label
		default:
			return strings.TrimPrefix(target, "mailto:")
		}
	})
	return html.UnescapeString(s)
}

// runSocket keeps a Socket Mode connection open until ctx ends. The
// slack-go client reconnects by itself after a drop or a "disconnect";
// RunContext returns only on fatal errors (bad token), after which this
// loop waits and tries again, so a revoked and replaced token recovers.
func (a *Adapter) runSocket(ctx context.Context) {
	defer a.wg.Done()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		sm := socketmode.New(a.api, socketmode.OptionLog(log.New(io.Discard, "", 0)))
		done := make(chan struct{})
		go func() {
			defer close(done)
			a.consumeSocket(ctx, sm)
		}()
		err := sm.RunContext(ctx)
		<-done
		if ctx.Err() != nil {
			return
		}
		a.log.Error("slack socket mode stopped; reconnecting", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Second<<min(attempt, 6), time.Minute)):
		}
	}
}

// consumeSocket reads a Socket Mode client's events until ctx ends or
// the client's run ends.
func (a *Adapter) consumeSocket(ctx context.Context, sm *socketmode.Client) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-sm.Events:
			switch ev.Type {
			case socketmode.EventTypeEventsAPI:
				a.onSocketEvent(ctx, sm, ev)
			case socketmode.EventTypeSlashCommand:
				a.onSocketSlash(ctx, sm, ev)
			case socketmode.EventTypeInteractive:
				if ev.Request != nil {
					sm.AckCtx(ctx, ev.Request.EnvelopeID, nil)
				}
			case socketmode.EventTypeConnected:
				a.log.Info("slack socket mode connected")
			case socketmode.EventTypeConnectionError:
				var err error
				if ce, ok := ev.Data.(*slack.ConnectionErrorEvent); ok {
					err = ce.ErrorObj
				}
				a.log.Warn("slack socket mode connection failed; retrying", "error", err)
			case socketmode.EventTypeInvalidAuth:
				a.log.Error("slack socket mode: the app token was refused")
				return
			}
		}
	}
}

func (a *Adapter) onSocketEvent(ctx context.Context, sm *socketmode.Client, ev socketmode.Event) {
	if ev.Request == nil {
		return
	}
	var cb eventCallback
	if err := json.Unmarshal(ev.Request.Payload, &cb); err != nil {
		a.log.Warn("slack socket mode: undecodable event", "error", err)
		sm.AckCtx(ctx, ev.Request.EnvelopeID, nil)
		return
	}
	if in, ok := cb.inbound(); ok {
		in.retry = ev.Request.RetryAttempt
		if !a.enqueue(in) {
			return // unacknowledged: Slack sends it again
		}
	}
	sm.AckCtx(ctx, ev.Request.EnvelopeID, nil)
}

func (a *Adapter) onSocketSlash(ctx context.Context, sm *socketmode.Client, ev socketmode.Event) {
	if ev.Request == nil {
		return
	}
	var f struct {
		TeamID    string `json:"team_id"`
		ChannelID string `json:"channel_id"`
		UserID    string `json:"user_id"`
		Text      string `json:"text"`
		TriggerID string `json:"trigger_id"`
	}
	json.Unmarshal(ev.Request.Payload, &f)
	in := inbound{kind: "slash", team: f.TeamID, channel: f.ChannelID, user: f.UserID, text: f.Text, triggerID: f.TriggerID}
	sm.AckCtx(ctx, ev.Request.EnvelopeID, a.slashAck(in))
}
