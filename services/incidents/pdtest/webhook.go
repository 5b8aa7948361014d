package pdtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
)

// Signature is the X-PagerDuty-Signature value PagerDuty sends for body:
// "v1=<hex HMAC-SHA256 of the raw body>" for each secret, comma-separated
// (several while a subscription's secret is being rotated).
func Signature(body []byte, secrets ...string) string {
	var sigs []string
	for _, s := range secrets {
		m := hmac.New(sha256.New, []byte(s))
		m.Write(body)
		sigs = append(sigs, "v1="+hex.EncodeToString(m.Sum(nil)))
	}
	return strings.Join(sigs, ",")
}

// DocSecret, DocBody and DocSignature are the signed delivery of
// go-pagerduty's webhookv3 tests, which follow PagerDuty's "Verifying
// Signatures" documentation: a priority_updated event for incident
// PGR0VU2 (#2).
const (
	DocSecret    = "lDQHScfUeXUKaQRNF+8XIiDKZ7XX3itBAYzwU0TARw8lJqRnkKl2iB1anSb0Z+IK"
	DocBody      = `{"event":{"id":"01BWDWL3NYY7LUFPZCC28QUCMK","event_type":"incident.priority_updated","resource_type":"incident","occurred_at":"2021-04-26T17:36:27.458Z","agent":{"html_url":"https://acme.pagerduty.com/users/PLH1HKV","id":"PLH1HKV","self":"https://api.pagerduty.com/users/PLH1HKV","summary":"Tenex Engineer","type":"user_reference"},"client":null,"data":{"id":"PGR0VU2","type":"incident","self":"https://api.pagerduty.com/incidents/PGR0VU2","html_url":"https://acme.pagerduty.com/incidents/PGR0VU2","number":2,"status":"triggered","title":"A little bump in the road","service":{"html_url":"https://acme.pagerduty.com/services/PF9KMXH","id":"PF9KMXH","self":"https://api.pagerduty.com/services/PF9KMXH","summary":"API Service","type":"service_reference"},"assignees":[{"html_url":"https://acme.pagerduty.com/users/PTUXL6G","id":"PTUXL6G","self":"https://api.pagerduty.com/users/PTUXL6G","summary":"User 123","type":"user_reference"}],"escalation_policy":{"html_url":"https://acme.pagerduty.com/escalation_policies/PUS0KTE","id":"PUS0KTE","self":"https://api.pagerduty.com/escalation_policies/PUS0KTE","summary":"Default","type":"escalation_policy_reference"},"teams":[{"html_url":"https://acme.pagerduty.com/teams/PFCVPS0","id":"PFCVPS0","self":"https://api.pagerduty.com/teams/PFCVPS0","summary":"Engineering","type":"team_reference"}],"priority":{"html_url":"https://acme.pagerduty.com/account/incident_priorities","id":"PSO75BM","self":"https://api.pagerduty.com/priorities/PSO75BM","summary":"P1","type":"priority_reference"},"urgency":"high","conference_bridge":{"conference_number":1000,"conference_url":"https://example.com"},"resolve_reason":null}}}`
	DocSignature = "v1=0c0b9495b893a39e70d1fea2fe11fbe0a825f88b9f67846f6cc07dd2bc5476cd"
)

// Delivery is a webhook v3 delivery about an incident, built like
// PagerDuty's: {"event": {id, event_type, resource_type, occurred_at,
// agent, client, data}}. Agent may be empty.
func Delivery(eventID, eventType string, i Incident, assignees []User, agent *User) []byte {
	refs := []map[string]any{}
	for _, a := range assignees {
		refs = append(refs, map[string]any{"id": a.ID, "type": "user_reference", "summary": a.Name,
			"html_url": "https://acme.pagerduty.com/users/" + a.ID, "self": "https://api.pagerduty.com/users/" + a.ID})
	}
	data := map[string]any{
		"id": i.ID, "type": "incident", "number": i.Number, "title": i.Title, "status": i.Status, "urgency": i.Urgency,
		"self": "https://api.pagerduty.com/incidents/" + i.ID, "html_url": "https://acme.pagerduty.com/incidents/" + i.ID,
		"service":           map[string]any{"id": i.ServiceID, "type": "service_reference", "summary": "Service " + i.ServiceID},
		"assignees":         refs,
		"escalation_policy": map[string]any{"id": "PUS0KTE", "type": "escalation_policy_reference", "summary": "Default"},
		"priority":          nil,
		"incident_key":      i.Key,
	}
	if i.Priority != "" {
		data["priority"] = map[string]any{"id": "PSO75BM", "type": "priority_reference", "summary": i.Priority}
	}
	return envelope(eventID, eventType, "incident", data, agent)
}

// NoteDelivery is an incident.annotated delivery: its data is the note,
// with a reference to the incident.
func NoteDelivery(eventID string, i Incident, content string, agent *User) []byte {
	data := map[string]any{
		"id": "PNOTE" + eventID, "type": "incident_note", "content": content,
		"incident": map[string]any{"id": i.ID, "type": "incident_reference", "summary": i.Title,
			"html_url": "https://acme.pagerduty.com/incidents/" + i.ID, "self": "https://api.pagerduty.com/incidents/" + i.ID},
		"trigger_log_entry": nil,
	}
	return envelope(eventID, "incident.annotated", "incident", data, agent)
}

func envelope(eventID, eventType, resource string, data map[string]any, agent *User) []byte {
	var ag any
	if agent != nil {
		ag = map[string]any{"id": agent.ID, "type": "user_reference", "summary": agent.Name,
			"html_url": "https://acme.pagerduty.com/users/" + agent.ID, "self": "https://api.pagerduty.com/users/" + agent.ID}
	}
	b, _ := json.Marshal(map[string]any{"event": map[string]any{
		"id": eventID, "event_type": eventType, "resource_type": resource,
		"occurred_at": time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC).Format(time.RFC3339Nano),
		"agent":       ag, "client": nil, "data": data,
	}})
	return b
}
