package statuspage_test

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/incidents/statuspage"
)

// A create whose connection is refused never reached Statuspage, so it is
// sent again until the API answers; it is created once.
func TestACreateWhoseConnectionIsRefusedIsSentAgain(t *testing.T) {
	// A port with nothing listening on it yet.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	var creates atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/pages/pg1/incidents" {
			http.NotFound(w, r)
			return
		}
		creates.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"id":"inc1","name":"API degraded","status":"investigating","shortlink":"https://stspg.io/x"}`))
	})}
	t.Cleanup(func() { srv.Close() })
	refusedOnce := make(chan struct{})
	go func() {
		<-refusedOnce
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		srv.Serve(l)
	}()
	// The first attempt is refused for sure: nothing listens until it is.
	c := statuspage.New("pg1", "key", statuspage.WithBaseURL("http://"+addr+"/v1"), statuspage.WithBackoff(50*time.Millisecond),
		statuspage.WithHTTPClient(&http.Client{Timeout: 5 * time.Second, Transport: &firstRefused{done: refusedOnce}}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inc, err := c.CreateIncident(ctx, statuspage.NewIncident{Name: "API degraded", Body: "elevated errors"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if inc.ID != "inc1" || creates.Load() != 1 {
		t.Fatalf("incident %+v, %d creates; want inc1 created once", inc, creates.Load())
	}
}

// firstRefused lets the first request go to a port nobody listens on,
// then starts the server (closes done) for the next ones.
type firstRefused struct {
	done  chan struct{}
	calls atomic.Int32
}

func (f *firstRefused) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if f.calls.Add(1) == 1 {
		close(f.done)
	}
	return resp, err
}
