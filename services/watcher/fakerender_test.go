package watcher

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeRender is an in-process render endpoint that answers the targets the
// watcher sends (aliasByNode over brace lists or wildcards, alias) the way
// graphite-web does: one series per host, 10-second points, the interval
// still filling as null. data says what a host sent in an interval.
type fakeRender struct {
	srv      *httptest.Server
	requests atomic.Int64
	// spent is the time spent answering, so a benchmark can tell the
	// watcher's CPU from this fake Graphite's.
	spent atomic.Int64
	mu    sync.Mutex
	data  func(host string, ts int64) (float64, bool)
	hosts []string // what a wildcard matches
	now   func() time.Time
	down  bool
	// cache, when set, keeps each answer by request and serves it again,
	// so that a benchmark measures the watcher rather than this fake.
	cache map[string][]byte
}

func newFakeRender(t testing.TB, hosts []string, data func(host string, ts int64) (float64, bool)) *fakeRender {
	f := &fakeRender{data: data, hosts: hosts, now: time.Now}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeRender) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeRender) setData(data func(host string, ts int64) (float64, bool)) {
	f.mu.Lock()
	f.data = data
	f.mu.Unlock()
}

var (
	reAliasByNode = regexp.MustCompile(`^aliasByNode\((.+),\s*(\d+)\)$`)
	reAlias       = regexp.MustCompile(`^alias\((.+),\s*'([^']+)'\)$`)
)

func (f *fakeRender) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	start := time.Now()
	defer func() { f.spent.Add(int64(time.Since(start))) }()
	f.mu.Lock()
	down, data := f.down, f.data
	f.mu.Unlock()
	if down {
		http.Error(w, "upstream down", http.StatusBadGateway)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	key := r.Form.Encode()
	f.mu.Lock()
	cached, ok := f.cache[key]
	f.mu.Unlock()
	if ok {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(cached)
		return
	}
	const step = 10
	now := f.now().Unix()
	until := now - now%step + step
	from := until - 600
	if s := r.Form.Get("from"); strings.HasPrefix(s, "-") && strings.HasSuffix(s, "s") {
		if n, err := strconv.Atoi(s[1 : len(s)-1]); err == nil {
			from = until - int64(n) - step
		}
	}
	from -= from % step
	var names []string
	for _, t := range r.Form["target"] {
		if m := reAlias.FindStringSubmatch(t); m != nil {
			names = append(names, m[2])
			continue
		}
		m := reAliasByNode.FindStringSubmatch(t)
		if m == nil {
			http.Error(w, "unsupported target "+t, 400)
			return
		}
		node, _ := strconv.Atoi(m[2])
		sel := strings.Split(m[1], ".")[node]
		switch {
		case sel == "*":
			names = append(names, f.hosts...)
		case strings.HasPrefix(sel, "{"):
			names = append(names, strings.Split(strings.Trim(sel, "{}"), ",")...)
		default:
			names = append(names, sel)
		}
	}
	var b bytes.Buffer
	b.Grow(len(names) * int((until-from)/step) * 18)
	b.WriteByte('[')
	for i, h := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`{"target": "`)
		b.WriteString(h)
		b.WriteString(`", "tags": {"name": "`)
		b.WriteString(h)
		b.WriteString(`"}, "datapoints": [`)
		for ts := from; ts < until; ts += step {
			if ts > from {
				b.WriteString(", ")
			}
			b.WriteByte('[')
			// The interval still filling has no value yet.
			if v, ok := data(h, ts); ok && ts+step <= now {
				b.WriteString(strconv.FormatFloat(v, 'f', 1, 64))
			} else {
				b.WriteString("null")
			}
			b.WriteString(", ")
			b.WriteString(strconv.FormatInt(ts, 10))
			b.WriteByte(']')
		}
		b.WriteString("]}")
	}
	b.WriteByte(']')
	f.mu.Lock()
	if f.cache != nil {
		f.cache[key] = b.Bytes()
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b.Bytes())
}
