package rundeck_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/deployer/executor"
	"github.com/switchboard-ops/switchboard/services/deployer/executor/executortest"
	"github.com/switchboard-ops/switchboard/services/deployer/executor/rundeck"
)

const jobID = "3e0cf6a1-1c48-4b9e-9d3c-5f8a0e3b7c11"

func newExec(t *testing.T, url, token, job string) *rundeck.Executor {
	t.Helper()
	tf := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tf, []byte(token+"\n"), 0o600)
	ex, err := rundeck.New(rundeck.Config{URL: url, TokenFile: tf, Job: job, PollInterval: 50 * time.Millisecond, RequestTimeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func TestConformance(t *testing.T) {
	executortest.Run(t, func(t *testing.T) executor.Executor {
		_, srv := newFakeRundeck(t, "s3cret", jobID)
		return newExec(t, srv.URL, "s3cret", jobID)
	})
}

func run(ex executor.Executor, hosts []string, a executor.Action) map[string]executor.Result {
	var hs []executor.Host
	for _, h := range hosts {
		hs = append(hs, executor.Host{Name: h})
	}
	out := map[string]executor.Result{}
	for r := range ex.Run(context.Background(), hs, a) {
		out[r.Host] = r
	}
	return out
}

func TestTheJobRunsOnceWithOptionsAndANodeFilter(t *testing.T) {
	f, srv := newFakeRundeck(t, "s3cret", jobID)
	ex := newExec(t, srv.URL, "s3cret", jobID)
	got := run(ex, []string{"web-1", "web-2"}, executor.Action{Tags: []string{"nginx"}, Service: "frontend", Version: "1.2.3", Timeout: 10 * time.Second})
	if len(got) != 2 || got["web-1"].Status != executor.OK {
		t.Fatalf("results: %v", got)
	}
	if len(f.runs) != 1 {
		t.Fatalf("%d executions, want 1 for the whole batch", len(f.runs))
	}
	r := f.runs[0]
	if r.Filter != "name: web-1,web-2" || r.Options["tags"] != "nginx" || r.Options["version"] != "1.2.3" || r.Options["service"] != "frontend" {
		t.Fatalf("run request: %+v", r)
	}
}

func TestRundeckErrorsBecomeResultsThatSayWhy(t *testing.T) {
	_, srv := newFakeRundeck(t, "s3cret", jobID)
	for name, tc := range map[string]struct {
		token, job, want string
	}{
		"a wrong token":  {"wrong", jobID, "HTTP 403 api.error.item.unauthorized"},
		"an unknown job": {"s3cret", "no-such-job", "HTTP 404 api.error.item.doesnotexist: Job ID does not exist"},
	} {
		t.Run(name, func(t *testing.T) {
			got := run(newExec(t, srv.URL, tc.token, tc.job), []string{"web-1"}, executor.Action{Timeout: 5 * time.Second})
			r := got["web-1"]
			if r.Status != executor.Unreachable || !strings.Contains(r.Detail, tc.want) {
				t.Fatalf("got %s %q, want unreachable with %q", r.Status, r.Detail, tc.want)
			}
			if strings.Contains(r.Detail, "s3cret") {
				t.Fatal("the token leaked into a result")
			}
		})
	}
}

func TestAnUnreachableRundeckIsReported(t *testing.T) {
	got := run(newExec(t, "http://127.0.0.1:1", "t", jobID), []string{"web-1"}, executor.Action{Timeout: 5 * time.Second})
	if got["web-1"].Status != executor.Unreachable {
		t.Fatalf("got %+v", got["web-1"])
	}
}
