package deployer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/config"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/deployer/enc"
)

func TestTheEmbeddedDefaultCreatesALocalENCAndPublishesIt(t *testing.T) {
	e := newEnv(t, nil)
	cfg := DefaultConfig()
	dataDir := t.TempDir()
	s, err := New(natstest.Context(t, time.Minute), cfg, Deps{NC: e.nc, DataDir: dataDir, Lease: testLease})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(natstest.Context(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	local := filepath.Join(dataDir, "deployer", "enc.git")
	if got := gitCLI(t, dataDir, "--git-dir", local, "show", "main:hosts/web-0001.yaml"); !strings.Contains(got, "# rack 4, slot 12") {
		t.Fatalf("local ENC: %q", got)
	}
	snap := e.inventory()
	if snap.Host("spare-0001") == nil || snap.Meta.GetRevision() != gitCLI(t, dataDir, "--git-dir", local, "rev-parse", "main") {
		t.Fatalf("published: %v", snap.Meta)
	}
	// Puppet's external_nodes script runs enc.Classify on a checkout.
	co := filepath.Join(t.TempDir(), "checkout")
	gitCLI(t, dataDir, "clone", "-q", local, co)
	out, err := enc.Classify(enc.DirSource(co), "web-0001.example.com")
	if err != nil || !strings.Contains(string(out), "environment: production") || !strings.Contains(string(out), "frontend_version: 1.0.0") {
		t.Fatalf("classify: %v\n%s", err, out)
	}
}

func TestTheREADMEConfigurationExampleLoadsAndSetsEveryKey(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	_, block, ok2 := strings.Cut(section, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md has no yaml block under ## Configuration")
	}
	path := filepath.Join(t.TempDir(), "switchboard.yaml")
	if err := os.WriteFile(path, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	// Loaded strictly, as cmd/switchboard loads its file: a key the
	// Config does not have is an error.
	got := struct {
		Deployer Config `yaml:"deployer"`
	}{Deployer: DefaultConfig()}
	if err := config.Load(path, nil, &got); err != nil {
		t.Fatalf("the README's example: %v", err)
	}
	if err := got.Deployer.Validate(); err != nil {
		t.Fatalf("the README's example: %v", err)
	}
	// Every key of the Config is in the example, at its depth.
	var missing []string
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Duration(0)) {
				walk(fv, path+name+".")
				continue
			}
			if !strings.Contains(block, "\n"+strings.Repeat(" ", 2*(strings.Count(path, ".")+1))+name+":") {
				missing = append(missing, path+name)
			}
		}
	}
	walk(reflect.ValueOf(got.Deployer), "")
	if len(missing) > 0 {
		t.Fatalf("the README's example lacks %v", missing)
	}
}

func TestConfigValidateNamesTheWrongKey(t *testing.T) {
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.Executor = "mcollective" }, `deployer.executor: "mcollective" is not exec, ssh or rundeck`},
		{func(c *Config) { c.Executor = "ssh" }, "deployer.ssh: user, key_file and known_hosts are required"},
		{func(c *Config) { c.Executor = "rundeck" }, "deployer.rundeck: url, job and token_file are required"},
		{func(c *Config) { c.VersionPattern = "(" }, "deployer.version_pattern"},
		{func(c *Config) { c.Batch = 0 }, "deployer.batch"},
		{func(c *Config) { c.ENC.PollInterval = 0 }, "deployer.enc.poll_interval"},
	} {
		c := DefaultConfig()
		tc.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want %q", err, tc.want)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("the default config: %v", err)
	}
}

func TestCancelStopsTheRolloutAfterTheRunningBatch(t *testing.T) {
	e := newEnv(t, webHosts(4)) // 6 web hosts
	e.sleep = "0.5"
	e.start(e.config())
	id := e.send("deploy", map[string]string{"service": "frontend", "target": "web@production"}, map[string]string{"version": "1.4.0", "batch": "2"}, false)
	// Cancel while batch 1 runs, as "cancel <job>" does.
	natstest.WaitFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if len(e.runs()) == 0 {
			return os.ErrNotExist
		}
		return nil
	})
	if err := e.nc.Publish(wire.SubjectJobCancelPrefix+"."+wire.JobID(id), nil); err != nil {
		t.Fatal(err)
	}
	p, posts := e.final(id, 30*time.Second)
	if p.GetKind() != chatv1.Kind_KIND_ERROR || !strings.Contains(p.GetText(), "Cancelled") {
		t.Fatalf("final: %s %q", p.GetKind(), p.GetText())
	}
	var texts []string
	for _, q := range posts {
		texts = append(texts, q.GetText())
	}
	all := strings.Join(texts, "\n")
	if !strings.Contains(all, "Batch 1 of 3: 2 ok") || !strings.Contains(all, "Stopped on request after batch 1 of 3") {
		t.Fatalf("thread:\n%s", all)
	}
	if n := len(e.runs()); n != 2 {
		t.Fatalf("%d hosts ran, want the 2 of the running batch: %v", n, e.runs())
	}
	st := e.run("deploy status", map[string]string{"job": wire.JobID(id)}, nil, false)
	wantOK(t, st, fmt.Sprintf("(job %s): cancelled", wire.JobID(id)))
}
