package gitrepo_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/deployer/gitrepo"
)

// needGit fails in CI and skips loudly elsewhere when git is missing.
func needGit(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("git is not installed; the ENC tests need the real git CLI")
		}
		t.Skip("SKIPPED LOUDLY: git is not installed; the ENC repository tests need the real git CLI")
	}
}

func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Rob Person", "GIT_AUTHOR_EMAIL=rob@example.com",
		"GIT_COMMITTER_NAME=Rob Person", "GIT_COMMITTER_EMAIL=rob@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// setup makes a bare remote with one commit and a person's clone of it.
func setup(t *testing.T) (remote, person string) {
	t.Helper()
	needGit(t)
	dir := t.TempDir()
	remote = filepath.Join(dir, "enc.git")
	person = filepath.Join(dir, "person")
	git(t, dir, "init", "-q", "--bare", "-b", "main", remote)
	git(t, dir, "clone", "-q", remote, person)
	os.MkdirAll(filepath.Join(person, "hosts"), 0o755)
	os.WriteFile(filepath.Join(person, "hosts", "a.yaml"), []byte("# a\nrole: web\n"), 0o644)
	git(t, person, "add", ".")
	git(t, person, "commit", "-q", "-m", "first")
	git(t, person, "push", "-q", "origin", "main")
	return remote, person
}

func open(t *testing.T, remote string) *gitrepo.Repo {
	t.Helper()
	r, err := gitrepo.Open(context.Background(), gitrepo.Options{URL: remote, Dir: filepath.Join(t.TempDir(), "clone.git"),
		Committer: gitrepo.Signature{Name: "switchboard", Email: "bot@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAPushBetweenTheBotsFetchAndPushIsKeptAndTheEditReapplied(t *testing.T) {
	remote, person := setup(t)
	repo := open(t, remote)
	calls := 0
	res, err := repo.Commit(context.Background(), gitrepo.Signature{Name: "switchboard", Email: "bot@example.com"},
		"enc set a role=db\n\nCo-authored-by: Ana <ana@example.com>\n",
		func(tr *gitrepo.Tree) ([]gitrepo.Change, error) {
			calls++
			if calls == 1 {
				// A person pushes after the bot fetched, before it pushes.
				os.WriteFile(filepath.Join(person, "hosts", "b.yaml"), []byte("role: api\n"), 0o644)
				git(t, person, "add", ".")
				git(t, person, "commit", "-q", "-m", "add b by hand")
				git(t, person, "push", "-q", "origin", "main")
			}
			a, err := tr.ReadFile("hosts/a.yaml")
			if err != nil {
				return nil, err
			}
			return []gitrepo.Change{{Path: "hosts/a.yaml", Data: []byte(strings.Replace(string(a), "web", "db", 1))}}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 2 || calls != 2 {
		t.Fatalf("attempts %d, edit calls %d: want the edit re-applied once on the person's commit", res.Attempts, calls)
	}
	if merges := git(t, remote, "rev-list", "--merges", "main"); merges != "" {
		t.Fatalf("history has merges: %s", merges)
	}
	log := strings.Split(git(t, remote, "log", "--format=%H %P|%an|%ae|%cn|%s", "main"), "\n")
	if len(log) != 3 {
		t.Fatalf("log:\n%s\nwant 3 commits: first, the person's, the bot's", strings.Join(log, "\n"))
	}
	top := strings.Split(log[0], "|")
	if top[1] != "switchboard" || top[2] != "bot@example.com" || top[3] != "switchboard" || top[4] != "enc set a role=db" {
		t.Fatalf("bot's commit: %q", log[0])
	}
	if !strings.Contains(log[1], "|Rob Person|") || !strings.Contains(log[1], "add b by hand") {
		t.Fatalf("the person's commit is not the bot's parent: %q", log[1])
	}
	if parent := strings.Fields(top[0])[1]; !strings.HasPrefix(log[1], parent) {
		t.Fatalf("bot's parent %s is not the person's commit", parent)
	}
	if got := git(t, remote, "show", "main:hosts/b.yaml"); got != "role: api" {
		t.Fatalf("the person's file was lost: %q", got)
	}
	if got := git(t, remote, "show", "main:hosts/a.yaml"); got != "# a\nrole: db" {
		t.Fatalf("the bot's edit: %q", got)
	}
	if trailer := git(t, remote, "log", "-1", "--format=%(trailers:key=Co-authored-by,valueonly)", "main"); trailer != "Ana <ana@example.com>" {
		t.Fatalf("Co-authored-by trailer: %q", trailer)
	}
	git(t, remote, "fsck", "--strict")
	// The person can keep working on top with a plain fast-forward pull.
	git(t, person, "pull", "-q", "--ff-only")
}

func TestEditsCreateNestedFilesDeleteFilesAndNoOpsCommitNothing(t *testing.T) {
	remote, _ := setup(t)
	repo := open(t, remote)
	bot := gitrepo.Signature{Name: "switchboard", Email: "bot@example.com"}
	res, err := repo.Commit(context.Background(), bot, "restructure", func(*gitrepo.Tree) ([]gitrepo.Change, error) {
		return []gitrepo.Change{{Path: "hosts/a.yaml"}, {Path: "environments/prod/x.yaml", Data: []byte("k: v\n")}}, nil
	})
	if err != nil || res.NoOp {
		t.Fatalf("commit: %v %+v", err, res)
	}
	if got := git(t, remote, "ls-tree", "-r", "--name-only", "main"); got != "environments/prod/x.yaml" {
		t.Fatalf("tree after the edit: %q", got)
	}
	git(t, remote, "fsck", "--strict")
	res, err = repo.Commit(context.Background(), bot, "nothing", func(tr *gitrepo.Tree) ([]gitrepo.Change, error) {
		d, _ := tr.ReadFile("environments/prod/x.yaml")
		return []gitrepo.Change{{Path: "environments/prod/x.yaml", Data: d}}, nil
	})
	if err != nil || !res.NoOp {
		t.Fatalf("an edit that changes nothing: %v %+v", err, res)
	}
	if n := git(t, remote, "rev-list", "--count", "main"); n != "2" {
		t.Fatalf("%s commits, want 2 (the no-op made none)", n)
	}
}

func TestAnEditErrorCommitsNothing(t *testing.T) {
	remote, _ := setup(t)
	repo := open(t, remote)
	boom := errors.New("refused")
	_, err := repo.Commit(context.Background(), gitrepo.Signature{}, "x", func(*gitrepo.Tree) ([]gitrepo.Change, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want the edit's error", err)
	}
	if n := git(t, remote, "rev-list", "--count", "main"); n != "1" {
		t.Fatalf("%s commits, want 1", n)
	}
}

func TestAPushRefusedByAHookIsAnErrorNotALoop(t *testing.T) {
	remote, _ := setup(t)
	hook := filepath.Join(remote, "hooks", "pre-receive")
	os.WriteFile(hook, []byte("#!/bin/sh\necho 'frozen for the release' >&2\nexit 1\n"), 0o755)
	repo := open(t, remote)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := repo.Commit(ctx, gitrepo.Signature{}, "x", func(*gitrepo.Tree) ([]gitrepo.Change, error) {
		return []gitrepo.Change{{Path: "hosts/c.yaml", Data: []byte("a: b\n")}}, nil
	})
	if !errors.Is(err, gitrepo.ErrRejected) {
		t.Fatalf("err %v, want ErrRejected", err)
	}
}

func TestLogDiffAndResolve(t *testing.T) {
	remote, _ := setup(t)
	repo := open(t, remote)
	res, err := repo.Commit(context.Background(), gitrepo.Signature{Name: "switchboard", Email: "b@x"}, "change a\n\nbody\n", func(tr *gitrepo.Tree) ([]gitrepo.Change, error) {
		return []gitrepo.Change{{Path: "hosts/a.yaml", Data: []byte("# a\nrole: db\n")}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	log, err := repo.Log(10)
	if err != nil || len(log) != 2 || log[0].Subject != "change a" || log[1].Subject != "first" {
		t.Fatalf("log: %v %+v", err, log)
	}
	h, err := repo.Resolve(res.Commit.String()[:7])
	if err != nil || h != res.Commit {
		t.Fatalf("resolve short hash: %v %v", h, err)
	}
	if h, err := repo.Resolve("HEAD~1"); err != nil || h != log[1].Hash {
		t.Fatalf("resolve HEAD~1: %v %v", h, err)
	}
	_, diff, err := repo.Diff(res.Commit)
	if err != nil || !strings.Contains(diff, "-role: web") || !strings.Contains(diff, "+role: db") {
		t.Fatalf("diff: %v\n%s", err, diff)
	}
	if _, err := repo.Resolve("deadbeef"); !errors.Is(err, gitrepo.ErrNotFound) {
		t.Fatalf("resolve of an unknown commit: %v", err)
	}
}
