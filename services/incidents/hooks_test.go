package incidents_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"

	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"

	"github.com/switchboard-ops/switchboard/services/incidents"
)

// workflowRun is GitHub's workflow_run webhook, trimmed to what templates
// read (the shape of docs.github.com's "workflow_run" payload).
func workflowRun(action, conclusion string) []byte {
	c := `null`
	if conclusion != "" {
		c = `"` + conclusion + `"`
	}
	return []byte(`{"action":"` + action + `","workflow_run":{"id":30433642,"name":"Build","display_title":"True/false fail",
"head_branch":"main","head_sha":"918e5a6c0a3a7c4d6bb9d4e5b3d0f5e1e2a3b4c5","run_number":1674,"run_attempt":1,
"status":"completed","conclusion":` + c + `,"html_url":"https://github.com/acme/carbonpickle/actions/runs/30433642",
"actor":{"login":"foxdan"}},"repository":{"full_name":"acme/carbonpickle"},"sender":{"login":"foxdan"}}`)
}

// circleWorkflow is CircleCI's workflow-completed webhook, trimmed.
const circleWorkflow = `{"type":"workflow-completed","id":"3888f21b-eaa7-38e3-8f3d-75a63bba8895","happened_at":"2026-03-14T09:26:53.000Z",
"webhook":{"id":"cf8c4fdd-0587-4da1-b4ca-4846e9640af9","name":"switchboard"},
"workflow":{"id":"fda08377-fe7e-46b1-8992-3a7aaecac9c3","name":"build-test-deploy","status":"failed","url":"https://app.circleci.com/pipelines/github/acme/carbonpickle/1674/workflows/fda08377"},
"pipeline":{"id":"1285fe1d-d3a6-44fc-8886-8979558254c4","number":1674,"vcs":{"branch":"main","revision":"918e5a6c0a3a7c4d6bb9d4e5b3d0f5e1e2a3b4c5",
"commit":{"subject":"True/false fail","author":{"name":"foxdan","email":"foxdan@example.com"}}}},
"project":{"id":"84996744-a854-4f5e-aea3-04e2851dc1d2","name":"carbonpickle","slug":"github/acme/carbonpickle"}}`

func githubSig(body []byte, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestGitHubActionsRunBecomesABuildEvent(t *testing.T) {
	e := newEnv(t, nil)
	body := workflowRun("completed", "failure")
	status, msg := e.post("/hooks/github", body, map[string]string{"X-GitHub-Event": "workflow_run", "X-Hub-Signature-256": githubSig(body, "gh-hook-secret")})
	if status != http.StatusAccepted {
		t.Fatalf("status %d %s", status, msg)
	}
	got := e.events("sb.event.ci.build.failed")
	if len(got) != 1 {
		t.Fatalf("%d events, want 1", len(got))
	}
	ev := got[0]
	if want := "Failed: foxdan's build #1674 — True/false fail (918e5a6)"; ev.GetTitle() != want {
		t.Errorf("title %q, want %q", ev.GetTitle(), want)
	}
	if ev.GetId() != "gha-30433642-1" || ev.GetSeverity() != eventv1.Severity_SEVERITY_ERROR || ev.GetCorrelationId() != "acme/carbonpickle/main" ||
		ev.GetFields()["commit"] != "918e5a6c0a3a7c4d6bb9d4e5b3d0f5e1e2a3b4c5" || ev.GetUrl() == "" {
		t.Errorf("event = %v", ev)
	}
	// GitHub's "Redeliver" sends the same body again.
	if status, _ := e.post("/hooks/github", body, map[string]string{"X-Hub-Signature-256": githubSig(body, "gh-hook-secret")}); status != http.StatusOK {
		t.Errorf("redelivery status %d, want 200", status)
	}
	if n := len(e.events("sb.event.ci.>")); n != 1 {
		t.Errorf("%d events after a redelivery, want 1", n)
	}
}

func TestCircleCIWorkflowBecomesABuildEvent(t *testing.T) {
	e := newEnv(t, nil)
	status, msg := e.post("/hooks/circleci", []byte(circleWorkflow), map[string]string{"Authorization": "Bearer circle-token-123"})
	if status != http.StatusAccepted {
		t.Fatalf("status %d %s", status, msg)
	}
	got := e.events("sb.event.ci.build.failed")
	if len(got) != 1 {
		t.Fatalf("%d events, want 1", len(got))
	}
	if want := "Failed: foxdan's build #1674 — True/false fail (918e5a6)"; got[0].GetTitle() != want {
		t.Errorf("title %q, want %q", got[0].GetTitle(), want)
	}
}

func TestHooksRefuseWhatTheyShould(t *testing.T) {
	e := newEnv(t, func(c *incidents.Config) { c.HTTP.MaxBody = 2048 })
	good := workflowRun("completed", "success")
	big := []byte(`{"pad":"` + strings.Repeat("x", 3000) + `"}`)
	cases := []struct {
		name   string
		path   string
		body   []byte
		header map[string]string
		want   int
	}{
		{"a source nobody configured", "/hooks/jenkins", good, nil, http.StatusNotFound},
		{"a GitHub delivery without a signature", "/hooks/github", good, nil, http.StatusUnauthorized},
		{"a GitHub delivery signed with another secret", "/hooks/github", good, map[string]string{"X-Hub-Signature-256": githubSig(good, "guess")}, http.StatusUnauthorized},
		{"a bearer source without a token", "/hooks/circleci", []byte(circleWorkflow), nil, http.StatusUnauthorized},
		{"a bearer source with a wrong token", "/hooks/circleci", []byte(circleWorkflow), map[string]string{"Authorization": "Bearer circle-token-12"}, http.StatusUnauthorized},
		{"a body that is not JSON", "/hooks/circleci", []byte("<xml/>"), map[string]string{"Authorization": "Bearer circle-token-123"}, http.StatusBadRequest},
		{"a body over the limit", "/hooks/circleci", big, map[string]string{"Authorization": "Bearer circle-token-123"}, http.StatusRequestEntityTooLarge},
		{"a run still in progress is skipped", "/hooks/github", workflowRun("in_progress", ""), map[string]string{"X-Hub-Signature-256": githubSig(workflowRun("in_progress", ""), "gh-hook-secret")}, http.StatusAccepted},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if status, msg := e.post(c.path, c.body, c.header); status != c.want {
				t.Errorf("status %d (%s), want %d", status, msg, c.want)
			}
		})
	}
	if n := len(e.events("sb.event.>")); n != 0 {
		t.Fatalf("%d events published, want none", n)
	}
}

func TestACustomTemplateMapsAnyJSON(t *testing.T) {
	e := newEnv(t, func(c *incidents.Config) {
		c.Hooks.Templates = map[string]incidents.HookTemplate{
			"backup": {
				ID:            `{{.job}}-{{num .run}}`,
				Type:          `backup.{{if .ok}}succeeded{{else}}failed{{end}}`,
				Severity:      `{{if .ok}}info{{else}}error{{end}}`,
				Title:         `Backup {{.job}} {{if .ok}}done{{else}}FAILED{{end}} on {{.host}}`,
				CorrelationID: `{{.job}}`,
				Fields:        map[string]string{"host": `{{.host}}`, "missing": `{{.nothing.here}}`},
			},
		}
		c.Hooks.Sources["backups"] = incidents.HookSource{Auth: "bearer", Token: "b4ckup", Template: "backup"}
	})
	status, msg := e.post("/hooks/backups", []byte(`{"job":"pg-nightly","run":90210,"ok":false,"host":"db2"}`), map[string]string{"Authorization": "Bearer b4ckup"})
	if status != http.StatusAccepted {
		t.Fatalf("status %d %s", status, msg)
	}
	got := e.events("sb.event.backups.backup.failed")
	if len(got) != 1 {
		t.Fatalf("%d events, want 1", len(got))
	}
	ev := got[0]
	if ev.GetTitle() != "Backup pg-nightly FAILED on db2" || ev.GetId() != "pg-nightly-90210" || ev.GetFields()["host"] != "db2" {
		t.Errorf("event = %v", ev)
	}
	if _, ok := ev.GetFields()["missing"]; ok {
		t.Errorf("a field whose template found nothing is set: %v", ev.GetFields())
	}
}
