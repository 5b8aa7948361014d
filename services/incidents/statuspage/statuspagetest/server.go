// Package statuspagetest is an in-process Atlassian Statuspage for tests:
// the REST API v1 calls package statuspage makes (list and update
// components, create incidents), with OAuth key authentication, its error
// bodies ({"error": "…"}) and injected 429s, 5xx and dropped connections.
package statuspagetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Incident is an incident the fake stored.
type Incident struct {
	ID, Name, Status, Body string
	Components             map[string]string
}

// Fault is an injected failure for the next matching calls. Faults hit
// after authentication, as Statuspage's own rate limit does.
type Fault struct {
	// Status to answer (429, 500, 503…); 0 closes the connection without
	// an answer.
	Status int
	// RetryAfter seconds, sent as Retry-After on a 429.
	RetryAfter int
	// Match limits the fault to calls whose "METHOD /path" has this prefix
	// ("" matches all).
	Match string
	// Times is how many calls it hits (default 1).
	Times int
}

// Server is the fake status page.
type Server struct {
	*httptest.Server
	Key, Page string

	mu         sync.Mutex
	components []map[string]string // id, name, status
	incidents  []Incident
	faults     []Fault
	calls      []string
}

// NewServer starts a fake with page "pg1" and key "sp-test-key".
func NewServer(t testing.TB) *Server {
	s := &Server{Key: "sp-test-key", Page: "pg1"}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// AddComponent adds a component with status operational.
func (s *Server) AddComponent(id, name string) {
	s.mu.Lock()
	s.components = append(s.components, map[string]string{"id": id, "name": name, "status": "operational"})
	s.mu.Unlock()
}

// ComponentStatus returns a component's status.
func (s *Server) ComponentStatus(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.components {
		if c["id"] == id {
			return c["status"]
		}
	}
	return ""
}

// Incidents returns the incidents created.
func (s *Server) Incidents() []Incident {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.incidents)
}

// RateLimit makes the next n calls answer 429 with Retry-After: 0.
func (s *Server) RateLimit(n int) { s.Inject(Fault{Status: http.StatusTooManyRequests, Times: n}) }

// Inject queues a fault.
func (s *Server) Inject(f Fault) {
	if f.Times <= 0 {
		f.Times = 1
	}
	s.mu.Lock()
	s.faults = append(s.faults, f)
	s.mu.Unlock()
}

// takeFault returns the first fault matching call and counts it used.
func (s *Server) takeFault(call string) (Fault, bool) {
	for k, f := range s.faults {
		if strings.HasPrefix(call, f.Match) {
			if s.faults[k].Times--; s.faults[k].Times == 0 {
				s.faults = slices.Delete(s.faults, k, k+1)
			}
			return f, true
		}
	}
	return Fault{}, false
}

// fail answers a fault: a dropped connection, or an error status.
func fail(w http.ResponseWriter, f Fault) {
	if f.Status == 0 {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		f.Status = http.StatusBadGateway
	}
	if f.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
		reply(w, f.Status, map[string]any{"error": "Rate limit exceeded"})
		return
	}
	reply(w, f.Status, map[string]any{"error": http.StatusText(f.Status)})
}

// Calls lists "METHOD /path" of every call.
func (s *Server) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Count counts calls whose "METHOD /path" has prefix.
func (s *Server) Count(prefix string) int {
	n := 0
	for _, c := range s.Calls() {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

var statuses = []string{"operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	call := r.Method + " " + r.URL.Path
	s.calls = append(s.calls, call)
	if r.Header.Get("Authorization") != "OAuth "+s.Key {
		reply(w, 401, map[string]any{"error": "Could not authenticate"})
		return
	}
	if f, ok := s.takeFault(call); ok {
		fail(w, f)
		return
	}
	prefix := "/pages/" + s.Page + "/"
	if !strings.HasPrefix(r.URL.Path, prefix) {
		reply(w, 404, map[string]any{"error": "The requested resource could not be found."})
		return
	}
	rest := strings.Split(strings.TrimPrefix(r.URL.Path, prefix), "/")
	switch {
	case r.Method == http.MethodGet && len(rest) == 1 && rest[0] == "components":
		reply(w, 200, s.components)
	case r.Method == http.MethodPatch && len(rest) == 2 && rest[0] == "components":
		var body struct {
			Component struct {
				Status string `json:"status"`
			} `json:"component"`
		}
		if json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body) != nil || !slices.Contains(statuses, body.Component.Status) {
			reply(w, 422, map[string]any{"error": "Status is not included in the list"})
			return
		}
		for _, c := range s.components {
			if c["id"] == rest[1] {
				c["status"] = body.Component.Status
				reply(w, 200, c)
				return
			}
		}
		reply(w, 404, map[string]any{"error": "The requested resource could not be found."})
	case r.Method == http.MethodPost && len(rest) == 1 && rest[0] == "incidents":
		var body struct {
			Incident struct {
				Name       string            `json:"name"`
				Status     string            `json:"status"`
				Body       string            `json:"body"`
				IDs        []string          `json:"component_ids"`
				Components map[string]string `json:"components"`
			} `json:"incident"`
		}
		if json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body) != nil || body.Incident.Name == "" {
			reply(w, 422, map[string]any{"error": []string{"Name can't be blank"}})
			return
		}
		in := body.Incident
		for id, st := range in.Components {
			for _, c := range s.components {
				if c["id"] == id {
					c["status"] = st
				}
			}
		}
		inc := Incident{ID: fmt.Sprintf("inc%d", len(s.incidents)+1), Name: in.Name, Status: in.Status, Body: in.Body, Components: in.Components}
		s.incidents = append(s.incidents, inc)
		reply(w, 201, map[string]any{"id": inc.ID, "name": inc.Name, "status": inc.Status, "shortlink": "https://stspg.io/" + inc.ID})
	default:
		reply(w, 404, map[string]any{"error": "The requested resource could not be found."})
	}
}
