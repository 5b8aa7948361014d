package watcher

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/chatin"
)

// errRetry: the action could not be handed over yet (no chat or no lb
// replica answered); the intent stays recorded and the next cycle retries.
var errRetry = errors.New("watcher: action not delivered yet")

// act sends a recorded intent through the chat ingress, follows its job to
// the end, posts the result and drops the intent. It runs in its own
// goroutine; the intent's message id makes a resend by this or another
// replica the same command, which the chat and the lb service run once.
func (s *Service) act(ch Check, in Intent) {
	defer func() {
		s.mu.Lock()
		delete(s.inflight, in.MessageID)
		s.mu.Unlock()
		if p := recover(); p != nil {
			s.log.Error("panic in watcher action", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	// The action outlives the cycle that decided it, but not the replica.
	ctx, stop := context.WithTimeout(context.Background(), s.cfg.ActionTimeout)
	defer stop()
	go func() {
		select {
		case <-ctx.Done():
		case <-s.stopping():
			stop()
		}
	}()
	log := s.log.With("check", ch.Name, "host", in.Host, "message_id", in.MessageID)
	text, failed, err := s.runIntent(ctx, &in)
	if errors.Is(err, errRetry) && s.now().Sub(in.At) < s.cfg.ActionTimeout {
		log.Warn("action not delivered; retrying next cycle", "error", err)
		return
	}
	if err != nil {
		if s.stoppingNow() {
			return // the next leader resumes it
		}
		text, failed = fmt.Sprintf("The watcher could not remove %s from backend %s: %v", in.Host, in.Backend, err), true
	}
	n := Notice{ID: in.MessageID + "-result", Kind: KindAct, Host: in.Host, Text: text, Error: failed, Graph: in.Graph,
		Field: map[string]string{"host": in.Host, "job": in.JobID, "outcome": map[bool]string{true: "failed", false: "succeeded"}[failed]}}
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer pcancel()
	if err := s.publish(pctx, ch, n); err != nil {
		log.Error("post action result", "error", err)
		return // the intent stays; the next cycle follows the job again and posts
	}
	if err := s.modifyState(pctx, ch.Name, func(st *CheckState) {
		kept := st.Pending[:0]
		for _, p := range st.Pending {
			if p.MessageID != in.MessageID {
				kept = append(kept, p)
			}
		}
		st.Pending = kept
		if failed {
			// The host is still in the backend: let a later cycle decide
			// again (the cool-down and the hourly limit still count this try).
			if hs := st.Hosts[in.Host]; hs != nil {
				hs.Acted = false
				hs.Refused = "failed"
			}
		}
	}); err != nil {
		log.Error("drop finished intent", "error", err)
	}
	log.Info("action finished", "failed", failed)
}

// stopping is closed when the service stops.
func (s *Service) stopping() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopCh == nil {
		s.stopCh = make(chan struct{})
	}
	return s.stopCh
}

func (s *Service) stoppingNow() bool {
	select {
	case <-s.stopping():
		return true
	default:
		return false
	}
}

// runIntent sends the intent's command and waits for its job. It returns the
// sentence for the ops channel and whether it is a failure.
func (s *Service) runIntent(ctx context.Context, in *Intent) (string, bool, error) {
	msg := &chatv1.ChatMessage{
		Id:           in.MessageID,
		Conversation: &chatv1.Conversation{Adapter: s.cfg.Ops.Adapter, Channel: s.cfg.Ops.Channel},
		Author:       s.identity(),
		Text:         in.Text,
	}
	reply, err := chatin.Send(ctx, s.nc, "watcher", msg)
	if err != nil {
		return "", false, fmt.Errorf("%w: %w", errRetry, err)
	}
	switch reply.GetStatus() {
	case chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED, chatv1.IngressStatus_INGRESS_STATUS_EXISTING:
	case chatv1.IngressStatus_INGRESS_STATUS_UNAVAILABLE:
		return "", false, fmt.Errorf("%w: %s", errRetry, reply.GetMessage())
	case chatv1.IngressStatus_INGRESS_STATUS_NEEDS_CONFIRMATION:
		return fmt.Sprintf("The watcher did not remove %s: `%s` asks for a confirmation, and the watcher does not confirm its own commands. Run it yourself if you agree.", in.Host, in.Text), true, nil
	default:
		return fmt.Sprintf("The watcher could not remove %s from backend %s: %s", in.Host, in.Backend, reply.GetMessage()), true, nil
	}
	jobID := chatin.JobID(reply)
	in.JobID = jobID
	job, err := s.jobs.Wait(ctx, jobID, 250*time.Millisecond)
	if err != nil {
		return "", false, err
	}
	if job.GetState() == commandv1.JobState_JOB_STATE_SUCCEEDED {
		return fmt.Sprintf("%s has now been removed from the backend %s ✓ (job %s)", in.Host, in.Backend, jobID), false, nil
	}
	return fmt.Sprintf("The watcher's `%s` did not succeed (job %s, %s): %s", in.Text, jobID,
		stateName(job.GetState()), job.GetResult()), true, nil
}

func stateName(st commandv1.JobState) string {
	switch st {
	case commandv1.JobState_JOB_STATE_FAILED:
		return "failed"
	case commandv1.JobState_JOB_STATE_CANCELLED:
		return "cancelled"
	}
	return st.String()
}
