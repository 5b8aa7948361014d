package chat

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/switchboard-ops/switchboard/proto/sb/audit/v1"
	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/telemetry"
	"github.com/switchboard-ops/switchboard/services/chat/parse"
)

// echoAdapters are the adapters whose clients see a person's message only
// when the chat posts it back (Slack shows its own messages).
var echoAdapters = map[string]bool{"console": true, "cli": true}

// request is one message on its way through the ingress.
type request struct {
	msg      *chatv1.ChatMessage
	who      *chatv1.Identity
	cmdID    string
	conv     *chatv1.Conversation // where answers go: the message's thread
	text     string
	spec     *commandv1.CommandSpec
	trace    string
	received time.Time
	bridge   string // the sb.chat.in bridge it came through, if any
}

// Handle is the chat ingress: it takes a person's message, and answers
// at once with a ChatReply. Everything the person sees arrives as posts in
// the message's thread; the reply is for programs (the CLI's exit code).
func (s *Service) Handle(ctx context.Context, msg *chatv1.ChatMessage) *chatv1.ChatReply {
	return s.handle(ctx, msg, "")
}

func (s *Service) handle(ctx context.Context, msg *chatv1.ChatMessage, bridge string) *chatv1.ChatReply {
	ctx, span := s.tracer.Start(ctx, "chat ingress", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	c := msg.GetConversation()
	if msg.GetId() == "" || c.GetAdapter() == "" || c.GetChannel() == "" || msg.GetAuthor().GetId() == "" {
		text := "a message needs an id, a conversation (adapter and channel) and an author"
		// There is no thread to answer in, but the refusal is audited like
		// every other decision (the record gets a random id).
		rec := &auditv1.Record{Stage: auditv1.Stage_STAGE_DECISION, Identity: msg.GetAuthor(), Conversation: c,
			Raw: msg.GetText(), Outcome: "invalid", Detail: text, Service: "chat", Instance: s.instance,
			TraceId: span.SpanContext().TraceID().String()}
		if _, err := emit.Audit(ctx, s.js, rec); err != nil {
			s.log.ErrorContext(ctx, "write audit record", "error", err)
		}
		return &chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_INVALID, Final: true, Message: text}
	}
	r := &request{
		msg:      msg,
		cmdID:    wire.Token(c.GetAdapter()) + "/" + c.GetChannel() + "/" + msg.GetId(),
		conv:     &chatv1.Conversation{Adapter: c.GetAdapter(), Channel: c.GetChannel(), Thread: c.GetThread()},
		trace:    span.SpanContext().TraceID().String(),
		received: time.Now(),
		bridge:   bridge,
	}
	if r.conv.Thread == "" {
		r.conv.Thread = msg.GetId()
	}
	r.who = proto.Clone(msg.GetAuthor()).(*chatv1.Identity)
	r.who.Roles = s.cfg.RBAC.RolesOf(r.who)
	span.SetAttributes(attribute.String("sb.command_id", r.cmdID), attribute.String("sb.identity", r.who.GetId()))

	if echoAdapters[c.GetAdapter()] {
		s.post(ctx, &chatv1.ChatPost{Id: msg.GetId(), Conversation: c, Kind: chatv1.Kind_KIND_MESSAGE, Text: msg.GetText(), Author: r.who})
	}
	reply := s.route(ctx, r)
	reply.CommandId = r.cmdID
	reply.Conversation = r.conv
	if st := reply.GetStatus(); reply.GetJobId() == "" && (st == chatv1.IngressStatus_INGRESS_STATUS_UNAVAILABLE) && r.spec != nil && !s.isBuiltin(r.spec) {
		// The service may have received it after all; the job id is how
		// the person finds out.
		reply.JobId = wire.JobID(r.cmdID)
	}
	span.SetAttributes(attribute.String("sb.ingress", reply.GetStatus().String()))
	s.messages.Add(ctx, 1, metric.WithAttributes(attribute.String("adapter", c.GetAdapter()),
		attribute.String("status", strings.ToLower(strings.TrimPrefix(reply.GetStatus().String(), "INGRESS_STATUS_")))))
	switch reply.GetStatus() {
	case chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED, chatv1.IngressStatus_INGRESS_STATUS_EXISTING, chatv1.IngressStatus_INGRESS_STATUS_ANSWERED,
		chatv1.IngressStatus_INGRESS_STATUS_NEEDS_CONFIRMATION, chatv1.IngressStatus_INGRESS_STATUS_IGNORED:
	default:
		span.SetStatus(codes.Error, reply.GetMessage())
	}
	return reply
}

// route takes a request from text to a decision.
func (s *Service) route(ctx context.Context, r *request) *chatv1.ChatReply {
	r.text = s.stripPrefix(r.msg.GetText())
	via := ""
	if r.bridge != "" {
		via = "via the " + r.bridge + " bridge"
	}
	s.audit(ctx, r, auditv1.Stage_STAGE_REQUEST, "received", via)
	line, err := parse.Split(r.text)
	if err != nil {
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_INVALID, "invalid", "I could not read that: "+err.Error())
	}
	if len(line.Words) == 0 {
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_INVALID, "invalid", "That is empty. Type `help` for the list of commands.")
	}
	words := line.Words
	if a, ok := s.aliases[strings.ToLower(words[0])]; ok {
		words, err = a.expand(words[1:], s.flagTakesValue(a.template))
		if err != nil {
			return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_INVALID, "invalid", err.Error())
		}
	}
	sp, n := s.reg.lookup(words)
	if sp == nil && time.Since(s.reg.lastRefresh()) > time.Second {
		// A service may have started since the last discovery.
		if err := s.reg.refresh(ctx); err != nil {
			s.log.Warn("command discovery", "error", err)
		}
		sp, n = s.reg.lookup(words)
	}
	if sp == nil {
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_INVALID, "unknown", s.unknownText(words))
	}
	r.spec = sp
	b, err := parse.Bind(sp, words[n:], line.Text, line.HasText)
	if err != nil {
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_INVALID, "invalid", err.Error())
	}
	if ok, reason := s.cfg.RBAC.Authorize(r.who.GetRoles(), sp, requestScope(sp, b.Args, b.Flags, s.hostEnv(ctx))); !ok && !s.alwaysAllowed(sp) {
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_DENIED, "denied", "Sorry, "+reason+". Ask an admin if you need it.")
	}
	req := &commandv1.CommandRequest{
		Id:           r.cmdID,
		Requester:    r.who,
		Source:       r.conv.GetAdapter(),
		Conversation: r.conv,
		Command:      sp.GetName(),
		Args:         b.Args,
		Flags:        b.Flags,
		Raw:          r.text,
		DryRun:       b.DryRun,
		Text:         b.Text,
		MessageId:    r.msg.GetId(),
		Deadline:     timestamppb.New(time.Now().Add(s.cfg.DispatchTimeout)),
	}
	if bi, ok := s.builtins[sp.GetName()]; ok {
		return s.runBuiltin(ctx, r, bi, req)
	}
	if sp.GetConfirm() == commandv1.ConfirmPolicy_CONFIRM_POLICY_ALWAYS && !req.GetDryRun() {
		return s.askConfirmation(ctx, r, req)
	}
	return s.dispatch(ctx, r, req)
}

func (s *Service) unknownText(words []string) string {
	name := strings.ToLower(words[0])
	cands := s.reg.names()
	if len(words) > 1 {
		// "t ad" where "t" starts known commands: the unknown thing is the pair.
		for _, c := range cands {
			if strings.HasPrefix(c, name+" ") {
				name += " " + strings.ToLower(words[1])
				break
			}
		}
	}
	for a := range s.aliases {
		cands = append(cands, a)
	}
	var tries []string
	if len(words) > 1 && !strings.Contains(name, " ") {
		tries = parse.Suggest(name+" "+strings.ToLower(words[1]), cands)
	}
	if len(tries) == 0 {
		tries = parse.Suggest(name, cands)
	}
	if len(tries) > 0 {
		return fmt.Sprintf("I don't know %q. Did you mean `%s`? Type `help` for the list.", name, strings.Join(tries, "` or `"))
	}
	return fmt.Sprintf("I don't know %q. Type `help` for the list of commands.", name)
}

// dispatch sends the request to the service's endpoint and turns its
// acknowledgement into a reply. The service posts everything after that.
func (s *Service) dispatch(ctx context.Context, r *request, req *commandv1.CommandRequest) *chatv1.ChatReply {
	ctx, span := s.tracer.Start(ctx, "chat dispatch "+req.GetCommand(), trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	req.SentAt = timestamppb.Now()
	data, err := wire.Marshal(req)
	if err != nil {
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_REJECTED, "error", "internal error encoding the request (trace "+r.trace+")")
	}
	m := nats.NewMsg(r.spec.GetSubject())
	m.Data = data
	m.Header.Set(wire.HeaderContentType, wire.ContentTypeJSON)
	m.Header.Set(wire.HeaderCommandID, r.cmdID)
	telemetry.Inject(ctx, m.Header)
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DispatchTimeout)
	defer cancel()
	// No responders can be a moment's state: the service's replicas are
	// re-subscribing after a NATS reconnect, or one is restarting. Asking
	// again for up to noResponderWait is safe (the command id makes it run
	// once) and spares the person a false "not running".
	resp, err := s.nc.RequestMsgWithContext(dctx, m)
	giveUp := time.Now().Add(min(s.cfg.DispatchTimeout, noResponderWait))
	for wait := 50 * time.Millisecond; errors.Is(err, nats.ErrNoResponders) && time.Now().Add(wait).Before(giveUp); wait *= 2 {
		select {
		case <-dctx.Done():
		case <-time.After(wait):
		}
		resp, err = s.nc.RequestMsgWithContext(dctx, m)
	}
	jobID := wire.JobID(r.cmdID)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_UNAVAILABLE, "unavailable",
			fmt.Sprintf("No replica of the %s service is running, so %s was not run. Nothing was changed.", r.spec.GetService(), req.GetCommand()))
	case err != nil:
		s.log.Warn("dispatch", "command", req.GetCommand(), "command_id", r.cmdID, "error", err)
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_UNAVAILABLE, "unavailable",
			fmt.Sprintf("The %s service did not answer in %v. It may still run the command: `job %s` tells.", r.spec.GetService(), s.cfg.DispatchTimeout, jobID))
	}
	if code := resp.Header.Get("Nats-Service-Error-Code"); code != "" {
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_REJECTED, "rejected",
			fmt.Sprintf("%s failed in the %s service: %s (trace %s)", req.GetCommand(), r.spec.GetService(), resp.Header.Get("Nats-Service-Error"), r.trace))
	}
	var ack commandv1.CommandAck
	if err := wire.Unmarshal(resp.Data, &ack); err != nil {
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_REJECTED, "rejected", "the service's answer could not be decoded (trace "+r.trace+")")
	}
	switch ack.GetStatus() {
	case commandv1.AckStatus_ACK_STATUS_ACCEPTED:
		s.audit(ctx, r, auditv1.Stage_STAGE_DECISION, "dispatched", "")
		return &chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED, JobId: ack.GetJobId(), Message: "accepted as job " + ack.GetJobId()}
	case commandv1.AckStatus_ACK_STATUS_EXISTING:
		s.audit(ctx, r, auditv1.Stage_STAGE_DECISION, "existing", ack.GetReason())
		return &chatv1.ChatReply{Status: chatv1.IngressStatus_INGRESS_STATUS_EXISTING, JobId: ack.GetJobId(), Message: ack.GetReason(),
			Final: terminal(ack.GetJob().GetState()), JobState: stateText(ack.GetJob().GetState())}
	default:
		return s.refuse(ctx, r, chatv1.IngressStatus_INGRESS_STATUS_REJECTED, "rejected", req.GetCommand()+" was refused: "+ack.GetReason())
	}
}

// flagTakesValue reports, for the command a template names, whether a flag
// takes its value from the next word (every type but BOOL does).
func (s *Service) flagTakesValue(template []string) func(string) bool {
	sp, _ := s.reg.lookup(template)
	if sp == nil {
		return nil
	}
	return func(name string) bool {
		for _, f := range sp.GetFlags() {
			if f.GetName() == name {
				return f.GetType() != commandv1.ArgType_ARG_TYPE_BOOL
			}
		}
		return false
	}
}

// noResponderWait is how long dispatch asks again while no replica of the
// service answers, before it says none is running.
const noResponderWait = 2 * time.Second

func terminal(st commandv1.JobState) bool {
	return st == commandv1.JobState_JOB_STATE_SUCCEEDED || st == commandv1.JobState_JOB_STATE_FAILED || st == commandv1.JobState_JOB_STATE_CANCELLED
}

// refuse answers a request that ends at the ingress: it posts the reason
// in the thread, audits the decision, and returns a final reply.
func (s *Service) refuse(ctx context.Context, r *request, st chatv1.IngressStatus, outcome, text string) *chatv1.ChatReply {
	s.audit(ctx, r, auditv1.Stage_STAGE_DECISION, outcome, text)
	s.answer(ctx, r, chatv1.Kind_KIND_ERROR, &chatv1.ChatPost{Text: text})
	return &chatv1.ChatReply{Status: st, Message: text, Final: true}
}

// answer posts the ingress's own answer in the request's thread. Its id
// derives from the command id and the kind, so a second chat replica
// handling the same message posts a duplicate that the CHAT stream drops,
// while a later answer of another kind in the same thread (the error of a
// confirmed command after the confirmation question) is not dropped.
func (s *Service) answer(ctx context.Context, r *request, kind chatv1.Kind, p *chatv1.ChatPost) {
	p.Id = wire.JobID(r.cmdID) + "-chat-" + strings.ToLower(strings.TrimPrefix(kind.String(), "KIND_"))
	p.Kind = kind
	p.Conversation = r.conv
	p.CommandId = r.cmdID
	p.ReplyTo = r.msg.GetId()
	p.TraceId = r.trace
	p.Author = &chatv1.Identity{Id: "service:chat", Name: "switchboard", Automation: true}
	if kind == chatv1.Kind_KIND_ERROR {
		p.Reaction = chatv1.Reaction_REACTION_FAILED
	} else if kind == chatv1.Kind_KIND_RESULT {
		p.Reaction = chatv1.Reaction_REACTION_SUCCEEDED
	}
	s.post(ctx, p)
}

func (s *Service) post(ctx context.Context, p *chatv1.ChatPost) {
	if _, err := emit.Post(ctx, s.js, p); err != nil {
		s.log.ErrorContext(ctx, "post to chat", "post_id", p.GetId(), "error", err)
	}
}

func (s *Service) audit(ctx context.Context, r *request, stage auditv1.Stage, outcome, detail string) {
	rec := &auditv1.Record{
		Id:           fmt.Sprintf("%s-%s-%s", wire.JobID(r.cmdID), stage.String(), outcome),
		Stage:        stage,
		Identity:     r.who,
		Conversation: r.conv,
		CommandId:    r.cmdID,
		Raw:          r.text,
		Outcome:      outcome,
		Detail:       detail,
		Service:      "chat",
		Instance:     s.instance,
		TraceId:      r.trace,
	}
	if r.spec != nil {
		rec.Command = r.spec.GetName()
		if !s.isBuiltin(r.spec) {
			rec.JobId = wire.JobID(r.cmdID)
		}
	}
	if _, err := emit.Audit(ctx, s.js, rec); err != nil {
		s.log.ErrorContext(ctx, "write audit record", "command_id", r.cmdID, "error", err)
	}
}

func extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return telemetry.Extract(ctx, h)
}
