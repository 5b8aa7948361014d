// Package slackfake is an in-process Slack for tests: the Web API methods
// switchboard's Slack adapter calls, with Slack's documented errors and
// rate limits (429 with Retry-After: chat.postMessage about one per second
// per channel, files.completeUploadExternal counted against the same
// per-channel rate since sharing a file posts a message, and the per-method
// tiers of chat.update, reactions.add/remove and the file upload), the
// three-step file upload (files.getUploadURLExternal, the upload URL,
// files.completeUploadExternal), and Socket Mode's WebSocket
// (apps.connections.open, hello, envelopes, acknowledgements, disconnects,
// an envelope sent again on the same connection when its acknowledgement
// does not come in time, and redelivery on the next connection of what was
// not acknowledged). It keeps each message's versions and reaction history
// so tests can check how a message got to where it is.
//
// It is hand-written rather than built on slack-go's slacktest because
// slacktest has no Socket Mode, no 429s, no chat.update, reactions or the
// external upload flow, and answers every chat.postMessage the same way.
// The package is a leaf: it imports nothing from switchboard.
package slackfake

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Default identities of a fake workspace.
const (
	TeamID    = "T0SWITCH"
	BotUserID = "U0BOT"
	BotID     = "B0BOT"
	AppID     = "A0SWITCH"
	BotToken  = "xoxb-0000-fake-bot-token-0000"
	AppToken  = "xapp-1-fake-app-token-0000"
)

// Message is a message the fake holds, as a channel shows it.
type Message struct {
	Channel  string
	TS       string
	ThreadTS string
	Text     string
	Blocks   json.RawMessage
	User     string
	Edits    int
	// Versions are the texts the message has had, oldest first; the last
	// is Text (chat.update adds one).
	Versions  []string
	Reactions map[string]bool
	// Reacted is every change of its reactions, in order: "+eyes",
	// "-eyes", "+white_check_mark".
	Reacted []string
	// Files shared with the message (files.completeUploadExternal).
	Files []*File
	// At is when the fake accepted it.
	At time.Time
}

// File is an uploaded file.
type File struct {
	ID       string
	Name     string
	Title    string
	Content  []byte
	Channel  string
	ThreadTS string
	Shared   bool
}

// User is a workspace member.
type User struct {
	ID, Name, DisplayName, RealName, Email string
	IsBot                                  bool
}

// Group is a user group ("@oncall").
type Group struct {
	ID, Handle, Name string
	Users            []string
}

type channel struct {
	id       string
	archived bool
	member   bool
	lastPost time.Time
	messages []*Message
}

// Limit is a Web API method's rate limit: at most N calls in any window
// of Per. More are answered 429 with Retry-After, in whole seconds, until
// the oldest call in the window leaves it. Slack applies it per method,
// per workspace and app.
type Limit struct {
	N   int
	Per time.Duration
}

// Slack's rate-limit tiers (https://api.slack.com/apis/rate-limits);
// Slack allows "N+" per minute, the fake exactly N.
var (
	Tier2 = Limit{N: 20, Per: time.Minute}
	Tier3 = Limit{N: 50, Per: time.Minute}
	Tier4 = Limit{N: 100, Per: time.Minute}
)

// defaultLimits are the documented tiers of the methods the adapter calls
// besides chat.postMessage, whose limit is per channel (WithPostInterval).
func defaultLimits() map[string]Limit {
	return map[string]Limit{
		"chat.update":                  Tier3,
		"reactions.add":                Tier3,
		"reactions.remove":             Tier2,
		"files.getUploadURLExternal":   Tier4,
		"files.completeUploadExternal": Tier4,
	}
}

// Server is a fake Slack. Create it with Run; every method is safe for
// concurrent use.
type Server struct {
	// URL is the server's base URL; the Web API is at URL + "/api/".
	URL string

	srv *httptest.Server

	mu sync.Mutex
	// PostInterval is the least time between two chat.postMessage calls to
	// one channel (Slack: about one per second); a faster post gets 429.
	postInterval time.Duration
	now          func() time.Time
	limits       map[string]Limit
	window       map[string][]time.Time // method → its calls in its Limit's window
	limitedBy    map[string]int
	channels     map[string]*channel
	users        map[string]User
	groups       []Group
	files        map[string]*File
	seq          int64
	calls        map[string]int
	limited      int
	failNext     map[string]int
	lookups      map[string]int
	sock         socketState
	// Hook, if set, sees every Web API call (method, form) before it is
	// answered; tests use it to count or observe calls.
	hook func(method string, form url.Values)
}

// Option changes a fake server.
type Option func(*Server)

// WithPostInterval sets the per-channel rate limit of chat.postMessage
// (default one second; 0 turns it off).
func WithPostInterval(d time.Duration) Option { return func(s *Server) { s.postInterval = d } }

// WithLimit sets a method's rate limit; Limit{} turns it off. Methods
// start with Slack's documented tiers (see defaultLimits).
func WithLimit(method string, l Limit) Option { return func(s *Server) { s.limits[method] = l } }

// WithoutMethodLimits turns off every per-method limit, for tests about
// something else that make more calls a minute than Slack allows. The
// per-channel posting limit stays (WithPostInterval).
func WithoutMethodLimits() Option { return func(s *Server) { s.limits = map[string]Limit{} } }

// WithClock sets the clock that rate limits count with (default
// time.Now), so a test can hold time still and make a call "too fast"
// for sure.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithHook calls f for every Web API call before it is answered. f must
// not call back into the server.
func WithHook(f func(method string, form url.Values)) Option {
	return func(s *Server) { s.hook = f }
}

// Run starts a fake Slack on loopback and closes it when the test ends.
func Run(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		postInterval: time.Second,
		now:          time.Now,
		limits:       defaultLimits(),
		window:       map[string][]time.Time{},
		limitedBy:    map[string]int{},
		channels:     map[string]*channel{},
		users:        map[string]User{},
		files:        map[string]*File{},
		calls:        map[string]int{},
		failNext:     map[string]int{},
		lookups:      map[string]int{},
		seq:          1_700_000_000_000_000,
	}
	s.sock.init()
	for _, o := range opts {
		o(s)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/", s.api)
	mux.HandleFunc("/upload/", s.upload)
	mux.HandleFunc("/socket", s.socket)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and drops every Socket Mode connection.
func (s *Server) Close() {
	s.DropConnections(false)
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// APIURL is what slack.OptionAPIURL wants.
func (s *Server) APIURL() string { return s.URL + "/api/" }

// AddChannel creates a channel the bot is a member of.
func (s *Server) AddChannel(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.channels[id] = &channel{id: id, member: true}
}

// ArchiveChannel archives a channel: posts get is_archived.
func (s *Server) ArchiveChannel(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.channels[id]; c != nil {
		c.archived = true
	}
}

// AddChannelWithoutBot creates a channel the bot was not invited to: posts
// get not_in_channel.
func (s *Server) AddChannelWithoutBot(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.channels[id] = &channel{id: id}
}

// AddUser adds a workspace member.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[u.ID] = u
}

// AddGroup adds a user group.
func (s *Server) AddGroup(g Group) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups = append(s.groups, g)
}

// FailNext makes the next n calls of a Web API method answer 500.
func (s *Server) FailNext(method string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext[method] += n
}

// Calls returns how many times a Web API method was called (every
// answer counts, errors and 429s included).
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// RateLimited returns how many calls were answered 429.
func (s *Server) RateLimited() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limited
}

// RateLimitedCalls returns how many calls of one method were answered 429.
func (s *Server) RateLimitedCalls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limitedBy[method]
}

// Messages returns a copy of a channel's messages (thread replies
// included) in the order the fake accepted them.
func (s *Server) Messages(channelID string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channels[channelID]
	if c == nil {
		return nil
	}
	out := make([]Message, 0, len(c.messages))
	for _, m := range c.messages {
		cp := *m
		cp.Reactions = map[string]bool{}
		for k, v := range m.Reactions {
			cp.Reactions[k] = v
		}
		cp.Versions = append([]string(nil), m.Versions...)
		cp.Reacted = append([]string(nil), m.Reacted...)
		out = append(out, cp)
	}
	return out
}

// Message returns one message by channel and ts.
func (s *Server) Message(channelID, ts string) (Message, bool) {
	for _, m := range s.Messages(channelID) {
		if m.TS == ts {
			return m, true
		}
	}
	return Message{}, false
}

// Files returns every shared file, sorted by id.
func (s *Server) Files() []File {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []File
	for _, f := range s.files {
		if f.Shared {
			out = append(out, *f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// UserLookups returns how many times users.info asked for a user.
func (s *Server) UserLookups(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups[id]
}

// NewTS returns a fresh message timestamp, as Slack makes them.
func (s *Server) NewTS() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextTS()
}

func (s *Server) nextTS() string {
	s.seq++
	return fmt.Sprintf("%d.%06d", s.seq/1_000_000, s.seq%1_000_000)
}

// answer writes a Web API JSON answer.
func answer(w http.ResponseWriter, v map[string]any) {
	if _, ok := v["ok"]; !ok {
		v["ok"] = true
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(v)
}

// fail writes {"ok":false,"error":code}; Slack answers errors with 200.
func fail(w http.ResponseWriter, code string) {
	answer(w, map[string]any{"ok": false, "error": code})
}

// tooMany writes Slack's rate-limited answer: 429, Retry-After in whole
// seconds (at least one), and the "ratelimited" error.
func tooMany(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int((wait+time.Second-1)/time.Second))))
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusTooManyRequests)
	io.WriteString(w, `{"ok":false,"error":"ratelimited"}`)
}

// allow counts a call of method against its Limit, or says how long
// until the window has room. Call with mu.
func (s *Server) allow(method string, now time.Time) (time.Duration, bool) {
	l := s.limits[method]
	if l.N <= 0 || l.Per <= 0 {
		return 0, true
	}
	calls := s.window[method]
	i := 0
	for i < len(calls) && !calls[i].After(now.Add(-l.Per)) {
		i++
	}
	calls = calls[i:]
	if len(calls) >= l.N {
		s.window[method] = calls
		return calls[len(calls)-l.N].Add(l.Per).Sub(now), false
	}
	s.window[method] = append(calls, now)
	return 0, true
}

// limit records a 429 of method. Call with mu.
func (s *Server) limit(method string) {
	s.limited++
	s.limitedBy[method]++
}

func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	method := strings.TrimPrefix(r.URL.Path, "/api/")
	if err := r.ParseForm(); err != nil && !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		fail(w, "invalid_form_data")
		return
	}
	form := r.Form
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		form = jsonForm(r.Body)
	}
	token := form.Get("token")
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		token = strings.TrimPrefix(h, "Bearer ")
	}
	if s.hook != nil {
		s.hook(method, form)
	}
	s.mu.Lock()
	s.calls[method]++
	if s.failNext[method] > 0 {
		s.failNext[method]--
		s.mu.Unlock()
		http.Error(w, "<html>upstream error</html>", http.StatusInternalServerError)
		return
	}
	s.mu.Unlock()
	switch {
	case token == "":
		fail(w, "not_authed")
		return
	case method == "apps.connections.open":
		if token != AppToken {
			fail(w, "invalid_auth")
			return
		}
	case token != BotToken:
		fail(w, "invalid_auth")
		return
	}
	s.mu.Lock()
	wait, ok := s.allow(method, s.now())
	if !ok {
		s.limit(method)
	}
	s.mu.Unlock()
	if !ok {
		tooMany(w, wait)
		return
	}
	switch method {
	case "auth.test":
		answer(w, map[string]any{"url": s.URL + "/", "team": "Switchboard Test", "user": "switchboard",
			"team_id": TeamID, "user_id": BotUserID, "bot_id": BotID})
	case "users.info":
		s.usersInfo(w, form)
	case "usergroups.list":
		s.usergroupsList(w, form)
	case "chat.postMessage":
		s.postMessage(w, form)
	case "chat.update":
		s.update(w, form)
	case "reactions.add", "reactions.remove":
		s.reaction(w, form, method == "reactions.add")
	case "files.getUploadURLExternal":
		s.getUploadURL(w, form)
	case "files.completeUploadExternal":
		s.completeUpload(w, form)
	case "apps.connections.open":
		answer(w, map[string]any{"url": "ws" + strings.TrimPrefix(s.URL, "http") + "/socket?ticket=" + s.NewTS()})
	default:
		fail(w, "unknown_method")
	}
}

// jsonForm flattens a JSON body into form values, since some slack-go
// calls send JSON instead of a form.
func jsonForm(body io.Reader) url.Values {
	var m map[string]any
	json.NewDecoder(body).Decode(&m)
	v := url.Values{}
	for k, x := range m {
		switch x := x.(type) {
		case string:
			v.Set(k, x)
		default:
			b, _ := json.Marshal(x)
			v.Set(k, string(b))
		}
	}
	return v
}

func (s *Server) usersInfo(w http.ResponseWriter, form url.Values) {
	id := form.Get("user")
	s.mu.Lock()
	s.lookups[id]++
	u, ok := s.users[id]
	s.mu.Unlock()
	if !ok {
		fail(w, "user_not_found")
		return
	}
	answer(w, map[string]any{"user": map[string]any{
		"id": u.ID, "team_id": TeamID, "name": u.Name, "real_name": u.RealName, "is_bot": u.IsBot,
		"profile": map[string]any{"email": u.Email, "display_name": u.DisplayName, "real_name": u.RealName},
	}})
}

func (s *Server) usergroupsList(w http.ResponseWriter, form url.Values) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, g := range s.groups {
		m := map[string]any{"id": g.ID, "team_id": TeamID, "handle": g.Handle, "name": g.Name}
		if form.Get("include_users") == "true" {
			m["users"] = g.Users
		}
		out = append(out, m)
	}
	answer(w, map[string]any{"usergroups": out})
}

// postable checks a channel the way chat.postMessage does. Call with mu.
func (s *Server) postable(id string) (*channel, string) {
	c := s.channels[id]
	switch {
	case id == "":
		return nil, "channel_not_found"
	case c == nil:
		return nil, "channel_not_found"
	case c.archived:
		return nil, "is_archived"
	case !c.member:
		return nil, "not_in_channel"
	}
	return c, ""
}

func (s *Server) postMessage(w http.ResponseWriter, form url.Values) {
	text, blocks := form.Get("text"), form.Get("blocks")
	s.mu.Lock()
	c, code := s.postable(form.Get("channel"))
	if code != "" {
		s.mu.Unlock()
		fail(w, code)
		return
	}
	now := s.now()
	if wait, ok := s.channelSlot(c, now); !ok {
		s.limit("chat.postMessage")
		s.mu.Unlock()
		tooMany(w, wait)
		return
	}
	defer s.mu.Unlock()
	if text == "" && (blocks == "" || blocks == "[]" || blocks == "null") {
		fail(w, "no_text")
		return
	}
	if len(text) > 40000 {
		fail(w, "msg_too_long")
		return
	}
	var bl []json.RawMessage
	if blocks != "" {
		if err := json.Unmarshal([]byte(blocks), &bl); err != nil || len(bl) > 50 {
			fail(w, "invalid_blocks")
			return
		}
	}
	c.lastPost = now
	m := &Message{Channel: c.id, TS: s.nextTS(), ThreadTS: form.Get("thread_ts"), Text: text, Blocks: json.RawMessage(blocks),
		User: BotUserID, Versions: []string{text}, Reactions: map[string]bool{}, At: now}
	c.messages = append(c.messages, m)
	answer(w, map[string]any{"channel": c.id, "ts": m.TS, "message": map[string]any{"text": text, "ts": m.TS, "user": BotUserID, "bot_id": BotID}})
}

// channelSlot says whether a message may be posted to c now (Slack: about
// one a second per channel), or how long until it may. Call with mu.
func (s *Server) channelSlot(c *channel, now time.Time) (time.Duration, bool) {
	if s.postInterval > 0 && now.Sub(c.lastPost) < s.postInterval {
		return s.postInterval - now.Sub(c.lastPost), false
	}
	return 0, true
}

func findMsg(c *channel, ts string) *Message {
	for _, m := range c.messages {
		if m.TS == ts {
			return m
		}
	}
	return nil
}

func (s *Server) update(w http.ResponseWriter, form url.Values) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, code := s.postable(form.Get("channel"))
	if code != "" {
		fail(w, code)
		return
	}
	m := findMsg(c, form.Get("ts"))
	switch {
	case m == nil:
		fail(w, "message_not_found")
		return
	case m.User != BotUserID:
		fail(w, "cant_update_message")
		return
	case form.Get("text") == "" && form.Get("blocks") == "":
		fail(w, "no_text")
		return
	}
	m.Text = form.Get("text")
	m.Blocks = json.RawMessage(form.Get("blocks"))
	m.Edits++
	m.Versions = append(m.Versions, m.Text)
	answer(w, map[string]any{"channel": c.id, "ts": m.TS, "text": m.Text})
}

func (s *Server) reaction(w http.ResponseWriter, form url.Values, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channels[form.Get("channel")]
	if c == nil {
		fail(w, "channel_not_found")
		return
	}
	m := findMsg(c, form.Get("timestamp"))
	name := form.Get("name")
	switch {
	case m == nil:
		fail(w, "message_not_found")
	case name == "" || strings.ContainsAny(name, ": "):
		fail(w, "invalid_name")
	case add && m.Reactions[name]:
		fail(w, "already_reacted")
	case !add && !m.Reactions[name]:
		fail(w, "no_reaction")
	default:
		if add {
			m.Reactions[name] = true
			m.Reacted = append(m.Reacted, "+"+name)
		} else {
			delete(m.Reactions, name)
			m.Reacted = append(m.Reacted, "-"+name)
		}
		answer(w, map[string]any{})
	}
}

// AddMessage puts a person's message into a channel (so the bot can react
// to it and reply in its thread) and returns it.
func (s *Server) AddMessage(channelID, user, text string) Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channels[channelID]
	if c == nil {
		c = &channel{id: channelID, member: true}
		s.channels[channelID] = c
	}
	m := &Message{Channel: channelID, TS: s.nextTS(), Text: text, User: user, Versions: []string{text}, Reactions: map[string]bool{}, At: s.now()}
	c.messages = append(c.messages, m)
	return *m
}

func (s *Server) getUploadURL(w http.ResponseWriter, form url.Values) {
	name := form.Get("filename")
	n, err := strconv.Atoi(form.Get("length"))
	switch {
	case name == "":
		fail(w, "invalid_arguments")
		return
	case err != nil || n <= 0:
		fail(w, "invalid_arguments")
		return
	}
	s.mu.Lock()
	s.seq++
	id := fmt.Sprintf("F%010d", s.seq%10_000_000_000)
	s.files[id] = &File{ID: id, Name: name}
	s.mu.Unlock()
	answer(w, map[string]any{"upload_url": s.URL + "/upload/" + id, "file_id": id})
}

// upload takes the file's bytes, raw or as a multipart form's "file"
// part, as Slack's upload URL does.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, "/upload/")
	var data []byte
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			if p.FormName() == "file" {
				data, _ = io.ReadAll(p)
			}
		}
	} else {
		data, _ = io.ReadAll(r.Body)
	}
	s.mu.Lock()
	f := s.files[id]
	if f != nil {
		f.Content = data
	}
	s.mu.Unlock()
	if f == nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	fmt.Fprintf(w, "OK - %d", len(data))
}

func (s *Server) completeUpload(w http.ResponseWriter, form url.Values) {
	var files []struct {
		ID    string `json:"id"`
		Title string `json:"title"`
	}
	if err := json.Unmarshal([]byte(form.Get("files")), &files); err != nil || len(files) == 0 {
		fail(w, "invalid_arguments")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var shared []*File
	for _, x := range files {
		f := s.files[x.ID]
		if f == nil || f.Content == nil {
			fail(w, "file_not_found")
			return
		}
		f.Title = x.Title
		shared = append(shared, f)
	}
	var out []map[string]any
	if ch := form.Get("channel_id"); ch != "" {
		c, code := s.postable(ch)
		if code != "" {
			fail(w, code)
			return
		}
		// Sharing a file posts a message, which counts against the
		// channel's message rate like chat.postMessage.
		now := s.now()
		if wait, ok := s.channelSlot(c, now); !ok {
			s.limit("files.completeUploadExternal")
			tooMany(w, wait)
			return
		}
		c.lastPost = now
		m := &Message{Channel: ch, TS: s.nextTS(), ThreadTS: form.Get("thread_ts"), Text: form.Get("initial_comment"),
			User: BotUserID, Versions: []string{form.Get("initial_comment")}, Reactions: map[string]bool{}, Files: shared, At: now}
		c.messages = append(c.messages, m)
	}
	for _, f := range shared {
		f.Shared = true
		f.Channel = form.Get("channel_id")
		f.ThreadTS = form.Get("thread_ts")
		out = append(out, map[string]any{"id": f.ID, "title": f.Title})
	}
	answer(w, map[string]any{"files": out})
}
