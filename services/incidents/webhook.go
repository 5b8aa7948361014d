package incidents

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/emit"
)

// Webhook answers. PagerDuty retries anything but a 2xx for 48 hours, so a
// delivery that cannot be published gets a 503 (retry later) and a bad one
// a 4xx.
var (
	errUnsigned  = errors.New("unsigned delivery: the X-PagerDuty-Signature header is missing")
	errForged    = errors.New("no signature matches any configured secret")
	errMalformed = errors.New("malformed signature header")
)

// verifySignature checks PagerDuty's X-PagerDuty-Signature: one or more
// comma-separated "v1=<hex HMAC-SHA256 of the raw body>", one per secret
// the subscription has while a secret is rotated. Any match with any of
// our secrets verifies; the comparison is constant-time.
func verifySignature(header string, body []byte, secrets []string) error {
	if strings.TrimSpace(header) == "" {
		return errUnsigned
	}
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		part = strings.TrimSpace(part)
		hexSig, ok := strings.CutPrefix(part, "v1=")
		if !ok {
			continue // a future scheme: ignore, as PagerDuty asks
		}
		sig, err := hex.DecodeString(hexSig)
		if err != nil || len(sig) != sha256.Size {
			continue
		}
		sigs = append(sigs, sig)
	}
	if len(sigs) == 0 {
		return errMalformed
	}
	for _, secret := range secrets {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(body)
		want := m.Sum(nil)
		for _, sig := range sigs {
			if hmac.Equal(want, sig) {
				return nil
			}
		}
	}
	return errForged
}

// readBody reads at most max bytes; a larger body is errTooLarge.
var errTooLarge = errors.New("body too large")

func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength > max {
		return nil, errTooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, errTooLarge
	}
	return b, err
}

// answer writes a small JSON answer: PagerDuty and CI systems show it in
// their delivery logs.
func answer(w http.ResponseWriter, status int, key, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{key: msg})
	w.Write(append(b, '\n'))
}

// pagerdutyWebhook is POST /webhooks/pagerduty: verify, decode, publish
// once, answer. It never calls PagerDuty while PagerDuty waits.
func (s *Service) pagerdutyWebhook(w http.ResponseWriter, r *http.Request) {
	ctx, span := s.tracer.Start(r.Context(), "webhook pagerduty", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	outcome := "published"
	defer func() {
		s.deliveries.Add(ctx, 1, metric.WithAttributes(attribute.String("source", "pagerduty"), attribute.String("outcome", outcome)))
		span.SetAttributes(attribute.String("sb.outcome", outcome))
	}()
	body, err := readBody(w, r, s.cfg.HTTP.MaxBody)
	switch {
	case errors.Is(err, errTooLarge):
		outcome = "too_large"
		answer(w, http.StatusRequestEntityTooLarge, "error", fmt.Sprintf("body over %d bytes", s.cfg.HTTP.MaxBody))
		return
	case err != nil:
		outcome = "unreadable"
		answer(w, http.StatusBadRequest, "error", "body could not be read")
		return
	}
	if err := verifySignature(r.Header.Get("X-PagerDuty-Signature"), body, s.cfg.PagerDuty.WebhookSecrets); err != nil {
		outcome = "unauthorized"
		s.log.Warn("pagerduty webhook refused", "reason", err.Error(), "remote", r.RemoteAddr)
		answer(w, http.StatusUnauthorized, "error", err.Error())
		return
	}
	ev, err := pagerdutyEvent(body)
	if err != nil {
		outcome = "malformed"
		answer(w, http.StatusBadRequest, "error", err.Error())
		return
	}
	span.SetAttributes(attribute.String("sb.event_id", ev.GetId()), attribute.String("sb.event_type", ev.GetType()))
	dup, err := s.publishOnce(ctx, "pd."+wire.Token(ev.GetId()), ev)
	switch {
	case err != nil:
		outcome = "unavailable"
		s.log.Error("publish pagerduty webhook", "event_id", ev.GetId(), "error", err)
		answer(w, http.StatusServiceUnavailable, "error", "could not publish; retry later")
	case dup:
		outcome = "duplicate"
		answer(w, http.StatusOK, "status", "duplicate of an earlier delivery")
	default:
		answer(w, http.StatusAccepted, "status", "published")
	}
}

// publishOnce publishes ev unless key was seen. The order matters: it
// publishes first and records the key after, so a crash in between means a
// redelivery is published again (JetStream drops it if within 2 minutes),
// never that a delivery is lost. Stop waits for the records in flight.
func (s *Service) publishOnce(ctx context.Context, key string, ev *eventv1.Event) (dup bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HTTP.PublishTimeout)
	defer cancel()
	if _, err := s.seen.Get(ctx, key); err == nil {
		return true, nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, fmt.Errorf("look up delivery %s: %w", key, err)
	}
	if _, err := emit.Event(ctx, s.js, ev); err != nil {
		return false, err
	}
	// Remember the id off the answer's path: the delivery is published,
	// so the 2xx is right whatever happens next, and PagerDuty redelivers
	// only what it got no 2xx for. A redelivery racing this write is still
	// dropped by JetStream's own duplicate window.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := s.seen.Put(pctx, key, []byte(ev.GetType())); err != nil {
			s.log.Warn("remember delivery id", "key", key, "error", err)
		}
	}()
	return false, nil
}

// webhookEnvelope is a PagerDuty webhook v3 delivery.
type webhookEnvelope struct {
	Event struct {
		ID           string          `json:"id"`
		EventType    string          `json:"event_type"`
		ResourceType string          `json:"resource_type"`
		OccurredAt   string          `json:"occurred_at"`
		Agent        *pdRef          `json:"agent"`
		Data         json.RawMessage `json:"data"`
	} `json:"event"`
}

type pdRef struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Summary string `json:"summary"`
	HTMLURL string `json:"html_url"`
}

// webhookData is the union of the data objects switchboard reads: an
// incident (most event types) or a note/status update referring to one.
type webhookData struct {
	ID               string      `json:"id"`
	Type             string      `json:"type"`
	Number           json.Number `json:"number"`
	Title            string      `json:"title"`
	Status           string      `json:"status"`
	Urgency          string      `json:"urgency"`
	HTMLURL          string      `json:"html_url"`
	Service          *pdRef      `json:"service"`
	Assignees        []pdRef     `json:"assignees"`
	EscalationPolicy *pdRef      `json:"escalation_policy"`
	Priority         *pdRef      `json:"priority"`
	Incident         *pdRef      `json:"incident"`
	Content          string      `json:"content"`
	Message          string      `json:"message"`
}

// verbs are how each event type starts its sentence in chat.
var verbs = map[string]string{
	"incident.triggered":                 "Triggered",
	"incident.acknowledged":              "Acknowledged",
	"incident.unacknowledged":            "Unacknowledged",
	"incident.resolved":                  "Resolved",
	"incident.reopened":                  "Reopened",
	"incident.reassigned":                "Reassigned",
	"incident.escalated":                 "Escalated",
	"incident.delegated":                 "Delegated",
	"incident.annotated":                 "Note",
	"incident.priority_updated":          "Priority changed",
	"incident.responder.added":           "Responder added",
	"incident.responder.replied":         "Responder replied",
	"incident.status_update_published":   "Status update",
	"incident.conference_bridge.updated": "Conference bridge updated",
	"incident.workflow.started":          "Workflow started",
	"incident.workflow.completed":        "Workflow completed",
	"pagey.ping":                         "Ping",
}

// pagerdutyEvent maps a delivery to an Event on
// sb.event.pagerduty.<event_type>, with the incident id as correlation id
// (later events thread under the first), a ready sentence as Title
// ("Triggered: Incident #621 — production cop dropped points check —
// assigned to Rob"), the detail in Text (service, urgency, priority; or the
// note), and every part in Fields (number, title, status, assignees, …).
func pagerdutyEvent(body []byte) (*eventv1.Event, error) {
	var env webhookEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("body is not a PagerDuty webhook v3 delivery: %v", err)
	}
	e := env.Event
	if e.ID == "" || e.EventType == "" {
		return nil, errors.New("delivery has no event.id or event.event_type")
	}
	for _, part := range strings.Split(e.EventType, ".") {
		if part == "" || wire.Token(part) != part {
			return nil, fmt.Errorf("event_type %q is not a dotted name", e.EventType)
		}
	}
	var d webhookData
	if len(e.Data) > 0 && string(e.Data) != "null" {
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return nil, fmt.Errorf("event.data: %v", err)
		}
	}
	ev := &eventv1.Event{
		Id:     e.ID,
		Source: "pagerduty",
		Type:   e.EventType,
		Fields: map[string]string{"event_type": e.EventType},
	}
	if t, err := time.Parse(time.RFC3339Nano, e.OccurredAt); err == nil {
		ev.OccurredAt = timestamppb.New(t)
	}
	verb := verbs[e.EventType]
	if verb == "" {
		verb = strings.ReplaceAll(e.EventType[strings.LastIndexByte(e.EventType, '.')+1:], "_", " ")
		verb = strings.ToUpper(verb[:1]) + verb[1:]
	}
	ev.Fields["verb"] = verb
	agent := ""
	if e.Agent != nil && e.Agent.Summary != "" {
		agent = e.Agent.Summary
		ev.Fields["agent"] = agent
	}

	// The incident: the data itself, or the incident the data refers to.
	incID, title, url := d.ID, d.Title, d.HTMLURL
	if d.Type != "incident" && d.Incident != nil {
		incID, title, url = d.Incident.ID, d.Incident.Summary, d.Incident.HTMLURL
	}
	if d.Type != "incident" && d.Incident == nil {
		incID = "" // a ping, or a resource that is not about an incident
	}
	ev.CorrelationId = incID
	ev.Url = url
	name := "Incident"
	if n := d.Number.String(); n != "" && d.Type == "incident" {
		name = "Incident #" + n
		ev.Fields["number"] = n
	}
	if incID != "" {
		ev.Fields["incident_id"] = incID
	}
	set := func(k, v string) {
		if v != "" {
			ev.Fields[k] = v
		}
	}
	set("title", title)
	set("status", d.Status)
	set("urgency", d.Urgency)
	if d.Service != nil {
		set("service", d.Service.Summary)
	}
	if d.EscalationPolicy != nil {
		set("escalation_policy", d.EscalationPolicy.Summary)
	}
	if d.Priority != nil {
		set("priority", d.Priority.Summary)
	}
	var assignees []string
	for _, a := range d.Assignees {
		assignees = append(assignees, a.Summary)
	}
	set("assignees", strings.Join(assignees, ", "))

	by := ""
	if agent != "" {
		by = " by " + agent
	}
	headline := name
	if title != "" {
		headline += " — " + title
	}
	// Title is the sentence people read; Text is the detail under it.
	var detail []string
	if d.Service != nil && d.Service.Summary != "" {
		detail = append(detail, d.Service.Summary)
	}
	if d.Urgency != "" {
		detail = append(detail, d.Urgency+" urgency")
	}
	if d.Priority != nil && d.Priority.Summary != "" {
		detail = append(detail, d.Priority.Summary)
	}
	ev.Text = strings.Join(detail, " · ")
	switch e.EventType {
	case "incident.triggered", "incident.reassigned", "incident.escalated", "incident.delegated", "incident.reopened", "incident.unacknowledged":
		ev.Title = verb + ": " + headline
		if len(assignees) > 0 {
			ev.Title += " — assigned to " + strings.Join(assignees, ", ")
		}
	case "incident.acknowledged", "incident.resolved":
		ev.Title = verb + by + ": " + headline
	case "incident.annotated":
		set("note", d.Content)
		ev.Title = "Note" + by + " on " + headline
		ev.Text = d.Content
	case "incident.priority_updated":
		p := "none"
		if d.Priority != nil && d.Priority.Summary != "" {
			p = d.Priority.Summary
		}
		ev.Title = "Priority changed to " + p + by + ": " + headline
	case "incident.status_update_published":
		set("message", d.Message)
		ev.Title = "Status update" + by + " on " + headline
		ev.Text = d.Message
	case "pagey.ping":
		ev.Title = "PagerDuty webhook ping"
		ev.Text = ""
	default:
		ev.Title = verb + by + ": " + headline
	}
	ev.Severity = severity(e.EventType, d.Urgency)
	return ev, nil
}

// severity: a high-urgency page is critical, any other open state an error,
// an acknowledgement a warning, the rest information.
func severity(eventType, urgency string) eventv1.Severity {
	switch eventType {
	case "incident.triggered", "incident.escalated", "incident.reopened", "incident.unacknowledged":
		if urgency == "low" {
			return eventv1.Severity_SEVERITY_WARNING
		}
		if urgency == "high" {
			return eventv1.Severity_SEVERITY_CRITICAL
		}
		return eventv1.Severity_SEVERITY_ERROR
	case "incident.acknowledged", "incident.reassigned", "incident.delegated":
		return eventv1.Severity_SEVERITY_WARNING
	default:
		return eventv1.Severity_SEVERITY_INFO
	}
}

// numberString renders a JSON number for people (ids, run numbers).
func numberString(v any) string {
	switch n := v.(type) {
	case nil:
		return ""
	case json.Number:
		return n.String()
	case float64:
		return strconv.FormatFloat(n, 'f', -1, 64)
	default:
		return fmt.Sprint(v)
	}
}
