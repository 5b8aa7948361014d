package deployer

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/jobs"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat"
)

func TestDeployPinsTheVersionThenRunsPuppetInBatches(t *testing.T) {
	e := newEnv(t, webHosts(5)) // web-0001..web-0007
	e.start(e.config())
	before := e.commits()

	id := e.send("deploy", map[string]string{"service": "frontend", "target": "web@production"}, map[string]string{"version": "1.1.0", "batch": "3"}, false)
	p, posts := e.final(id, 60*time.Second)
	wantOK(t, p, "Deployed frontend 1.1.0 to web@production: 7 host(s) ok in 3 batch(es)")
	var progress []string
	for _, q := range posts {
		progress = append(progress, q.GetText())
	}
	all := strings.Join(progress, "\n")
	for _, want := range []string{"Pinned frontend → web → 1.1.0 (was 1.0.0)", "Batch 1 of 3: 3 ok", "Batch 3 of 3: 1 ok"} {
		if !strings.Contains(all, want) {
			t.Errorf("thread does not say %q:\n%s", want, all)
		}
	}
	runs := e.runs()
	slices.Sort(runs)
	if want := []string{"web-0001", "web-0002", "web-0003", "web-0004", "web-0005", "web-0006", "web-0007"}; !slices.Equal(runs, want) {
		t.Fatalf("puppet ran on %v, want each web host once: %v", runs, want)
	}

	// The pin is one commit by the bot, with Ana as co-author and the command id.
	dir := filepath.Dir(e.remote)
	if n := e.commits(); n == before {
		t.Fatal("no commit")
	}
	msg := gitCLI(t, dir, "--git-dir", e.remote, "log", "-1", "--format=%an|%s|%(trailers:key=Co-authored-by,valueonly)", "main")
	if msg != "switchboard|deploy frontend web@production 1.1.0|Ana <ana@example.com>" {
		t.Fatalf("commit: %q", msg)
	}
	if body := gitCLI(t, dir, "--git-dir", e.remote, "log", "-1", "--format=%b", "main"); !strings.Contains(body, "Command-Id: "+id) {
		t.Fatalf("commit body lacks the command id:\n%s", body)
	}
	env := gitCLI(t, dir, "--git-dir", e.remote, "show", "main:environments/production.yaml")
	if !strings.Contains(env, "web: 1.1.0") || !strings.Contains(env, "# service → role → version") {
		t.Fatalf("environments/production.yaml:\n%s", env)
	}

	// Everyone else sees it in the inventory (published in the background
	// while the batches run), and an event says what changed.
	head := gitCLI(t, dir, "--git-dir", e.remote, "rev-parse", "main")
	natstest.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if r := e.inventory().Meta.GetRevision(); r != head {
			return fmt.Errorf("published %s, want %s", r, head)
		}
		return nil
	})
	snap := e.inventory()
	if snap.Meta.GetPins()["production/frontend/web"] != "1.1.0" || snap.Host("web-0001").GetParameters()["frontend_version"] != "1.1.0" {
		t.Fatalf("published inventory: pins %v, web-0001 %v", snap.Meta.GetPins(), snap.Host("web-0001"))
	}
	ev := lastEvent(t, e)
	var d inventoryv1.Diff
	if err := wire.Unmarshal([]byte(ev.GetFields()["diff"]), &d); err != nil {
		t.Fatal(err)
	}
	if d.GetToRevision() != snap.Meta.GetRevision() || !slices.Contains(d.GetChanged(), "web-0001") {
		t.Fatalf("event diff: %v", &d)
	}

	// The same version again: no commit, said so.
	before = e.commits()
	p = e.run("deploy", map[string]string{"service": "frontend", "target": "web@production"}, map[string]string{"version": "1.1.0", "batch": "10"}, false)
	wantOK(t, p, "7 host(s) ok in 1 batch(es)")
	if e.commits() != before {
		t.Fatal("deploying the pinned version committed")
	}
}

func lastEvent(t *testing.T, e *env) *eventv1.Event {
	t.Helper()
	ctx := natstest.Context(t, 5*time.Second)
	st, err := e.js.Stream(ctx, wire.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, wire.SubjectInventoryChanged)
	if err != nil {
		t.Fatal(err)
	}
	var ev eventv1.Event
	if err := wire.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	return &ev
}

func TestDeployAnswersBadInputClearlyAndCommitsNothing(t *testing.T) {
	e := newEnv(t, nil)
	e.start(e.config())
	before := e.commits()
	for _, tc := range []struct {
		name, svc, target, version, want string
	}{
		{"an unknown environment", "frontend", "web@moon", "1.0.1", `unknown environment "moon"`},
		{"an unknown service", "nosuch", "web@production", "1.0.1", `unknown service "nosuch" in production`},
		{"a role the service does not run on", "frontend", "api@production", "1.0.1", "frontend does not run on role api in production (it runs on: web)"},
		{"an unknown role", "frontend", "db@production", "1.0.1", `unknown role "db" in production`},
		{"a version that fails the pattern", "frontend", "web@production", "latest", `version "latest" does not match the configured pattern`},
		{"no version", "frontend", "web@production", "", "--version is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flags := map[string]string{}
			if tc.version != "" {
				flags["version"] = tc.version
			}
			wantError(t, e.run("deploy", map[string]string{"service": tc.svc, "target": tc.target}, flags, false), tc.want)
		})
	}
	if e.commits() != before || len(e.runs()) != 0 {
		t.Fatalf("bad input changed something: %s commits (was %s), runs %v", e.commits(), before, e.runs())
	}
	// A dry run says what would happen and does nothing.
	p := e.run("deploy", map[string]string{"service": "frontend", "target": "web@production"}, map[string]string{"version": "2.0.0", "batch": "1"}, true)
	wantOK(t, p, "Dry run: would pin frontend → web → 2.0.0", "2 batch(es) of 1", "batch 2: web-0002")
	if e.commits() != before || len(e.runs()) != 0 {
		t.Fatal("a dry run changed something")
	}
}

func TestDeployStopsWhenFailuresPassTheLimitAndStatusSaysWhere(t *testing.T) {
	hosts := webHosts(2) // web-0003, web-0004
	hosts["hosts/web-bad1.yaml"] = "environment: production\nrole: web\nipv4: 10.0.1.91\n"
	hosts["hosts/web-bad2.yaml"] = "environment: production\nrole: web\nipv4: 10.0.1.92\n"
	hosts["hosts/web-zzz1.yaml"] = "environment: production\nrole: web\nipv4: 10.0.1.93\n"
	e := newEnv(t, hosts)
	e.start(e.config())
	id := e.send("deploy", map[string]string{"service": "frontend", "target": "web@production"}, map[string]string{"version": "1.2.0", "batch": "2", "max-failures": "1"}, false)
	p, _ := e.final(id, 60*time.Second)
	// Batches: [0001 0002] [0003 0004] [bad1 bad2] [zzz1]: two failures > 1 in batch 3.
	wantError(t, p, "Stopped after batch 3 of 4: 2 host(s) failed, more than --max-failures=1", "web-bad1 failed", "1 not run")
	if slices.Contains(e.runs(), "web-zzz1") {
		t.Fatal("the rollout went on after the failure limit")
	}
	st := e.run("deploy status", map[string]string{"job": wire.JobID(id)}, nil, false)
	wantOK(t, st, "failed — batch 3 of 4 done", "web-bad2: failed (failures)")
	wantError(t, e.run("deploy status", map[string]string{"job": "0123456789ab"}, nil, false), "no deploy with job id 0123456789ab")
}

func TestAReplicaStoppedMidRolloutIsResumedAtTheNextBatchWithoutRerunningFinishedOnes(t *testing.T) {
	e := newEnv(t, webHosts(8)) // 10 web hosts
	e.sleep = "0.4"
	cfg := e.config()
	a, b := e.start(cfg), e.start(cfg)
	replicas := map[string]*Service{a.Instance(): a, b.Instance(): b}

	id := e.send("deploy", map[string]string{"service": "frontend", "target": "web@production"}, map[string]string{"version": "1.3.0", "batch": "2"}, false)
	ctx := natstest.Context(t, time.Minute)
	// Wait until the first batch is recorded, then stop the replica running it.
	natstest.WaitFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		r, err := a.loadRollout(ctx, wire.JobID(id))
		if err != nil || r == nil || r.BatchesDone < 1 {
			return fmt.Errorf("no batch done yet")
		}
		return nil
	})
	store, _ := jobs.Open(ctx, e.js)
	j, _, err := store.Get(ctx, wire.JobID(id))
	if err != nil {
		t.Fatal(err)
	}
	owner := replicas[j.GetOwner()]
	if owner == nil {
		t.Fatalf("job owned by unknown replica %s", j.GetOwner())
	}
	owner.Stop(context.Background())
	r, _ := a.loadRollout(ctx, wire.JobID(id))
	finished := r.BatchesDone
	if finished >= r.batches() {
		t.Fatalf("the rollout finished before the replica stopped (%d batches); make the runs slower", finished)
	}
	var done []string
	for i := 0; i < finished; i++ {
		done = append(done, hostNames(r.batchHosts(i))...)
	}

	p, posts := e.final(id, 90*time.Second)
	wantOK(t, p, "10 host(s) ok in 5 batch(es)")
	j, _, _ = store.Get(ctx, wire.JobID(id))
	if j.GetAttempt() != 2 || replicas[j.GetOwner()] == owner {
		t.Fatalf("attempt %d by %s: want the other replica's second attempt", j.GetAttempt(), j.GetOwner())
	}
	resumed := false
	for _, q := range posts {
		if strings.Contains(q.GetText(), fmt.Sprintf("at batch %d of 5", finished+1)) && strings.Contains(q.GetText(), "Resuming") {
			resumed = true
		}
	}
	if !resumed {
		t.Fatalf("no post says the rollout resumed at batch %d", finished+1)
	}
	count := map[string]int{}
	for _, h := range e.runs() {
		count[h]++
	}
	for _, h := range done {
		if count[h] != 1 {
			t.Errorf("%s was in a finished batch and ran %d times", h, count[h])
		}
	}
	for i := 1; i <= 10; i++ {
		if h := fmt.Sprintf("web-%04d", i); count[h] == 0 {
			t.Errorf("%s never ran", h)
		}
	}
}

// Help shows the batch size a deploy without --batch uses: the configured
// one, not a number written in the spec.
func TestDeployHelpShowsTheConfiguredBatchSize(t *testing.T) {
	e := newEnv(t, webHosts(5))
	cfg := e.config()
	cfg.Batch = 4
	e.start(cfg)
	e.startChat(chat.DefaultRBAC())
	e.waitChatKnows("deploy")

	thread := fmt.Sprintf("help-deploy-%d", time.Now().UnixNano())
	r := e.chat.Handle(natstest.Context(t, 10*time.Second), &chatv1.ChatMessage{Id: thread, Text: "help deploy",
		Conversation: &chatv1.Conversation{Adapter: "console", Channel: "ops", Thread: thread},
		Author:       &chatv1.Identity{Id: "console:ana", Name: "Ana"}})
	if r.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ANSWERED {
		t.Fatalf("help deploy: %s %s", r.GetStatus(), r.GetMessage())
	}
	help, _ := natstest.WaitPost(t, e.js, wire.ChatPostSubject("console", "ops"), thread, 10*time.Second, 50*time.Millisecond,
		func(p *chatv1.ChatPost) bool { return strings.Contains(p.GetText(), "usage:") })
	for _, want := range []string{"[--batch=4]", "hosts per batch; without it, the configured deployer.batch (default 4)"} {
		if !strings.Contains(help.GetText(), want) {
			t.Errorf("help deploy does not say %q:\n%s", want, help.GetText())
		}
	}
	for _, stale := range []string{"--batch=10", "(default 10)"} {
		if strings.Contains(help.GetText(), stale) {
			t.Errorf("help deploy still says %q:\n%s", stale, help.GetText())
		}
	}

	// And a deploy without --batch runs batches of that size.
	p := e.run("deploy", map[string]string{"service": "frontend", "target": "web@production"}, map[string]string{"version": "1.1.0"}, true)
	wantOK(t, p, "7 host(s) in 2 batch(es) of 4")
}
