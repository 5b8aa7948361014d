// Package graphite reads series from Graphite's render API (graphite-web's
// /render, format=json) and builds render URLs for graphs.
//
// It is a leaf: it imports nothing from switchboard. Render sends many
// targets in one request (a POST form, which graphite-web accepts like a
// query string and which has no URL length limit) and splits them into
// several requests only when one would grow past MaxBody or MaxTargets, so a
// watcher cycle over ten thousand hosts costs a handful of requests, never
// one per host.
package graphite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrUnreachable wraps every failure to get an answer from Graphite (dial,
// timeout, 5xx); callers treat it as a metrics outage, not as bad data.
var ErrUnreachable = errors.New("graphite unreachable")

// Point is one datapoint. Valid is false where Graphite returned null (no
// data in that interval).
type Point struct {
	Value float64
	Time  int64 // Unix seconds, the start of the interval
	Valid bool
}

// UnmarshalJSON reads Graphite's [value, timestamp] pair, value possibly null.
// Hand-written because encoding/json's reflection over [2]*float64 costs an
// allocation per point, and a cycle reads hundreds of thousands of points.
func (p *Point) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		return fmt.Errorf("graphite: datapoint %q is not a [value, time] pair", b)
	}
	inner := b[1 : len(b)-1]
	i := bytes.IndexByte(inner, ',')
	if i < 0 {
		return fmt.Errorf("graphite: datapoint %q is not a [value, time] pair", b)
	}
	v, ts := bytes.TrimSpace(inner[:i]), bytes.TrimSpace(inner[i+1:])
	t, err := strconv.ParseFloat(string(ts), 64)
	if err != nil {
		return fmt.Errorf("graphite: datapoint time %q: %w", ts, err)
	}
	p.Time = int64(t)
	if string(v) == "null" {
		p.Valid = false
		p.Value = 0
		return nil
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return fmt.Errorf("graphite: datapoint value %q: %w", v, err)
	}
	p.Value, p.Valid = f, !math.IsNaN(f)
	return nil
}

// MarshalJSON writes the pair back (tests record responses with it).
func (p Point) MarshalJSON() ([]byte, error) {
	v := "null"
	if p.Valid {
		v = strconv.FormatFloat(p.Value, 'g', -1, 64)
	}
	return []byte("[" + v + ", " + strconv.FormatInt(p.Time, 10) + "]"), nil
}

// Series is one rendered series.
type Series struct {
	Target     string  `json:"target"`
	Datapoints []Point `json:"datapoints"`
}

// Query is one render request's window. From and Until are Graphite time
// expressions ("-6min", "now", or Unix seconds): relative ones are
// resolved on Graphite's clock, so a watcher whose clock is off does not
// read the wrong minutes.
type Query struct {
	Targets []string
	From    string
	Until   string
}

// Client talks to one graphite-web.
type Client struct {
	base       string
	hc         *http.Client
	timeout    time.Duration
	maxBody    int
	maxTargets int
	parallel   int
	header     http.Header
}

// Option configures a Client.
type Option func(*Client)

// WithTimeout bounds each HTTP request (default 10s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithHTTPClient replaces the HTTP client (TLS, proxies).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithMaxBody is the largest form body one request carries (default 256 KiB).
func WithMaxBody(n int) Option { return func(c *Client) { c.maxBody = n } }

// WithMaxTargets is the most targets one request carries (default 2000):
// graphite-web evaluates targets one after another, so huge requests only
// move the timeout problem.
func WithMaxTargets(n int) Option { return func(c *Client) { c.maxTargets = n } }

// WithParallel is how many requests of one Render run at once (default 4).
func WithParallel(n int) Option { return func(c *Client) { c.parallel = n } }

// WithHeader adds a header to every request (an Authorization for a
// graphite-web behind a proxy). Its value is never logged or returned.
func WithHeader(k, v string) Option {
	return func(c *Client) { c.header.Set(k, v) }
}

// NewClient returns a client of the graphite-web at base ("http://graphite:8080").
func NewClient(base string, opts ...Option) *Client {
	c := &Client{
		base:       strings.TrimRight(base, "/"),
		hc:         &http.Client{},
		timeout:    10 * time.Second,
		maxBody:    256 << 10,
		maxTargets: 2000,
		parallel:   4,
		header:     http.Header{},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Base is the graphite-web address.
func (c *Client) Base() string { return c.base }

// Render fetches every target of q and returns the series in the order
// Graphite returned them, request after request. It splits the targets
// into as few requests as MaxBody and MaxTargets allow.
func (c *Client) Render(ctx context.Context, q Query) ([]Series, error) {
	chunks := c.chunk(q.Targets)
	out := make([][]Series, len(chunks))
	errs := make([]error, len(chunks))
	sem := make(chan struct{}, max(1, c.parallel))
	var wg sync.WaitGroup
	for i, ch := range chunks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i], errs[i] = c.render(ctx, ch, q.From, q.Until)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var all []Series
	for _, s := range out {
		all = append(all, s...)
	}
	return all, nil
}

// Requests says how many HTTP requests Render would send for targets.
func (c *Client) Requests(targets []string) int { return len(c.chunk(targets)) }

// chunk splits targets so that each request stays under the limits.
func (c *Client) chunk(targets []string) [][]string {
	var out [][]string
	var cur []string
	size := 0
	const overhead = len("format=json&from=&until=") + 64
	for _, t := range targets {
		n := len("&target=") + len(url.QueryEscape(t))
		if len(cur) > 0 && (size+n+overhead > c.maxBody || len(cur) >= c.maxTargets) {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, t)
		size += n
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

func form(targets []string, from, until, format string) url.Values {
	v := url.Values{}
	for _, t := range targets {
		v.Add("target", t)
	}
	if from != "" {
		v.Set("from", from)
	}
	if until != "" {
		v.Set("until", until)
	}
	if format != "" {
		v.Set("format", format)
	}
	return v
}

func (c *Client) render(ctx context.Context, targets []string, from, until string) ([]Series, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	body := form(targets, from, until, "json").Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/render", strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("graphite: build render request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	for k, v := range c.header {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("graphite %s: render %d targets: %w: %w", c.base, len(targets), ErrUnreachable, stripURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		err := fmt.Errorf("graphite %s: render %d targets: HTTP %d: %s", c.base, len(targets), resp.StatusCode, firstLine(msg))
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			err = fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
		return nil, err
	}
	var series []Series
	if err := json.NewDecoder(resp.Body).Decode(&series); err != nil {
		return nil, fmt.Errorf("graphite %s: decode render response: %w: %w", c.base, ErrUnreachable, err)
	}
	return series, nil
}

// stripURL keeps a url.Error's cause but not its URL: the query can be
// long, and an operator's error message should stay readable.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// GraphURL is a render URL on this client's graphite-web for a PNG graph.
func (c *Client) GraphURL(targets []string, from, until, title string) string {
	return GraphURL(c.base, targets, from, until, title)
}

// GraphURL is a render URL for a PNG graph of targets on the graphite-web
// at base, for a person to open: a GET with the targets in the query
// string. base may differ from the address the watcher reads from (a
// public name in front of an internal one).
func GraphURL(base string, targets []string, from, until, title string) string {
	v := form(targets, from, until, "")
	if title != "" {
		v.Set("title", title)
	}
	v.Set("width", "800")
	v.Set("height", "400")
	return strings.TrimRight(base, "/") + "/render?" + v.Encode()
}
