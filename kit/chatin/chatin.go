// Package chatin hands text to the chat ingress (sb.chat.in.<bridge>) the
// way a chat adapter outside the chat service does: the switchboard CLI, and
// services that run a command on a person's or automation's behalf (the
// watcher's `lb remove`, the deployer's `lb drain`). The chat then parses,
// checks RBAC and audits it exactly as if it had been typed in Slack. The
// bridge names the sender; the chat accepts from it only the identities its
// configuration lets that bridge speak for.
package chatin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// ErrNoChat means no chat service listens on the bridge's subject.
var ErrNoChat = errors.New("no chat service answers on the bus")

// Send hands msg to the chat ingress through bridge ("cli", "watcher",
// "deployer") and returns the chat's reply. A request
// that times out is sent again, up to three times: retrying with the same
// message id is safe, because the chat derives the command id from it and a
// second request finds the first one's job.
func Send(ctx context.Context, nc *nats.Conn, bridge string, msg *chatv1.ChatMessage) (*chatv1.ChatReply, error) {
	data, err := wire.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode chat message: %w", err)
	}
	var resp *nats.Msg
	for attempt := 0; attempt < 3; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		m := nats.NewMsg(wire.ChatInSubject(bridge))
		m.Data = data
		m.Header.Set(wire.HeaderContentType, wire.ContentTypeJSON)
		m.Header.Set(wire.HeaderType, wire.TypeName(msg))
		resp, err = nc.RequestMsgWithContext(rctx, m)
		cancel()
		if err == nil || errors.Is(err, nats.ErrNoResponders) || ctx.Err() != nil {
			break
		}
	}
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, ErrNoChat
	}
	if err != nil {
		return nil, fmt.Errorf("send to the chat ingress: %w", err)
	}
	var reply chatv1.ChatReply
	if err := wire.Unmarshal(resp.Data, &reply); err != nil {
		return nil, fmt.Errorf("decode the chat's reply: %w", err)
	}
	return &reply, nil
}

// JobID is the job a reply is about: its job id, or the one derived from its
// command id when the chat did not say (an unavailable service).
func JobID(r *chatv1.ChatReply) string {
	if id := r.GetJobId(); id != "" {
		return id
	}
	if r.GetCommandId() == "" {
		return ""
	}
	return wire.JobID(r.GetCommandId())
}
