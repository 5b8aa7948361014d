package chatin_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-ops/switchboard/kit/chatin"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

func TestSendRetriesALostReplyWithTheSameMessage(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	ctx := natstest.Context(t, 60*time.Second)
	if _, err := chatin.Send(ctx, nc, "cli", &chatv1.ChatMessage{Id: "m0"}); !errors.Is(err, chatin.ErrNoChat) {
		t.Fatalf("Send with no chat: %v, want ErrNoChat", err)
	}
	// A chat that drops the first request (a replica dying mid-request)
	// and answers the second.
	var mu sync.Mutex
	var seen []string
	chat := natstest.Connect(t, s)
	sub, err := chat.Subscribe(wire.ChatInSubject("cli"), func(m *nats.Msg) {
		var msg chatv1.ChatMessage
		if err := wire.Unmarshal(m.Data, &msg); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		seen = append(seen, msg.GetId())
		first := len(seen) == 1
		mu.Unlock()
		if first {
			return
		}
		b, _ := wire.Marshal(&chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_EXISTING, CommandId: "cli/ops/" + msg.GetId()})
		m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// The subscription must reach the server before the request does.
	if err := chat.Flush(); err != nil {
		t.Fatal(err)
	}
	reply, err := chatin.Send(ctx, nc, "cli", &chatv1.ChatMessage{Id: "m1", Text: "ping"})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "m1" || seen[1] != "m1" {
		t.Errorf("the chat saw %v, want the same message twice", seen)
	}
	if got, want := chatin.JobID(reply), wire.JobID("cli/ops/m1"); got != want {
		t.Errorf("JobID = %q, want %q derived from the command id", got, want)
	}
}
