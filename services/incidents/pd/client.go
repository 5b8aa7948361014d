package pd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/PagerDuty/go-pagerduty"
)

// Client calls PagerDuty's REST API v2 and Events API v2. It is safe for
// concurrent use.
type Client struct {
	pd         *pagerduty.Client
	maxBackoff time.Duration
	minBackoff time.Duration
	now        func() time.Time
}

// Option changes a Client.
type Option func(*options)

type options struct {
	apiURL, eventsURL string
	httpClient        *http.Client
	minBackoff        time.Duration
	maxBackoff        time.Duration
}

// WithAPIEndpoint sends REST calls to url instead of https://api.pagerduty.com
// (PagerDuty's EU service region, or a test server).
func WithAPIEndpoint(url string) Option { return func(o *options) { o.apiURL = url } }

// WithEventsEndpoint sends Events API v2 calls to url instead of
// https://events.pagerduty.com.
func WithEventsEndpoint(url string) Option { return func(o *options) { o.eventsURL = url } }

// WithHTTPClient uses c (its Transport is wrapped to record response
// headers); the default has a 10s timeout per request.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.httpClient = c } }

// WithBackoff sets the first and the longest wait between retries of a
// transient failure (default 250ms and 5s). A 429's Retry-After wins.
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.minBackoff, o.maxBackoff = min, max }
}

// New returns a client authenticating with a REST API token.
func New(token string, opts ...Option) *Client {
	o := options{minBackoff: 250 * time.Millisecond, maxBackoff: 5 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	hc := o.httpClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	wrapped := *hc
	wrapped.Transport = recorder{base}
	var pdo []pagerduty.ClientOptions
	if o.apiURL != "" {
		pdo = append(pdo, pagerduty.WithAPIEndpoint(strings.TrimRight(o.apiURL, "/")))
	}
	if o.eventsURL != "" {
		pdo = append(pdo, pagerduty.WithV2EventsAPIEndpoint(strings.TrimRight(o.eventsURL, "/")))
	}
	c := pagerduty.NewClient(token, pdo...)
	c.HTTPClient = &wrapped
	c.SetDebugFlag(0)
	return &Client{pd: c, minBackoff: o.minBackoff, maxBackoff: o.maxBackoff, now: time.Now}
}

// Sentinel errors callers branch on.
var (
	// ErrNotFound: the incident (or user) does not exist.
	ErrNotFound = errors.New("not found in PagerDuty")
	// ErrNoUser: no PagerDuty user has the e-mail address.
	ErrNoUser = errors.New("no PagerDuty user with that e-mail address")
)

// Error is a failed call after its retries: the last HTTP status (0 when
// PagerDuty could not be reached), PagerDuty's error object, and how many
// attempts were made.
type Error struct {
	Op       string
	Status   int
	Code     int
	Message  string
	Details  []string
	Attempts int
	// RateLimited is true when the last answer was a 429.
	RateLimited bool
	// Unreachable is true when the last attempt got no HTTP answer.
	Unreachable bool
	err         error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pagerduty %s: ", e.Op)
	switch {
	case e.Unreachable:
		fmt.Fprintf(&b, "unreachable (%v)", e.err)
	case e.RateLimited:
		b.WriteString("rate limited (HTTP 429)")
	default:
		fmt.Fprintf(&b, "HTTP %d", e.Status)
		if e.Message != "" {
			fmt.Fprintf(&b, " %s", e.Message)
		}
		if e.Code != 0 {
			fmt.Fprintf(&b, " (code %d)", e.Code)
		}
		if len(e.Details) > 0 {
			fmt.Fprintf(&b, ": %s", strings.Join(e.Details, "; "))
		}
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " after %d attempts", e.Attempts)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.err }

// Transient reports whether a later attempt could succeed (429, 5xx, no
// answer).
func (e *Error) Transient() bool { return e.RateLimited || e.Unreachable || e.Status >= 500 }

// Retry describes one retry, for a caller that tells people about it.
type Retry struct {
	Op      string
	Attempt int
	Wait    time.Duration
	Err     *Error
}

type notifyKey struct{}

// WithRetryNotify returns a context under which every retry is reported to
// f before the client waits (in the manner of net/http/httptrace).
func WithRetryNotify(ctx context.Context, f func(Retry)) context.Context {
	return context.WithValue(ctx, notifyKey{}, f)
}

// exchange is what the RoundTripper learned about one attempt.
type exchange struct {
	header  http.Header
	status  int
	sent    bool // the request may have reached PagerDuty
	netErr  error
	present bool
}

type exchangeKey struct{}

// recorder keeps the response headers and the kind of network failure of
// each attempt, which go-pagerduty does not return.
type recorder struct{ next http.RoundTripper }

func (r recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	x, _ := req.Context().Value(exchangeKey{}).(*exchange)
	resp, err := r.next.RoundTrip(req)
	if x != nil {
		x.present = true
		if err != nil {
			x.netErr = err
			// A failed dial never reached PagerDuty; anything later may have.
			var op *net.OpError
			x.sent = !(errors.As(err, &op) && op.Op == "dial")
		} else {
			x.sent = true
			x.status = resp.StatusCode
			x.header = resp.Header.Clone()
		}
	}
	return resp, err
}

// call runs f until it succeeds, fails for good, or the context's deadline
// leaves no time for another attempt. idempotent says whether a request
// that may have been applied can be sent again; when it cannot, call
// returns the ambiguous error and the caller checks before retrying.
func (c *Client) call(ctx context.Context, op string, idempotent bool, f func(ctx context.Context) error) error {
	for attempt := 1; ; attempt++ {
		x := &exchange{}
		err := f(context.WithValue(ctx, exchangeKey{}, x))
		if err == nil {
			return nil
		}
		perr := classify(op, err, x)
		perr.Attempts = attempt
		if ctx.Err() != nil {
			perr.err = errors.Join(perr.err, ctx.Err())
			return perr
		}
		if !perr.Transient() {
			return perr
		}
		ambiguous := !perr.RateLimited && (x.sent || !x.present)
		if ambiguous && !idempotent {
			return perr
		}
		wait := c.wait(attempt, x)
		if dl, ok := ctx.Deadline(); ok && c.now().Add(wait).After(dl) {
			return perr
		}
		if n, ok := ctx.Value(notifyKey{}).(func(Retry)); ok {
			n(Retry{Op: op, Attempt: attempt, Wait: wait, Err: perr})
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			perr.err = errors.Join(perr.err, ctx.Err())
			return perr
		case <-t.C:
		}
	}
}

// wait is how long to wait before attempt+1: PagerDuty's Retry-After or
// ratelimit-reset when it sent one, else exponential backoff with jitter.
func (c *Client) wait(attempt int, x *exchange) time.Duration {
	if x.header != nil {
		for _, h := range []string{"Retry-After", "Ratelimit-Reset"} {
			if s, err := strconv.Atoi(strings.TrimSpace(x.header.Get(h))); err == nil && s >= 0 {
				return min(time.Duration(s)*time.Second, time.Minute)
			}
		}
	}
	d := c.minBackoff << min(attempt-1, 8)
	d = min(d, c.maxBackoff)
	return d/2 + rand.N(d/2+1)
}

func classify(op string, err error, x *exchange) *Error {
	e := &Error{Op: op, err: err}
	var api pagerduty.APIError
	var apip *pagerduty.APIError
	switch {
	case errors.As(err, &api):
	case errors.As(err, &apip):
		api = *apip
	default:
		if x.status == 0 {
			// No HTTP answer at all: refused, reset, timed out.
			e.Unreachable = true
			if x.netErr != nil {
				e.err = x.netErr
			}
			return e
		}
		e.Status = x.status // an answer go-pagerduty could not decode
		return e
	}
	e.Status = api.StatusCode
	e.RateLimited = api.StatusCode == http.StatusTooManyRequests
	if api.APIError.Valid {
		e.Code = api.APIError.ErrorObject.Code
		e.Message = api.APIError.ErrorObject.Message
		e.Details = api.APIError.ErrorObject.Errors
	}
	if api.NotFound() {
		e.err = ErrNotFound
	}
	return e
}
