// Package gitrepo keeps a clone of one branch of a git repository and makes
// commits to it with go-git: fetch, read a file or a directory at the head,
// apply an edit, commit, push; when the push is refused because someone else
// pushed first, fetch again, re-apply the edit on the new head and push
// again. It never force-pushes, so another commit is never lost, and the
// history stays linear.
//
// Commits are built directly from objects (blob, the trees on the changed
// paths, the commit) rather than through a work tree, and the push sends
// exactly those objects. go-git's own Push walks the whole history of the
// remote head to decide what to send, which takes minutes on a repository
// with tens of thousands of commits; this package's cost is proportional to
// the size of the trees on the changed path, whatever the history.
//
// The package imports nothing from switchboard.
package gitrepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
)

// Signature is a commit author or committer.
type Signature struct {
	Name  string
	Email string
}

// Options say which repository to clone and where.
type Options struct {
	// URL of the remote: a local path, file://, ssh://, user@host:path or https://.
	URL string
	// Branch to follow and push to (default "main").
	Branch string
	// Dir holds the local clone (a bare repository); created when missing.
	Dir string
	// Auth for ssh and https remotes; nil for local ones.
	Auth transport.AuthMethod
	// CABundle holds PEM certificates trusted for an https remote besides
	// the system's (a company CA, a self-signed forge).
	CABundle []byte
	// Committer of every commit (the bot).
	Committer Signature
	// MaxAttempts bounds push retries after a concurrent push (default 8).
	MaxAttempts int
	// Now is the clock for commit times (default time.Now).
	Now func() time.Time
}

// ErrNotFound means a path does not exist in the tree.
var ErrNotFound = errors.New("not found")

// ErrRejected means the remote refused the push for a reason other than a
// concurrent push (a hook, permissions), or the retries ran out.
var ErrRejected = errors.New("push rejected")

// Repo is a clone of one branch. Its methods are safe for concurrent use;
// commits from one Repo are serialised.
type Repo struct {
	opts Options
	repo *git.Repository
	ep   *transport.Endpoint
	tr   transport.Transport
	// shown is the remote as messages name it: without the password a URL
	// may carry, because errors end up in chat and in logs.
	shown  string
	branch plumbing.ReferenceName
	remote plumbing.ReferenceName

	mu   sync.Mutex // serialises fetch and commit
	head plumbing.Hash
}

// Open opens (or creates) the clone in o.Dir and fetches the branch.
func Open(ctx context.Context, o Options) (*Repo, error) {
	if o.Branch == "" {
		o.Branch = "main"
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Committer.Name == "" {
		o.Committer = Signature{Name: "switchboard", Email: "switchboard@localhost"}
	}
	ep, err := transport.NewEndpoint(o.URL)
	if err != nil {
		return nil, fmt.Errorf("git remote: %w", err)
	}
	ep.CaBundle = o.CABundle
	tr, err := transportFor(ep)
	if err != nil {
		return nil, err
	}
	repo, err := git.PlainOpen(o.Dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.PlainInitWithOptions(o.Dir, &git.PlainInitOptions{Bare: true,
			InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName(o.Branch)}})
	}
	if err != nil {
		return nil, fmt.Errorf("open clone in %s: %w", o.Dir, err)
	}
	if rem, err := repo.Remote("origin"); err == nil && rem.Config().URLs[0] != o.URL {
		// The configured remote changed: follow the new one.
		if err := repo.DeleteRemote("origin"); err != nil {
			return nil, fmt.Errorf("replace remote in %s: %w", o.Dir, err)
		}
	}
	if _, err := repo.Remote("origin"); err != nil {
		if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{o.URL}}); err != nil {
			return nil, fmt.Errorf("add remote to %s: %w", o.Dir, err)
		}
	}
	r := &Repo{opts: o, repo: repo, ep: ep, tr: tr, shown: withoutPassword(ep),
		branch: plumbing.NewBranchReferenceName(o.Branch),
		remote: plumbing.NewRemoteReferenceName("origin", o.Branch)}
	if _, err := r.Fetch(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// transportFor picks the transport of an endpoint. Local repositories go
// through git's own upload-pack and receive-pack when git is installed (real
// locking against people pushing to the same repository), and through
// go-git's in-process server otherwise.
func transportFor(ep *transport.Endpoint) (transport.Transport, error) {
	if ep.Protocol == "file" {
		if _, err := exec.LookPath("git-receive-pack"); err != nil {
			if _, err := exec.LookPath("git"); err != nil {
				return server.DefaultServer, nil
			}
		}
	}
	tr, err := client.NewClient(ep)
	if err != nil {
		return nil, fmt.Errorf("git remote %s: %w", withoutPassword(ep), err)
	}
	return tr, nil
}

// withoutPassword is the endpoint's URL with any password left out.
func withoutPassword(ep *transport.Endpoint) string {
	shown := *ep
	shown.Password = ""
	return shown.String()
}

// Head is the commit of the branch as last fetched or pushed.
func (r *Repo) Head() plumbing.Hash {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.head
}

// Fetch brings the branch up to date with the remote and returns its head.
func (r *Repo) Fetch(ctx context.Context) (plumbing.Hash, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetch(ctx)
}

func (r *Repo) fetch(ctx context.Context) (plumbing.Hash, error) {
	rem, err := r.repo.Remote("origin")
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("git fetch: %w", err)
	}
	// Only this one branch, into its remote-tracking ref. The tracking ref
	// follows the remote wherever it goes ("+"), as git's does.
	spec := config.RefSpec("+" + r.branch.String() + ":" + r.remote.String())
	err = rem.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", RefSpecs: []config.RefSpec{spec}, Auth: r.opts.Auth, CABundle: r.opts.CABundle, Tags: git.NoTags})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		if errors.Is(err, transport.ErrEmptyRemoteRepository) {
			return plumbing.ZeroHash, fmt.Errorf("git fetch %s: the repository is empty", r.shown)
		}
		return plumbing.ZeroHash, fmt.Errorf("git fetch %s %s: %w", r.shown, r.opts.Branch, err)
	}
	ref, err := r.repo.Reference(r.remote, true)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("git fetch %s: branch %s not found on the remote: %w", r.shown, r.opts.Branch, err)
	}
	r.head = ref.Hash()
	// Keep the local branch where the remote is, for people who look.
	r.repo.Storer.SetReference(plumbing.NewHashReference(r.branch, r.head))
	return r.head, nil
}

// Tree is a read-only view of the files of one commit.
type Tree struct {
	s    storer.EncodedObjectStorer
	root *object.Tree
	// Commit is the commit the tree belongs to.
	Commit plumbing.Hash
}

// Entry is one file of a directory.
type Entry struct {
	Name string
	// Hash of the blob: equal hashes mean equal contents.
	Hash plumbing.Hash
}

// TreeAt returns the files of a commit.
func (r *Repo) TreeAt(commit plumbing.Hash) (*Tree, error) {
	c, err := object.GetCommit(r.repo.Storer, commit)
	if err != nil {
		return nil, fmt.Errorf("read commit %s: %w", commit, err)
	}
	t, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("read tree of %s: %w", commit, err)
	}
	return &Tree{s: r.repo.Storer, root: t, Commit: commit}, nil
}

// ReadFile returns a file's contents, or ErrNotFound.
func (t *Tree) ReadFile(p string) ([]byte, error) {
	e, err := t.root.FindEntry(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, ErrNotFound)
	}
	return t.ReadBlob(e.Hash)
}

// ReadBlob returns a blob's contents.
func (t *Tree) ReadBlob(h plumbing.Hash) ([]byte, error) {
	b, err := object.GetBlob(t.s, h)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	rd, err := b.Reader()
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

// List returns the regular files directly in dir ("" is the root), sorted
// by name; a missing directory is empty.
func (t *Tree) List(dir string) ([]Entry, error) {
	tree := t.root
	if dir != "" && dir != "." {
		sub, err := t.root.Tree(dir)
		if err != nil {
			return nil, nil
		}
		tree = sub
	}
	var out []Entry
	for _, e := range tree.Entries {
		if e.Mode.IsFile() {
			out = append(out, Entry{Name: e.Name, Hash: e.Hash})
		}
	}
	return out, nil
}

// Change writes (Data != nil) or deletes (Data == nil) one file.
type Change struct {
	Path string
	Data []byte
}

// Edit computes the changes to make on the tree at the current head. It is
// called again, on the new head, when a concurrent push forces a retry, so
// it must derive everything from t. Returning no changes makes no commit.
type Edit func(t *Tree) ([]Change, error)

// Result says what a Commit did.
type Result struct {
	// Commit made, or the unchanged head when NoOp.
	Commit plumbing.Hash
	// NoOp: the edit changed nothing, nothing was committed.
	NoOp bool
	// Attempts is 1 unless someone else pushed in between.
	Attempts int
}

// Commit fetches, applies edit to the head, commits with message (the
// author is author, the committer is the bot) and pushes, retrying on a
// concurrent push. An error from edit is returned as it is.
func (r *Repo) Commit(ctx context.Context, author Signature, message string, edit Edit) (Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var lastErr error
	for attempt := 1; attempt <= r.opts.MaxAttempts; attempt++ {
		head, err := r.fetch(ctx)
		if err != nil {
			return Result{}, err
		}
		t, err := r.TreeAt(head)
		if err != nil {
			return Result{}, err
		}
		changes, err := edit(t)
		if err != nil {
			return Result{}, err
		}
		root, objs, err := r.apply(t.root.Hash, changes)
		if err != nil {
			return Result{}, err
		}
		if root == t.root.Hash {
			return Result{Commit: head, NoOp: true, Attempts: attempt}, nil
		}
		commit, err := r.writeCommit(root, head, author, message)
		if err != nil {
			return Result{}, err
		}
		objs = append(objs, commit)
		err = r.push(ctx, head, commit, objs)
		if errors.Is(err, errConcurrent) {
			lastErr = err
			// Someone pushed between our fetch and our push: start over
			// on their commit. A short pause spreads out replicas that
			// collide with each other.
			select {
			case <-ctx.Done():
				return Result{}, ctx.Err()
			case <-time.After(time.Duration(attempt*attempt) * 10 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return Result{}, err
		}
		r.head = commit
		r.repo.Storer.SetReference(plumbing.NewHashReference(r.remote, commit))
		r.repo.Storer.SetReference(plumbing.NewHashReference(r.branch, commit))
		return Result{Commit: commit, Attempts: attempt}, nil
	}
	return Result{}, fmt.Errorf("git push %s: %d attempts, the branch kept moving (%v): %w", r.shown, r.opts.MaxAttempts, lastErr, ErrRejected)
}

// errConcurrent means the remote branch moved since the fetch.
var errConcurrent = errors.New("the remote branch moved")

// push updates the remote branch from old to new, sending objs. The remote
// checks old under its lock, so a concurrent push is refused, never lost.
func (r *Repo) push(ctx context.Context, old, new plumbing.Hash, objs []plumbing.Hash) error {
	sess, err := r.tr.NewReceivePackSession(r.ep, r.opts.Auth)
	if err != nil {
		return fmt.Errorf("git push %s: %w", r.shown, err)
	}
	defer sess.Close()
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil {
		return fmt.Errorf("git push %s: read references: %w", r.shown, err)
	}
	refs, err := ar.AllReferences()
	if err != nil {
		return fmt.Errorf("git push %s: read references: %w", r.shown, err)
	}
	if cur, ok := refs[r.branch]; !ok || cur.Hash() != old {
		return errConcurrent
	}
	req := packp.NewReferenceUpdateRequestFromCapabilities(ar.Capabilities)
	req.Commands = []*packp.Command{{Name: r.branch, Old: old, New: new}}
	rd, wr := io.Pipe()
	req.Packfile = rd
	done := make(chan error, 1)
	go func() {
		enc := packfile.NewEncoder(wr, r.repo.Storer, !ar.Capabilities.Supports(capability.OFSDelta))
		_, err := enc.Encode(objs, 10)
		done <- wr.CloseWithError(err)
	}()
	rs, err := sess.ReceivePack(ctx, req)
	rd.Close()
	if perr := <-done; err == nil && perr != nil {
		err = perr
	}
	if err != nil {
		if concurrent(err.Error()) {
			return errConcurrent
		}
		if strings.Contains(err.Error(), "command error on") || strings.Contains(err.Error(), "unpack error") {
			// The remote answered and said no (a hook, a protected branch).
			return fmt.Errorf("git push %s: %v: %w", r.shown, err, ErrRejected)
		}
		return fmt.Errorf("git push %s: %w", r.shown, err)
	}
	if rs != nil {
		if err := rs.Error(); err != nil {
			if concurrent(err.Error()) {
				return errConcurrent
			}
			return fmt.Errorf("git push %s: %v: %w", r.shown, err, ErrRejected)
		}
	}
	return nil
}

// concurrent recognises the remote's ways of saying "the ref is not where
// you thought": git's receive-pack, go-git's server, hosted forges.
func concurrent(msg string) bool {
	msg = strings.ToLower(msg)
	for _, s := range []string{"fast-forward", "fetch first", "failed to update ref", "failed to lock", "cannot lock ref", "stale info", "reference has changed", "but expected"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func (r *Repo) writeCommit(root, parent plumbing.Hash, author Signature, message string) (plumbing.Hash, error) {
	now := r.opts.Now()
	if author.Name == "" {
		author = r.opts.Committer
	}
	c := &object.Commit{
		Author:    object.Signature{Name: author.Name, Email: author.Email, When: now},
		Committer: object.Signature{Name: r.opts.Committer.Name, Email: r.opts.Committer.Email, When: now},
		Message:   message,
		TreeHash:  root,
	}
	if !parent.IsZero() {
		c.ParentHashes = []plumbing.Hash{parent}
	}
	return r.store(c.Encode)
}

func (r *Repo) store(encode func(plumbing.EncodedObject) error) (plumbing.Hash, error) {
	obj := r.repo.Storer.NewEncodedObject()
	if err := encode(obj); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("encode object: %w", err)
	}
	h, err := r.repo.Storer.SetEncodedObject(obj)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("write object: %w", err)
	}
	return h, nil
}

func (r *Repo) writeBlob(data []byte) (plumbing.Hash, error) {
	return r.store(func(o plumbing.EncodedObject) error {
		o.SetType(plumbing.BlobObject)
		o.SetSize(int64(len(data)))
		w, err := o.Writer()
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		return w.Close()
	})
}

// apply writes the blobs and trees that changes make from the tree root
// (zero: empty) and returns the new root and every object it wrote.
func (r *Repo) apply(root plumbing.Hash, changes []Change) (plumbing.Hash, []plumbing.Hash, error) {
	var objs []plumbing.Hash
	h, err := r.applyDir(root, changes, &objs)
	return h, objs, err
}

func (r *Repo) applyDir(dir plumbing.Hash, changes []Change, objs *[]plumbing.Hash) (plumbing.Hash, error) {
	entries := map[string]object.TreeEntry{}
	if !dir.IsZero() {
		t, err := object.GetTree(r.repo.Storer, dir)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("read tree %s: %w", dir, err)
		}
		for _, e := range t.Entries {
			entries[e.Name] = e
		}
	}
	sub := map[string][]Change{}
	for _, c := range changes {
		p := strings.Trim(path.Clean(c.Path), "/")
		if p == "" || p == "." || strings.HasPrefix(p, "..") {
			return plumbing.ZeroHash, fmt.Errorf("bad path %q", c.Path)
		}
		first, rest, nested := strings.Cut(p, "/")
		if nested {
			sub[first] = append(sub[first], Change{Path: rest, Data: c.Data})
			continue
		}
		if c.Data == nil {
			delete(entries, first)
			continue
		}
		h, err := r.writeBlob(c.Data)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if old, ok := entries[first]; !ok || old.Hash != h {
			*objs = append(*objs, h)
		}
		entries[first] = object.TreeEntry{Name: first, Mode: filemode.Regular, Hash: h}
	}
	for name, cs := range sub {
		var cur plumbing.Hash
		if e, ok := entries[name]; ok && e.Mode == filemode.Dir {
			cur = e.Hash
		}
		h, err := r.applyDir(cur, cs, objs)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if h.IsZero() {
			delete(entries, name) // git has no empty directories
			continue
		}
		entries[name] = object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h}
	}
	if len(entries) == 0 {
		return plumbing.ZeroHash, nil
	}
	t := &object.Tree{}
	for _, e := range entries {
		t.Entries = append(t.Entries, e)
	}
	// git orders entries by name, a directory's name compared as if it
	// ended in "/".
	key := func(e object.TreeEntry) string {
		if e.Mode == filemode.Dir {
			return e.Name + "/"
		}
		return e.Name
	}
	sort.Slice(t.Entries, func(i, j int) bool { return key(t.Entries[i]) < key(t.Entries[j]) })
	h, err := r.store(t.Encode)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if h != dir {
		*objs = append(*objs, h)
	}
	return h, nil
}

// CommitInfo is one entry of the log.
type CommitInfo struct {
	Hash    plumbing.Hash
	Author  Signature
	When    time.Time
	Subject string
	Message string
}

// Log returns up to n commits from the head, newest first.
func (r *Repo) Log(n int) ([]CommitInfo, error) {
	head := r.Head()
	var out []CommitInfo
	for h := head; !h.IsZero() && len(out) < n; {
		c, err := object.GetCommit(r.repo.Storer, h)
		if err != nil {
			return nil, fmt.Errorf("git log: read %s: %w", h, err)
		}
		subj, _, _ := strings.Cut(c.Message, "\n")
		out = append(out, CommitInfo{Hash: c.Hash, Author: Signature{Name: c.Author.Name, Email: c.Author.Email}, When: c.Author.When, Subject: subj, Message: c.Message})
		if len(c.ParentHashes) == 0 {
			break
		}
		h = c.ParentHashes[0]
	}
	return out, nil
}

// Resolve turns a revision (a full or abbreviated hash, HEAD~2) into a commit.
func (r *Repo) Resolve(rev string) (plumbing.Hash, error) {
	if strings.HasPrefix(rev, "HEAD") {
		rev = r.Head().String() + strings.TrimPrefix(rev, "HEAD")
	}
	h, err := r.repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("%s: %w", rev, ErrNotFound)
	}
	return *h, nil
}

// Diff returns the unified diff a commit made against its first parent.
func (r *Repo) Diff(commit plumbing.Hash) (CommitInfo, string, error) {
	c, err := object.GetCommit(r.repo.Storer, commit)
	if err != nil {
		return CommitInfo{}, "", fmt.Errorf("git diff: read %s: %w", commit, err)
	}
	subj, _, _ := strings.Cut(c.Message, "\n")
	info := CommitInfo{Hash: c.Hash, Author: Signature{Name: c.Author.Name, Email: c.Author.Email}, When: c.Author.When, Subject: subj, Message: c.Message}
	to, err := c.Tree()
	if err != nil {
		return info, "", fmt.Errorf("git diff: %w", err)
	}
	from := &object.Tree{}
	if len(c.ParentHashes) > 0 {
		p, err := c.Parent(0)
		if err != nil {
			return info, "", fmt.Errorf("git diff: read parent: %w", err)
		}
		if from, err = p.Tree(); err != nil {
			return info, "", fmt.Errorf("git diff: %w", err)
		}
	}
	patch, err := from.Patch(to)
	if err != nil {
		return info, "", fmt.Errorf("git diff: %w", err)
	}
	return info, patch.String(), nil
}

// InitBare creates a bare repository at dir whose branch holds files in one
// commit by author; it does nothing when dir already is a repository.
func InitBare(dir, branch string, author Signature, message string, files map[string][]byte) (created bool, err error) {
	if _, err := git.PlainOpen(dir); err == nil {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	repo, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{Bare: true,
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName(branch)}})
	if err != nil {
		return false, fmt.Errorf("init %s: %w", dir, err)
	}
	r := &Repo{repo: repo, opts: Options{Committer: author, Now: time.Now}}
	var changes []Change
	for p, data := range files {
		changes = append(changes, Change{Path: p, Data: data})
	}
	root, _, err := r.apply(plumbing.ZeroHash, changes)
	if err != nil {
		return false, err
	}
	c, err := r.writeCommit(root, plumbing.ZeroHash, author, message)
	if err != nil {
		return false, err
	}
	if err := repo.Storer.SetReference(plumbing.NewHashReference(plumbing.NewBranchReferenceName(branch), c)); err != nil {
		return false, fmt.Errorf("init %s: set branch: %w", dir, err)
	}
	// Let people push to the branch the bot follows.
	cfg, err := repo.Config()
	if err == nil {
		cfg.Raw.Section("receive").SetOption("denyNonFastForwards", "true")
		repo.SetConfig(cfg)
	}
	return true, nil
}
