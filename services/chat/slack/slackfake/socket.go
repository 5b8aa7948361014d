package slackfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Socket Mode acknowledgement timing, as Slack documents it for events:
// an envelope not acknowledged within three seconds is sent again, up to
// three times.
const (
	defaultAckTimeout = 3 * time.Second
	maxSocketRetries  = 3
)

// envelope is one Socket Mode delivery, kept until acknowledged.
type envelope struct {
	ID       string
	Type     string // events_api, slash_commands
	Payload  json.RawMessage
	attempts int
	acked    bool
}

type sockConn struct {
	ws *websocket.Conn
	wm sync.Mutex // gorilla allows one writer at a time
}

func (c *sockConn) write(v any) error {
	c.wm.Lock()
	defer c.wm.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteJSON(v)
}

type socketState struct {
	mu         sync.Mutex
	conns      map[*sockConn]bool
	pending    []*envelope // not yet acknowledged, oldest first
	acked      map[string]int
	sent       map[string]int
	seq        int
	opened     int
	ackTimeout time.Duration
	ignoreAcks int
	upgrader   websocket.Upgrader
}

// WithAckTimeout sets how long Socket Mode waits for an acknowledgement
// before it sends an envelope again on the same connection (Slack: 3s);
// 0 turns the resending off (an envelope then comes again only on the
// next connection).
func WithAckTimeout(d time.Duration) Option { return func(s *Server) { s.sock.ackTimeout = d } }

func (st *socketState) init() {
	st.ackTimeout = defaultAckTimeout
	st.conns = map[*sockConn]bool{}
	st.acked = map[string]int{}
	st.sent = map[string]int{}
	// Clients send Origin: https://api.slack.com, which Slack accepts.
	st.upgrader.CheckOrigin = func(*http.Request) bool { return true }
}

// socket serves the WebSocket URL that apps.connections.open hands out.
func (s *Server) socket(w http.ResponseWriter, r *http.Request) {
	st := &s.sock
	ws, err := st.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &sockConn{ws: ws}
	st.mu.Lock()
	st.conns[c] = true
	st.opened++
	redeliver := append([]*envelope(nil), st.pending...)
	st.mu.Unlock()
	c.write(map[string]any{"type": "hello", "num_connections": 1,
		"connection_info": map[string]any{"app_id": AppID},
		"debug_info":      map[string]any{"host": "fake", "approximate_connection_time": 3600}})
	// What was sent before and not acknowledged comes again, as Slack does.
	for _, e := range redeliver {
		s.send(c, e)
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				c.wm.Lock()
				err := c.ws.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(time.Second))
				c.wm.Unlock()
				if err != nil {
					return
				}
			}
		}
	}()
	defer func() {
		close(done)
		st.mu.Lock()
		delete(st.conns, c)
		st.mu.Unlock()
		ws.Close()
	}()
	for {
		var ack struct {
			EnvelopeID string `json:"envelope_id"`
		}
		if err := ws.ReadJSON(&ack); err != nil {
			return
		}
		st.mu.Lock()
		if st.ignoreAcks > 0 {
			st.ignoreAcks--
			st.mu.Unlock()
			continue
		}
		for i, e := range st.pending {
			if e.ID == ack.EnvelopeID {
				e.acked = true
				st.pending = append(st.pending[:i], st.pending[i+1:]...)
				break
			}
		}
		st.acked[ack.EnvelopeID]++
		st.mu.Unlock()
	}
}

// send writes an envelope to a connection and, when it is not
// acknowledged within the ack timeout, writes it again there.
func (s *Server) send(c *sockConn, e *envelope) {
	st := &s.sock
	st.mu.Lock()
	e.attempts++
	attempt := e.attempts
	reason := ""
	if attempt > 1 {
		reason = "timeout"
	}
	st.sent[e.ID]++
	msg := map[string]any{"envelope_id": e.ID, "type": e.Type, "payload": e.Payload,
		"accepts_response_payload": e.Type == "slash_commands", "retry_attempt": attempt - 1, "retry_reason": reason}
	timeout := st.ackTimeout
	st.mu.Unlock()
	c.write(msg)
	if timeout > 0 {
		time.AfterFunc(timeout, func() { s.resend(c, e, attempt) })
	}
}

// resend sends e on c again if it is still unacknowledged after the send
// that was its attempt-th, c is still open, and retries are left. A newer
// send (a redelivery on a new connection) has its own timer.
func (s *Server) resend(c *sockConn, e *envelope, attempt int) {
	st := &s.sock
	st.mu.Lock()
	again := !e.acked && st.conns[c] && e.attempts == attempt && attempt <= maxSocketRetries
	st.mu.Unlock()
	if again {
		s.send(c, e)
	}
}

// IgnoreAcks makes the fake ignore the next n Socket Mode
// acknowledgements, as if they came after the ack timeout: their envelopes
// are sent again on the same connection, as Slack does with an app that
// acknowledges too slowly.
func (s *Server) IgnoreAcks(n int) {
	s.sock.mu.Lock()
	defer s.sock.mu.Unlock()
	s.sock.ignoreAcks += n
}

// SendSocket delivers a payload over Socket Mode as an envelope of type
// typ ("events_api" or "slash_commands") to one open connection, or to
// the next one that opens, and returns the envelope id.
func (s *Server) SendSocket(typ string, payload json.RawMessage) string {
	st := &s.sock
	st.mu.Lock()
	st.seq++
	e := &envelope{ID: fmt.Sprintf("env-%06d", st.seq), Type: typ, Payload: payload}
	st.pending = append(st.pending, e)
	var target *sockConn
	for c := range st.conns {
		target = c
		break
	}
	st.mu.Unlock()
	if target != nil {
		s.send(target, e)
	}
	return e.ID
}

// Acked reports how many acknowledgements an envelope got.
func (s *Server) Acked(id string) int {
	s.sock.mu.Lock()
	defer s.sock.mu.Unlock()
	return s.sock.acked[id]
}

// Sent reports how many times an envelope was sent.
func (s *Server) Sent(id string) int {
	s.sock.mu.Lock()
	defer s.sock.mu.Unlock()
	return s.sock.sent[id]
}

// Unacked returns how many envelopes wait for an acknowledgement.
func (s *Server) Unacked() int {
	s.sock.mu.Lock()
	defer s.sock.mu.Unlock()
	return len(s.sock.pending)
}

// Connections returns how many Socket Mode connections are open, and how
// many were ever opened.
func (s *Server) Connections() (open, opened int) {
	s.sock.mu.Lock()
	defer s.sock.mu.Unlock()
	return len(s.sock.conns), s.sock.opened
}

// DropConnections ends every Socket Mode connection. With warn, Slack's
// "disconnect" message (reason refresh_requested) goes first; without, the
// connection just breaks, as when a load balancer or the network drops it.
func (s *Server) DropConnections(warn bool) {
	s.sock.mu.Lock()
	var conns []*sockConn
	for c := range s.sock.conns {
		conns = append(conns, c)
	}
	s.sock.mu.Unlock()
	for _, c := range conns {
		if warn {
			c.write(map[string]any{"type": "disconnect", "reason": "refresh_requested",
				"debug_info": map[string]any{"host": "fake"}})
		}
		c.ws.UnderlyingConn().Close()
	}
}
