package deployer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/services/deployer/enc"
	"github.com/switchboard-ops/switchboard/services/deployer/gitrepo"
)

// treeSource reads the ENC from a commit; blob hashes key the parse cache.
type treeSource struct{ t *gitrepo.Tree }

func (ts treeSource) List(dir string) ([]enc.Entry, error) {
	es, err := ts.t.List(dir)
	out := make([]enc.Entry, len(es))
	for i, e := range es {
		out[i] = enc.Entry{Name: e.Name, Key: e.Hash.String()}
	}
	return out, err
}

func (ts treeSource) ReadFile(p string) ([]byte, error) { return ts.t.ReadFile(p) }

// ReadKey reads a blob by hash: no tree lookup by path.
func (ts treeSource) ReadKey(key string) ([]byte, error) {
	if !plumbing.IsHash(key) {
		return nil, fmt.Errorf("%q is not a blob hash", key)
	}
	return ts.t.ReadBlob(plumbing.NewHash(key))
}

// overlay is a source with pending changes on top: what a commit would make.
type overlay struct {
	base    enc.Source
	changes map[string][]byte // nil value: deleted
}

func (o overlay) List(dir string) ([]enc.Entry, error) {
	es, err := o.base.List(dir)
	if err != nil {
		return nil, err
	}
	var out []enc.Entry
	for _, e := range es {
		if _, changed := o.changes[dir+"/"+e.Name]; !changed {
			out = append(out, e)
		}
	}
	for p, data := range o.changes {
		if name, ok := strings.CutPrefix(p, dir+"/"); ok && data != nil && !strings.Contains(name, "/") {
			sum := sha256.Sum256(data)
			out = append(out, enc.Entry{Name: name, Key: "overlay-" + hex.EncodeToString(sum[:12])})
		}
	}
	return out, nil
}

// ReadKey reads unchanged files by blob hash.
func (o overlay) ReadKey(key string) ([]byte, error) {
	if kr, ok := o.base.(enc.KeyReader); ok && !strings.HasPrefix(key, "overlay-") {
		return kr.ReadKey(key)
	}
	return nil, fmt.Errorf("no file with key %s", key)
}

func (o overlay) ReadFile(p string) ([]byte, error) {
	if data, ok := o.changes[p]; ok {
		if data == nil {
			return nil, fmt.Errorf("%s: deleted", p)
		}
		return data, nil
	}
	return o.base.ReadFile(p)
}

// inventoryAt parses and validates the ENC at a commit.
func (s *Service) inventoryAt(commit plumbing.Hash) (*enc.Inventory, enc.Problems, *gitrepo.Tree, error) {
	t, err := s.repo.TreeAt(commit)
	if err != nil {
		return nil, nil, nil, err
	}
	inv, probs, err := s.loader.Load(treeSource{t})
	return inv, probs, t, err
}

// current fetches and returns the inventory at the head. An ENC with
// problems still answers (the commands say what they can); the problems
// come back too.
func (s *Service) current(ctx context.Context) (*enc.Inventory, enc.Problems, error) {
	head, err := s.repo.Fetch(ctx)
	if err != nil {
		return nil, nil, err
	}
	inv, probs, _, err := s.inventoryAt(head)
	return inv, probs, err
}

// edit is what a command changes: it gets the inventory and the tree at
// the head it is applied to (again on every retry) and returns the files
// to write.
type edit func(inv *enc.Inventory, t *gitrepo.Tree) ([]gitrepo.Change, error)

// commit applies e on the head, refuses the result if it has problems the
// head did not have, commits as the bot with the requester as co-author,
// pushes and publishes. A UserError from e, or the new problems, are
// returned as UserErrors: nothing is committed.
func (s *Service) commit(ctx context.Context, job *command.Job, subject string, e edit) (gitrepo.Result, error) {
	return s.commitAndPublish(ctx, job, subject, e, false)
}

// commitAndPublish is commit; with background, the inventory is published
// while the caller goes on (a deploy's pin changes a parameter of every
// host of the role, and Puppet reads the ENC from git, not from the bucket).
func (s *Service) commitAndPublish(ctx context.Context, job *command.Job, subject string, e edit, background bool) (gitrepo.Result, error) {
	author := gitrepo.Signature{Name: s.cfg.ENC.AuthorName, Email: s.cfg.ENC.AuthorEmail}
	res, err := s.repo.Commit(ctx, author, commitMessage(job, subject), func(t *gitrepo.Tree) ([]gitrepo.Change, error) {
		inv, before, err := s.loader.Load(treeSource{t})
		if err != nil {
			return nil, err
		}
		changes, err := e(inv, t)
		if err != nil || len(changes) == 0 {
			return nil, err
		}
		ov := overlay{base: treeSource{t}, changes: map[string][]byte{}}
		for _, c := range changes {
			ov.changes[c.Path] = c.Data
		}
		_, after, err := s.loader.Load(ov)
		if err != nil {
			return nil, err
		}
		if fresh := newProblems(before, after); len(fresh) > 0 {
			return nil, command.UserErrorf("refused, nothing committed: the change would break the ENC:\n%s", fresh.Error())
		}
		return changes, nil
	})
	if err != nil {
		if _, ok := command.IsUserError(err); ok {
			return res, err
		}
		return res, fmt.Errorf("commit %q: %w", subject, err)
	}
	if res.NoOp {
		return res, nil
	}
	publish := func(ctx context.Context) {
		if err := s.publishAt(ctx, res.Commit, job.Request().GetId()); err != nil {
			// The commit is in; the timer publishes it if this failed.
			s.log.Warn("publish after commit", "commit", res.Commit.String(), "error", err)
		}
	}
	if !background {
		publish(ctx)
		return res, nil
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		publish(pctx)
	}()
	return res, nil
}

func newProblems(before, after enc.Problems) enc.Problems {
	old := map[string]bool{}
	for _, p := range before {
		old[p.String()] = true
	}
	var out enc.Problems
	for _, p := range after {
		if !old[p.String()] {
			out = append(out, p)
		}
	}
	return out
}

// commitMessage: the subject, who asked and where, the command id and the
// job, and a Co-authored-by trailer for the person.
func commitMessage(job *command.Job, subject string) string {
	var b strings.Builder
	b.WriteString(subject)
	b.WriteString("\n\n")
	who := job.Requester()
	conv := job.Request().GetConversation()
	fmt.Fprintf(&b, "Requested by %s (%s) in %s/%s.\n", nonEmpty(who.GetName(), who.GetId()), who.GetId(), conv.GetAdapter(), conv.GetChannel())
	if t := job.Text(); t != "" {
		fmt.Fprintf(&b, "Reason: %s\n", oneLine(t))
	}
	fmt.Fprintf(&b, "\nCommand-Id: %s\nJob: %s\n", oneLine(job.Request().GetId()), job.ID())
	fmt.Fprintf(&b, "\nCo-authored-by: %s <%s>\n", oneLine(nonEmpty(who.GetName(), who.GetId())), coAuthorEmail(who))
	return b.String()
}

func coAuthorEmail(who *chatv1.Identity) string {
	if e := who.GetEmail(); e != "" && !strings.ContainsAny(e, "<>\n") {
		return e
	}
	// No e-mail known: a stable, obviously-not-deliverable address from the id.
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, who.GetId())
	return id + "@users.switchboard.invalid"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func nonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// refresh fetches and publishes the head if it is not published yet.
func (s *Service) refresh(ctx context.Context, commandID string) error {
	head, err := s.repo.Fetch(ctx)
	if err != nil {
		return err
	}
	return s.publishAt(ctx, head, commandID)
}

// errInvalid means the revision has problems and was not published.
var errInvalid = errors.New("the ENC has problems; the last good inventory stays published")

// publishAt publishes the inventory at commit to KV sb_inventory with an
// inventory.changed event, unless it is already there. A revision with
// problems is reported in the ops channel once and not published.
func (s *Service) publishAt(ctx context.Context, commit plumbing.Hash, commandID string) error {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	rev := commit.String()
	if rev == s.published {
		return nil
	}
	inv, probs, _, err := s.inventoryAt(commit)
	if err != nil {
		return err
	}
	if len(probs) > 0 {
		if s.reported != rev {
			s.reported = rev
			s.reportProblems(ctx, commit, probs)
		}
		return fmt.Errorf("revision %s: %w", rev[:12], errInvalid)
	}
	old, err := inventory.Load(ctx, s.invKV)
	if err != nil && !errors.Is(err, inventory.ErrEmpty) {
		return err
	}
	if old != nil && old.Meta.GetRevision() == rev {
		s.published = rev // another replica did it
		return nil
	}
	hosts := inv.Proto()
	meta, err := inventory.Publish(ctx, s.invKV, rev, hosts, inv.Pins())
	if err != nil {
		return fmt.Errorf("publish inventory %s: %w", rev[:12], err)
	}
	s.published = rev
	snap := &inventory.Snapshot{Meta: meta, Hosts: map[string]*inventoryv1.Host{}}
	for _, h := range hosts {
		snap.Hosts[h.GetName()] = h
	}
	d := inventory.Diff(old, snap)
	s.log.Info("published inventory", "revision", rev, "hosts", len(hosts), "added", len(d.GetAdded()), "removed", len(d.GetRemoved()), "moved", len(d.GetMoved()), "changed", len(d.GetChanged()))
	diff, err := wire.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode inventory diff: %w", err)
	}
	_, err = emit.Event(ctx, s.js, &eventv1.Event{
		Id:        "inventory-" + rev,
		Source:    "inventory",
		Type:      "changed",
		Severity:  eventv1.Severity_SEVERITY_INFO,
		Title:     fmt.Sprintf("inventory at %s: %s", rev[:12], diffSummary(d)),
		Fields:    map[string]string{"diff": string(diff), "revision": rev},
		CommandId: commandID,
	})
	if err != nil {
		return fmt.Errorf("publish inventory.changed event: %w", err)
	}
	return nil
}

func diffSummary(d *inventoryv1.Diff) string {
	var parts []string
	add := func(n int, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(len(d.GetAdded()), "added")
	add(len(d.GetRemoved()), "removed")
	add(len(d.GetMoved()), "moved")
	add(len(d.GetChanged()), "changed")
	if len(parts) == 0 {
		return "no host changes"
	}
	return strings.Join(parts, ", ")
}

// reportProblems tells the ops channel that a revision was not published.
func (s *Service) reportProblems(ctx context.Context, commit plumbing.Hash, probs enc.Problems) {
	rev := commit.String()
	who := ""
	if log, err := s.repo.Log(1); err == nil && len(log) > 0 && log[0].Hash == commit {
		who = fmt.Sprintf(" (last commit by %s: %q)", log[0].Author.Name, log[0].Subject)
	}
	text := fmt.Sprintf("The ENC at %s has %d problem(s)%s; the inventory stays at the last good revision %s until they are fixed:\n```\n%s\n```",
		rev[:12], len(probs), who, shortRev(s.published), probs.Error())
	_, err := emit.Post(ctx, s.js, &chatv1.ChatPost{
		Id:           "enc-problems-" + rev,
		Conversation: &chatv1.Conversation{Adapter: s.cfg.Ops.Adapter, Channel: s.cfg.Ops.Channel},
		Author:       &chatv1.Identity{Id: "service:" + ServiceName, Name: ServiceName, Automation: true},
		Kind:         chatv1.Kind_KIND_NOTICE,
		Text:         text,
	})
	if err != nil {
		s.log.Error("report ENC problems", "revision", rev, "error", err)
	}
	s.log.Warn("ENC has problems; not published", "revision", rev, "problems", len(probs))
}

func shortRev(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	if r == "" {
		return "(none yet)"
	}
	return r
}
