package slack

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/slack-go/slack"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// Reactions on the message that started a command.
const (
	reactionAccepted  = "eyes"             // 👀 seen, working on it
	reactionSucceeded = "white_check_mark" // ✅
	reactionFailed    = "x"                // ❌
)

// UndeliverableError says a channel cannot take posts at all (it does not
// exist, is archived, or the bot was not invited). The chat egress skips
// the post instead of retrying (Permanent).
type UndeliverableError struct {
	Channel string
	// Reason is Slack's error code: channel_not_found, is_archived,
	// not_in_channel.
	Reason string
}

func (e *UndeliverableError) Error() string {
	return fmt.Sprintf("slack: cannot post to %s: %s", e.Channel, e.Reason)
}

// Permanent tells the chat egress that retrying cannot help.
func (e *UndeliverableError) Permanent() bool { return true }

// refusedError is a post Slack refuses for what it is (too long, bad
// blocks): permanent too, but not the channel's fault.
type refusedError struct{ err error }

func (e *refusedError) Error() string   { return e.err.Error() }
func (e *refusedError) Unwrap() error   { return e.err }
func (e *refusedError) Permanent() bool { return true }

// Slack error codes that mean "this channel takes no posts from us", with
// the sentence the ops channel is told.
var undeliverable = map[string]string{
	"channel_not_found": "the channel does not exist or I cannot see it",
	"is_archived":       "the channel is archived",
	"not_in_channel":    "I am not a member of it",
	"restricted_action": "the workspace does not let me post there",
}

// Slack error codes that no retry of the same post can fix.
var refused = map[string]bool{"msg_too_long": true, "invalid_blocks": true, "no_text": true,
	"invalid_arguments": true, "too_many_attachments": true, "invalid_blocks_format": true}

// tsRe is a Slack message timestamp, the id of a message in a channel.
var tsRe = regexp.MustCompile(`^[0-9]{9,11}\.[0-9]{6}$`)

// slackTS returns the message ts in s: s itself, or the ts at the end of a
// message id "T…-<ts>" (ChatPost.reply_to). Anything else (a slash
// command's id, a post id) gives "".
func slackTS(s string) string {
	if tsRe.MatchString(s) {
		return s
	}
	if i := strings.LastIndexByte(s, '-'); i >= 0 && tsRe.MatchString(s[i+1:]) {
		return s[i+1:]
	}
	return ""
}

// Deliver shows one post in Slack (chat.Adapter).
func (a *Adapter) Deliver(ctx context.Context, p *chatv1.ChatPost) error {
	_, err := a.DeliverBatch(ctx, []*chatv1.ChatPost{p})
	return err
}

// DeliverBatch delivers posts of one channel, in order (chat.BatchAdapter).
// The egress hands over everything waiting for the channel, so when more
// than cfg.DigestAfter posts wait, runs of notices among them become one
// digest (the list goes in its thread), and a progress update followed by
// a newer one of the same job is folded into it. It returns how many posts
// from the start are done — delivered, or part of a delivered digest or
// update — and why the next one is not.
func (a *Adapter) DeliverBatch(ctx context.Context, posts []*chatv1.ChatPost) (int, error) {
	done := 0
	for _, u := range a.plan(posts) {
		var err error
		switch {
		case u.skip:
		case u.digest:
			err = a.deliverDigest(ctx, u.posts)
		default:
			err = a.deliverOne(ctx, u.posts[0])
		}
		if err != nil {
			return done, err
		}
		done += len(u.posts)
	}
	return done, nil
}

// unit is what one step of a batch delivers.
type unit struct {
	posts  []*chatv1.ChatPost
	digest bool
	// skip: a progress update that a later one in the batch replaces.
	skip bool
}

func (a *Adapter) plan(posts []*chatv1.ChatPost) []unit {
	coalesce := a.cfg.DigestAfter > 0 && len(posts) > a.cfg.DigestAfter
	var units []unit
	for i := 0; i < len(posts); {
		p := posts[i]
		if coalesce && p.GetKind() == chatv1.Kind_KIND_NOTICE {
			j := i + 1
			for j < len(posts) && posts[j].GetKind() == chatv1.Kind_KIND_NOTICE &&
				posts[j].GetConversation().GetThread() == p.GetConversation().GetThread() {
				j++
			}
			if j-i >= 2 {
				units = append(units, unit{posts: posts[i:j], digest: true})
				i = j
				continue
			}
		}
		u := unit{posts: posts[i : i+1]}
		if p.GetKind() == chatv1.Kind_KIND_PROGRESS && p.GetJobId() != "" {
			for _, q := range posts[i+1:] {
				if q.GetKind() == chatv1.Kind_KIND_PROGRESS && q.GetJobId() == p.GetJobId() {
					u.skip = true
					break
				}
			}
		}
		units = append(units, u)
		i++
	}
	return units
}

// deliverOne posts (or, for progress, edits) one message, then sets the
// reactions on the command's message.
func (a *Adapter) deliverOne(ctx context.Context, p *chatv1.ChatPost) error {
	ch := p.GetConversation().GetChannel()
	if _, ok := a.delivered.get(p.GetId()); ok && p.GetId() != "" {
		// The egress delivers at least once; this one already is.
		return nil
	}
	if code, ok := a.dead.get(ch); ok {
		return &UndeliverableError{Channel: ch, Reason: code}
	}
	thread := a.threadOf(ctx, p)
	r := render(p, a.cfg.MaxTextBytes)
	var ts string
	var err error
	switch {
	case r.file != nil:
		ts, err = a.upload(ctx, ch, thread, *r.file, r.text)
	case p.GetKind() == chatv1.Kind_KIND_PROGRESS && p.GetJobId() != "":
		ts, err = a.progressMessage(ctx, ch, thread, p.GetJobId(), r)
	default:
		ts, err = a.post(ctx, ch, thread, r)
	}
	if err != nil {
		return err
	}
	for _, up := range r.uploads {
		if _, err := a.upload(ctx, ch, firstNonEmpty(thread, ts), up, ""); err != nil {
			return err
		}
	}
	a.delivered.put(p.GetId(), ts)
	if p.GetConversation().GetThread() == "" {
		// Only a message at the channel level can start a thread.
		a.record(ctx, ch, ts, p.GetId())
	}
	if orig := slackTS(p.GetReplyTo()); orig != "" {
		switch p.GetReaction() {
		case chatv1.Reaction_REACTION_ACCEPTED:
			a.react(ctx, ch, orig, reactionAccepted, true)
		case chatv1.Reaction_REACTION_SUCCEEDED:
			a.react(ctx, ch, orig, reactionAccepted, false)
			a.react(ctx, ch, orig, reactionSucceeded, true)
		case chatv1.Reaction_REACTION_FAILED:
			a.react(ctx, ch, orig, reactionAccepted, false)
			a.react(ctx, ch, orig, reactionFailed, true)
		}
	}
	if k := p.GetKind(); (k == chatv1.Kind_KIND_RESULT || k == chatv1.Kind_KIND_ERROR) && p.GetJobId() != "" {
		a.progress.del(p.GetJobId())
	}
	return nil
}

// threadOf returns the ts of the message a post replies under, or "" for
// the channel level. A post's thread is a Slack ts or message id (a
// command's thread); empty or a slash command's id (there is no message
// to reply under); or the id of an earlier post (the router threads an
// incident's later events under its first, a digest's list under its
// headline), which is looked up in what this replica delivered, then in
// BucketPosts. A post whose thread is not known (yet: its first post was
// skipped, or is older than the bucket's TTL) goes to the channel, and
// the log says so: shown out of place beats not shown.
func (a *Adapter) threadOf(ctx context.Context, p *chatv1.ChatPost) string {
	ch, thread := p.GetConversation().GetChannel(), p.GetConversation().GetThread()
	if thread == "" || isSlashID(thread) {
		return ""
	}
	if ts := slackTS(thread); ts != "" {
		return ts
	}
	if ts, ok := a.delivered.get(thread); ok && ts != "" {
		return ts
	}
	attrs := []any{"channel", ch, "post_id", p.GetId(), "thread", thread}
	if a.posts != nil {
		kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		e, err := a.posts.Get(kctx, postKey(ch, thread))
		cancel()
		if err == nil && len(e.Value()) > 0 {
			ts := string(e.Value())
			a.delivered.put(thread, ts)
			return ts
		}
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			attrs = append(attrs, "error", err)
		}
	}
	a.log.Warn("slack: the message this post threads under is not known (yet); posting it at the channel level", attrs...)
	return ""
}

// record keeps, in BucketPosts, which Slack message channel-level posts
// became, for posts that later thread under them on any replica. A failed
// write is logged, not returned: the post is in Slack, and delivering it
// again would show it twice.
func (a *Adapter) record(ctx context.Context, ch, ts string, ids ...string) {
	if a.posts == nil || ts == "" {
		return
	}
	// The delivery's context may be about to end; the record should not.
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, id := range ids {
		if id == "" {
			continue
		}
		if _, err := a.posts.Put(kctx, postKey(ch, id), []byte(ts)); err != nil {
			a.log.Warn("slack: record the message a post became; posts threading under it will go to the channel", "channel", ch, "post_id", id, "error", err)
			return
		}
	}
}

// postKey is a post's key in BucketPosts: post ids come from services and
// may hold characters KV keys do not allow.
func postKey(ch, id string) string { return wire.Token(ch) + "." + wire.Token(id) }

// progressMessage edits the job's progress message in place, or posts it
// when the job has none yet (or it was deleted).
func (a *Adapter) progressMessage(ctx context.Context, ch, thread, job string, r rendered) (string, error) {
	if ts, ok := a.progress.get(job); ok {
		err := a.call(ctx, ch, callUnpaced, "chat.update", func(c context.Context) error {
			_, _, _, err := a.api.UpdateMessageContext(c, ch, ts, msgOptions(r, "")...)
			return err
		})
		var se slack.SlackErrorResponse
		if err == nil || !(errors.As(err, &se) && (se.Err == "message_not_found" || se.Err == "cant_update_message")) {
			return ts, err
		}
	}
	ts, err := a.post(ctx, ch, thread, r)
	if err == nil {
		a.progress.put(job, ts)
	}
	return ts, err
}

func msgOptions(r rendered, thread string) []slack.MsgOption {
	opts := []slack.MsgOption{slack.MsgOptionText(r.text, false)}
	if len(r.blocks) > 0 {
		opts = append(opts, slack.MsgOptionBlocks(r.blocks...))
	}
	if thread != "" {
		opts = append(opts, slack.MsgOptionTS(thread))
	}
	return opts
}

// post sends one message, paced per channel, and returns its ts.
func (a *Adapter) post(ctx context.Context, ch, thread string, r rendered) (string, error) {
	var ts string
	err := a.call(ctx, ch, callPost, "chat.postMessage", func(c context.Context) error {
		var err error
		_, ts, err = a.api.PostMessageContext(c, ch, msgOptions(r, thread)...)
		return err
	})
	return ts, err
}

// upload puts content up as a file in the channel (thread) with the
// current three-step API: files.getUploadURLExternal, the upload itself,
// files.completeUploadExternal. Only the completion shares the file, which
// posts a message: it is paced like one (Slack counts it against the
// channel's message rate), and it alone is retried after a 429, so the
// bytes go up once.
func (a *Adapter) upload(ctx context.Context, ch, thread string, f upload, comment string) (string, error) {
	var fileID string
	err := a.call(ctx, ch, callUnpaced, "files.getUploadURLExternal", func(c context.Context) error {
		u, err := a.api.GetUploadURLExternalContext(c, slack.GetUploadURLExternalParameters{
			FileName: f.name, FileSize: len(f.content), SnippetType: f.snippetType})
		if err != nil {
			return err
		}
		fileID = u.FileID
		return a.api.UploadToURL(c, slack.UploadToURLParameters{UploadURL: u.UploadURL, Filename: f.name, Content: f.content})
	})
	if err != nil {
		return "", err
	}
	err = a.call(ctx, ch, callPost, "files.completeUploadExternal", func(c context.Context) error {
		_, err := a.api.CompleteUploadExternalContext(c, slack.CompleteUploadExternalParameters{
			Files: []slack.FileSummary{{ID: fileID, Title: f.title}}, Channel: ch, ThreadTimestamp: thread, InitialComment: comment})
		return err
	})
	// completeUploadExternal does not return the message's ts; replies to
	// a file go to the same thread the file went to.
	return thread, err
}

// react adds or removes a reaction. A reaction is decoration: failures
// are logged, never fail the post they belong to.
func (a *Adapter) react(ctx context.Context, ch, ts, name string, add bool) {
	what := "reactions.remove"
	if add {
		what = "reactions.add"
	}
	err := a.call(ctx, ch, callReact, what, func(c context.Context) error {
		ref := slack.NewRefToMessage(ch, ts)
		if add {
			return a.api.AddReactionContext(c, name, ref)
		}
		return a.api.RemoveReactionContext(c, name, ref)
	})
	var se slack.SlackErrorResponse
	if err == nil || (errors.As(err, &se) &&
		(se.Err == "already_reacted" || se.Err == "no_reaction" || se.Err == "message_not_found")) {
		return
	}
	a.log.Warn("slack: reaction", "channel", ch, "reaction", name, "error", err)
}

// callKind says how call treats a Web API call.
type callKind int

const (
	// callPost posts a message: paced per channel; channel errors make
	// the channel undeliverable.
	callPost callKind = iota
	// callUnpaced posts no message (an edit, a file's bytes before it is
	// shared): not paced; channel errors count.
	callUnpaced
	// callReact sets a reaction: not paced; errors are the caller's.
	callReact
)

// call makes one Web API call for channel ch and retries it: on 429
// after Retry-After (for paced calls the whole channel waits), on 5xx
// and network errors with backoff (5 tries). Slack's "this channel takes
// nothing from us" errors become UndeliverableError, reported once.
func (a *Adapter) call(ctx context.Context, ch string, kind callKind, what string, f func(context.Context) error) error {
	paced := kind == callPost
	for attempt := 0; ; attempt++ {
		if paced {
			if err := a.pace.wait(ctx, ch); err != nil {
				return fmt.Errorf("slack %s to %s: %w", what, ch, err)
			}
		}
		cctx, cancel := context.WithTimeout(ctx, apiTimeout)
		err := f(cctx)
		cancel()
		if paced {
			// Slack counts from when it took the post, not from when it
			// was sent: the next slot is an interval after the answer.
			a.pace.hold(ch, a.pace.interval)
		}
		if err == nil {
			return nil
		}
		var rl *slack.RateLimitedError
		var se slack.SlackErrorResponse
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("slack %s to %s: %w", what, ch, ctx.Err())
		case errors.As(err, &rl):
			d := max(rl.RetryAfter, 100*time.Millisecond)
			if paced {
				a.pace.hold(ch, d)
			} else if err := sleep(ctx, d); err != nil {
				return fmt.Errorf("slack %s to %s: %w", what, ch, err)
			}
			attempt = 0 // waiting out a rate limit is not a failure
			continue
		case errors.As(err, &se):
			if _, ok := undeliverable[se.Err]; ok && kind != callReact {
				return a.undeliverable(ch, se.Err)
			}
			if refused[se.Err] {
				a.tellOpsOnce(ch+"/"+se.Err, ch, fmt.Sprintf(":warning: Slack refused a post to <#%s> (`%s`), so it was skipped; the logs have it.", ch, se.Err))
				a.log.Error("slack: a post was refused and skipped", "channel", ch, "reason", se.Err)
				return &refusedError{fmt.Errorf("slack %s to %s: %w", what, ch, err)}
			}
			return fmt.Errorf("slack %s to %s: %w", what, ch, err)
		}
		// 5xx, a timeout, a reset connection: Slack may be back in a moment.
		if attempt >= 4 {
			return fmt.Errorf("slack %s to %s: %d tries: %w", what, ch, attempt+1, err)
		}
		if err := sleep(ctx, 250*time.Millisecond<<attempt); err != nil {
			return fmt.Errorf("slack %s to %s: %w", what, ch, err)
		}
	}
}

// undeliverable remembers for a minute that ch takes no posts (so a queue
// of them fails fast) and tells the ops channel, once per channel and
// reason for the life of the process.
func (a *Adapter) undeliverable(ch, code string) error {
	a.dead.put(ch, code)
	if a.tellOpsOnce(ch+"/"+code, ch, fmt.Sprintf(":warning: I cannot post to <#%s>: %s (`%s`). Its posts are skipped until that changes: invite me with `/invite @switchboard`, or route them elsewhere.",
		ch, undeliverable[code], code)) {
		a.log.Error("slack: posts to a channel cannot be delivered; they are skipped", "channel", ch, "reason", code)
	}
	return &UndeliverableError{Channel: ch, Reason: code}
}

// tellOpsOnce posts text to the ops channel the first time key is seen in
// the life of the process (never about the ops channel itself), and says
// whether this was the first time.
func (a *Adapter) tellOpsOnce(key, about, text string) bool {
	a.opsMu.Lock()
	first := !a.reported[key]
	a.reported[key] = true
	a.opsMu.Unlock()
	if !first {
		return false
	}
	if ops := a.cfg.OpsChannel; ops != "" && ops != about {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := a.post(ctx, ops, "", rendered{text: text}); err != nil {
				a.log.Error("slack: tell the ops channel", "ops_channel", ops, "error", err)
			}
		}()
	}
	return true
}

// deliverDigest posts one message that stands for a run of notices and
// the list of them in its thread: as messages when they fit in three,
// else as a file. Every notice is in the list, in order.
func (a *Adapter) deliverDigest(ctx context.Context, posts []*chatv1.ChatPost) error {
	first, last := posts[0], posts[len(posts)-1]
	ch := first.GetConversation().GetChannel()
	if code, ok := a.dead.get(ch); ok {
		return &UndeliverableError{Channel: ch, Reason: code}
	}
	key := "digest/" + first.GetId() + "/" + last.GetId()
	thread := a.threadOf(ctx, first)
	// Each step is remembered, so a retry after a failure half-way posts
	// neither the digest nor a part of its list twice.
	head, ok := a.delivered.get(key)
	if !ok {
		ts, err := a.post(ctx, ch, thread, rendered{text: digestText(posts)})
		if err != nil {
			return err
		}
		head = ts
		a.delivered.put(key, head)
	}
	listThread := firstNonEmpty(thread, head)
	chunks, multiline := digestList(posts)
	if len(chunks) > 3 || multiline {
		k := key + "/file"
		if _, ok := a.delivered.get(k); !ok {
			if _, err := a.upload(ctx, ch, listThread, upload{name: "notices.txt", title: fmt.Sprintf("%d notices", len(posts)),
				content: digestFile(posts), snippetType: "text"}, ""); err != nil {
				return err
			}
			a.delivered.put(k, listThread)
		}
	} else {
		for i, c := range chunks {
			k := fmt.Sprintf("%s/%d", key, i)
			if _, ok := a.delivered.get(k); ok {
				continue
			}
			ts, err := a.post(ctx, ch, listThread, rendered{text: c})
			if err != nil {
				return err
			}
			a.delivered.put(k, ts)
		}
	}
	ids := make([]string, 0, len(posts))
	for _, p := range posts {
		a.delivered.put(p.GetId(), head)
		ids = append(ids, p.GetId())
	}
	if first.GetConversation().GetThread() == "" {
		// A later post may thread under any of the notices: it goes to
		// the digest's thread, with the list.
		a.record(ctx, ch, head, ids...)
	}
	return nil
}

// digestText counts the notices by source: "14 notices arrived faster than
// Slack lets me post them: 9 from pagerduty, 5 from ci — the list is in
// the thread."
func digestText(posts []*chatv1.ChatPost) string {
	by := map[string]int{}
	for _, p := range posts {
		by[firstNonEmpty(p.GetAuthor().GetName(), p.GetAuthor().GetId(), "switchboard")]++
	}
	src := make([]string, 0, len(by))
	for s := range by {
		src = append(src, s)
	}
	sort.Slice(src, func(i, j int) bool { return by[src[i]] > by[src[j]] || by[src[i]] == by[src[j]] && src[i] < src[j] })
	parts := make([]string, 0, len(src))
	for _, s := range src {
		parts = append(parts, fmt.Sprintf("%d from %s", by[s], esc(s)))
	}
	return fmt.Sprintf(":inbox_tray: *%d notices* arrived faster than Slack lets me post them: %s — the list is in the thread.",
		len(posts), strings.Join(parts, ", "))
}

// digestList is the numbered list of the notices in messages of at most
// 3,500 bytes; multiline says some notice has more than its first line.
func digestList(posts []*chatv1.ChatPost) (chunks []string, multiline bool) {
	var b strings.Builder
	for i, p := range posts {
		t := strings.TrimSpace(p.GetText())
		if strings.Contains(t, "\n") || len(t) > 500 || len(p.GetBlocks()) > 0 {
			multiline = true
		}
		line := fmt.Sprintf("%d. %s\n", i+1, esc(oneLine(t, 500)))
		if b.Len()+len(line) > 3500 {
			chunks = append(chunks, b.String())
			b.Reset()
		}
		b.WriteString(line)
	}
	if b.Len() > 0 {
		chunks = append(chunks, b.String())
	}
	return chunks, multiline
}

// digestFile is the full text of every notice, numbered.
func digestFile(posts []*chatv1.ChatPost) string {
	var b strings.Builder
	for i, p := range posts {
		fmt.Fprintf(&b, "--- %d/%d", i+1, len(posts))
		if at := p.GetCreatedAt(); at != nil {
			fmt.Fprintf(&b, " %s", at.AsTime().UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(&b, " ---\n%s\n", strings.TrimSpace(p.GetText()))
		for _, bl := range p.GetBlocks() {
			switch {
			case bl.GetCode() != "":
				b.WriteString(bl.GetCode() + "\n")
			case bl.GetMarkdown() != "":
				b.WriteString(bl.GetMarkdown() + "\n")
			case bl.GetFields() != nil:
				for _, f := range bl.GetFields().GetItems() {
					fmt.Fprintf(&b, "%s: %s\n", f.GetTitle(), f.GetValue())
				}
			case bl.GetLink() != nil:
				fmt.Fprintf(&b, "%s: %s\n", bl.GetLink().GetLabel(), bl.GetLink().GetUrl())
			}
		}
	}
	return b.String()
}

// pacer spaces chat.postMessage calls per channel (Slack: about one per
// second per channel) and holds a channel after a 429 for Retry-After.
type pacer struct {
	interval time.Duration
	mu       sync.Mutex
	next     map[string]time.Time
}

func newPacer(interval time.Duration) *pacer {
	return &pacer{interval: interval, next: map[string]time.Time{}}
}

// wait takes the channel's next slot and sleeps until it comes.
func (p *pacer) wait(ctx context.Context, ch string) error {
	p.mu.Lock()
	now := time.Now()
	t := p.next[ch]
	if t.Before(now) {
		t = now
	}
	p.next[ch] = t.Add(p.interval)
	p.mu.Unlock()
	return sleep(ctx, time.Until(t))
}

// hold keeps the channel's next slot at least d away.
func (p *pacer) hold(ch string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := time.Now().Add(d); t.After(p.next[ch]) {
		p.next[ch] = t
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
