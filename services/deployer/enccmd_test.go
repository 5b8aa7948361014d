package deployer

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/jobs"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat"
	"github.com/switchboard-ops/switchboard/services/deployer/enc"
)

func TestEncSetCommitsPublishesAndRefusesChangesThatBreakTheENC(t *testing.T) {
	e := newEnv(t, nil)
	e.start(e.config())
	before := e.commits()

	p := e.run("enc set", map[string]string{"host": "web-0001", "sets": "ipv4=10.0.1.50,backends=www,api,parameters.ntp_server=ntp2"}, nil, true)
	wantOK(t, p, "Dry run: hosts/web-0001.yaml would become", "# rack 4, slot 12", "ipv4: 10.0.1.50", "backends: [www, api]")
	if e.commits() != before {
		t.Fatal("a dry run committed")
	}
	p = e.run("enc set", map[string]string{"host": "web-0001", "sets": "ipv4=10.0.1.50,backends=www,api,parameters.ntp_server=ntp2"}, nil, false)
	wantOK(t, p, "Committed", "enc set web-0001 ipv4=10.0.1.50 backends=www,api parameters.ntp_server=ntp2")
	h := e.inventory().Host("web-0001")
	if h.GetIpv4() != "10.0.1.50" || !slices.Equal(h.GetBackends(), []string{"www", "api"}) || h.GetParameters()["ntp_server"] != "ntp2" {
		t.Fatalf("published web-0001: %v", h)
	}
	ev := lastEvent(t, e)
	var d inventoryv1.Diff
	wire.Unmarshal([]byte(ev.GetFields()["diff"]), &d)
	if len(d.GetMoved()) != 1 || d.GetMoved()[0].GetHost() != "web-0001" || !slices.Equal(d.GetMoved()[0].GetToBackends(), []string{"www", "api"}) {
		t.Fatalf("diff: %v", &d)
	}

	committed := e.commits()
	for _, tc := range []struct{ sets, want string }{
		{"ipv4=10.0.1.2", "IP address 10.0.1.2 is also"},
		{"backends=nope", "backend nope does not exist in environment production"},
		{"role=db", "environment production has no role db"},
		{"colour=blue", `unknown key "colour"`},
	} {
		wantError(t, e.run("enc set", map[string]string{"host": "web-0001", "sets": tc.sets}, nil, false), tc.want)
	}
	wantError(t, e.run("enc set", map[string]string{"host": "nosuch", "sets": "role=web"}, nil, false), "nosuch is not in the inventory")
	if e.commits() != committed {
		t.Fatal("a refused change was committed")
	}

	p = e.run("enc log", map[string]string{"n": "2"}, nil, false)
	wantOK(t, p, "switchboard with Ana  enc set web-0001", "seed")
	p = e.run("enc diff", map[string]string{"rev": "HEAD"}, nil, false)
	wantOK(t, p, "-ipv4: 10.0.1.1", "+ipv4: 10.0.1.50")
	wantError(t, e.run("enc diff", map[string]string{"rev": "abcdef0"}, nil, false), "no commit abcdef0")
	wantError(t, e.run("enc diff", map[string]string{"rev": "main;rm"}, nil, false), "is not a revision")
	p = e.run("enc get", map[string]string{"what": "web-0001"}, nil, false)
	wantOK(t, p, "hosts/web-0001.yaml at", "Puppet gets:", "role::web", "frontend_version: 1.0.0")
	p = e.run("enc get", map[string]string{"what": "web@production"}, nil, false)
	wantOK(t, p, "pin: frontend 1.0.0", "2 active host(s)", "web-0002")
}

func TestAPersonsCommitIsPublishedByTheTimerAndABrokenOneIsReportedWhileTheLastGoodStays(t *testing.T) {
	e := newEnv(t, nil)
	e.start(e.config())
	dir := filepath.Join(t.TempDir(), "person")
	gitCLI(t, t.TempDir(), "clone", "-q", e.remote, dir)
	os.WriteFile(filepath.Join(dir, "hosts", "web-0009.yaml"), []byte("environment: production\nrole: web\nipv4: 10.0.1.9\nbackends: [www]\n"), 0o644)
	gitCLI(t, dir, "add", ".")
	gitCLI(t, dir, "commit", "-q", "-m", "add web-0009 by hand")
	gitCLI(t, dir, "push", "-q", "origin", "main")
	good := gitCLI(t, dir, "rev-parse", "HEAD")
	natstest.WaitFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if e.inventory().Host("web-0009") == nil {
			return os.ErrNotExist
		}
		return nil
	})

	os.WriteFile(filepath.Join(dir, "hosts", "web-0010.yaml"), []byte("environment: production\nrole: web\nipv4: 10.0.1.9\nbakends: [www]\n"), 0o644)
	gitCLI(t, dir, "add", ".")
	gitCLI(t, dir, "commit", "-q", "-m", "add web-0010 by hand, badly")
	gitCLI(t, dir, "push", "-q", "origin", "main")
	var report *chatv1.ChatPost
	natstest.WaitFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		for _, p := range e.posts("") {
			if strings.Contains(p.GetText(), "problem") {
				report = p
				return nil
			}
		}
		return os.ErrNotExist
	})
	for _, want := range []string{"Rob Person", "add web-0010 by hand, badly", "IP address 10.0.1.9 is also", `unknown key "bakends"`, good[:12]} {
		if !strings.Contains(report.GetText(), want) {
			t.Errorf("report does not say %q:\n%s", want, report.GetText())
		}
	}
	snap := e.inventory()
	if snap.Meta.GetRevision() != good || snap.Host("web-0010") != nil {
		t.Fatalf("published %s with web-0010=%v; want the last good %s", snap.Meta.GetRevision(), snap.Host("web-0010"), good)
	}
}

// fakeLB is a small lb service with the drain command a person would use
// (the spec of services/lb's "lb drain"). The deployer reaches it through
// the real chat service, as a person would.
type fakeLB struct {
	drained chan map[string]string
	// release, when set, holds every drain until it is closed.
	release chan struct{}
}

func startFakeLB(t *testing.T, e *env, fail bool) *fakeLB { return serveFakeLB(t, e, &fakeLB{}, fail) }

func serveFakeLB(t *testing.T, e *env, f *fakeLB, fail bool) *fakeLB {
	f.drained = make(chan map[string]string, 4)
	spec := &commandv1.CommandSpec{
		Name: "lb drain", Usage: "lb drain <hosts> [backend] [--wait] [--timeout=10m] [--dry-run] [-- reason]", Summary: "Drain.",
		Example: "lb drain web1 www --wait",
		Args: []*commandv1.ArgSpec{
			{Name: "hosts", Type: commandv1.ArgType_ARG_TYPE_HOST_LIST, Required: true},
			{Name: "backend", Type: commandv1.ArgType_ARG_TYPE_BACKEND},
		},
		Flags: []*commandv1.FlagSpec{
			{Name: "wait", Type: commandv1.ArgType_ARG_TYPE_BOOL},
			{Name: "timeout", Type: commandv1.ArgType_ARG_TYPE_DURATION, Default: "10m"},
		},
		SupportsDryRun: true, Mutating: true, Resumable: true, TextName: "reason",
	}
	srv, err := command.Serve(context.Background(), natstest.Connect(t, e.srv), []command.Command{{Spec: spec, Run: func(ctx context.Context, job *command.Job) error {
		got := map[string]string{"hosts": job.Arg("hosts"), "wait": job.Flag("wait"), "timeout": job.Flag("timeout"),
			"requester": job.Requester().GetId(), "thread": job.Request().GetConversation().GetThread(),
			"message": job.Request().GetMessageId(), "reason": job.Request().GetText()}
		f.drained <- got
		time.Sleep(200 * time.Millisecond) // waiting for sessions to end
		if f.release != nil {
			<-f.release
		}
		if fail {
			return command.UserErrorf("web-0001 still has 12 sessions after the timeout")
		}
		return job.Done(ctx, "drained "+job.Arg("hosts"))
	}}}, command.Options{Service: "lb", Lease: testLease})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	if e.chat != nil {
		e.waitChatKnows("lb drain")
	}
	return f
}

func TestProvisionTakesSparesAndRetireDrainsThroughTheLBFirst(t *testing.T) {
	e := newEnv(t, nil)
	e.start(e.config())
	before := e.commits()

	wantError(t, e.run("host provision", map[string]string{"role": "web", "env": "production"}, map[string]string{"count": "3"}, false),
		"the spare pool is too small: 2 spare host(s) (spare-0001, spare-0002), 3 asked for")
	wantError(t, e.run("host provision", map[string]string{"role": "db", "env": "production"}, nil, false), `no role "db"`)
	wantOK(t, e.run("host provision", map[string]string{"role": "web", "env": "staging"}, map[string]string{"count": "2"}, true), "would take spare-0001, spare-0002")
	if e.commits() != before {
		t.Fatal("refused or dry-run provisions committed")
	}
	wantOK(t, e.run("host provision", map[string]string{"role": "web", "env": "staging"}, map[string]string{"count": "1"}, false), "Provisioned spare-0001 as web@staging")
	h := e.inventory().Host("spare-0001")
	if h.GetState() != inventoryv1.HostState_HOST_STATE_ACTIVE || h.GetEnvironment() != "staging" || !slices.Equal(h.GetBackends(), []string{"www"}) {
		t.Fatalf("provisioned host: %v", h)
	}

	// No chat service: nothing is retired (the deployer never publishes
	// on sb.cmd.> itself).
	committed := e.commits()
	wantError(t, e.run("host retire", map[string]string{"hosts": "web-0001"}, nil, false), "the chat service did not answer", "nothing was changed")
	e.startChat(chat.DefaultRBAC())
	// No lb service: the chat does not know lb drain.
	wantError(t, e.run("host retire", map[string]string{"hosts": "web-0001"}, nil, false), "cannot drain web-0001", `don't know "lb"`, "nothing was changed")
	wantError(t, e.run("host retire", map[string]string{"hosts": "web-0001,nosuch"}, nil, false), "nosuch is not in the inventory")
	wantError(t, e.run("host retire", map[string]string{"hosts": "spare-0002"}, nil, false), "spare-0002 is in the spare pool already")
	if e.commits() != committed {
		t.Fatal("a refused retire committed")
	}

	lb := startFakeLB(t, e, false)
	wantOK(t, e.run("host retire", map[string]string{"hosts": "web-0001,web-0002"}, nil, true), "would run `lb drain web-0001,web-0002 --wait`")
	wantOK(t, e.run("host retire", map[string]string{"hosts": "web-0001,web-0002"}, nil, false), "Retired web-0001, web-0002 to the spare pool")
	got := <-lb.drained
	if got["hosts"] != "web-0001,web-0002" || got["wait"] != "true" || got["timeout"] != "15m0s" || got["requester"] != "console:ana" ||
		!strings.HasPrefix(got["thread"], "console/ops/") || !strings.HasSuffix(got["message"], "/lb-drain") ||
		!strings.HasPrefix(got["reason"], "host retire (job ") {
		t.Fatalf("lb drain request: %v", got)
	}
	h = e.inventory().Host("web-0001")
	if h.GetState() != inventoryv1.HostState_HOST_STATE_SPARE || h.GetRole() != "" || len(h.GetBackends()) != 0 {
		t.Fatalf("retired host: %v", h)
	}
	wantOK(t, e.run("host retire", map[string]string{"hosts": "web-0002"}, map[string]string{"decommission": "true"}, false), "decommissioned")
	if e.inventory().Host("web-0002").GetState() != inventoryv1.HostState_HOST_STATE_DECOMMISSIONED {
		t.Fatal("not decommissioned")
	}
}

func TestARetireWhoseDrainFailsCommitsNothing(t *testing.T) {
	e := newEnv(t, nil)
	e.start(e.config())
	e.startChat(chat.DefaultRBAC())
	startFakeLB(t, e, true)
	before := e.commits()
	wantError(t, e.run("host retire", map[string]string{"hosts": "api-0001"}, nil, false), "lb drain (job", "ended failed", "12 sessions", "not retired")
	if e.commits() != before {
		t.Fatal("a retire whose drain failed committed")
	}
}

func TestARetireIsRefusedWhenTheRequesterMayNotDrain(t *testing.T) {
	e := newEnv(t, nil)
	e.start(e.config())
	// Ana may retire hosts but not drain them: the chat refuses the drain
	// the deployer sends on her behalf.
	e.startChat(chat.RBACConfig{
		Roles:  map[string]chat.Role{"hosts": {Commands: []string{"host *"}}},
		Grants: []chat.Grant{{Users: []string{"console:ana"}, Roles: []string{"hosts"}}},
	})
	lb := startFakeLB(t, e, false)
	before := e.commits()
	wantError(t, e.run("host retire", map[string]string{"hosts": "web-0001"}, nil, false), "cannot drain web-0001", "Sorry", "nothing was changed")
	if e.commits() != before {
		t.Fatal("a retire whose drain was denied committed")
	}
	select {
	case got := <-lb.drained:
		t.Fatalf("the lb service ran a denied drain: %v", got)
	default:
	}
}

// A replica that stops while its retire waits for the drain: another one
// takes the job over, joins the same drain (the message id is stable) and
// commits once.
func TestARetireWhoseReplicaStopsDuringTheDrainIsFinishedByAnother(t *testing.T) {
	e := newEnv(t, nil)
	cfg := e.config()
	a, b := e.start(cfg), e.start(cfg)
	replicas := map[string]*Service{a.Instance(): a, b.Instance(): b}
	e.startChat(chat.DefaultRBAC())
	lb := serveFakeLB(t, e, &fakeLB{release: make(chan struct{})}, false)
	before := e.commits()

	id := e.send("host retire", map[string]string{"hosts": "web-0001"}, nil, false)
	<-lb.drained // the drain has started and is held
	ctx := natstest.Context(t, time.Minute)
	store, _ := jobs.Open(ctx, e.js)
	j, _, err := store.Get(ctx, wire.JobID(id))
	if err != nil {
		t.Fatal(err)
	}
	owner := replicas[j.GetOwner()]
	if owner == nil {
		t.Fatalf("job owned by unknown replica %s", j.GetOwner())
	}
	go func() { time.Sleep(500 * time.Millisecond); close(lb.release) }()
	owner.Stop(context.Background())

	p, _ := e.final(id, 90*time.Second)
	wantOK(t, p, "Retired web-0001 to the spare pool")
	j, _, _ = store.Get(ctx, wire.JobID(id))
	if j.GetAttempt() != 2 || replicas[j.GetOwner()] == owner {
		t.Fatalf("attempt %d by %s: want the other replica's second attempt", j.GetAttempt(), j.GetOwner())
	}
	select {
	case again := <-lb.drained:
		t.Fatalf("the take-over drained again: %v", again)
	default:
	}
	n0, _ := strconv.Atoi(strings.TrimSpace(before))
	n1, _ := strconv.Atoi(strings.TrimSpace(e.commits()))
	if n1-n0 != 1 {
		t.Fatalf("%d commits, want exactly 1", n1-n0)
	}
	if h := e.inventory().Host("web-0001"); h.GetState() != inventoryv1.HostState_HOST_STATE_SPARE {
		t.Fatalf("web-0001: %v", h)
	}
}

func TestEncSetWritesTypedParametersAndKeepsClassParameters(t *testing.T) {
	e := newEnv(t, map[string]string{
		enc.HostPath("web-0003"): "environment: production\nrole: web\nipv4: 10.0.1.3\nbackends: [www]\nclasses:\n  nginx: {port: 8080} # tuned\n  monitoring:\n",
	})
	e.start(e.config())
	file := func() string {
		return gitCLI(t, filepath.Dir(e.remote), "--git-dir", e.remote, "show", "main:"+enc.HostPath("web-0003"))
	}

	p := e.run("enc set", map[string]string{"host": "web-0003", "sets": `parameters.workers=16,parameters.debug=true,parameters.build="0012",parameters.motd="hello, world",classes=base,nginx,monitoring`}, nil, false)
	wantOK(t, p, "Committed", "Typed: workers is an integer, debug is a boolean")
	for _, line := range []string{"  workers: 16", "  debug: true", `  build: "0012"`, "  motd: hello, world", "  base:\n  nginx: {port: 8080} # tuned\n  monitoring:"} {
		if !strings.Contains(file(), line) {
			t.Errorf("hosts/web-0003.yaml lacks %q:\n%s", line, file())
		}
	}
	// What Puppet gets keeps the types: an Integer, a Boolean, a String.
	p = e.run("enc get", map[string]string{"what": "web-0003"}, nil, false)
	wantOK(t, p, "Puppet gets:", "    port: 8080", "  workers: 16", "  debug: true", `  build: "0012"`)

	committed := e.commits()
	wantError(t, e.run("enc set", map[string]string{"host": "web-0003", "sets": "classes=base,monitoring"}, nil, false),
		"would drop class parameters", "removes nginx (parameters: port)", "--drop-class-parameters", "nothing was changed")
	wantError(t, e.run("enc set", map[string]string{"host": "web-0003", "sets": `parameters.motd="unterminated`}, nil, false),
		"is not one quoted string")
	if e.commits() != committed {
		t.Fatal("a refused enc set committed")
	}
	drop := map[string]string{"drop-class-parameters": "true"}
	wantOK(t, e.run("enc set", map[string]string{"host": "web-0003", "sets": "classes=base,monitoring"}, drop, true),
		"Dry run", "Removed with their parameters: nginx (parameters: port).")
	wantOK(t, e.run("enc set", map[string]string{"host": "web-0003", "sets": "classes=base,monitoring"}, drop, false),
		"Committed", "Removed with their parameters: nginx (parameters: port).")
	if f := file(); strings.Contains(f, "nginx") || !strings.Contains(f, "classes:\n  base:\n  monitoring:\n") {
		t.Fatalf("hosts/web-0003.yaml after dropping nginx:\n%s", f)
	}
}

func TestParseSetsKeepsListsAndQuotedCommasTogether(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		want      []enc.Set
	}{
		{"a list continues into the words without =", "backends=www,api,role=web",
			[]enc.Set{{Key: "backends", Value: "www,api"}, {Key: "role", Value: "web"}}},
		{"a quoted value keeps its commas and equals signs", `parameters.opts="a=1,b=2",parameters.port=80`,
			[]enc.Set{{Key: "parameters.opts", Value: `"a=1,b=2"`}, {Key: "parameters.port", Value: "80"}}},
		{"single quotes too", `parameters.motd='hi, there',role=web`,
			[]enc.Set{{Key: "parameters.motd", Value: `'hi, there'`}, {Key: "role", Value: "web"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSets(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("parseSets(%s) (-want +got):\n%s", tc.raw, diff)
			}
		})
	}
}
