package chat

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// askConfirmation parks a request in sb_confirm under a short code and asks
// the person to confirm it. The bucket's TTL is the time limit; any chat
// replica can take the confirmation.
func (s *Service) askConfirmation(ctx context.Context, r *request, req *commandv1.CommandRequest) *chatv1.ChatReply {
	b := make([]byte, 3)
	rand.Read(b)
	code := hex.EncodeToString(b)
	data, err := wire.Marshal(req)
	if err == nil {
		_, err = s.confirms.Create(ctx, code, data)
	}
	if err != nil {
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_REJECTED, "error", "I could not record the confirmation; nothing was done. Try again.")
	}
	text := fmt.Sprintf("%s changes production state. Reply `confirm %s` within %v to run it (or add --dry-run to see what it would do).",
		req.GetRaw(), code, s.cfg.ConfirmTTL)
	s.audit(ctx, r, auditv1.Stage_STAGE_DECISION, "confirm", "code "+code)
	s.answer(ctx, r, chatv1.Kind_KIND_NOTICE, &chatv1.ChatPost{Text: text})
	return &chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_NEEDS_CONFIRMATION, Message: text, Final: true}
}

// confirm takes a parked request (once: the delete is conditional on the
// revision read) and dispatches it with its original command id.
func (s *Service) confirm(ctx context.Context, r *request, req *commandv1.CommandRequest) (*chatv1.ChatPost, error) {
	code := req.GetArgs()["code"]
	e, err := s.confirms.Get(ctx, code)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, fmt.Errorf("there is no pending confirmation %q (they expire after %v)", code, s.cfg.ConfirmTTL)
	}
	if err != nil {
		return nil, fmt.Errorf("reading confirmation %s failed: %w", code, err)
	}
	if age := time.Since(e.Created()); age > s.cfg.ConfirmTTL {
		// The bucket's TTL removes the code a moment after it expires; the
		// limit the person was told is this one.
		return nil, fmt.Errorf("confirmation %s expired %v ago (they are valid for %v); send the command again", code, (age - s.cfg.ConfirmTTL).Round(time.Second), s.cfg.ConfirmTTL)
	}
	var parked commandv1.CommandRequest
	if err := wire.Unmarshal(e.Value(), &parked); err != nil {
		return nil, fmt.Errorf("confirmation %s is unreadable: %w", code, err)
	}
	if parked.GetRequester().GetId() != r.who.GetId() {
		return nil, fmt.Errorf("confirmation %s belongs to %s; only they can confirm it", code, parked.GetRequester().GetName())
	}
	if err := s.confirms.Delete(ctx, code, jetstream.LastRevision(e.Revision())); err != nil {
		return nil, fmt.Errorf("confirmation %s was already used", code)
	}
	// Answers go to the original command's thread, under its command id.
	orig := &request{msg: &chatv1.ChatMessage{Id: parked.GetMessageId(), Conversation: parked.GetConversation()},
		who: r.who, cmdID: parked.GetId(), conv: parked.GetConversation(), text: parked.GetRaw(), trace: r.trace}
	orig.spec, _ = s.reg.lookup([]string{parked.GetCommand()})
	if orig.spec == nil {
		orig.spec, _ = s.reg.lookup(splitName(parked.GetCommand()))
	}
	if orig.spec == nil {
		return nil, fmt.Errorf("%s is no longer served by any running service", parked.GetCommand())
	}
	parked.Deadline = timestamppb.New(timestamppb.Now().AsTime().Add(s.cfg.DispatchTimeout))
	reply := s.dispatch(ctx, orig, &parked)
	if st := reply.GetStatus(); st != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED && st != chatv1.IngressStatus_INGRESS_STATUS_EXISTING {
		// The code is used up and the service did not take the command:
		// a failure with the dispatch's reason, not an answer.
		return nil, fmt.Errorf("Confirmed: %s. %s", parked.GetRaw(), reply.GetMessage())
	}
	return &chatv1.ChatPost{Text: fmt.Sprintf("Confirmed: %s (%s).", parked.GetRaw(), reply.GetMessage())}, nil
}

func splitName(name string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == ' ' {
			if i > start {
				out = append(out, name[start:i])
			}
			start = i + 1
		}
	}
	return out
}
