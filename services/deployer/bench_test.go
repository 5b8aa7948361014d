package deployer

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/jobs"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/deployer/enc"
	"github.com/switchboard-ops/switchboard/services/deployer/executor"
	execexec "github.com/switchboard-ops/switchboard/services/deployer/executor/exec"
	"github.com/switchboard-ops/switchboard/services/deployer/gitrepo"
)

const (
	benchHosts   = 5000
	benchCommits = 20000
)

// benchRepo returns a bare ENC repository with benchHosts host files and
// benchCommits commits (each after the first changes one host file), made
// once with git fast-import and cached under os.TempDir().
func benchRepo(b *testing.B) string {
	b.Helper()
	needGit(b)
	cached := filepath.Join(os.TempDir(), fmt.Sprintf("switchboard-deployer-bench-enc-%d-%d.git", benchHosts, benchCommits))
	if _, err := os.Stat(filepath.Join(cached, "done")); err == nil {
		return cached
	}
	os.RemoveAll(cached)
	gitCLI(b, os.TempDir(), "init", "-q", "--bare", "-b", "main", cached)
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir = cached
	cmd.Env = append(os.Environ(), "GIT_DIR="+cached)
	in, _ := cmd.StdinPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(in, 1<<20)
	host := func(i, rev int) string {
		return fmt.Sprintf("# host %d\nenvironment: production\nrole: web\nipv4: 10.%d.%d.%d\nbackends: [www]\nparameters:\n  rev: \"%d\"\n",
			i, 1+i/65536, (i/256)%256, i%256, rev)
	}
	data := func(s string) { fmt.Fprintf(w, "data %d\n%s\n", len(s), s) }
	t0 := int64(1700000000)
	for c := 1; c <= benchCommits; c++ {
		fmt.Fprintf(w, "commit refs/heads/main\ncommitter Rob Person <rob@example.com> %d +0000\n", t0+int64(c))
		data(fmt.Sprintf("change %d", c))
		if c == 1 {
			fmt.Fprintf(w, "M 100644 inline %s\n", enc.EnvPath("production"))
			data("backends: [www]\nroles:\n  web:\n    backends: [www]\npins:\n  frontend:\n    web: 1.0.0\n")
			for i := 0; i < benchHosts; i++ {
				fmt.Fprintf(w, "M 100644 inline %s\n", enc.HostPath(fmt.Sprintf("web-%05d", i)))
				data(host(i, 0))
			}
		} else {
			i := (c * 7919) % benchHosts
			fmt.Fprintf(w, "M 100644 inline %s\n", enc.HostPath(fmt.Sprintf("web-%05d", i)))
			data(host(i, c))
		}
		w.WriteString("\n")
	}
	w.Flush()
	in.Close()
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	gitCLI(b, cached, "--git-dir", cached, "repack", "-adq")
	os.WriteFile(filepath.Join(cached, "done"), nil, 0o644)
	return cached
}

// median reports the median of the iterations' durations as ms/median.
func median(b *testing.B, ds []time.Duration) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "ms/median")
}

// BenchmarkENCEditCommitPush: one `enc set` worth of work — fetch, YAML edit
// of one host file, validation of the whole ENC (5,000 hosts, parse cache
// warm), commit, push — on a 20,000-commit repository, beside the same edit
// with the git CLI on a checkout (pull, edit, commit -a, push).
func BenchmarkENCEditCommitPush(b *testing.B) {
	src := benchRepo(b)
	b.Run("deployer", func(b *testing.B) {
		dir := b.TempDir()
		remote := filepath.Join(dir, "remote.git")
		gitCLI(b, dir, "clone", "-q", "--bare", "--local", src, remote)
		repo, err := gitrepo.Open(context.Background(), gitrepo.Options{URL: remote, Dir: filepath.Join(dir, "clone.git")})
		if err != nil {
			b.Fatal(err)
		}
		loader := enc.NewLoader()
		t, _ := repo.TreeAt(repo.Head())
		if _, probs, err := loader.Load(treeSource{t}); err != nil || len(probs) > 0 {
			b.Fatal(err, probs)
		}
		ds := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			host := enc.HostPath(fmt.Sprintf("web-%05d", (i*31)%benchHosts))
			_, err := repo.Commit(context.Background(), gitrepo.Signature{Name: "switchboard", Email: "bot@example.com"},
				"enc set\n\nCo-authored-by: Ana <ana@example.com>\n", func(t *gitrepo.Tree) ([]gitrepo.Change, error) {
					_, before, err := loader.Load(treeSource{t})
					if err != nil {
						return nil, err
					}
					data, err := t.ReadFile(host)
					if err != nil {
						return nil, err
					}
					out, err := enc.SetHost(data, enc.Set{Key: "parameters.bench", Value: fmt.Sprint(i)})
					if err != nil {
						return nil, err
					}
					ov := overlay{base: treeSource{t}, changes: map[string][]byte{host: out}}
					_, after, err := loader.Load(ov)
					if err != nil || len(newProblems(before, after)) > 0 {
						return nil, fmt.Errorf("validate: %v %v", err, after)
					}
					return []gitrepo.Change{{Path: host, Data: out}}, nil
				})
			if err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		b.StopTimer()
		median(b, ds)
	})
	b.Run("git-cli", func(b *testing.B) {
		dir := b.TempDir()
		remote := filepath.Join(dir, "remote.git")
		gitCLI(b, dir, "clone", "-q", "--bare", "--local", src, remote)
		work := filepath.Join(dir, "work")
		gitCLI(b, dir, "clone", "-q", remote, work)
		ds := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			gitCLI(b, work, "pull", "-q", "--ff-only")
			p := filepath.Join(work, enc.HostPath(fmt.Sprintf("web-%05d", (i*31)%benchHosts)))
			data, _ := os.ReadFile(p)
			out, _ := enc.SetHost(data, enc.Set{Key: "parameters.bench", Value: fmt.Sprint(i)})
			os.WriteFile(p, out, 0o644)
			gitCLI(b, work, "commit", "-q", "-a", "-m", "enc set")
			gitCLI(b, work, "push", "-q", "origin", "main")
			ds = append(ds, time.Since(start))
		}
		b.StopTimer()
		median(b, ds)
	})
}

// sleeper is an in-process action that takes 100 ms per host: it isolates
// the orchestration's own cost from the cost of starting processes.
type sleeper struct{}

func (sleeper) Run(ctx context.Context, hosts []executor.Host, _ executor.Action) <-chan executor.Result {
	return executor.Parallel(ctx, hosts, len(hosts), func(ctx context.Context, h executor.Host) executor.Result {
		time.Sleep(100 * time.Millisecond)
		return executor.Result{Status: executor.OK}
	})
}

// BenchmarkRollout1000Hosts: deploy to 1,002 hosts (1,000 plus the
// example's two) in batches of 10 with an action that takes 100 ms, through
// the whole command path (NATS, the pin commit and push, a progress post
// and a KV save per batch). Ideal: 101 batches × 100 ms = 10.1 s.
//
//   - exec: the exec executor running `sleep 0.1` per host;
//   - exec-baseline: the same 101 batches of 10 `sleep 0.1` processes with
//     the exec executor alone (no NATS, git, KV or posts), in the same run:
//     what starting processes costs on this machine;
//   - in-process: an action that sleeps 100 ms in-process, so the overhead
//     over the ideal is the orchestration's alone.
func BenchmarkRollout1000Hosts(b *testing.B) {
	extra := map[string]string{}
	for i := 0; i < 1000; i++ {
		extra[enc.HostPath(fmt.Sprintf("node-%04d", i))] = fmt.Sprintf("environment: production\nrole: web\nipv4: 10.2.%d.%d\nbackends: [www]\n", i/256, i%256)
	}
	ideal := 101 * 100 * time.Millisecond
	report := func(b *testing.B, total time.Duration) {
		avg := total / time.Duration(b.N)
		b.ReportMetric(avg.Seconds(), "s/rollout")
		b.ReportMetric(100*(avg.Seconds()-ideal.Seconds())/ideal.Seconds(), "%over-ideal")
	}
	rollout := func(b *testing.B, ex executor.Executor) {
		e := newEnv(b, extra)
		e.exec = ex
		cfg := e.config()
		cfg.Exec.Command = []string{"sleep", "0.1"}
		cfg.Exec.Parallel = 10
		e.start(cfg)
		store, err := jobs.Open(context.Background(), e.js)
		if err != nil {
			b.Fatal(err)
		}
		var total time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			id := e.send("deploy", map[string]string{"service": "frontend", "target": "web@production"},
				map[string]string{"version": fmt.Sprintf("2.0.%d", i), "batch": "10"}, false)
			// Follow the job record (cheap), not the thread, while timing.
			natstest.WaitFor(b, 5*time.Minute, 10*time.Millisecond, func() error {
				j, _, err := store.Get(context.Background(), wire.JobID(id))
				if err != nil || !jobs.Terminal(j.GetState()) {
					return fmt.Errorf("running")
				}
				return nil
			})
			total += time.Since(start)
			p, _ := e.final(id, time.Minute)
			if !strings.Contains(p.GetText(), "1002 host(s) ok in 101 batch(es)") {
				b.Fatalf("rollout: %s", p.GetText())
			}
		}
		report(b, total)
	}
	b.Run("exec", func(b *testing.B) { rollout(b, nil) })
	b.Run("exec-baseline", func(b *testing.B) {
		ex, err := execexec.New(execexec.Config{Command: []string{"sleep", "0.1"}, Parallel: 10})
		if err != nil {
			b.Fatal(err)
		}
		hosts := make([]executor.Host, 10)
		for i := range hosts {
			hosts[i] = executor.Host{Name: fmt.Sprint(i)}
		}
		var total time.Duration
		for i := 0; i < b.N; i++ {
			start := time.Now()
			for batch := 0; batch < 101; batch++ {
				for range ex.Run(context.Background(), hosts, executor.Action{}) {
				}
			}
			total += time.Since(start)
		}
		report(b, total)
	})
	b.Run("in-process", func(b *testing.B) { rollout(b, sleeper{}) })
}
