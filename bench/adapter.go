package bench

import (
	"context"
	"sync"
	"sync/atomic"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"

	"github.com/switchboard-ops/switchboard/services/chat"
)

// Adapter is a chat.Adapter that shows posts to nobody: it hands the final
// post answering a message (a result or an error) to whoever waits for that
// message's answer, as a chat system would show it to the person.
type Adapter struct {
	name string

	mu      sync.Mutex
	waiting map[string]chan *chatv1.ChatPost // by the id of the message answered

	posts atomic.Int64
}

var _ chat.Adapter = (*Adapter)(nil)

// NewAdapter returns an adapter for conversations of the named adapter.
func NewAdapter(name string) *Adapter {
	return &Adapter{name: name, waiting: map[string]chan *chatv1.ChatPost{}}
}

// Name implements chat.Adapter.
func (a *Adapter) Name() string { return a.name }

// Deliver implements chat.Adapter.
func (a *Adapter) Deliver(_ context.Context, p *chatv1.ChatPost) error {
	a.posts.Add(1)
	if !final(p) {
		return nil
	}
	a.mu.Lock()
	ch, ok := a.waiting[p.GetReplyTo()]
	delete(a.waiting, p.GetReplyTo())
	a.mu.Unlock()
	if ok {
		ch <- p // buffered: never blocks the egress
	}
	return nil
}

// Expect registers interest in the final answer to message msgID. Call it
// before sending the message: the answer may be delivered before the
// ingress returns. cancel forgets the interest when no answer is awaited
// any more.
func (a *Adapter) Expect(msgID string) (answer <-chan *chatv1.ChatPost, cancel func()) {
	ch := make(chan *chatv1.ChatPost, 1)
	a.mu.Lock()
	a.waiting[msgID] = ch
	a.mu.Unlock()
	return ch, func() {
		a.mu.Lock()
		delete(a.waiting, msgID)
		a.mu.Unlock()
	}
}

// Posts is how many posts the adapter was given, final or not.
func (a *Adapter) Posts() int64 { return a.posts.Load() }

// final reports whether a post ends a command's thread.
func final(p *chatv1.ChatPost) bool {
	return p.GetKind() == chatv1.Kind_KIND_RESULT || p.GetKind() == chatv1.Kind_KIND_ERROR
}
