package incidents

// BuiltinTemplates are the hook templates switchboard ships. A source
// names one with "template:"; a template of the same name in
// incidents.hooks.templates replaces it.
var BuiltinTemplates = map[string]HookTemplate{
	// github_actions maps GitHub's workflow_run webhook (event
	// "workflow_run", action "completed") to build.<result>:
	// "Failed: foxdan's build #1674 — True/false fail (918e5a6)".
	// Runs that are requested or in progress are skipped.
	"github_actions": {
		Skip:          `{{if not .workflow_run}}true{{else if ne .action "completed"}}true{{end}}`,
		ID:            `gha-{{num .workflow_run.id}}-{{num (default 1 .workflow_run.run_attempt)}}`,
		Type:          `build.{{result .workflow_run.conclusion}}`,
		Severity:      `{{level .workflow_run.conclusion}}`,
		Title:         `{{outcome .workflow_run.conclusion}}: {{.workflow_run.actor.login}}'s build #{{num .workflow_run.run_number}} — {{default .workflow_run.name .workflow_run.display_title}} ({{short .workflow_run.head_sha}})`,
		Text:          `{{.workflow_run.name}} on {{.repository.full_name}}@{{.workflow_run.head_branch}}`,
		URL:           `{{.workflow_run.html_url}}`,
		CorrelationID: `{{.repository.full_name}}/{{.workflow_run.head_branch}}`,
		Fields: map[string]string{
			"repository": `{{.repository.full_name}}`,
			"branch":     `{{.workflow_run.head_branch}}`,
			"commit":     `{{.workflow_run.head_sha}}`,
			"workflow":   `{{.workflow_run.name}}`,
			"conclusion": `{{.workflow_run.conclusion}}`,
			"run":        `{{num .workflow_run.run_number}}`,
			"actor":      `{{.workflow_run.actor.login}}`,
		},
	},
	// circleci maps CircleCI's "workflow-completed" webhook to
	// build.<result>; other webhook types (job-completed) are skipped.
	"circleci": {
		Skip:          `{{if ne .type "workflow-completed"}}true{{end}}`,
		ID:            `{{.id}}`,
		Type:          `build.{{result .workflow.status}}`,
		Severity:      `{{level .workflow.status}}`,
		Title:         `{{outcome .workflow.status}}: {{.pipeline.vcs.commit.author.name}}'s build #{{num .pipeline.number}} — {{default .workflow.name .pipeline.vcs.commit.subject}} ({{short .pipeline.vcs.revision}})`,
		Text:          `{{.workflow.name}} on {{.project.slug}}@{{.pipeline.vcs.branch}}`,
		URL:           `{{.workflow.url}}`,
		CorrelationID: `{{.project.slug}}/{{.pipeline.vcs.branch}}`,
		Fields: map[string]string{
			"project":  `{{.project.slug}}`,
			"branch":   `{{.pipeline.vcs.branch}}`,
			"commit":   `{{.pipeline.vcs.revision}}`,
			"workflow": `{{.workflow.name}}`,
			"status":   `{{.workflow.status}}`,
			"pipeline": `{{num .pipeline.number}}`,
		},
	},
}
