package dns

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/kit/emit"
	"github.com/switchboard-ops/switchboard/kit/telemetry"
)

// autoPlanConsumer is the durable consumer of inventory changes; replicas
// share it, so each event is planned by one of them.
const autoPlanConsumer = "dns-autoplan"

// autoPlanner is the identity automatic plans are made under.
var autoPlanner = Person{ID: "automation:dns-autoplan", Name: "dns auto-plan", Automation: true}

func (s *Service) startAutoPlan(ctx, run context.Context) error {
	cons, err := s.js.CreateOrUpdateConsumer(ctx, wire.StreamEvents, jetstream.ConsumerConfig{
		Durable:        autoPlanConsumer,
		Description:    "dns: make a plan on every inventory change",
		FilterSubjects: []string{wire.SubjectInventoryChanged},
		// A new deployment plans from now on, not for 30 days of history.
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       2 * s.cfg.Timeout,
		MaxDeliver:    5,
	})
	if err != nil {
		return fmt.Errorf("dns: auto-plan consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		s.wg.Add(1)
		defer s.wg.Done()
		s.handleInventoryChanged(run, m)
	})
	if err != nil {
		return fmt.Errorf("dns: auto-plan consume: %w", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		<-run.Done()
		cc.Stop()
	}()
	return nil
}

// handleInventoryChanged makes a plan for an inventory change and posts it.
// nil acks, an error naks with a delay, a bad message is terminated.
func (s *Service) handleInventoryChanged(ctx context.Context, m jetstream.Msg) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("auto-plan panicked", "panic", r)
			m.Term()
		}
	}()
	ctx = telemetry.Extract(ctx, m.Headers())
	var ev eventv1.Event
	if err := wire.Unmarshal(m.Data(), &ev); err != nil {
		m.TermWithReason("undecodable event: " + err.Error())
		return
	}
	if err := s.autoPlan(ctx, &ev); err != nil {
		meta, _ := m.Metadata()
		attempt := uint64(1)
		if meta != nil {
			attempt = meta.NumDelivered
		}
		s.log.Error("auto-plan", "event", ev.GetId(), "attempt", attempt, "error", err)
		m.NakWithDelay(time.Duration(attempt) * 5 * time.Second)
		return
	}
	m.Ack()
}

// autoPlan makes the plan for one inventory change event.
func (s *Service) autoPlan(ctx context.Context, ev *eventv1.Event) error {
	// The id comes from the event, so a redelivered event finds its plan
	// instead of making a second one.
	id := wire.JobID("dns-autoplan/" + ev.GetId())
	p, _, err := s.plans.get(ctx, id)
	if err == nil {
		return s.postAutoPlan(ctx, p)
	}
	p, err = s.makePlan(ctx, id, s.zones, autoPlanner, "")
	if msg, ok := command.IsUserError(err); ok {
		// Bad rules or inventory: retrying will not help; say so in chat.
		return s.notice(ctx, "dns-autoplan-failed-"+id, fmt.Sprintf("DNS auto-plan for inventory change %s failed: %s", ev.GetId(), msg), nil)
	}
	if err != nil {
		return err
	}
	if p.Count() == 0 {
		s.log.Info("auto-plan: DNS in step with the inventory", "event", ev.GetId())
		return nil
	}
	if err := s.plans.create(ctx, p); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	return s.postAutoPlan(ctx, p)
}

// postAutoPlan posts "DNS plan ready" with the diff attached.
func (s *Service) postAutoPlan(ctx context.Context, p *Plan) error {
	id := p.ID
	post := planPost(p)
	text := fmt.Sprintf("DNS plan ready: %s — `dns apply %s`", plural(p.Count(), "change"), p.ID)
	post.Blocks[0] = &chatv1.Block{Content: &chatv1.Block_Markdown{Markdown: text}}
	return s.notice(ctx, "dns-autoplan-"+id, text+"\n"+summary(p)+skippedText(p), post)
}

// notice posts to the auto-plan conversation; the post id makes a retry
// harmless.
func (s *Service) notice(ctx context.Context, id, text string, p *chatv1.ChatPost) error {
	if p == nil {
		p = &chatv1.ChatPost{}
	}
	p.Id, p.Text, p.Kind = id, text, chatv1.Kind_KIND_NOTICE
	p.Conversation = &chatv1.Conversation{Adapter: s.cfg.AutoPlan.Adapter, Channel: s.cfg.AutoPlan.Channel}
	p.Author = &chatv1.Identity{Id: autoPlanner.ID, Name: autoPlanner.Name, Automation: true}
	if _, err := emit.Post(ctx, s.js, p); err != nil {
		return fmt.Errorf("post auto-plan: %w", err)
	}
	return nil
}
