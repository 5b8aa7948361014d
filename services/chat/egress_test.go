package chat_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"

	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/chat"
)

// recAdapter is an Adapter that records what it delivers. fail, when set,
// decides the outcome of each attempt (1, 2, …) at a post; hold, when set,
// is called before each attempt, outside the adapter's lock, and may block.
type recAdapter struct {
	name string
	fail func(p *chatv1.ChatPost, attempt int) error
	hold func(p *chatv1.ChatPost)

	mu        sync.Mutex
	delivered []*chatv1.ChatPost
	attempts  map[string]int
}

var _ chat.Adapter = (*recAdapter)(nil)

func newRecAdapter(name string) *recAdapter {
	return &recAdapter{name: name, attempts: map[string]int{}}
}

func (a *recAdapter) Name() string { return a.name }

func (a *recAdapter) Deliver(_ context.Context, p *chatv1.ChatPost) error {
	if a.hold != nil {
		a.hold(p)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.attempts[p.GetId()]++
	if a.fail != nil {
		if err := a.fail(p, a.attempts[p.GetId()]); err != nil {
			return err
		}
	}
	a.delivered = append(a.delivered, proto.CloneOf(p))
	return nil
}

// got returns the posts delivered so far, in the order of delivery.
func (a *recAdapter) got() []*chatv1.ChatPost {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.delivered)
}

func (a *recAdapter) attemptsAt(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.attempts[id]
}

// publish puts posts on the CHAT stream, in order.
func (h *harness) publish(posts ...*chatv1.ChatPost) {
	h.t.Helper()
	ctx := natstest.Context(h.t, 20*time.Second)
	for _, p := range posts {
		if _, err := emit.Post(ctx, h.js, p); err != nil {
			h.t.Fatalf("publish post %s: %v", p.GetId(), err)
		}
	}
}

// interleaved returns n notices for adapter, spread round-robin over
// channels c0…c<channels-1>, with ids "<prefix>-<i>".
func interleaved(adapter, prefix string, n, channels int) []*chatv1.ChatPost {
	var out []*chatv1.ChatPost
	for i := range n {
		out = append(out, &chatv1.ChatPost{
			Id:           fmt.Sprintf("%s-%03d", prefix, i),
			Conversation: &chatv1.Conversation{Adapter: adapter, Channel: fmt.Sprintf("c%d", i%channels)},
			Kind:         chatv1.Kind_KIND_NOTICE,
			Text:         fmt.Sprintf("notice %d", i),
		})
	}
	return out
}

// byChannel returns the ids of posts per channel, in the order given.
func byChannel(posts []*chatv1.ChatPost) map[string][]string {
	out := map[string][]string{}
	for _, p := range posts {
		ch := p.GetConversation().GetChannel()
		out[ch] = append(out[ch], p.GetId())
	}
	return out
}

// waitDelivered waits until the adapters together delivered n posts.
func waitDelivered(t *testing.T, n int, adapters ...*recAdapter) {
	t.Helper()
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		got := 0
		for _, a := range adapters {
			got += len(a.got())
		}
		if got < n {
			return fmt.Errorf("%d of %d posts delivered", got, n)
		}
		return nil
	})
}

func TestEgressDeliversEveryPostOfAnAdapterInOrderPerChannel(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	svc := h.startChat(testConfig())
	a := newRecAdapter("rec")
	if err := svc.AddAdapter(t.Context(), a, chat.EgressOptions{Shards: 3}); err != nil {
		t.Fatal(err)
	}

	posts := interleaved("rec", "p", 200, 5)
	// Posts to other adapters are not this adapter's business.
	h.publish(interleaved("other", "o", 10, 2)...)
	h.publish(posts...)
	waitDelivered(t, len(posts), a)

	if diff := cmp.Diff(byChannel(posts), byChannel(a.got())); diff != "" {
		t.Fatalf("delivered posts per channel, in order (-want +got):\n%s", diff)
	}
	if got := len(a.got()); got != len(posts) {
		t.Fatalf("delivered %d posts, want %d", got, len(posts))
	}
}

func TestEgressRetriesAFailingDeliveryInOrderAndSkipsAPermanentFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	svc := h.startChat(testConfig())
	a := newRecAdapter("rec")
	a.fail = func(p *chatv1.ChatPost, attempt int) error {
		switch {
		case p.GetId() == "p-006" && attempt <= 3: // channel c1
			return errors.New("503 service unavailable")
		case p.GetId() == "p-012": // channel c2
			return chat.Permanent(errors.New("channel_not_found"))
		}
		return nil
	}
	if err := svc.AddAdapter(t.Context(), a, chat.EgressOptions{}); err != nil {
		t.Fatal(err)
	}

	posts := interleaved("rec", "p", 30, 5)
	h.publish(posts...)
	waitDelivered(t, len(posts)-1, a)

	var want []*chatv1.ChatPost
	for _, p := range posts {
		if p.GetId() != "p-012" {
			want = append(want, p)
		}
	}
	if diff := cmp.Diff(byChannel(want), byChannel(a.got())); diff != "" {
		t.Fatalf("delivered posts per channel, in order (-want +got):\n%s", diff)
	}
	if n := a.attemptsAt("p-006"); n != 4 {
		t.Fatalf("p-006 was attempted %d times, want 4 (3 failures, then success)", n)
	}
	if n := a.attemptsAt("p-012"); n != 1 {
		t.Fatalf("p-012 was attempted %d times, want 1 (a permanent failure is not retried)", n)
	}
	// A later post to the channel of the permanent failure still goes out.
	later := &chatv1.ChatPost{Id: "p-later", Conversation: &chatv1.Conversation{Adapter: "rec", Channel: "c2"}, Kind: chatv1.Kind_KIND_NOTICE, Text: "later"}
	h.publish(later)
	waitDelivered(t, len(want)+1, a)
	if got := a.got(); got[len(got)-1].GetId() != "p-later" {
		t.Fatalf("last delivered %s, want p-later", got[len(got)-1].GetId())
	}
}

// TestEgressOnTwoReplicasDeliversOnceAndFailsOver registers the same
// adapter on two chat replicas: one of them (the pinned one) delivers each
// post, and when it stops the other takes over.
func TestEgressOnTwoReplicasDeliversOnceAndFailsOver(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	opts := chat.EgressOptions{PinnedTTL: time.Second}
	svcs := []*chat.Service{h.startChat(testConfig()), h.startChat(testConfig())}
	adapters := []*recAdapter{newRecAdapter("pin"), newRecAdapter("pin")}
	for i, svc := range svcs {
		if err := svc.AddAdapter(t.Context(), adapters[i], opts); err != nil {
			t.Fatal(err)
		}
	}

	first := interleaved("pin", "a", 50, 5)
	h.publish(first...)
	waitDelivered(t, len(first), adapters...)
	all := append(adapters[0].got(), adapters[1].got()...)
	if diff := cmp.Diff(sortedIDs(first), sortedIDs(all)); diff != "" {
		t.Fatalf("while both run, every post must be delivered exactly once (-want +got):\n%s", diff)
	}

	// The pinned replica delivers everything while it pulls.
	pinned := 0
	if len(adapters[1].got()) > 0 {
		pinned = 1
	}
	if n := len(adapters[pinned].got()); n != len(first) {
		t.Fatalf("replicas delivered %d and %d posts; want all %d from the pinned one", len(adapters[0].got()), len(adapters[1].got()), len(first))
	}
	svcs[pinned].Stop(t.Context())
	before := len(adapters[pinned].got())

	second := interleaved("pin", "b", 20, 5)
	h.publish(second...)
	other := adapters[1-pinned]
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		n := 0
		for _, p := range other.got() {
			if p.GetId() >= "b" {
				n++
			}
		}
		if n < len(second) {
			return fmt.Errorf("the remaining replica delivered %d of %d new posts", n, len(second))
		}
		return nil
	})
	var got []*chatv1.ChatPost
	for _, p := range other.got() {
		if p.GetId() >= "b" {
			got = append(got, p)
		}
	}
	if diff := cmp.Diff(byChannel(second), byChannel(got)); diff != "" {
		t.Fatalf("new posts delivered by the remaining replica (-want +got):\n%s", diff)
	}
	if n := len(adapters[pinned].got()); n != before {
		t.Fatalf("the stopped replica delivered %d more posts", n-before)
	}
}

func sortedIDs(posts []*chatv1.ChatPost) []string {
	var ids []string
	for _, p := range posts {
		ids = append(ids, p.GetId())
	}
	slices.Sort(ids)
	return ids
}

// batchRecAdapter is a recAdapter that takes a channel's backlog at once,
// as the Slack adapter does, and delivers it post by post until one fails.
type batchRecAdapter struct{ *recAdapter }

var _ chat.BatchAdapter = batchRecAdapter{}

func (a batchRecAdapter) DeliverBatch(ctx context.Context, posts []*chatv1.ChatPost) (int, error) {
	for i, p := range posts {
		if err := a.Deliver(ctx, p); err != nil {
			return i, err
		}
	}
	return len(posts), nil
}

// fastRetries retries within milliseconds, so that a test sees many
// failures in a row without waiting out the production backoff.
var fastRetries = chat.EgressOptions{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

// firstDeliveries drops repeated deliveries of a post (at-least-once
// delivery allows them) and keeps the first, in order.
func firstDeliveries(posts []*chatv1.ChatPost) []*chatv1.ChatPost {
	seen := map[string]bool{}
	var out []*chatv1.ChatPost
	for _, p := range posts {
		if !seen[p.GetId()] {
			seen[p.GetId()] = true
			out = append(out, p)
		}
	}
	return out
}

// TestEgressRetriesThroughALongOutageAndLosesNothing: the chat system
// refuses 80 attempts in a row, so the first post of each channel fails
// far more often than the 10 attempts after which the egress used to drop
// it. Every post must still arrive once, in order per channel.
func TestEgressRetriesThroughALongOutageAndLosesNothing(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		adapter func(*recAdapter) chat.Adapter
	}{
		{"an adapter that takes one post at a time", func(a *recAdapter) chat.Adapter { return a }},
		{"an adapter that takes a channel's backlog", func(a *recAdapter) chat.Adapter { return batchRecAdapter{a} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			svc := h.startChat(testConfig())
			a := newRecAdapter("rec")
			const outage = 80
			var attempts atomic.Int64
			a.fail = func(*chatv1.ChatPost, int) error {
				if attempts.Add(1) <= outage {
					return errors.New("503 service unavailable")
				}
				return nil
			}
			if err := svc.AddAdapter(t.Context(), tt.adapter(a), fastRetries); err != nil {
				t.Fatal(err)
			}

			posts := interleaved("rec", "p", 100, 4)
			h.publish(posts...)
			waitDelivered(t, len(posts), a)

			got := a.got()
			if diff := cmp.Diff(sortedIDs(posts), sortedIDs(got)); diff != "" {
				t.Fatalf("every post must be delivered exactly once (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(byChannel(posts), byChannel(got)); diff != "" {
				t.Fatalf("delivered posts per channel, in order (-want +got):\n%s", diff)
			}
			most := 0
			for _, p := range posts {
				most = max(most, a.attemptsAt(p.GetId()))
			}
			if most <= 10 {
				t.Fatalf("no post was attempted more than 10 times (at most %d): the outage did not outlast the old limit", most)
			}
		})
	}
}

// TestEgressKeepsOtherChannelsMovingWhileOneRetries gives the egress a
// single delivery slot: a channel waiting to retry must not hold it, and
// its own later posts must wait behind its failing one.
func TestEgressKeepsOtherChannelsMovingWhileOneRetries(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	svc := h.startChat(testConfig())
	a := newRecAdapter("rec")
	var c1Down atomic.Bool
	c1Down.Store(true)
	a.fail = func(p *chatv1.ChatPost, _ int) error {
		if p.GetConversation().GetChannel() == "c1" && c1Down.Load() {
			return errors.New("context deadline exceeded")
		}
		return nil
	}
	opts := fastRetries
	opts.Shards = 1
	if err := svc.AddAdapter(t.Context(), a, opts); err != nil {
		t.Fatal(err)
	}

	posts := interleaved("rec", "p", 40, 4)
	h.publish(posts...)
	waitDelivered(t, 30, a)
	if got := byChannel(a.got())["c1"]; len(got) != 0 {
		t.Fatalf("c1 is down, yet %v were delivered", got)
	}
	c1Down.Store(false)
	waitDelivered(t, len(posts), a)
	if diff := cmp.Diff(byChannel(posts), byChannel(a.got())); diff != "" {
		t.Fatalf("delivered posts per channel, in order (-want +got):\n%s", diff)
	}
	if got := len(a.got()); got != len(posts) {
		t.Fatalf("delivered %d posts, want %d", got, len(posts))
	}
}

// TestEgressReportsAnUndeliverablePostOnceToTheOpsChannel: a post the
// chat system refuses for what it is is dropped with one report; a channel
// that refuses every post (archived) is one report, not one per post; and
// the posts after them go out.
func TestEgressReportsAnUndeliverablePostOnceToTheOpsChannel(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	svc := h.startChat(testConfig())
	a := newRecAdapter("rec")
	a.fail = func(p *chatv1.ChatPost, _ int) error {
		switch {
		case p.GetId() == "p-006": // channel c1
			return chat.Permanent(errors.New("msg_too_long"))
		case p.GetConversation().GetChannel() == "c3" && p.GetId() != "c3-back":
			return chat.Permanent(errors.New("is_archived"))
		}
		return nil
	}
	if err := svc.AddAdapter(t.Context(), a, chat.EgressOptions{OpsChannel: "ops"}); err != nil {
		t.Fatal(err)
	}

	posts := interleaved("rec", "p", 30, 5)
	h.publish(posts...)
	// The channel takes posts again; this one arrives only after the egress
	// has dealt with every refused post before it.
	back := &chatv1.ChatPost{Id: "c3-back", Conversation: &chatv1.Conversation{Adapter: "rec", Channel: "c3"}, Kind: chatv1.Kind_KIND_NOTICE, Text: "back"}
	h.publish(back)

	var want, refused []*chatv1.ChatPost
	for _, p := range posts {
		if p.GetId() == "p-006" || p.GetConversation().GetChannel() == "c3" {
			refused = append(refused, p)
		} else {
			want = append(want, p)
		}
	}
	want = append(want, back)
	// Delivered posts, and reports delivered to the ops channel.
	split := func() (delivered, reports []*chatv1.ChatPost) {
		for _, p := range a.got() {
			if p.GetConversation().GetChannel() == "ops" {
				reports = append(reports, p)
			} else {
				delivered = append(delivered, p)
			}
		}
		return delivered, reports
	}
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		delivered, reports := split()
		if len(delivered) < len(want) || len(reports) < 2 {
			return fmt.Errorf("%d of %d posts and %d of 2 reports delivered", len(delivered), len(want), len(reports))
		}
		return nil
	})

	delivered, reports := split()
	if diff := cmp.Diff(byChannel(want), byChannel(delivered)); diff != "" {
		t.Fatalf("delivered posts per channel, in order (-want +got):\n%s", diff)
	}
	for _, p := range refused {
		if n := a.attemptsAt(p.GetId()); n != 1 {
			t.Errorf("%s was attempted %d times, want 1 (a permanent failure is not retried)", p.GetId(), n)
		}
	}
	var stored []string
	for _, p := range h.posts(&chatv1.Conversation{Adapter: "rec", Channel: "ops"}) {
		stored = append(stored, p.GetText())
	}
	slices.Sort(stored)
	wantReports := []string{
		"I could not deliver a post to c1 and dropped it (post p-006): msg_too_long. Later posts to c1 that fail the same way are only logged.",
		"I could not deliver a post to c3 and dropped it (post p-003): is_archived. Later posts to c3 that fail the same way are only logged.",
	}
	if diff := cmp.Diff(wantReports, stored); diff != "" {
		t.Fatalf("reports in the ops channel: one per refused post or refusing channel (-want +got):\n%s", diff)
	}
	for _, r := range reports {
		if r.GetKind() != chatv1.Kind_KIND_NOTICE || !strings.HasPrefix(r.GetText(), "I could not deliver") {
			t.Errorf("report delivered as %v %q, want a notice", r.GetKind(), r.GetText())
		}
	}
	if len(reports) != 2 {
		t.Fatalf("the ops channel was sent %d reports, want 2", len(reports))
	}
}

// TestEgressHandsHeldPostsBackInOrderWhenItStops stops a replica while
// it retries a channel's first post: the posts it holds go back to the
// stream at once, and the next replica delivers them in order, without
// waiting for the server's ack wait (a minute) to run out. (A post still
// on its way to the replica as it stops is beyond its reach: the server
// redelivers it on its own, maybe first.)
func TestEgressHandsHeldPostsBackInOrderWhenItStops(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	opts := fastRetries
	opts.PinnedTTL = time.Second
	first := h.startChat(testConfig())
	down := newRecAdapter("handover")
	down.fail = func(p *chatv1.ChatPost, _ int) error {
		if p.GetConversation().GetChannel() == "c1" {
			return errors.New("502 bad gateway")
		}
		return nil
	}
	if err := first.AddAdapter(t.Context(), down, opts); err != nil {
		t.Fatal(err)
	}

	posts := interleaved("handover", "p", 20, 2)
	h.publish(posts...)
	// Posts reach a replica in stream order: once this one is delivered,
	// the replica holds every post of c1.
	h.publish(&chatv1.ChatPost{Id: "p-last", Conversation: &chatv1.Conversation{Adapter: "handover", Channel: "c0"}, Kind: chatv1.Kind_KIND_NOTICE, Text: "last"})
	waitDelivered(t, 11, down) // channel c0
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		if n := down.attemptsAt("p-001"); n < 3 {
			return fmt.Errorf("c1's first post attempted %d times", n)
		}
		return nil
	})
	first.Stop(t.Context())

	second := h.startChat(testConfig())
	up := newRecAdapter("handover")
	if err := second.AddAdapter(t.Context(), up, opts); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, 10, up)
	if diff := cmp.Diff(map[string][]string{"c1": byChannel(posts)["c1"]}, byChannel(up.got())); diff != "" {
		t.Fatalf("posts the stopped replica held, delivered by the next (-want +got):\n%s", diff)
	}
	if got := byChannel(down.got())["c1"]; len(got) != 0 {
		t.Fatalf("the failing replica delivered %v", got)
	}
}
