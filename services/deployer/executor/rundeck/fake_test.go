package rundeck_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/deployer/executor/executortest"
)

// fakeRundeck implements the part of Rundeck's API v41 the executor uses,
// with Rundeck's JSON shapes and error answers: run a job with options and
// a node filter, execution state with per-node step states, per-node
// output, abort. Nodes behave as executortest.Behaviour says; a non-zero
// exit fails the node's step and is logged as "Result: N", as Rundeck's
// script steps do.
type fakeRundeck struct {
	t     *testing.T
	token string
	jobs  map[string]bool

	mu    sync.Mutex
	next  int
	execs map[int]*fakeExec
	runs  []fakeRun
}

type fakeRun struct {
	Job     string
	Options map[string]string
	Filter  string
}

type fakeExec struct {
	id      int
	started time.Time
	nodes   []string
	aborted bool
}

func newFakeRundeck(t *testing.T, token string, jobs ...string) (*fakeRundeck, *httptest.Server) {
	f := &fakeRundeck{t: t, token: token, jobs: map[string]bool{}, execs: map[int]*fakeExec{}, next: 100}
	for _, j := range jobs {
		f.jobs[j] = true
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": true, "apiversion": 41, "errorCode": code, "message": msg})
}

func (f *fakeRundeck) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Rundeck-Auth-Token") != f.token {
		apiError(w, http.StatusForbidden, "api.error.item.unauthorized", "Not authorized for action \"Run\"")
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 3 || parts[0] != "api" {
		apiError(w, http.StatusNotFound, "api.error.invalid.request", "Invalid API Request: "+r.URL.Path)
		return
	}
	if v, _ := strconv.Atoi(parts[1]); v < 14 {
		apiError(w, http.StatusBadRequest, "api.error.api-version.unsupported", "Unsupported API Version \""+parts[1]+"\"")
		return
	}
	parts = parts[2:]
	w.Header().Set("Content-Type", "application/json")
	switch {
	case len(parts) == 3 && parts[0] == "job" && parts[2] == "run" && r.Method == http.MethodPost:
		f.run(w, r, parts[1])
	case len(parts) >= 3 && parts[0] == "execution":
		id, _ := strconv.Atoi(parts[1])
		f.mu.Lock()
		ex := f.execs[id]
		f.mu.Unlock()
		if ex == nil {
			apiError(w, http.StatusNotFound, "api.error.item.doesnotexist", "Execution ID does not exist: "+parts[1])
			return
		}
		switch {
		case parts[2] == "state" && r.Method == http.MethodGet:
			f.state(w, ex)
		case parts[2] == "output" && len(parts) == 5 && parts[3] == "node":
			f.output(w, ex, parts[4])
		case parts[2] == "abort" && r.Method == http.MethodPost:
			f.mu.Lock()
			ex.aborted = true
			f.mu.Unlock()
			json.NewEncoder(w).Encode(map[string]any{"abort": map[string]any{"status": "aborted"}, "execution": map[string]any{"id": strconv.Itoa(ex.id), "status": "aborted"}})
		default:
			apiError(w, http.StatusNotFound, "api.error.invalid.request", "Invalid API Request")
		}
	default:
		apiError(w, http.StatusNotFound, "api.error.invalid.request", "Invalid API Request: "+r.URL.Path)
	}
}

func (f *fakeRundeck) run(w http.ResponseWriter, r *http.Request, job string) {
	if !f.jobs[job] {
		apiError(w, http.StatusNotFound, "api.error.item.doesnotexist", "Job ID does not exist: "+job)
		return
	}
	var body struct {
		Options map[string]string `json:"options"`
		Filter  string            `json:"filter"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		apiError(w, http.StatusBadRequest, "api.error.invalid.request", "Invalid JSON: "+err.Error())
		return
	}
	names, ok := strings.CutPrefix(body.Filter, "name: ")
	if !ok || names == "" {
		apiError(w, http.StatusBadRequest, "api.error.execution.failed", "No nodes matched for the filters: "+body.Filter)
		return
	}
	f.mu.Lock()
	f.next++
	ex := &fakeExec{id: f.next, started: time.Now(), nodes: strings.Split(names, ",")}
	f.execs[ex.id] = ex
	f.runs = append(f.runs, fakeRun{Job: job, Options: body.Options, Filter: body.Filter})
	f.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]any{
		"id": ex.id, "href": fmt.Sprintf("http://rundeck/api/41/execution/%d", ex.id),
		"permalink": fmt.Sprintf("http://rundeck/project/ops/execution/show/%d", ex.id),
		"status":    "running", "project": "ops", "job": map[string]any{"id": job, "name": "puppet run"},
		"date-started": map[string]any{"unixtime": ex.started.UnixMilli(), "date": ex.started.UTC().Format(time.RFC3339)},
	})
}

// nodeState: RUNNING, or the node's end (SUCCEEDED, FAILED, ABORTED).
func (f *fakeRundeck) nodeState(ex *fakeExec, node string) (string, int) {
	code, sleep := executortest.Behaviour(node)
	// Every node takes a little while, so results arrive over several polls.
	if time.Since(ex.started) < sleep+50*time.Millisecond {
		if ex.aborted {
			return "ABORTED", -1
		}
		return "RUNNING", -1
	}
	if code == 0 {
		return "SUCCEEDED", 0
	}
	return "FAILED", code
}

func (f *fakeRundeck) state(w http.ResponseWriter, ex *fakeExec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	nodes := map[string]any{}
	completed, anyFailed := true, false
	for _, n := range ex.nodes {
		st, _ := f.nodeState(ex, n)
		if st == "RUNNING" {
			completed = false
		}
		if st != "SUCCEEDED" {
			anyFailed = true
		}
		nodes[n] = []map[string]any{{"executionState": st, "stepctx": "1"}}
	}
	state := "RUNNING"
	switch {
	case completed && ex.aborted:
		state = "ABORTED"
	case completed && anyFailed:
		state = "FAILED"
	case completed:
		state = "SUCCEEDED"
	}
	json.NewEncoder(w).Encode(map[string]any{
		"executionId": ex.id, "serverNode": "rundeck", "completed": completed, "executionState": state,
		"targetNodes": ex.nodes, "allNodes": ex.nodes, "stepCount": 1, "nodes": nodes,
		"steps": []map[string]any{{"stepctx": "1", "id": "1", "nodeStep": true, "executionState": state}},
	})
}

func (f *fakeRundeck) output(w http.ResponseWriter, ex *fakeExec, node string) {
	f.mu.Lock()
	st, code := f.nodeState(ex, node)
	f.mu.Unlock()
	entries := []map[string]any{{"time": "12:00:00", "level": "NORMAL", "log": "hello from " + node, "node": node, "stepctx": "1", "user": "rundeck"}}
	if st == "FAILED" {
		entries = append(entries, map[string]any{"time": "12:00:01", "level": "ERROR", "log": fmt.Sprintf("Failed: NonZeroResultCode: Result code was %d", code), "node": node, "stepctx": "1"})
	}
	done := st != "RUNNING"
	json.NewEncoder(w).Encode(map[string]any{"id": strconv.Itoa(ex.id), "offset": "1024", "completed": done, "execCompleted": done, "entries": entries})
}
