// Package statuspage is a client of Atlassian Statuspage's REST API v1
// (https://developer.statuspage.io/): list a page's components, set a
// component's status, open an incident.
//
// It is hand-written because the API surface used is three calls and no
// maintained Go client covers contexts and 429s. Authentication is the
// page's API key ("Authorization: OAuth <key>"), read from a file.
// Statuspage rate-limits each key (HTTP 429); calls that are safe to repeat
// (reads, the component PATCH) retry 429s and 5xx until the context's
// deadline, and creating an incident retries only 429s, which Statuspage
// answers before doing anything.
//
// The package is a leaf: it imports nothing from switchboard.
package statuspage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Status is a component's status.
type Status string

// Component statuses, as Statuspage names them.
const (
	Operational         Status = "operational"
	DegradedPerformance Status = "degraded_performance"
	PartialOutage       Status = "partial_outage"
	MajorOutage         Status = "major_outage"
	UnderMaintenance    Status = "under_maintenance"
)

// Incident statuses of a realtime incident.
const (
	Investigating = "investigating"
	Identified    = "identified"
	Monitoring    = "monitoring"
	Resolved      = "resolved"
)

// Component is one component of a status page.
type Component struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status Status `json:"status"`
}

// Incident is an incident on a status page.
type Incident struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Shortlink string `json:"shortlink"`
}

// NewIncident is what CreateIncident sends.
type NewIncident struct {
	Name string
	Body string
	// Status of the incident (default investigating).
	Status string
	// Components affected, with the status each is set to.
	Components map[string]Status
}

// Error is a failed call.
type Error struct {
	Op      string
	Status  int
	Message string
	err     error
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("statuspage %s: unreachable (%v)", e.Op, e.err)
	}
	if e.Message != "" {
		return fmt.Sprintf("statuspage %s: HTTP %d: %s", e.Op, e.Status, e.Message)
	}
	return fmt.Sprintf("statuspage %s: HTTP %d", e.Op, e.Status)
}

func (e *Error) Unwrap() error { return e.err }

// Retry is one retry the client is about to make: after Attempt failed
// attempts, it waits Wait because of Err.
type Retry struct {
	Attempt int
	Wait    time.Duration
	Err     *Error
}

type notifyKey struct{}

// WithRetryNotify returns a context under which every retry is reported to
// f before the client waits, so a command can tell the person why it is
// slow.
func WithRetryNotify(ctx context.Context, f func(Retry)) context.Context {
	return context.WithValue(ctx, notifyKey{}, f)
}

// Client talks to one status page.
type Client struct {
	base   string
	page   string
	key    string
	http   *http.Client
	minGap time.Duration
}

// Option changes a Client.
type Option func(*Client)

// WithBaseURL replaces https://api.statuspage.io/v1 (a test server).
func WithBaseURL(u string) Option { return func(c *Client) { c.base = strings.TrimRight(u, "/") } }

// WithHTTPClient replaces the default client (10s timeout).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithBackoff sets the first wait between retries (default 500ms).
func WithBackoff(d time.Duration) Option { return func(c *Client) { c.minGap = d } }

// New returns a client of page pageID authenticating with apiKey.
func New(pageID, apiKey string, opts ...Option) *Client {
	c := &Client{base: "https://api.statuspage.io/v1", page: pageID, key: apiKey,
		http: &http.Client{Timeout: 10 * time.Second}, minGap: 500 * time.Millisecond}
	for _, o := range opts {
		o(c)
	}
	return c
}

// ReadKey reads an API key from a file, trimming white space.
func ReadKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read statuspage api key: %w", err)
	}
	k := strings.TrimSpace(string(b))
	if k == "" {
		return "", fmt.Errorf("read statuspage api key: %s is empty", path)
	}
	return k, nil
}

// Components lists the page's components.
func (c *Client) Components(ctx context.Context) ([]Component, error) {
	var out []Component
	err := c.do(ctx, "list components", http.MethodGet, "/pages/"+c.page+"/components?per_page=100", nil, true, &out)
	return out, err
}

// SetComponentStatus sets a component's status.
func (c *Client) SetComponentStatus(ctx context.Context, id string, st Status) (Component, error) {
	var out Component
	body := map[string]any{"component": map[string]any{"status": st}}
	err := c.do(ctx, "update component "+id, http.MethodPatch, "/pages/"+c.page+"/components/"+id, body, true, &out)
	return out, err
}

// CreateIncident opens a realtime incident.
func (c *Client) CreateIncident(ctx context.Context, n NewIncident) (Incident, error) {
	if n.Status == "" {
		n.Status = Investigating
	}
	in := map[string]any{"name": n.Name, "status": n.Status, "body": n.Body}
	if len(n.Components) > 0 {
		ids := make([]string, 0, len(n.Components))
		for id := range n.Components {
			ids = append(ids, id)
		}
		in["component_ids"] = ids
		in["components"] = n.Components
	}
	var out Incident
	err := c.do(ctx, "create incident", http.MethodPost, "/pages/"+c.page+"/incidents", map[string]any{"incident": in}, false, &out)
	return out, err
}

func (c *Client) do(ctx context.Context, op, method, path string, body any, idempotent bool, out any) error {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return fmt.Errorf("statuspage %s: encode: %w", op, err)
		}
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(data))
		if err != nil {
			return &Error{Op: op, err: err}
		}
		req.Header.Set("Authorization", "OAuth "+c.key)
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.http.Do(req)
		var e *Error
		retryAfter := -1
		if err != nil {
			e = &Error{Op: op, err: err}
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				if out != nil {
					if err := json.Unmarshal(b, out); err != nil {
						return fmt.Errorf("statuspage %s: decode answer: %w", op, err)
					}
				}
				return nil
			}
			e = &Error{Op: op, Status: resp.StatusCode, Message: apiMessage(b)}
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
				retryAfter = s
			}
		}
		// A refused connection never reached Statuspage: even a create is
		// safe to send again. Anything else that failed may have landed.
		retry := e.Status == http.StatusTooManyRequests || idempotent && (e.Status == 0 || e.Status >= 500) ||
			errors.Is(e.err, syscall.ECONNREFUSED)
		if !retry || ctx.Err() != nil {
			if ctx.Err() != nil {
				e.err = errors.Join(e.err, ctx.Err())
			}
			return e
		}
		wait := c.minGap << min(attempt, 4)
		if retryAfter >= 0 {
			wait = time.Duration(retryAfter) * time.Second
		}
		if dl, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(dl) {
			return e
		}
		if notify, ok := ctx.Value(notifyKey{}).(func(Retry)); ok {
			notify(Retry{Attempt: attempt + 1, Wait: wait, Err: e})
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return e
		case <-t.C:
		}
	}
}

// apiMessage reads Statuspage's error body: {"error": "…"} or
// {"error": ["…", …]}.
func apiMessage(b []byte) string {
	var v struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(b, &v) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(v.Error, &s) == nil {
		return s
	}
	var list []string
	if json.Unmarshal(v.Error, &list) == nil {
		return strings.Join(list, "; ")
	}
	return v.Message
}
