package incidents_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/natstest"
	"github.com/switchboard-ops/switchboard/services/incidents"
	"github.com/switchboard-ops/switchboard/services/incidents/pdtest"
)

func TestPagerDutysDocumentedDeliveryVerifiesAndIsPublished(t *testing.T) {
	e := newEnv(t, func(c *incidents.Config) { c.PagerDuty.WebhookSecrets = []string{pdtest.DocSecret} })
	status, body := e.post("/webhooks/pagerduty", []byte(pdtest.DocBody), map[string]string{"X-PagerDuty-Signature": pdtest.DocSignature})
	if status != http.StatusAccepted {
		t.Fatalf("status %d %s, want 202", status, body)
	}
	got := e.events("sb.event.pagerduty.>")
	if len(got) != 1 {
		t.Fatalf("%d events, want 1", len(got))
	}
	want := &eventv1.Event{
		Id:            "01BWDWL3NYY7LUFPZCC28QUCMK",
		Source:        "pagerduty",
		Type:          "incident.priority_updated",
		Severity:      eventv1.Severity_SEVERITY_INFO,
		Title:         "Priority changed to P1 by Tenex Engineer: Incident #2 — A little bump in the road",
		Text:          "API Service · high urgency · P1",
		Url:           "https://acme.pagerduty.com/incidents/PGR0VU2",
		CorrelationId: "PGR0VU2",
		OccurredAt:    timestamppb.New(time.Date(2021, 4, 26, 17, 36, 27, 458e6, time.UTC)),
		Fields: map[string]string{
			"event_type": "incident.priority_updated", "verb": "Priority changed", "agent": "Tenex Engineer",
			"number": "2", "incident_id": "PGR0VU2", "title": "A little bump in the road", "status": "triggered",
			"urgency": "high", "service": "API Service", "escalation_policy": "Default", "priority": "P1", "assignees": "User 123",
		},
	}
	if diff := cmp.Diff(want, got[0], protocmp.Transform()); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
}

func TestWebhookDeliveriesAreAnsweredAsPagerDutyExpects(t *testing.T) {
	e := newEnv(t, func(c *incidents.Config) { c.HTTP.MaxBody = 4096 })
	inc := pdtest.Incident{ID: "PINC001", Number: 621, Title: "production cop dropped points check", Status: "triggered", Urgency: "high", ServiceID: svcAPI.ID}
	body := pdtest.Delivery("EV-001", "incident.triggered", inc, []pdtest.User{pdRob}, nil)
	big := pdtest.Delivery("EV-BIG", "incident.triggered", pdtest.Incident{ID: "PINC002", Title: strings.Repeat("x", 5000)}, nil, nil)
	cases := []struct {
		name   string
		body   []byte
		header map[string]string
		want   int
	}{
		{"an unsigned delivery is refused", body, nil, http.StatusUnauthorized},
		{"a delivery signed with another secret is refused", body, map[string]string{"X-PagerDuty-Signature": pdtest.Signature(body, "someone-else")}, http.StatusUnauthorized},
		{"a signature over another body is refused", body, map[string]string{"X-PagerDuty-Signature": pdtest.Signature([]byte(`{"event":{}}`), secretNew)}, http.StatusUnauthorized},
		{"a signature header without v1 entries is refused", body, map[string]string{"X-PagerDuty-Signature": "v0=abc,nonsense"}, http.StatusUnauthorized},
		{"a body over the limit is refused before anything else", big, map[string]string{"X-PagerDuty-Signature": pdtest.Signature(big, secretNew)}, http.StatusRequestEntityTooLarge},
		{"a signed body that is not JSON is malformed", []byte("not json"), map[string]string{"X-PagerDuty-Signature": pdtest.Signature([]byte("not json"), secretNew)}, http.StatusBadRequest},
		{"a signed body without an event id is malformed", []byte(`{"event":{"event_type":"incident.triggered"}}`), map[string]string{"X-PagerDuty-Signature": pdtest.Signature([]byte(`{"event":{"event_type":"incident.triggered"}}`), secretNew)}, http.StatusBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if status, msg := e.post("/webhooks/pagerduty", c.body, c.header); status != c.want {
				t.Errorf("status %d (%s), want %d", status, msg, c.want)
			}
		})
	}
	if n := len(e.events("sb.event.>")); n != 0 {
		t.Fatalf("%d events published from refused deliveries, want none", n)
	}

	// During a rotation PagerDuty signs with both secrets; either one we
	// hold is enough, in any position.
	if status, msg := e.webhook(body, "a-secret-we-never-had", secretOld); status != http.StatusAccepted {
		t.Fatalf("rotated delivery: status %d %s, want 202", status, msg)
	}
	got := e.events("sb.event.pagerduty.incident.triggered")
	if len(got) != 1 {
		t.Fatalf("%d events, want 1", len(got))
	}
	ev := got[0]
	if want := "Triggered: Incident #621 — production cop dropped points check — assigned to Rob"; ev.GetTitle() != want {
		t.Errorf("title %q, want %q", ev.GetTitle(), want)
	}
	if ev.GetCorrelationId() != "PINC001" || ev.GetSeverity() != eventv1.Severity_SEVERITY_CRITICAL || ev.GetUrl() == "" {
		t.Errorf("event %v: want correlation PINC001, critical, a url", ev)
	}
}

func TestARedeliveryIsPublishedOnceEvenAfterJetStreamForgetsTheMessageID(t *testing.T) {
	e := newEnv(t, nil)
	// Shrink the stream's duplicate window so that only the service's own
	// memory of delivery ids can stop a redelivery "days later".
	ctx := natstest.Context(t, 5*time.Second)
	st, err := e.js.Stream(ctx, wire.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	sc.Duplicates = 100 * time.Millisecond
	if _, err := e.js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	inc := pdtest.Incident{ID: "PINC010", Number: 700, Title: "disk full on relay2", Status: "acknowledged", Urgency: "high"}
	body := pdtest.Delivery("EV-REDELIVER", "incident.acknowledged", inc, []pdtest.User{pdRob}, &pdRob)
	if status, msg := e.webhook(body, secretNew); status != http.StatusAccepted {
		t.Fatalf("first delivery: %d %s", status, msg)
	}
	kv, err := e.js.KeyValue(ctx, incidents.BucketSeen)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, waitTotal, waitStep, func() error {
		_, err := kv.Get(ctx, "pd.EV-REDELIVER")
		return err
	})
	time.Sleep(300 * time.Millisecond) // past the shrunken window; not a timing assertion
	if status, msg := e.webhook(body, secretNew); status != http.StatusOK || !strings.Contains(msg, "duplicate") {
		t.Fatalf("redelivery: %d %s, want 200 duplicate", status, msg)
	}
	if n := len(e.events("sb.event.pagerduty.>")); n != 1 {
		t.Fatalf("%d events after a redelivery, want 1", n)
	}
	st2, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st2.TTL() < 48*time.Hour {
		t.Errorf("bucket %s keeps ids for %v, want at least PagerDuty's 48h of retries", incidents.BucketSeen, st2.TTL())
	}
}

func TestConcurrentDuplicateDeliveriesArePublishedOnce(t *testing.T) {
	e := newEnv(t, nil)
	inc := pdtest.Incident{ID: "PINC020", Number: 720, Title: "flapping", Status: "resolved"}
	body := pdtest.Delivery("EV-DUP", "incident.resolved", inc, nil, &pdAna)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, msg := e.webhook(body, secretNew); status != http.StatusAccepted && status != http.StatusOK {
				t.Errorf("status %d %s", status, msg)
			}
		}()
	}
	wg.Wait()
	got := e.events("sb.event.pagerduty.>")
	if len(got) != 1 {
		t.Fatalf("%d events, want 1", len(got))
	}
	if want := "Resolved by Ana: Incident #720 — flapping"; got[0].GetTitle() != want {
		t.Errorf("title %q, want %q", got[0].GetTitle(), want)
	}
}

func TestANoteDeliveryThreadsUnderItsIncident(t *testing.T) {
	e := newEnv(t, nil)
	inc := pdtest.Incident{ID: "PINC765", Number: 765, Title: "cop3 dropping points"}
	body := pdtest.NoteDelivery("EV-NOTE", inc, "restarted carbon-relay", &pdRob)
	if status, msg := e.webhook(body, secretNew); status != http.StatusAccepted {
		t.Fatalf("status %d %s", status, msg)
	}
	got := e.events("sb.event.pagerduty.incident.annotated")
	if len(got) != 1 {
		t.Fatalf("%d events, want 1", len(got))
	}
	ev := got[0]
	if ev.GetCorrelationId() != "PINC765" || ev.GetTitle() != "Note by Rob on Incident — cop3 dropping points" || ev.GetText() != "restarted carbon-relay" {
		t.Errorf("note event = %v", ev)
	}
}

func TestADeliveryThatCannotBePublishedAsksPagerDutyToRetry(t *testing.T) {
	e := newEnv(t, func(c *incidents.Config) { c.HTTP.PublishTimeout = 500 * time.Millisecond })
	ctx := natstest.Context(t, 5*time.Second)
	if err := e.js.DeleteStream(ctx, wire.StreamEvents); err != nil {
		t.Fatal(err)
	}
	body := pdtest.Delivery("EV-LOST", "incident.triggered", pdtest.Incident{ID: "PINC030", Number: 730, Title: "t"}, nil, nil)
	if status, msg := e.webhook(body, secretNew); status != http.StatusServiceUnavailable {
		t.Fatalf("status %d %s, want 503 so that PagerDuty retries", status, msg)
	}
	kv, err := e.js.KeyValue(ctx, incidents.BucketSeen)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "pd.EV-LOST"); err != jetstream.ErrKeyNotFound {
		t.Fatalf("an unpublished delivery was remembered as seen (%v): its retry would be dropped", err)
	}
}
