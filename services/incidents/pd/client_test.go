package pd_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/incidents/pd"
	"github.com/switchboard-ops/switchboard/services/incidents/pdtest"
)

func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

func TestIncidentsFollowsPagination(t *testing.T) {
	s := pdtest.NewServer(t)
	for range 130 {
		s.AddIncident(pdtest.Incident{Title: "t", AssigneeIDs: []string{"PU1"}})
	}
	s.AddIncident(pdtest.Incident{Title: "other", AssigneeIDs: []string{"PU2"}})
	c := pd.New(s.Token, pd.WithAPIEndpoint(s.URL))
	got, err := c.Incidents(ctx(t, 5*time.Second), pd.ListOptions{Statuses: []string{"triggered"}, UserIDs: []string{"PU1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 130 {
		t.Fatalf("%d incidents, want 130 across two pages", len(got))
	}
	if n := s.Count("GET /incidents"); n != 2 {
		t.Errorf("%d list calls, want 2", n)
	}
}

func TestErrorsAreClassified(t *testing.T) {
	s := pdtest.NewServer(t)
	bad := pd.New("wrong-token", pd.WithAPIEndpoint(s.URL))
	_, err := bad.Incident(ctx(t, 5*time.Second), "PX00001")
	var perr *pd.Error
	if !errors.As(err, &perr) || perr.Status != 401 || perr.Transient() || perr.Attempts != 1 {
		t.Fatalf("bad token: %#v, want a 401 that is not retried", err)
	}
	c := pd.New(s.Token, pd.WithAPIEndpoint(s.URL))
	if _, err := c.Incident(ctx(t, 5*time.Second), "PX00001"); !errors.Is(err, pd.ErrNotFound) {
		t.Fatalf("missing incident: %v, want ErrNotFound", err)
	}
	if _, err := c.Manage(ctx(t, 5*time.Second), "", []string{"PX00001"}, "acknowledged"); err == nil {
		t.Fatal("a change without a From header succeeded")
	}
	if _, err := c.UserByEmail(ctx(t, 5*time.Second), "nobody@example.com"); !errors.Is(err, pd.ErrNoUser) {
		t.Fatalf("unknown e-mail: %v, want ErrNoUser", err)
	}
}

func TestRateLimitsAreRetriedAndReported(t *testing.T) {
	s := pdtest.NewServer(t)
	inc := s.AddIncident(pdtest.Incident{Title: "t"})
	s.Inject(pdtest.Fault{Status: 429, RetryAfter: 0, Times: 3})
	c := pd.New(s.Token, pd.WithAPIEndpoint(s.URL))
	var retries []pd.Retry
	rctx := pd.WithRetryNotify(ctx(t, 5*time.Second), func(r pd.Retry) { retries = append(retries, r) })
	got, err := c.Incident(rctx, inc.ID)
	if err != nil || got.ID != inc.ID {
		t.Fatalf("Incident = %v, %v", got, err)
	}
	if len(retries) != 3 || !retries[0].Err.RateLimited {
		t.Fatalf("retries = %+v, want 3 rate-limited ones", retries)
	}
	// A rate limit that outlasts the deadline is an error, not a hang.
	s.Inject(pdtest.Fault{Status: 429, RetryAfter: 1, Times: 100})
	_, err = c.Incident(ctx(t, 1500*time.Millisecond), inc.ID)
	var perr *pd.Error
	if !errors.As(err, &perr) || !perr.RateLimited {
		t.Fatalf("err = %v, want a rate-limit error", err)
	}
}
