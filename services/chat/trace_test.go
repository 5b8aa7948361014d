package chat_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/kit/telemetry"
	"github.com/switchboard-ops/switchboard/services/chat"
)

// TestOneTraceSpansIngressServiceAndEgress runs one command with tracing
// in the chat and in the service, and an adapter delivering its result:
// every step is a span of the same trace.
func TestOneTraceSpansIngressServiceAndEgress(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tel := telemetry.NewForTest(sdktrace.NewSimpleSpanProcessor(exp))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tel.Shutdown(ctx)
	})
	h := newHarness(t)
	h.tracing = tel.TracerProvider()
	h.serveT()
	svc := h.startChat(testConfig())
	a := newRecAdapter("rec")
	if err := svc.AddAdapter(t.Context(), a, chat.EgressOptions{}); err != nil {
		t.Fatal(err)
	}

	msg := messageIn("rec", "ops", ana, "t add web1 www")
	reply := h.handle(svc, msg)
	if reply.GetStatus() != chatv1.IngressStatus_INGRESS_STATUS_ACCEPTED {
		t.Fatalf("reply %v %q, want ACCEPTED", reply.GetStatus(), reply.GetMessage())
	}
	final, _ := h.waitFinal(thread(msg))
	if final.GetTraceId() == "" {
		t.Fatalf("the result post carries no trace id")
	}

	want := []string{"chat ingress", "chat dispatch t add", "command accept t add", "command run t add", "chat egress rec"}
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		spans := map[string]tracetest.SpanStub{}
		for _, s := range exp.GetSpans() {
			// The egress span of the result post, not of another post.
			if s.Name == "chat egress rec" && !hasAttr(s, "sb.post_id", final.GetId()) {
				continue
			}
			spans[s.Name] = s
		}
		for _, name := range want {
			s, ok := spans[name]
			if !ok {
				return fmt.Errorf("no span %q yet", name)
			}
			if got := s.SpanContext.TraceID().String(); got != final.GetTraceId() {
				return fmt.Errorf("span %q is in trace %s, want %s (the trace the result post names)", name, got, final.GetTraceId())
			}
		}
		return nil
	})
}

func hasAttr(s tracetest.SpanStub, key, value string) bool {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key && kv.Value.Emit() == value {
			return true
		}
	}
	return false
}
