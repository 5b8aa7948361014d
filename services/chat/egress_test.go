package chat_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
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
// decides the outcome of each attempt (1, 2, …) at a post.
type recAdapter struct {
	name string
	fail func(p *chatv1.ChatPost, attempt int) error

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
