// Package emit publishes switchboard's three kinds of durable messages —
// chat posts, events and audit records — to their JetStream streams, with
// the headers every consumer relies on (content type, message type, command
// id, trace context) and a message id for JetStream's duplicate detection.
package emit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/telemetry"
)

// Publisher is the part of jetstream.JetStream that emit needs.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Post publishes p to the CHAT stream under its conversation's subject.
// p.Id must be set (it is the duplicate-detection id); CreatedAt is filled in
// when empty. It returns the stream sequence.
func Post(ctx context.Context, js Publisher, p *chatv1.ChatPost) (uint64, error) {
	if p.GetId() == "" {
		p.Id = NewID()
	}
	if p.CreatedAt == nil {
		p.CreatedAt = timestamppb.Now()
	}
	c := p.GetConversation()
	if c.GetAdapter() == "" || c.GetChannel() == "" {
		return 0, fmt.Errorf("post %s: conversation needs an adapter and a channel", p.GetId())
	}
	return publish(ctx, js, wire.ChatPostSubject(c.GetAdapter(), c.GetChannel()), p.GetId(), p.GetCommandId(), p)
}

// Event publishes e to the EVENTS stream on sb.event.<source>.<type>.
func Event(ctx context.Context, js Publisher, e *eventv1.Event) (uint64, error) {
	if e.GetId() == "" {
		e.Id = NewID()
	}
	if e.OccurredAt == nil {
		e.OccurredAt = timestamppb.Now()
	}
	if e.GetSource() == "" || e.GetType() == "" {
		return 0, fmt.Errorf("event %s: source and type are required", e.GetId())
	}
	return publish(ctx, js, wire.EventSubject(e.GetSource(), e.GetType()), "event/"+e.GetSource()+"/"+e.GetId(), e.GetCommandId(), e)
}

// Audit publishes r to the AUDIT stream on sb.audit.<stage>.
func Audit(ctx context.Context, js Publisher, r *auditv1.Record) (uint64, error) {
	subject, err := prepareAudit(r)
	if err != nil {
		return 0, err
	}
	return publish(ctx, js, subject, r.GetId(), r.GetCommandId(), r)
}

// prepareAudit fills in r's id and time, makes its raw text storable, and
// returns its subject.
func prepareAudit(r *auditv1.Record) (string, error) {
	if r.GetId() == "" {
		r.Id = NewID()
	}
	if r.Time == nil {
		r.Time = timestamppb.Now()
	}
	stage := map[auditv1.Stage]string{
		auditv1.Stage_STAGE_REQUEST:  "request",
		auditv1.Stage_STAGE_DECISION: "decision",
		auditv1.Stage_STAGE_ACCEPTED: "accepted",
		auditv1.Stage_STAGE_RESULT:   "result",
	}[r.GetStage()]
	if stage == "" {
		return "", fmt.Errorf("audit record %s: stage is required", r.GetId())
	}
	// protojson refuses invalid UTF-8, and the audit trail must keep even a
	// garbled message: replace bad bytes, and cut at a character boundary.
	r.Raw = strings.ToValidUTF8(r.Raw, "\uFFFD")
	if len(r.Raw) > 4000 {
		n := 4000
		for n > 0 && !utf8.RuneStart(r.Raw[n]) {
			n--
		}
		r.Raw = r.Raw[:n]
	}
	return wire.AuditSubject(stage), nil
}

func publish(ctx context.Context, js Publisher, subject, msgID, commandID string, m proto.Message) (uint64, error) {
	msg, err := newMsg(ctx, subject, commandID, m)
	if err != nil {
		return 0, err
	}
	return publishMsg(ctx, js, msg, msgID)
}

func newMsg(ctx context.Context, subject, commandID string, m proto.Message) (*nats.Msg, error) {
	data, err := wire.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", wire.TypeName(m), err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(wire.HeaderContentType, wire.ContentTypeJSON)
	msg.Header.Set(wire.HeaderType, wire.TypeName(m))
	if commandID != "" {
		msg.Header.Set(wire.HeaderCommandID, commandID)
	}
	telemetry.Inject(ctx, msg.Header)
	return msg, nil
}

func publishMsg(ctx context.Context, js Publisher, msg *nats.Msg, msgID string) (uint64, error) {
	// A publish that times out may still have been stored; retrying with the
	// same message id is safe because the stream drops the duplicate.
	for attempt := 0; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := js.PublishMsg(pctx, msg, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			return ack.Sequence, nil
		}
		if ctx.Err() != nil || attempt >= 20 {
			return 0, fmt.Errorf("publish %s to %s: %w", msg.Header.Get(wire.HeaderType), msg.Subject, err)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("publish %s to %s: %w", msg.Header.Get(wire.HeaderType), msg.Subject, ctx.Err())
		case <-time.After(backoff(attempt)):
		}
	}
}

// AsyncPublisher is the part of jetstream.JetStream that AuditAsync needs.
type AsyncPublisher interface {
	Publisher
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// Pending is a record sent without waiting for the stream to store it.
type Pending struct {
	js    Publisher
	msg   *nats.Msg
	msgID string
	fut   jetstream.PubAckFuture
	err   error
}

// Wait returns once the record is stored. When the asynchronous publish
// failed or its ack did not come, it publishes again synchronously, with
// retries; the same message id makes the stream drop a duplicate.
func (p *Pending) Wait(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	if p.fut != nil {
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		select {
		case <-p.fut.Ok():
			return nil
		case <-p.fut.Err():
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("publish %s to %s: %w", p.msg.Header.Get(wire.HeaderType), p.msg.Subject, ctx.Err())
		}
	}
	_, err := publishMsg(ctx, p.js, p.msg, p.msgID)
	return err
}

// AuditAsync is Audit without waiting for the stream's ack, for records
// written on the path a person waits on. Records sent over one connection
// are stored in the order sent, so a caller that Waits before it writes the
// next record of the same job keeps the trail in order.
func AuditAsync(ctx context.Context, js AsyncPublisher, r *auditv1.Record) *Pending {
	subject, err := prepareAudit(r)
	if err != nil {
		return &Pending{err: err}
	}
	msg, err := newMsg(ctx, subject, r.GetCommandId(), r)
	if err != nil {
		return &Pending{err: err}
	}
	p := &Pending{js: js, msg: msg, msgID: r.GetId()}
	// Wait publishes synchronously when this fails (too many pending acks).
	p.fut, _ = js.PublishMsgAsync(msg, jetstream.WithMsgID(r.GetId()))
	return p
}

func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 5)
	return min(d, 2*time.Second)
}

// NewID returns a random 128-bit id in hex.
func NewID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
