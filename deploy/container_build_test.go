package deploy

import (
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	goversion "go/version"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/tonistiigi/fsutil"
)

// TestDockerfileBuild runs the image's build stage without Docker: the
// build context is what BuildKit would send (the repository filtered by
// Dockerfile.dockerignore, through the same fsutil filter its client uses),
// the container's file system is a directory, and the stage's WORKDIR, ENV,
// ARG, COPY and RUN instructions, read from the parsed Dockerfile, are
// carried out in order with this machine's Go. The binary the final stage
// copies to its ENTRYPOINT must then be static and report the version given
// as a build argument.
func TestDockerfileBuild(t *testing.T) {
	// The build argument the Dockerfile's header documents; a semantic
	// version, as kit/version ignores anything else.
	const stamp = "9.8.7-dockerfile.test"

	path, _, res := readDockerfile(t)
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	final := stages[len(stages)-1]

	// The stage that builds the binary is the one the final stage copies
	// its ENTRYPOINT from.
	var entrypoint string
	var copies []*instructions.CopyCommand
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.EntrypointCommand:
			if len(c.CmdLine) > 0 {
				entrypoint = c.CmdLine[0]
			}
		case *instructions.CopyCommand:
			if c.From != "" {
				copies = append(copies, c)
			}
		}
	}
	var binaryCopy *instructions.CopyCommand
	for _, c := range copies {
		if c.DestPath == entrypoint && len(c.SourcePaths) == 1 {
			binaryCopy = c
		}
	}
	if binaryCopy == nil {
		t.Fatalf("%s: the final stage copies nothing from a build stage to its ENTRYPOINT %q", path, entrypoint)
	}
	i := slices.IndexFunc(stages, func(s instructions.Stage) bool { return s.Name == binaryCopy.From })
	if i < 0 || i == len(stages)-1 {
		t.Fatalf("%s: COPY --from=%s: no such earlier stage", path, binaryCopy.From)
	}
	build := stages[i]

	globals := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				globals[kv.Key] = *kv.Value
			}
		}
	}
	base, _, err := shell.NewLex('\\').ProcessWord(build.BaseName, envGetter(globals))
	if err != nil {
		t.Fatalf("%s: FROM %s: %v", path, build.BaseName, err)
	}

	tmp := t.TempDir()
	sim := &stageSim{
		t:         t,
		context:   filepath.Join(tmp, "context"),
		root:      filepath.Join(tmp, "root"),
		workdir:   "/",
		globals:   globals,
		buildArgs: map[string]string{"VERSION": stamp},
		args:      map[string]string{},
		env:       map[string]string{},
		hostEnv:   goEnvLikeTheImage(t),
	}
	copyBuildContext(t, sim.context)
	start := time.Now()
	for _, c := range build.Commands {
		sim.do(c)
	}
	t.Logf("build stage %q simulated in %v", build.Name, time.Since(start).Round(time.Millisecond))
	checkGoVersion(t, base, sim.root)

	// Everything the final stage takes from the build stage exists.
	for _, c := range copies {
		if c.From != build.Name {
			continue
		}
		for _, src := range c.SourcePaths {
			if _, err := os.Lstat(sim.host(src)); err != nil {
				t.Errorf("%s: COPY --from=%s %s: the build stage did not make it: %v", path, c.From, src, err)
			}
		}
	}

	bin := sim.host(binaryCopy.SourcePaths[0])
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("the built binary: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter (PT_INTERP): it is dynamically linked and will not run on distroless/static", bin)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v (%v): it will not run on distroless/static", bin, libs, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "switchboard "+stamp; got != want {
		t.Errorf("%s version printed %q, want %q: the build argument VERSION does not reach kit/version's stamp", bin, got, want)
	}
}

// envGetter is a map of variables as BuildKit's shell lexer reads them.
func envGetter(vars map[string]string) shell.EnvGetter {
	var kv []string
	for k, v := range vars {
		kv = append(kv, k+"="+v)
	}
	return shell.EnvsFromSlice(kv)
}

// copyBuildContext copies into dir what `docker build -f
// deploy/container/Dockerfile .` sends as the build context: the
// repository minus what Dockerfile.dockerignore excludes, walked by
// BuildKit's own filter (fsutil over moby/patternmatcher).
func copyBuildContext(t *testing.T, dir string) {
	t.Helper()
	ignore, err := os.Open(filepath.Join("container", "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer ignore.Close()
	excludes, err := ignorefile.ReadAll(ignore)
	if err != nil {
		t.Fatalf("container/Dockerfile.dockerignore: %v", err)
	}
	src, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	err = fsutil.WalkDir(context.Background(), src, &fsutil.FilterOpt{ExcludePatterns: excludes}, func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return copyEntry(filepath.Join(src, rel), filepath.Join(dir, rel), d)
	})
	if err != nil {
		t.Fatalf("copying the build context: %v", err)
	}
}

// copyTree copies src (a file, a symlink or a directory) to dst, over
// what is there, as a COPY layer does.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		return copyEntry(p, filepath.Join(dst, rel), d)
	})
}

// copyEntry copies one directory entry, keeping its permissions.
func copyEntry(src, dst string, d fs.DirEntry) error {
	info, err := d.Info()
	if err != nil {
		return err
	}
	switch {
	case d.IsDir():
		return os.MkdirAll(dst, info.Mode().Perm())
	case d.Type()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		return os.Symlink(target, dst)
	case d.Type().IsRegular():
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, info.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	default:
		return fmt.Errorf("%s: a %v, which a build context cannot hold", src, d.Type())
	}
}

// goEnvLikeTheImage is the environment the golang image gives go, on this
// machine: GOTOOLCHAIN=local and no go env file (so no GOFLAGS or other
// setting of the user's changes the build), with this machine's module and
// build caches (the RUNs mount theirs as caches, and sharing ours keeps the
// test cheap) and network settings (where modules come from, not what is
// built).
func goEnvLikeTheImage(t *testing.T) []string {
	t.Helper()
	kept := []string{"GOMODCACHE", "GOCACHE", "GOPROXY", "GONOPROXY", "GOPRIVATE", "GOSUMDB", "GONOSUMDB", "GOINSECURE"}
	out, err := exec.Command("go", append([]string{"env", "-json"}, kept...)...).Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	var host map[string]string
	if err := json.Unmarshal(out, &host); err != nil {
		t.Fatalf("go env -json: %v", err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GO") && !strings.HasPrefix(kv, "CGO_") {
			env = append(env, kv)
		}
	}
	env = append(env, "GOENV=off", "GOTOOLCHAIN=local")
	for _, k := range kept {
		if host[k] != "" {
			env = append(env, k+"="+host[k])
		}
	}
	return env
}

// stageSim carries out the instructions of one build stage on this
// machine. The container's file system is the directory root; COPY reads
// from a copy of the build context; RUN knows `go …` and `mkdir -p …`.
type stageSim struct {
	t             *testing.T
	context, root string
	workdir       string            // in the container
	globals       map[string]string // ARGs declared before the first FROM
	buildArgs     map[string]string // --build-arg
	args, env     map[string]string // ARGs in scope, ENV
	hostEnv       []string          // see goEnvLikeTheImage
}

// host maps a path in the container to the directory standing for it.
func (s *stageSim) host(p string) string {
	if !path.IsAbs(p) {
		p = path.Join(s.workdir, p)
	}
	return filepath.Join(s.root, filepath.FromSlash(path.Clean(p)))
}

// vars are the variables an instruction sees: ARGs, overridden by ENV.
func (s *stageSim) vars() map[string]string {
	vars := maps.Clone(s.args)
	maps.Copy(vars, s.env)
	return vars
}

func (s *stageSim) do(c instructions.Command) {
	t := s.t
	t.Helper()
	where := fmt.Sprintf("%s (line %d)", c.Name(), c.Location()[0].Start.Line)
	// Variables in WORKDIR, ENV, ARG and COPY are expanded by BuildKit, in
	// RUN by the shell (below).
	if ex, ok := c.(instructions.SupportsSingleWordExpansion); ok {
		lex := shell.NewLex('\\')
		err := ex.Expand(func(word string) (string, error) {
			w, _, err := lex.ProcessWord(word, envGetter(s.vars()))
			return w, err
		})
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
	}
	switch c := c.(type) {
	case *instructions.WorkdirCommand:
		if path.IsAbs(c.Path) {
			s.workdir = path.Clean(c.Path)
		} else {
			s.workdir = path.Join(s.workdir, c.Path)
		}
		if err := os.MkdirAll(s.host(s.workdir), 0o755); err != nil {
			t.Fatal(err)
		}
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			s.env[kv.Key] = kv.Value
		}
	case *instructions.ArgCommand:
		for _, kv := range c.Args {
			if v, ok := s.buildArgs[kv.Key]; ok {
				s.args[kv.Key] = v
			} else if kv.Value != nil {
				s.args[kv.Key] = *kv.Value
			} else if v, ok := s.globals[kv.Key]; ok {
				s.args[kv.Key] = v
			}
		}
	case *instructions.CopyCommand:
		s.copy(where, c)
	case *instructions.RunCommand:
		s.run(where, c)
	default:
		t.Fatalf("%s: this test does not simulate %T; teach it", where, c)
	}
}

// copy is COPY from the build context: a directory's contents go into
// the destination; a file goes into it if it ends in "/" (or there are
// several sources), else becomes it.
func (s *stageSim) copy(where string, c *instructions.CopyCommand) {
	t := s.t
	t.Helper()
	if c.From != "" || len(c.SourceContents) > 0 || c.Parents || len(c.ExcludePatterns) > 0 {
		t.Fatalf("%s: this test simulates COPY from the build context only; teach it", where)
	}
	intoDir := strings.HasSuffix(c.DestPath, "/") || len(c.SourcePaths) > 1
	for _, src := range c.SourcePaths {
		if strings.ContainsAny(src, "*?[") {
			t.Fatalf("%s: this test does not expand wildcards (%s); teach it", where, src)
		}
		from := filepath.Join(s.context, filepath.FromSlash(path.Clean("/"+src)))
		info, err := os.Lstat(from)
		if err != nil {
			t.Fatalf("%s %s: not in the build context (is it excluded by Dockerfile.dockerignore?): %v", where, src, err)
		}
		to := s.host(c.DestPath)
		if !info.IsDir() && intoDir {
			to = filepath.Join(to, filepath.Base(from))
		}
		if err := copyTree(from, to); err != nil {
			t.Fatalf("%s %s: %v", where, src, err)
		}
	}
}

// run is a shell-form RUN: a chain of commands joined by &&, its words
// split and expanded by BuildKit's lexer as sh would with the stage's ARG
// and ENV values. Its cache mounts (/go/pkg/mod, /root/.cache/go-build) are
// this machine's GOMODCACHE and GOCACHE.
func (s *stageSim) run(where string, c *instructions.RunCommand) {
	t := s.t
	t.Helper()
	if !c.PrependShell || len(c.CmdLine) != 1 {
		t.Fatalf("%s: this test simulates the shell form of RUN only; teach it", where)
	}
	vars := s.vars()
	words, err := shell.NewLex('\\').ProcessWords(c.CmdLine[0], envGetter(vars))
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	for cmd := range splitWords(words, "&&") {
		switch {
		case len(cmd) >= 2 && cmd[0] == "mkdir" && cmd[1] == "-p":
			for _, dir := range cmd[2:] {
				if err := os.MkdirAll(s.host(dir), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		case len(cmd) >= 1 && cmd[0] == "go":
			args := slices.Clone(cmd[1:])
			for i := range args {
				if i > 0 && args[i-1] == "-o" {
					args[i] = s.host(args[i])
				}
			}
			env := slices.Clone(s.hostEnv)
			for k, v := range vars {
				env = append(env, k+"="+v)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			run := exec.CommandContext(ctx, "go", args...)
			run.Dir = s.host(s.workdir)
			run.Env = env
			start := time.Now()
			out, err := run.CombinedOutput()
			cancel()
			if err != nil {
				t.Fatalf("%s: %s (in %s): %v\n%s", where, strings.Join(cmd, " "), s.workdir, err, out)
			}
			t.Logf("%s: %s: %v", where, strings.Join(cmd, " "), time.Since(start).Round(time.Millisecond))
		default:
			t.Fatalf("%s: this test simulates `go …` and `mkdir -p …` only, not %q; teach it", where, strings.Join(cmd, " "))
		}
	}
}

// splitWords yields the runs of words between the separators.
func splitWords(words []string, sep string) func(func([]string) bool) {
	return func(yield func([]string) bool) {
		for len(words) > 0 {
			i := slices.Index(words, sep)
			if i < 0 {
				i = len(words)
			}
			if !yield(words[:i]) {
				return
			}
			words = words[min(i+1, len(words)):]
		}
	}
}

// checkGoVersion checks that the build stage's golang image is new enough
// for every go.mod it builds with: the image sets GOTOOLCHAIN=local, so a
// newer go line fails its build, which this machine's Go cannot show.
func checkGoVersion(t *testing.T, base, root string) {
	t.Helper()
	image, tag, _ := strings.Cut(base, ":")
	if image != "golang" {
		t.Fatalf("build stage FROM %s: this test knows the golang image only", base)
	}
	tag, _, _ = strings.Cut(tag, "-") // 1.26-bookworm
	have := "go" + tag
	if !goversion.IsValid(have) {
		t.Fatalf("build stage FROM %s: not a Go version tag", base)
	}
	goLine := regexp.MustCompile(`(?m)^go\s+(\S+)`)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "go.mod" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		m := goLine.FindSubmatch(b)
		if m == nil {
			return nil
		}
		need := "go" + string(m[1])
		// A tag naming a language version (1.26) is its latest release.
		if goversion.Lang(have) == have {
			need = goversion.Lang(need)
		}
		if goversion.Compare(need, have) > 0 {
			rel, _ := filepath.Rel(root, p)
			t.Errorf("/%s says go %s but the build stage is FROM %s (GOTOOLCHAIN=local there): raise GO_VERSION", filepath.ToSlash(rel), m[1], base)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
