// Package pdtest is an in-process PagerDuty for tests: an httptest server
// that implements the REST API v2 endpoints switchboard uses, the way
// PagerDuty documents them (https://developer.pagerduty.com/api-reference/),
// and the Events API v2 enqueue endpoint, plus signed webhook v3 deliveries.
//
// Faithful where it matters to a client: token authentication
// ("Authorization: Token token=…"), the Accept/From headers, array query
// parameters with brackets (statuses[]=triggered), offset pagination with
// "more", PagerDuty's error object ({"error":{"message","code","errors"}})
// with its codes (2001 invalid input, 2006 unauthorized, 2100 not found,
// 2020 rate limit), and 429s carrying ratelimit-* and Retry-After headers.
// Faults (rate limits, 5xx, dropped connections) are injected per request.
//
// It is a leaf: it imports nothing from switchboard.
package pdtest

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
	"time"
)

// User is a PagerDuty user.
type User struct {
	ID, Name, Email string
}

// Service is a PagerDuty service; RoutingKey is its Events API v2
// integration key.
type Service struct {
	ID, Name, RoutingKey string
}

// Incident is an incident as the fake stores it.
type Incident struct {
	ID          string
	Number      int
	Title       string
	Status      string
	Urgency     string
	ServiceID   string
	AssigneeIDs []string
	Key         string
	CreatedAt   time.Time
	Priority    string
	Details     string
}

// Note is an incident note.
type Note struct {
	ID, Content, UserID string
	CreatedAt           time.Time
}

// OnCall is one on-call entry.
type OnCall struct {
	UserID                   string
	ScheduleID, ScheduleName string
	PolicyID, PolicyName     string
	Level                    int
	Start, End               time.Time
}

// Request is one request the fake received.
type Request struct {
	Method, Path, Query, From string
	Status                    int
}

// Fault is an injected failure for the next matching requests.
type Fault struct {
	// Status to answer (429, 500, 503…); 0 with Drop closes the connection.
	Status int
	// RetryAfter seconds, sent as Retry-After and ratelimit-reset on a 429.
	RetryAfter int
	// Drop hijacks and closes the connection without an answer.
	Drop bool
	// Apply makes the request take effect before the fault is answered,
	// like a 502 from a proxy after PagerDuty did the work.
	Apply bool
	// Match limits the fault to requests whose "METHOD /path" has this
	// prefix ("" matches all).
	Match string
	// Times is how many requests it hits (default 1).
	Times int
}

// Server is the fake PagerDuty.
type Server struct {
	*httptest.Server
	// Token is the REST API token it accepts.
	Token string

	mu        sync.Mutex
	users     []User
	services  []Service
	incidents []*Incident
	notes     map[string][]Note
	oncalls   []OnCall
	faults    []Fault
	requests  []Request
	nextNum   int
	nextID    int
	now       func() time.Time
}

// NewServer starts a fake PagerDuty that stops when the test ends.
func NewServer(t testing.TB) *Server {
	s := &Server{Token: "u+pdtest-token", notes: map[string][]Note{}, nextNum: 100, now: time.Now}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// AddUser adds a user.
func (s *Server) AddUser(u User) { s.mu.Lock(); s.users = append(s.users, u); s.mu.Unlock() }

// AddService adds a service.
func (s *Server) AddService(v Service) {
	s.mu.Lock()
	s.services = append(s.services, v)
	s.mu.Unlock()
}

// AddOnCall adds an on-call entry.
func (s *Server) AddOnCall(o OnCall) { s.mu.Lock(); s.oncalls = append(s.oncalls, o); s.mu.Unlock() }

// AddIncident stores an incident; empty ID, Number, Status and CreatedAt
// are filled in. It returns the stored incident.
func (s *Server) AddIncident(i Incident) Incident {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *s.add(i)
}

func (s *Server) add(i Incident) *Incident {
	if i.Number == 0 {
		s.nextNum++
		i.Number = s.nextNum
	}
	if i.ID == "" {
		s.nextID++
		i.ID = fmt.Sprintf("Q%06d", s.nextID)
	}
	if i.Status == "" {
		i.Status = "triggered"
	}
	if i.Urgency == "" {
		i.Urgency = "high"
	}
	if i.CreatedAt.IsZero() {
		i.CreatedAt = s.now().UTC().Truncate(time.Second)
	}
	p := &i
	s.incidents = append(s.incidents, p)
	return p
}

// Incident returns a stored incident by id.
func (s *Server) Incident(id string) (Incident, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range s.incidents {
		if i.ID == id {
			return *i, true
		}
	}
	return Incident{}, false
}

// Incidents returns every stored incident.
func (s *Server) Incidents() []Incident {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Incident, len(s.incidents))
	for k, i := range s.incidents {
		out[k] = *i
	}
	return out
}

// Notes returns an incident's notes.
func (s *Server) Notes(id string) []Note {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.notes[id])
}

// Inject queues a fault.
func (s *Server) Inject(f Fault) {
	if f.Times <= 0 {
		f.Times = 1
	}
	s.mu.Lock()
	s.faults = append(s.faults, f)
	s.mu.Unlock()
}

// Requests returns every request received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Count counts received requests whose "METHOD /path" has prefix.
func (s *Server) Count(prefix string) int {
	n := 0
	for _, r := range s.Requests() {
		if strings.HasPrefix(r.Method+" "+r.Path, prefix) {
			n++
		}
	}
	return n
}

type errObj struct {
	Message string   `json:"message"`
	Code    int      `json:"code"`
	Errors  []string `json:"errors,omitempty"`
}

// statusWriter remembers the status for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(c int) { w.status = c; w.ResponseWriter.WriteHeader(c) }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, status: 200}
	key := r.Method + " " + r.URL.Path
	s.mu.Lock()
	var fault *Fault
	for k := range s.faults {
		if strings.HasPrefix(key, s.faults[k].Match) {
			f := s.faults[k]
			fault = &f
			s.faults[k].Times--
			if s.faults[k].Times == 0 {
				s.faults = slices.Delete(s.faults, k, k+1)
			}
			break
		}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, From: r.Header.Get("From"), Status: sw.status})
		s.mu.Unlock()
	}()
	if fault != nil && !fault.Apply {
		s.fail(sw, *fault)
		return
	}
	if fault != nil {
		// Do the work, throw the answer away, then fail.
		s.route(httptest.NewRecorder(), r)
		s.fail(sw, *fault)
		return
	}
	s.route(sw, r)
}

func (s *Server) fail(w *statusWriter, f Fault) {
	if f.Drop || f.Status == 0 {
		if hj, ok := w.ResponseWriter.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				w.status = 0
				return
			}
		}
		f.Status = http.StatusBadGateway
	}
	if f.Status == http.StatusTooManyRequests {
		// PagerDuty's REST API rate-limit headers, plus Retry-After.
		w.Header().Set("ratelimit-limit", "960")
		w.Header().Set("ratelimit-remaining", "0")
		w.Header().Set("ratelimit-reset", strconv.Itoa(f.RetryAfter))
		w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
		writeErr(w, 429, errObj{Message: "Rate Limit Exceeded", Code: 2020})
		return
	}
	writeErr(w, f.Status, errObj{Message: http.StatusText(f.Status), Code: 2002})
}

func writeErr(w http.ResponseWriter, status int, e errObj) {
	writeJSON(w, status, map[string]any{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/enqueue" && r.Method == http.MethodPost {
		s.enqueue(w, r) // the Events API authenticates by routing key
		return
	}
	if r.Header.Get("Authorization") != "Token token="+s.Token {
		writeErr(w, 401, errObj{Message: "Unauthorized", Code: 2006})
		return
	}
	if !strings.HasPrefix(r.Header.Get("Accept"), "application/vnd.pagerduty+json;version=2") {
		writeErr(w, 400, errObj{Message: "Invalid Input Provided", Code: 2001, Errors: []string{"Accept header must request version 2"}})
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/incidents":
		s.listIncidents(w, r)
	case r.Method == http.MethodPut && r.URL.Path == "/incidents":
		s.manage(w, r)
	case r.Method == http.MethodPost && r.URL.Path == "/incidents":
		s.create(w, r)
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "incidents":
		s.getIncident(w, parts[1])
	case len(parts) == 3 && parts[0] == "incidents" && parts[2] == "notes":
		if r.Method == http.MethodPost {
			s.addNote(w, r, parts[1])
		} else {
			s.listNotes(w, parts[1])
		}
	case r.Method == http.MethodGet && r.URL.Path == "/oncalls":
		s.listOnCalls(w, r)
	case r.Method == http.MethodGet && r.URL.Path == "/users":
		s.listUsers(w, r)
	default:
		writeErr(w, 404, errObj{Message: "Not Found", Code: 2100})
	}
}

// from checks the From header PagerDuty requires on changes: the e-mail of
// a valid user.
func (s *Server) from(w http.ResponseWriter, r *http.Request) (User, bool) {
	f := r.Header.Get("From")
	for _, u := range s.users {
		if f != "" && strings.EqualFold(u.Email, f) {
			return u, true
		}
	}
	msg := "You must include a valid user's e-mail address in the From header to make this request."
	if f == "" {
		msg = "The From header is required for this request."
	}
	writeErr(w, 400, errObj{Message: "Invalid Input Provided", Code: 2001, Errors: []string{msg}})
	return User{}, false
}

func page(r *http.Request) (offset, limit int) {
	offset, _ = strconv.Atoi(r.URL.Query().Get("offset"))
	limit, _ = strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 {
		limit = 25
	}
	return offset, min(limit, 100)
}

func paged[T any](items []T, offset, limit int) ([]T, bool) {
	if offset > len(items) {
		offset = len(items)
	}
	end := min(offset+limit, len(items))
	return items[offset:end], end < len(items)
}

func (s *Server) listIncidents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	statuses, users, services := q["statuses[]"], q["user_ids[]"], q["service_ids[]"]
	key := q.Get("incident_key")
	all := q.Get("date_range") == "all"
	s.mu.Lock()
	defer s.mu.Unlock()
	var match []map[string]any
	cutoff := s.now().Add(-30 * 24 * time.Hour)
	for k := len(s.incidents) - 1; k >= 0; k-- { // created_at:desc
		i := s.incidents[k]
		if len(statuses) > 0 && !slices.Contains(statuses, i.Status) ||
			len(services) > 0 && !slices.Contains(services, i.ServiceID) ||
			key != "" && i.Key != key ||
			!all && i.CreatedAt.Before(cutoff) {
			continue
		}
		if len(users) > 0 && !slices.ContainsFunc(i.AssigneeIDs, func(a string) bool { return slices.Contains(users, a) }) {
			continue
		}
		match = append(match, s.render(i))
	}
	offset, limit := page(r)
	items, more := paged(match, offset, limit)
	writeJSON(w, 200, map[string]any{"incidents": items, "limit": limit, "offset": offset, "more": more, "total": nil})
}

func (s *Server) getIncident(w http.ResponseWriter, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range s.incidents {
		if i.ID == id {
			writeJSON(w, 200, map[string]any{"incident": s.render(i)})
			return
		}
	}
	writeErr(w, 404, errObj{Message: "Not Found", Code: 2100})
}

func (s *Server) manage(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Incidents []struct {
			ID     string `json:"id"`
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"incidents"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil || len(body.Incidents) == 0 {
		writeErr(w, 400, errObj{Message: "Invalid Input Provided", Code: 2001, Errors: []string{"incidents must be a non-empty array"}})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.from(w, r); !ok {
		return
	}
	// Validate everything before changing anything: PagerDuty answers a
	// bulk update with one error for the request.
	var targets []*Incident
	for _, b := range body.Incidents {
		var found *Incident
		for _, i := range s.incidents {
			if i.ID == b.ID {
				found = i
			}
		}
		if found == nil {
			writeErr(w, 404, errObj{Message: "Not Found", Code: 2100, Errors: []string{"Incident " + b.ID + " not found"}})
			return
		}
		if b.Type != "incident" && b.Type != "incident_reference" {
			writeErr(w, 400, errObj{Message: "Invalid Input Provided", Code: 2001, Errors: []string{"type must be incident or incident_reference"}})
			return
		}
		if b.Status != "acknowledged" && b.Status != "resolved" {
			writeErr(w, 400, errObj{Message: "Invalid Input Provided", Code: 2001, Errors: []string{"Status must be acknowledged or resolved"}})
			return
		}
		if found.Status == "resolved" {
			writeErr(w, 400, errObj{Message: "Invalid Input Provided", Code: 2001, Errors: []string{"Incident Already Resolved"}})
			return
		}
		targets = append(targets, found)
	}
	out := []map[string]any{}
	for k, t := range targets {
		t.Status = body.Incidents[k].Status
		out = append(out, s.render(t))
	}
	writeJSON(w, 200, map[string]any{"incidents": out, "limit": len(out), "offset": 0, "more": false})
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Incident struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Urgency string `json:"urgency"`
			Key     string `json:"incident_key"`
			Service *struct {
				ID string `json:"id"`
			} `json:"service"`
			Body *struct {
				Details string `json:"details"`
			} `json:"body"`
		} `json:"incident"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
		writeErr(w, 400, errObj{Message: "Invalid Input Provided", Code: 2001, Errors: []string{"malformed JSON"}})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.from(w, r); !ok {
		return
	}
	in := body.Incident
	if in.Type != "incident" || in.Title == "" || in.Service == nil {
		writeErr(w, 400, errObj{Message: "Invalid Input Provided", Code: 2001, Errors: []string{"incident needs type, title and service"}})
		return
	}
	if !slices.ContainsFunc(s.services, func(v Service) bool { return v.ID == in.Service.ID }) {
		writeErr(w, 400, errObj{Message: "Invalid Input Provided", Code: 2001, Errors: []string{"Service not found"}})
		return
	}
	if in.Key != "" {
		for _, i := range s.incidents {
			if i.Key == in.Key && i.Status != "resolved" {
				writeErr(w, 400, errObj{Message: "Invalid Input Provided", Code: 2001, Errors: []string{"Open incident with key '" + in.Key + "' already exists"}})
				return
			}
		}
	}
	i := Incident{Title: in.Title, Urgency: in.Urgency, ServiceID: in.Service.ID, Key: in.Key}
	if in.Body != nil {
		i.Details = in.Body.Details
	}
	p := s.add(i)
	writeJSON(w, 201, map[string]any{"incident": s.render(p)})
}

func (s *Server) addNote(w http.ResponseWriter, r *http.Request, id string) {
	var body struct {
		Note struct {
			Content string `json:"content"`
		} `json:"note"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil || body.Note.Content == "" {
		writeErr(w, 400, errObj{Message: "Invalid Input Provided", Code: 2001, Errors: []string{"Note content can't be blank"}})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.ContainsFunc(s.incidents, func(i *Incident) bool { return i.ID == id }) {
		writeErr(w, 404, errObj{Message: "Not Found", Code: 2100})
		return
	}
	u, ok := s.from(w, r)
	if !ok {
		return
	}
	s.nextID++
	n := Note{ID: fmt.Sprintf("N%06d", s.nextID), Content: body.Note.Content, UserID: u.ID, CreatedAt: s.now().UTC().Truncate(time.Second)}
	s.notes[id] = append(s.notes[id], n)
	writeJSON(w, 201, map[string]any{"note": s.renderNote(n)})
}

func (s *Server) listNotes(w http.ResponseWriter, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.ContainsFunc(s.incidents, func(i *Incident) bool { return i.ID == id }) {
		writeErr(w, 404, errObj{Message: "Not Found", Code: 2100})
		return
	}
	out := []map[string]any{}
	for _, n := range s.notes[id] {
		out = append(out, s.renderNote(n))
	}
	writeJSON(w, 200, map[string]any{"notes": out})
}

func (s *Server) listOnCalls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	schedules := q["schedule_ids[]"]
	s.mu.Lock()
	defer s.mu.Unlock()
	var match []map[string]any
	for _, o := range s.oncalls {
		if len(schedules) > 0 && !slices.Contains(schedules, o.ScheduleID) {
			continue
		}
		entry := map[string]any{
			"user":              s.userRef(o.UserID),
			"escalation_policy": map[string]any{"id": o.PolicyID, "type": "escalation_policy_reference", "summary": o.PolicyName},
			"escalation_level":  o.Level,
			"start":             o.Start.UTC().Format(time.RFC3339),
			"end":               o.End.UTC().Format(time.RFC3339),
			"schedule":          nil,
		}
		if o.ScheduleID != "" {
			entry["schedule"] = map[string]any{"id": o.ScheduleID, "type": "schedule_reference", "summary": o.ScheduleName}
		}
		match = append(match, entry)
	}
	offset, limit := page(r)
	items, more := paged(match, offset, limit)
	writeJSON(w, 200, map[string]any{"oncalls": items, "limit": limit, "offset": offset, "more": more, "total": nil})
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	query := strings.ToLower(r.URL.Query().Get("query"))
	s.mu.Lock()
	defer s.mu.Unlock()
	var match []map[string]any
	for _, u := range s.users {
		// PagerDuty's query matches names and e-mail addresses by substring.
		if query == "" || strings.Contains(strings.ToLower(u.Name), query) || strings.Contains(strings.ToLower(u.Email), query) {
			match = append(match, map[string]any{"id": u.ID, "type": "user", "summary": u.Name, "name": u.Name, "email": u.Email,
				"html_url": s.URL + "/users/" + u.ID, "self": s.URL + "/users/" + u.ID})
		}
	}
	offset, limit := page(r)
	items, more := paged(match, offset, limit)
	writeJSON(w, 200, map[string]any{"users": items, "limit": limit, "offset": offset, "more": more, "total": nil})
}

func (s *Server) enqueue(w http.ResponseWriter, r *http.Request) {
	var ev struct {
		RoutingKey string `json:"routing_key"`
		Action     string `json:"event_action"`
		DedupKey   string `json:"dedup_key"`
		Payload    *struct {
			Summary  string `json:"summary"`
			Source   string `json:"source"`
			Severity string `json:"severity"`
		} `json:"payload"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 512<<10)).Decode(&ev); err != nil {
		writeJSON(w, 400, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": []string{"malformed JSON"}})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var svc *Service
	for k := range s.services {
		if s.services[k].RoutingKey != "" && s.services[k].RoutingKey == ev.RoutingKey {
			svc = &s.services[k]
		}
	}
	switch {
	case svc == nil:
		writeJSON(w, 400, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": []string{"Invalid routing key"}})
		return
	case ev.Action != "trigger" && ev.Action != "acknowledge" && ev.Action != "resolve":
		writeJSON(w, 400, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": []string{"'event_action' is invalid"}})
		return
	case ev.Action == "trigger" && (ev.Payload == nil || ev.Payload.Summary == "" || ev.Payload.Source == "" || ev.Payload.Severity == ""):
		writeJSON(w, 400, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": []string{"'payload' is missing summary, source or severity"}})
		return
	}
	if ev.DedupKey == "" {
		s.nextID++
		ev.DedupKey = fmt.Sprintf("dk%06d", s.nextID)
	}
	if ev.Action == "trigger" {
		open := false
		for _, i := range s.incidents {
			if i.Key == ev.DedupKey && i.Status != "resolved" {
				open = true // same dedup key: the alert joins the open incident
			}
		}
		if !open {
			s.add(Incident{Title: ev.Payload.Summary, ServiceID: svc.ID, Key: ev.DedupKey})
		}
	}
	writeJSON(w, 202, map[string]any{"status": "success", "message": "Event processed", "dedup_key": ev.DedupKey})
}

func (s *Server) userRef(id string) map[string]any {
	name := id
	for _, u := range s.users {
		if u.ID == id {
			name = u.Name
		}
	}
	return map[string]any{"id": id, "type": "user_reference", "summary": name, "self": s.URL + "/users/" + id, "html_url": s.URL + "/users/" + id}
}

func (s *Server) render(i *Incident) map[string]any {
	svcName := i.ServiceID
	for _, v := range s.services {
		if v.ID == i.ServiceID {
			svcName = v.Name
		}
	}
	assignments := []map[string]any{}
	for _, a := range i.AssigneeIDs {
		assignments = append(assignments, map[string]any{"at": i.CreatedAt.Format(time.RFC3339), "assignee": s.userRef(a)})
	}
	m := map[string]any{
		"id": i.ID, "type": "incident", "summary": fmt.Sprintf("[#%d] %s", i.Number, i.Title),
		"self": s.URL + "/incidents/" + i.ID, "html_url": s.URL + "/incidents/" + i.ID,
		"incident_number": i.Number, "title": i.Title, "status": i.Status, "urgency": i.Urgency,
		"created_at": i.CreatedAt.Format(time.RFC3339), "incident_key": i.Key,
		"service":     map[string]any{"id": i.ServiceID, "type": "service_reference", "summary": svcName},
		"assignments": assignments,
		"priority":    nil,
	}
	if i.Priority != "" {
		m["priority"] = map[string]any{"id": "PRI" + i.Priority, "type": "priority", "summary": i.Priority, "name": i.Priority}
	}
	return m
}

func (s *Server) renderNote(n Note) map[string]any {
	return map[string]any{"id": n.ID, "content": n.Content, "created_at": n.CreatedAt.Format(time.RFC3339), "user": s.userRef(n.UserID)}
}
