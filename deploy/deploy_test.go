package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	dfparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	digest "github.com/opencontainers/go-digest"
	"gopkg.in/yaml.v3"
)

// repoRoot is the repository root: the tests run in deploy/.
const repoRoot = ".."

// realServices are the services `switchboard serve` accepts, read from the
// `services` variable of cmd/switchboard/serve.go so the deployment files
// follow the binary rather than a copy of its list.
func realServices(t *testing.T) []string {
	t.Helper()
	path := filepath.Join(repoRoot, "cmd", "switchboard", "serve.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "services" || len(vs.Values) != 1 {
			return true
		}
		lit, ok := vs.Values[0].(*ast.CompositeLit)
		if !ok {
			return true
		}
		for _, e := range lit.Elts {
			if b, ok := e.(*ast.BasicLit); ok && b.Kind == token.STRING {
				s, err := strconv.Unquote(b.Value)
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, s)
			}
		}
		return false
	})
	if len(names) == 0 {
		t.Fatalf("%s: no `services` list found; this test reads the services from it", path)
	}
	return names
}

// serveNames returns the service names of a `serve` command line (the
// arguments after the subcommand that are neither flags nor flag values).
func serveNames(args []string) []string {
	var names []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if !strings.Contains(a, "=") {
				i++ // --nats URL, --creds FILE, --config FILE
			}
			continue
		}
		names = append(names, a)
	}
	return names
}

// flagValue returns the value of --name in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// ---------------------------------------------------------------------------
// Container image

// fakeImages answers the linter's image look-ups without a registry: every
// base image is a plain linux/amd64 image with the usual PATH.
type fakeImages struct{}

func (fakeImages) ResolveImageConfig(ctx context.Context, ref string, opt sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}`)
	return ref, digest.FromBytes(cfg), cfg, nil
}

// readDockerfile reads and parses container/Dockerfile, returning its
// path, its text and its syntax tree.
func readDockerfile(t *testing.T) (string, []byte, *dfparser.Result) {
	t.Helper()
	path := filepath.Join("container", "Dockerfile")
	dt, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := dfparser.Parse(bytes.NewReader(dt))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return path, dt, res
}

func TestDockerfile(t *testing.T) {
	// The parser and the instruction parser with buildkit's linter: syntax
	// errors, empty continuation lines and the rules checked while parsing.
	path, dt, res := readDockerfile(t)
	for _, w := range res.Warnings {
		t.Errorf("%s:%d: %s", path, w.Location.Start.Line, w.Short)
	}
	var warnings []string
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []dfparser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		warnings = append(warnings, fmt.Sprintf("%s:%d: %s: %s (%s)", path, line, rule, msg, url))
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}

	// The whole rule set, as `docker build --check` runs it (undefined
	// variables, casing, JSON arguments…), with the base images answered
	// locally.
	sm := llb.NewSourceMap(nil, path, "Dockerfile", dt)
	sm.Definition = &llb.Definition{} // the lint results want one; there is no build to describe
	results, err := dockerfile2llb.DockerfileLint(context.Background(), dt, dockerfile2llb.ConvertOpt{
		MetaResolver: fakeImages{},
		SourceMap:    sm,
	})
	if err != nil {
		t.Fatal(err)
	}
	if results.Error != nil {
		t.Errorf("%s: %s", path, results.Error.Message)
	}
	for _, w := range results.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		warnings = append(warnings, fmt.Sprintf("%s:%d: %s: %s (%s)", path, line, w.RuleName, w.Detail, w.URL))
	}
	slices.Sort(warnings)
	for _, w := range slices.Compact(warnings) {
		t.Error(w)
	}

	// What the image must be: a static build of ./cmd/switchboard on a
	// distroless nonroot base, the subcommand choosing the service.
	if len(stages) < 2 {
		t.Fatalf("%s: %d stages, want a build stage and the final image", path, len(stages))
	}
	if got := stages[0].BaseName; !strings.HasPrefix(got, "golang:") {
		t.Errorf("%s: build stage FROM %s, want golang", path, got)
	}
	final := stages[len(stages)-1]
	if final.BaseName != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("%s: final stage FROM %s, want gcr.io/distroless/static-debian12:nonroot", path, final.BaseName)
	}
	var entry []string
	var build string
	for _, st := range stages {
		for _, c := range st.Commands {
			switch c := c.(type) {
			case *instructions.EntrypointCommand:
				entry = c.CmdLine
			case *instructions.RunCommand:
				if cmd := strings.Join(c.CmdLine, " "); strings.Contains(cmd, "go build") {
					build = cmd
				}
			}
		}
	}
	if !slices.Equal(entry, []string{"/switchboard"}) {
		t.Errorf(`%s: ENTRYPOINT %q, want ["/switchboard"]`, path, entry)
	}
	for _, want := range []string{"-trimpath", "-s -w", "-X github.com/switchboard-ops/switchboard/kit/version.stamped="} {
		if !strings.Contains(build, want) {
			t.Errorf("%s: go build lacks %s: %s", path, want, build)
		}
	}
	if !strings.Contains(string(dt), "CGO_ENABLED=0") {
		t.Errorf("%s: the build must set CGO_ENABLED=0 (a static binary for distroless/static)", path)
	}

	// With an engine, its own check too (not here: no daemon in CI's sandbox).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if exec.CommandContext(ctx, "docker", "info").Run() != nil {
		t.Log("no Docker engine reachable (`docker info` failed): `docker build --check` not run; the buildkit parser and linter above are the check")
		return
	}
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "build", "--check", "-f", "deploy/container/Dockerfile", ".")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker build --check: %v\n%s", err, out)
	}
}

// ---------------------------------------------------------------------------
// systemd

func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is missing and CI is set: install systemd so the units are verified")
		}
		t.Skip("!!! systemd-analyze is missing: the systemd units were NOT verified (install systemd; with CI set this fails) !!!")
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("systemd")); err != nil {
		t.Fatal(err)
	}

	// systemd-analyze verify wants every ExecStart binary to exist: build
	// switchboard and nats-server (a dependency of cmd/switchboard's module,
	// built from there; both come from the build cache after the first run)
	// and point the copies of the units at them.
	cmdDir := filepath.Join(repoRoot, "cmd", "switchboard")
	build := func(out string, pkg string) string {
		bin := filepath.Join(dir, "bin", out)
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = cmdDir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		return bin
	}
	switchboard := build("switchboard", ".")
	natsServer := build("nats-server", "github.com/nats-io/nats-server/v2")

	var units []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".service") || strings.HasSuffix(path, ".conf")) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		s := strings.ReplaceAll(string(b), "/usr/local/bin/switchboard", switchboard)
		s = strings.ReplaceAll(s, "/usr/local/bin/nats-server", natsServer)
		if strings.HasSuffix(path, ".service") && !strings.HasSuffix(path, "@.service") {
			units = append(units, path)
		}
		return os.WriteFile(path, []byte(s), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The template is verified through an instance of every service, so the
	// drop-ins (switchboard@lb.service.d/…) are loaded with it.
	for _, s := range realServices(t) {
		units = append(units, filepath.Join(dir, "switchboard@"+s+".service"))
	}
	if len(units) < 3 {
		t.Fatalf("units found: %v", units)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, analyze, append([]string{"verify"}, units...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	ours := regexp.MustCompile(regexp.QuoteMeta(dir) + `|switchboard@[\w-]*\.service|switchboard\.service|nats-server\.service`)
	for _, line := range strings.Split(string(out), "\n") {
		if ours.MatchString(line) {
			t.Errorf("systemd-analyze verify: %s", line)
		} else if strings.TrimSpace(line) != "" {
			t.Logf("systemd-analyze verify (not about our units): %s", line)
		}
	}
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// What the brief of the units promises: the hardening is there, in the
	// template and the all-in-one unit alike.
	for _, name := range []string{"switchboard@.service", "switchboard.service", "nats-server.service"} {
		b, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
			"PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
			"ProtectControlGroups=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
			"RestrictNamespaces=yes", "LockPersonality=yes", "MemoryDenyWriteExecute=yes",
			"SystemCallFilter=@system-service", "CapabilityBoundingSet=\n", "Restart=on-failure",
		} {
			if !strings.Contains(string(b), "\n"+want) {
				t.Errorf("systemd/%s: no %q", name, strings.TrimSpace(want))
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Compose

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
	Volumes map[string]any `yaml:"volumes"`
}

type composeService struct {
	Image       string   `yaml:"image"`
	Command     []string `yaml:"command"`
	Environment envMap   `yaml:"environment"`
	Volumes     []string `yaml:"volumes"`
	Secrets     []string `yaml:"secrets"`
	Deploy      struct {
		Replicas *int `yaml:"replicas"`
	} `yaml:"deploy"`
}

// envMap is a compose environment, written as a map or as a list of
// NAME=value.
type envMap map[string]string

func (e *envMap) UnmarshalYAML(n *yaml.Node) error {
	*e = envMap{}
	switch n.Kind {
	case yaml.MappingNode:
		var m map[string]string
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k, v := range m {
			(*e)[k] = v
		}
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, kv := range l {
			k, v, _ := strings.Cut(kv, "=")
			(*e)[k] = v
		}
	default:
		return fmt.Errorf("line %d: environment is neither a map nor a list", n.Line)
	}
	return nil
}

func TestCompose(t *testing.T) {
	path := filepath.Join("container", "compose.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	nodeConf, err := os.ReadFile(filepath.Join("nats", "node.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// Every variable node.conf reads must be set on every node.
	var nodeVars []string
	for _, m := range regexp.MustCompile(`\$(SB_NATS_\w+)`).FindAllStringSubmatch(string(nodeConf), -1) {
		if !slices.Contains(nodeVars, m[1]) {
			nodeVars = append(nodeVars, m[1])
		}
	}

	// The NATS cluster: three nodes, distinct names, each routing to all three.
	var nats []string
	for name, s := range c.Services {
		if strings.HasPrefix(s.Image, "nats:") {
			nats = append(nats, name)
		}
	}
	slices.Sort(nats)
	if len(nats) != 3 {
		t.Fatalf("%s: NATS services %v, want 3", path, nats)
	}
	var wantRoutes []string
	for _, n := range nats {
		wantRoutes = append(wantRoutes, "nats-route://"+n+":6222")
	}
	names := map[string]string{}
	for _, n := range nats {
		s := c.Services[n]
		for _, v := range nodeVars {
			if s.Environment[v] == "" {
				t.Errorf("%s: %s: %s is not set (deploy/nats/node.conf reads it)", path, n, v)
			}
		}
		name := s.Environment["SB_NATS_NAME"]
		if other, dup := names[name]; dup {
			t.Errorf("%s: %s and %s are both named %q", path, other, n, name)
		}
		names[name] = n
		var routes []string
		for k, v := range s.Environment {
			if strings.HasPrefix(k, "SB_NATS_ROUTE_") {
				routes = append(routes, v)
			}
		}
		slices.Sort(routes)
		if !slices.Equal(routes, wantRoutes) {
			t.Errorf("%s: %s routes to %v, want all three: %v", path, n, routes, wantRoutes)
		}
		if !slices.Equal(s.Command, []string{"--config", "/etc/nats/node.conf"}) {
			t.Errorf("%s: %s: command %q, want --config /etc/nats/node.conf", path, n, s.Command)
		}
		mounts := map[string]string{}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 {
				mounts[parts[1]] = parts[0]
			}
		}
		for target, src := range map[string]string{
			"/etc/nats/node.conf":     "../nats/node.conf",
			"/etc/nats/accounts.conf": "../nats/accounts.conf",
			"/etc/nats/nkeys.conf":    "./secrets/nkeys/nkeys.conf",
		} {
			if mounts[target] != src {
				t.Errorf("%s: %s mounts %q at %s, want %s", path, n, mounts[target], target, src)
			}
		}
	}

	// Every switchboard service: two replicas, its own seed, and only
	// services the binary has.
	real := realServices(t)
	served := map[string]string{} // service → compose service running it
	seeds := map[string]string{}  // seed file → compose service
	for name, s := range c.Services {
		if len(s.Command) == 0 || s.Command[0] != "serve" {
			continue
		}
		run := serveNames(s.Command)
		if len(run) == 0 {
			t.Errorf("%s: %s: serve names no service", path, name)
		}
		for _, r := range run {
			if !slices.Contains(real, r) {
				t.Errorf("%s: %s: serve %q: switchboard has no such service (it has %v)", path, name, r, real)
			}
			if other, dup := served[r]; dup {
				t.Errorf("%s: %s and %s both run %s", path, other, name, r)
			}
			served[r] = name
		}
		if s.Deploy.Replicas == nil || *s.Deploy.Replicas != 2 {
			t.Errorf("%s: %s: deploy.replicas is not 2", path, name)
		}
		creds := flagValue(s.Command, "creds")
		if len(run) != 1 {
			continue
		}
		svc := run[0]
		if want := "/run/secrets/" + svc + ".nk"; creds != want {
			t.Errorf("%s: %s: --creds %q, want %s (its own seed)", path, name, creds, want)
		}
		if !slices.Contains(s.Secrets, svc+".nk") {
			t.Errorf("%s: %s: secret %s.nk is not mounted (secrets: %v)", path, name, svc, s.Secrets)
		}
		for _, sec := range s.Secrets {
			if strings.HasSuffix(sec, ".nk") && sec != svc+".nk" {
				t.Errorf("%s: %s gets another user's seed %s", path, name, sec)
			}
		}
		file := c.Secrets[svc+".nk"].File
		if want := "./secrets/nkeys/" + svc + ".nk"; file != want {
			t.Errorf("%s: secret %s.nk is %q, want %s (as `switchboard nkeys --out secrets/nkeys` writes it)", path, svc, file, want)
		}
		if other, dup := seeds[file]; dup {
			t.Errorf("%s: %s and %s share the seed %s", path, other, name, file)
		}
		seeds[file] = name
	}
	for _, r := range real {
		if served[r] == "" {
			t.Errorf("%s: no service runs `serve %s`", path, r)
		}
	}
}

// ---------------------------------------------------------------------------
// Kubernetes

type kustomization struct {
	Resources          []string `yaml:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `yaml:"name"`
		Files []string `yaml:"files"`
	} `yaml:"configMapGenerator"`
}

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
	} `yaml:"securityContext"`
	Containers []struct {
		Name    string   `yaml:"name"`
		Args    []string `yaml:"args"`
		Command []string `yaml:"command"`
		Env     []struct {
			Name  string `yaml:"name"`
			Value string `yaml:"value"`
		} `yaml:"env"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		SecurityContext struct {
			RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
			ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			Capabilities             struct {
				Drop []string `yaml:"drop"`
			} `yaml:"capabilities"`
		} `yaml:"securityContext"`
		Resources      map[string]any `yaml:"resources"`
		LivenessProbe  *probe         `yaml:"livenessProbe"`
		ReadinessProbe *probe         `yaml:"readinessProbe"`
		VolumeMounts   []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	} `yaml:"containers"`
	Volumes []struct {
		Name   string `yaml:"name"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
			Items      []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

func TestKustomize(t *testing.T) {
	dir := "kubernetes"
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if len(k.Resources) == 0 {
		t.Fatal("kustomization.yaml lists no resources")
	}
	for _, g := range k.ConfigMapGenerator {
		for _, f := range g.Files {
			_, file, _ := strings.Cut(f, "=") // key=file or file
			if file == "" {
				file = f
			}
			if _, err := os.Stat(filepath.Join(dir, file)); err != nil {
				t.Errorf("kustomization.yaml: configMapGenerator %s: %v", g.Name, err)
			}
		}
	}

	real := realServices(t)
	deployed := map[string]bool{}
	for _, r := range k.Resources {
		f, err := os.Open(filepath.Join(dir, r))
		if err != nil {
			t.Errorf("kustomization.yaml: resource %s: %v", r, err)
			continue
		}
		dec := yaml.NewDecoder(f)
		for i := 0; ; i++ {
			var node yaml.Node
			err := dec.Decode(&node)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("%s: document %d: %v", r, i, err)
				break
			}
			if len(node.Content) == 0 || node.Content[0].Kind == 0 {
				continue // an empty document
			}
			var o k8sObject
			if err := node.Decode(&o); err != nil {
				t.Errorf("%s: document %d: %v", r, i, err)
				continue
			}
			where := fmt.Sprintf("%s: %s %s", r, o.Kind, o.Metadata.Name)
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: document %d lacks apiVersion, kind or metadata.name", r, i)
				continue
			}
			if o.Kind == "Deployment" {
				for _, s := range checkDeployment(t, where, o, real) {
					if deployed[s] {
						t.Errorf("%s: a second Deployment runs %s", where, s)
					}
					deployed[s] = true
				}
			}
		}
		f.Close()
	}
	for _, s := range real {
		if !deployed[s] {
			t.Errorf("kustomization.yaml: no Deployment runs `serve %s`", s)
		}
	}
}

// checkDeployment checks one Deployment and returns the services it runs.
func checkDeployment(t *testing.T, where string, o k8sObject, real []string) []string {
	t.Helper()
	if o.Spec.Replicas == nil || *o.Spec.Replicas < 2 {
		t.Errorf("%s: replicas below 2", where)
	}
	pod := o.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Errorf("%s: %d containers, want 1", where, len(pod.Containers))
		return nil
	}
	c := pod.Containers[0]
	if !(pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot ||
		c.SecurityContext.RunAsNonRoot != nil && *c.SecurityContext.RunAsNonRoot) {
		t.Errorf("%s: runAsNonRoot is not set", where)
	}
	sc := c.SecurityContext
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not set", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: capabilities are not dropped (drop: [ALL])", where)
	}
	if c.Resources["requests"] == nil || c.Resources["limits"] == nil {
		t.Errorf("%s: resources need requests and limits", where)
	}

	args := append(slices.Clone(c.Command), c.Args...)
	if len(args) == 0 || args[0] != "serve" {
		t.Errorf("%s: runs %q, want serve SERVICE", where, args)
		return nil
	}
	run := serveNames(args)
	for _, s := range run {
		if !slices.Contains(real, s) {
			t.Errorf("%s: serve %q: switchboard has no such service (it has %v)", where, s, real)
		}
	}
	if len(run) != 1 {
		t.Errorf("%s: serves %v, want one service per Deployment", where, run)
		return run
	}

	// Probes on /healthz of the metrics listener, which must then listen
	// beyond loopback.
	metricsAddr := ""
	for _, e := range c.Env {
		if e.Name == "SB_METRICS_ADDR" {
			metricsAddr = e.Value
		}
	}
	if metricsAddr != "0.0.0.0:9464" {
		t.Errorf("%s: SB_METRICS_ADDR is %q, want 0.0.0.0:9464 (the probes reach /healthz there)", where, metricsAddr)
	}
	for kind, p := range map[string]*probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: no %s httpGet probe", where, kind)
			continue
		}
		port := p.HTTPGet.Port.Value
		for _, cp := range c.Ports {
			if cp.Name == port {
				port = strconv.Itoa(cp.ContainerPort)
			}
		}
		if p.HTTPGet.Path != "/healthz" || port != "9464" {
			t.Errorf("%s: %s probe on %s port %s, want /healthz on 9464", where, kind, p.HTTPGet.Path, port)
		}
	}

	// Its own seed, from the Secret, and nothing else of it.
	creds := flagValue(args, "creds")
	if filepath.Base(creds) != run[0]+".nk" {
		t.Errorf("%s: --creds %q, want the %s seed", where, creds, run[0])
	}
	for _, v := range pod.Volumes {
		if v.Secret == nil || v.Secret.SecretName != "switchboard-nkeys" {
			continue
		}
		if len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != run[0]+".nk" {
			t.Errorf("%s: volume %s must project only the key %s.nk of switchboard-nkeys", where, v.Name, run[0])
		}
	}
	return run
}
