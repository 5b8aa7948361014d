// Package rundeck is the executor that runs a Rundeck job on the hosts
// through Rundeck's HTTP API: run the job with options and a node filter,
// follow the execution's state, and turn each node's step state and output
// into a result. It imports nothing from switchboard.
//
// API calls used (https://docs.rundeck.com/docs/api/):
//
//	POST /api/{v}/job/{id}/run                    {"options": {...}, "filter": "name: a,b"}
//	GET  /api/{v}/execution/{id}/state            per-node step states
//	GET  /api/{v}/execution/{id}/output/node/{n}  per-node log entries
//	POST /api/{v}/execution/{id}/abort            on cancel or timeout
//
// The API token is read from a file at every run, so it can be rotated
// without a restart, and is sent only in the X-Rundeck-Auth-Token header.
package rundeck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-ops/switchboard/services/deployer/executor"
)

// Config configures the Rundeck executor.
type Config struct {
	// URL of the Rundeck server ("https://rundeck.example.com").
	URL string `yaml:"url"`
	// APIVersion (default 41).
	APIVersion int `yaml:"api_version"`
	// TokenFile holds the API token.
	TokenFile string `yaml:"token_file"`
	// Job is the id (UUID) of the job that runs Puppet on its nodes.
	Job string `yaml:"job"`
	// Options sent to the job; values are templates ({tags}, {service},
	// {version}, {environment}, {role}). Default: tags, service, version.
	Options map[string]string `yaml:"options"`
	// Timeout for the whole execution of a batch, not per node: Rundeck's
	// API cannot stop one node of an execution, so when it passes the
	// execution is aborted and the nodes without a result are reported
	// timed out. Size it for a batch (a job with thread count 1 runs its
	// nodes one after the other); default 30m.
	Timeout time.Duration `yaml:"timeout"`
	// PollInterval between state requests (default 1s).
	PollInterval time.Duration `yaml:"poll_interval"`
	// RequestTimeout bounds each HTTP request (default 30s).
	RequestTimeout time.Duration `yaml:"request_timeout"`
}

// Executor runs a Rundeck job.
type Executor struct {
	cfg  Config
	http *http.Client
}

var _ executor.Executor = (*Executor)(nil)

// New checks the configuration; it does not call Rundeck.
func New(cfg Config, hc *http.Client) (*Executor, error) {
	if cfg.URL == "" || cfg.Job == "" || cfg.TokenFile == "" {
		return nil, errors.New("rundeck executor: url, job and token_file are required")
	}
	if _, err := url.Parse(cfg.URL); err != nil {
		return nil, fmt.Errorf("rundeck executor: url: %w", err)
	}
	if cfg.APIVersion == 0 {
		cfg.APIVersion = 41
	}
	if cfg.Options == nil {
		cfg.Options = map[string]string{"tags": "{tags}", "service": "{service}", "version": "{version}"}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Minute
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if hc == nil {
		hc = &http.Client{}
	}
	return &Executor{cfg: cfg, http: hc}, nil
}

// APIError is an error answer from Rundeck.
type APIError struct {
	Status  int
	Code    string `json:"errorCode"`
	Message string `json:"message"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("rundeck: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

func (e *Executor) do(ctx context.Context, token, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := strings.TrimRight(e.cfg.URL, "/") + fmt.Sprintf("/api/%d", e.cfg.APIVersion) + path
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-Rundeck-Auth-Token", token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return fmt.Errorf("rundeck %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("rundeck %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		ae := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(data, ae) != nil || ae.Message == "" {
			ae.Message = strings.TrimSpace(executor.Tail(data, 200))
		}
		return ae
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("rundeck %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

type execution struct {
	ID     int    `json:"id"`
	Status string `json:"status"`
}

type stepState struct {
	ExecutionState string `json:"executionState"`
	StepCtx        string `json:"stepctx"`
}

type state struct {
	Completed      bool                   `json:"completed"`
	ExecutionState string                 `json:"executionState"`
	Nodes          map[string][]stepState `json:"nodes"`
}

type output struct {
	Entries []struct {
		Log   string `json:"log"`
		Level string `json:"level"`
	} `json:"entries"`
}

// Run starts one execution of the job on all hosts and streams each node's
// result as its steps finish.
func (e *Executor) Run(ctx context.Context, hosts []executor.Host, a executor.Action) <-chan executor.Result {
	out := make(chan executor.Result, len(hosts))
	go func() {
		defer close(out)
		start := time.Now()
		pending := map[string]bool{}
		for _, h := range hosts {
			pending[h.Name] = true
		}
		failAll := func(st executor.Status, detail string) {
			for _, h := range hosts {
				if pending[h.Name] {
					delete(pending, h.Name)
					out <- executor.Result{Host: h.Name, Status: st, ExitCode: -1, Detail: detail, Duration: time.Since(start)}
				}
			}
		}
		if err := executor.CheckTags(a.Tags); err != nil {
			failAll(executor.Failed, err.Error())
			return
		}
		tok, err := os.ReadFile(e.cfg.TokenFile)
		if err != nil {
			failAll(executor.Unreachable, "rundeck: read token file: "+err.Error())
			return
		}
		token := strings.TrimSpace(string(tok))
		timeout := e.cfg.Timeout
		if a.Timeout > 0 {
			timeout = a.Timeout
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		opts := map[string]string{}
		for k, v := range e.cfg.Options {
			opts[k] = executor.ExpandString(v, executor.Host{}, a)
		}
		names := make([]string, len(hosts))
		for i, h := range hosts {
			names[i] = h.Name
		}
		var ex execution
		body := map[string]any{"options": opts, "filter": "name: " + strings.Join(names, ",")}
		if err := e.do(rctx, token, http.MethodPost, "/job/"+url.PathEscape(e.cfg.Job)+"/run", body, &ex); err != nil {
			failAll(executor.Unreachable, "rundeck: run job: "+err.Error())
			return
		}
		execPath := "/execution/" + strconv.Itoa(ex.ID)
		abort := func() {
			actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.RequestTimeout)
			defer acancel()
			e.do(actx, token, http.MethodPost, execPath+"/abort", nil, nil)
		}
		tick := time.NewTicker(e.cfg.PollInterval)
		defer tick.Stop()
		for len(pending) > 0 {
			var st state
			err := e.do(rctx, token, http.MethodGet, execPath+"/state", nil, &st)
			if err == nil {
				for node, steps := range st.Nodes {
					if !pending[node] || len(steps) == 0 || !nodeDone(steps, st.Completed) {
						continue
					}
					delete(pending, node)
					out <- e.nodeResult(rctx, token, execPath, node, steps, time.Since(start))
				}
				if st.Completed {
					failAll(executor.Failed, fmt.Sprintf("not run by Rundeck (execution %d ended %s)", ex.ID, strings.ToLower(st.ExecutionState)))
					return
				}
			}
			select {
			case <-rctx.Done():
				abort()
				if ctx.Err() != nil {
					failAll(executor.Cancelled, fmt.Sprintf("cancelled; Rundeck execution %d aborted", ex.ID))
				} else {
					failAll(executor.TimedOut, fmt.Sprintf("no result within %s; Rundeck execution %d aborted", timeout, ex.ID))
				}
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// nodeDone: every step of the node has ended, or the execution has.
func nodeDone(steps []stepState, completed bool) bool {
	if completed {
		return true
	}
	for _, s := range steps {
		switch s.ExecutionState {
		case "SUCCEEDED", "FAILED", "ABORTED", "NODE_PARTIAL_SUCCEEDED", "NODE_MIXED":
		default:
			return false
		}
	}
	return true
}

var exitRe = regexp.MustCompile(`(?i)(?:exit (?:status|code)|result code was|result:)\s*:?\s*(\d+)`)

func (e *Executor) nodeResult(ctx context.Context, token, execPath, node string, steps []stepState, d time.Duration) executor.Result {
	res := executor.Result{Host: node, ExitCode: -1, Duration: d}
	var o output
	if err := e.do(ctx, token, http.MethodGet, execPath+"/output/node/"+url.PathEscape(node), nil, &o); err == nil {
		var b strings.Builder
		for _, en := range o.Entries {
			b.WriteString(en.Log)
			b.WriteString("\n")
		}
		res.Output = executor.Tail([]byte(b.String()), 4096)
	}
	failed := false
	for _, s := range steps {
		if s.ExecutionState != "SUCCEEDED" {
			failed = true
		}
	}
	if !failed {
		res.ExitCode = 0
		res.Status, res.Detail = executor.OK, "succeeded"
		if m := exitRe.FindStringSubmatch(res.Output); m != nil {
			res.ExitCode, _ = strconv.Atoi(m[1])
			res.Status, res.Detail = executor.Puppet(res.ExitCode)
		}
		return res
	}
	// A Puppet run that changed something exits 2, which Rundeck calls a
	// failure unless the job wraps it: read the code from the node's log.
	if m := exitRe.FindStringSubmatch(res.Output); m != nil {
		res.ExitCode, _ = strconv.Atoi(m[1])
		res.Status, res.Detail = executor.Puppet(res.ExitCode)
		return res
	}
	res.Status, res.Detail = executor.Failed, "step "+strings.ToLower(steps[len(steps)-1].ExecutionState)
	return res
}
