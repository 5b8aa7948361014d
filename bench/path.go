package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/emit"
)

// Timing splits one command's round trip: Ack is when the ingress
// answered (the service accepted the job), Delivered when the egress had
// delivered the result post. Both count from the message's arrival.
type Timing struct {
	Ack, Delivered time.Duration
}

// Result is one command's outcome as the person and the program see it.
type Result struct {
	Reply *chatv1.ChatReply
	Post  *chatv1.ChatPost
	Timing
}

// Message is the ChatMessage a person types as "ping" in channel of the
// bench adapter, with a fresh id.
func Message(adapter, channel, text string) *chatv1.ChatMessage {
	return &chatv1.ChatMessage{
		Id:           emit.NewID(),
		Conversation: &chatv1.Conversation{Adapter: adapter, Channel: channel},
		Author:       &chatv1.Identity{Id: adapter + ":load", Name: "load"},
		Text:         text,
	}
}

// Ping sends "ping" to the chat ingress in-process (as the Slack adapter
// and the web console do) and waits for the egress to deliver the result.
func (e *Env) Ping(ctx context.Context, channel string) (Result, error) {
	return e.Send(ctx, Message(AdapterName, channel, "ping"))
}

// Send is Ping with a message of the caller's (of the bench adapter).
func (e *Env) Send(ctx context.Context, msg *chatv1.ChatMessage) (Result, error) {
	answer, cancel := e.Adapter.Expect(msg.GetId())
	defer cancel()
	t0 := time.Now()
	reply := e.Chat.Handle(ctx, msg)
	return wait(ctx, t0, reply, answer)
}

// PingBridge sends "ping" through the CLI bridge (a ChatMessage request on
// sb.chat.in over the Client connection) in a conversation of the bench
// adapter, and waits for the egress to deliver the result. Compared with
// Ping it shows what the bridge adds.
func (e *Env) PingBridge(ctx context.Context, channel string) (Result, error) {
	return e.SendBridge(ctx, Message(AdapterName, channel, "ping"))
}

// SendBridge is PingBridge with a message of the caller's.
func (e *Env) SendBridge(ctx context.Context, msg *chatv1.ChatMessage) (Result, error) {
	answer, cancel := e.Adapter.Expect(msg.GetId())
	defer cancel()
	t0 := time.Now()
	reply, err := bridge(ctx, e, msg)
	if err != nil {
		return Result{}, err
	}
	return wait(ctx, t0, reply, answer)
}

func bridge(ctx context.Context, e *Env, msg *chatv1.ChatMessage) (*chatv1.ChatReply, error) {
	// The CLI's bridge speaks only for cli: identities (chat.bridges).
	msg.Author = &chatv1.Identity{Id: "cli:load", Name: "load"}
	data, err := wire.Marshal(msg)
	if err != nil {
		return nil, err
	}
	resp, err := e.Client.RequestWithContext(ctx, wire.ChatInSubject("cli"), data)
	if err != nil {
		return nil, fmt.Errorf("chat bridge: %w", err)
	}
	var reply chatv1.ChatReply
	if err := wire.Unmarshal(resp.Data, &reply); err != nil {
		return nil, fmt.Errorf("chat bridge: decode reply: %w", err)
	}
	return &reply, nil
}

func wait(ctx context.Context, t0 time.Time, reply *chatv1.ChatReply, answer <-chan *chatv1.ChatPost) (Result, error) {
	r := Result{Reply: reply}
	r.Ack = time.Since(t0)
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
		return r, fmt.Errorf("ping not accepted: %s: %s", reply.GetStatus(), reply.GetMessage())
	}
	select {
	case p := <-answer:
		r.Delivered = time.Since(t0)
		r.Post = p
	case <-ctx.Done():
		return r, fmt.Errorf("ping %s accepted as job %s but not answered: %w", reply.GetCommandId(), reply.GetJobId(), ctx.Err())
	}
	if r.Post.GetKind() != chatv1.Kind_KIND_RESULT {
		return r, fmt.Errorf("ping answered with a %s post: %s", r.Post.GetKind(), r.Post.GetText())
	}
	return r, nil
}

// Follower reads a channel of the "cli" adapter from the CHAT stream with
// an ordered consumer over the Client connection, as `switchboard say`
// does, and hands each final post to whoever waits for it.
type Follower struct {
	channel string
	e       *Env
	it      jetstream.MessagesContext

	mu      sync.Mutex
	waiting map[string]chan *chatv1.ChatPost
	done    chan struct{}
}

// Follow starts following a channel of the "cli" adapter. Stop ends it.
func (e *Env) Follow(ctx context.Context, channel string) (*Follower, error) {
	js, err := jetstream.New(e.Client)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, wire.StreamChat, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{wire.ChatPostSubject("cli", channel)},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("follow cli/%s: %w", channel, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("follow cli/%s: %w", channel, err)
	}
	f := &Follower{channel: channel, e: e, it: it, waiting: map[string]chan *chatv1.ChatPost{}, done: make(chan struct{})}
	go f.read()
	return f, nil
}

func (f *Follower) read() {
	defer close(f.done)
	for {
		m, err := f.it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			continue // heartbeats missed while busy; the ordered consumer recovers
		}
		var p chatv1.ChatPost
		if err := wire.Unmarshal(m.Data(), &p); err != nil || !final(&p) {
			continue
		}
		f.mu.Lock()
		ch, ok := f.waiting[p.GetReplyTo()]
		delete(f.waiting, p.GetReplyTo())
		f.mu.Unlock()
		if ok {
			ch <- &p
		}
	}
}

// Stop ends following.
func (f *Follower) Stop() {
	f.it.Stop()
	<-f.done
}

// Ping sends "ping" over the CLI bridge as `switchboard say ping` does (the
// "cli" adapter, so the ingress also echoes the message into the thread)
// and waits until the ordered consumer has read the result.
func (f *Follower) Ping(ctx context.Context) (Result, error) {
	return f.Send(ctx, Message("cli", f.channel, "ping"))
}

// Send is Ping with a message of the caller's, in the followed channel.
func (f *Follower) Send(ctx context.Context, msg *chatv1.ChatMessage) (Result, error) {
	ch := make(chan *chatv1.ChatPost, 1)
	f.mu.Lock()
	f.waiting[msg.GetId()] = ch
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.waiting, msg.GetId())
		f.mu.Unlock()
	}()
	t0 := time.Now()
	reply, err := bridge(ctx, f.e, msg)
	if err != nil {
		return Result{}, err
	}
	return wait(ctx, t0, reply, ch)
}

// Check reports what is wrong with a ping's answer, or nil: the reply names
// the command and its job, and the delivered post is the pong of that job,
// in the message's thread.
func Check(msg *chatv1.ChatMessage, r Result) error {
	c := msg.GetConversation()
	wantCmd := wire.Token(c.GetAdapter()) + "/" + c.GetChannel() + "/" + msg.GetId()
	var problems []string
	if got := r.Reply.GetCommandId(); got != wantCmd {
		problems = append(problems, fmt.Sprintf("reply command id %q, want %q", got, wantCmd))
	}
	if got, want := r.Reply.GetJobId(), wire.JobID(wantCmd); got != want {
		problems = append(problems, fmt.Sprintf("reply job id %q, want %q", got, want))
	}
	p := r.Post
	switch {
	case p == nil:
		problems = append(problems, "no post delivered")
	default:
		if p.GetKind() != chatv1.Kind_KIND_RESULT || !strings.HasPrefix(p.GetText(), "pong from sys replica") {
			problems = append(problems, fmt.Sprintf("post is %s %q, want a result starting \"pong from sys replica\"", p.GetKind(), p.GetText()))
		}
		if p.GetCommandId() != wantCmd || p.GetJobId() != wire.JobID(wantCmd) {
			problems = append(problems, fmt.Sprintf("post of command %q job %q, want %q job %q", p.GetCommandId(), p.GetJobId(), wantCmd, wire.JobID(wantCmd)))
		}
		pc := p.GetConversation()
		if pc.GetAdapter() != c.GetAdapter() || pc.GetChannel() != c.GetChannel() || pc.GetThread() != msg.GetId() || p.GetReplyTo() != msg.GetId() {
			problems = append(problems, fmt.Sprintf("post in %s/%s thread %q replying to %q, want %s/%s thread and reply to %q",
				pc.GetAdapter(), pc.GetChannel(), pc.GetThread(), p.GetReplyTo(), c.GetAdapter(), c.GetChannel(), msg.GetId()))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
