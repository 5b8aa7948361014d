package pd

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/PagerDuty/go-pagerduty"
)

// Incident statuses.
const (
	StatusTriggered    = "triggered"
	StatusAcknowledged = "acknowledged"
	StatusResolved     = "resolved"
)

// Incident is the part of a PagerDuty incident that people see in chat.
type Incident struct {
	ID        string
	Number    uint
	Title     string
	Status    string
	Urgency   string
	URL       string
	Service   Ref
	Assignees []Ref
	Priority  string
	Policy    Ref
	Key       string
	CreatedAt time.Time
}

// Ref names another PagerDuty object.
type Ref struct {
	ID   string
	Name string
}

// User is a PagerDuty user.
type User struct {
	ID    string
	Name  string
	Email string
}

// Note is an incident note.
type Note struct {
	ID        string
	Content   string
	User      Ref
	CreatedAt time.Time
}

// OnCall is one on-call entry: who is on call at which level of which
// escalation policy, through which schedule, until when.
type OnCall struct {
	User     Ref
	Schedule Ref
	Policy   Ref
	Level    uint
	Start    time.Time
	End      time.Time
}

// ListOptions filter Incidents.
type ListOptions struct {
	Statuses    []string
	UserIDs     []string
	ServiceIDs  []string
	IncidentKey string
	// All includes incidents of any age (date_range=all), not only the last
	// 30 days.
	All bool
	// Max stops after this many incidents (default 500).
	Max int
}

// NewIncident is what CreateIncident sends.
type NewIncident struct {
	ServiceID string
	Title     string
	Details   string
	Urgency   string
	// Key makes the creation idempotent: PagerDuty refuses a second open
	// incident with the same incident_key.
	Key string
}

// Incidents lists incidents, following PagerDuty's pagination.
func (c *Client) Incidents(ctx context.Context, o ListOptions) ([]Incident, error) {
	max := o.Max
	if max <= 0 {
		max = 500
	}
	opts := pagerduty.ListIncidentsOptions{
		Limit: 100, Statuses: o.Statuses, UserIDs: o.UserIDs, ServiceIDs: o.ServiceIDs,
		IncidentKey: o.IncidentKey, SortBy: "created_at:desc",
	}
	if o.All {
		opts.DateRange = "all"
	}
	var out []Incident
	for {
		var resp *pagerduty.ListIncidentsResponse
		err := c.call(ctx, "list incidents", true, func(ctx context.Context) (err error) {
			resp, err = c.pd.ListIncidentsWithContext(ctx, opts)
			return err
		})
		if err != nil {
			return out, err
		}
		for _, i := range resp.Incidents {
			out = append(out, incident(i))
		}
		if !resp.More || len(resp.Incidents) == 0 || len(out) >= max {
			return out, nil
		}
		opts.Offset += uint(len(resp.Incidents))
	}
}

// Incident fetches one incident by id.
func (c *Client) Incident(ctx context.Context, id string) (Incident, error) {
	var got *pagerduty.Incident
	err := c.call(ctx, "get incident "+id, true, func(ctx context.Context) (err error) {
		got, err = c.pd.GetIncidentWithContext(ctx, id)
		return err
	})
	if err != nil {
		return Incident{}, err
	}
	return incident(*got), nil
}

// Manage sets the status (acknowledged or resolved) of incidents, as the
// user whose e-mail is from (PagerDuty requires the From header). It is
// idempotent, so it is retried like a read. It returns the incidents as
// PagerDuty reports them afterwards.
func (c *Client) Manage(ctx context.Context, from string, ids []string, status string) ([]Incident, error) {
	opts := make([]pagerduty.ManageIncidentsOptions, len(ids))
	for i, id := range ids {
		opts[i] = pagerduty.ManageIncidentsOptions{ID: id, Status: status}
	}
	var resp *pagerduty.ListIncidentsResponse
	err := c.call(ctx, "set incidents "+status, true, func(ctx context.Context) (err error) {
		resp, err = c.pd.ManageIncidentsWithContext(ctx, from, opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Incident, 0, len(resp.Incidents))
	for _, i := range resp.Incidents {
		out = append(out, incident(i))
	}
	return out, nil
}

// AddNote adds a note to an incident as the user whose e-mail is from. A
// note is not idempotent: when an attempt ends without a clear answer, the
// incident's notes are read, and the note is sent again only if it is not
// there.
func (c *Client) AddNote(ctx context.Context, from, id, content string) (Note, error) {
	for {
		var got *pagerduty.IncidentNote
		err := c.call(ctx, "add note to "+id, false, func(ctx context.Context) (err error) {
			got, err = c.pd.CreateIncidentNoteWithContext(ctx, id, pagerduty.IncidentNote{
				Content: content,
				// go-pagerduty sends User.Summary as the From header.
				User: pagerduty.APIObject{Summary: from},
			})
			return err
		})
		if err == nil {
			return note(*got), nil
		}
		var perr *Error
		if !errors.As(err, &perr) || !perr.Transient() || ctx.Err() != nil {
			return Note{}, err
		}
		notes, lerr := c.Notes(ctx, id)
		if lerr != nil {
			return Note{}, errors.Join(err, lerr)
		}
		for _, n := range notes {
			if n.Content == content {
				return n, nil // the ambiguous attempt did add it
			}
		}
		if !c.pause(ctx, perr.Attempts) {
			return Note{}, err
		}
	}
}

// Notes lists an incident's notes, oldest first.
func (c *Client) Notes(ctx context.Context, id string) ([]Note, error) {
	var got []pagerduty.IncidentNote
	err := c.call(ctx, "list notes of "+id, true, func(ctx context.Context) (err error) {
		got, err = c.pd.ListIncidentNotesWithContext(ctx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Note, 0, len(got))
	for _, n := range got {
		out = append(out, note(n))
	}
	return out, nil
}

// CreateIncident opens an incident on a service as the user whose e-mail is
// from. With a Key it is safe to retry: an attempt that ended ambiguously,
// or a refusal because an open incident has the key, is resolved by
// looking the key up.
func (c *Client) CreateIncident(ctx context.Context, from string, n NewIncident) (Incident, error) {
	for {
		var got *pagerduty.Incident
		opts := &pagerduty.CreateIncidentOptions{
			Title:       n.Title,
			Service:     &pagerduty.APIReference{ID: n.ServiceID, Type: "service_reference"},
			Urgency:     n.Urgency,
			IncidentKey: n.Key,
		}
		if n.Details != "" {
			opts.Body = &pagerduty.APIDetails{Type: "incident_body", Details: n.Details}
		}
		err := c.call(ctx, "create incident on "+n.ServiceID, false, func(ctx context.Context) (err error) {
			got, err = c.pd.CreateIncidentWithContext(ctx, from, opts)
			return err
		})
		if err == nil {
			return incident(*got), nil
		}
		var perr *Error
		if n.Key == "" || !errors.As(err, &perr) || ctx.Err() != nil {
			return Incident{}, err
		}
		exists := perr.Status == 400 && strings.Contains(strings.ToLower(strings.Join(perr.Details, " ")+" "+perr.Message), "already exists")
		if !perr.Transient() && !exists {
			return Incident{}, err
		}
		found, lerr := c.Incidents(ctx, ListOptions{IncidentKey: n.Key, All: true, Max: 1})
		if lerr != nil {
			return Incident{}, errors.Join(err, lerr)
		}
		if len(found) > 0 {
			return found[0], nil
		}
		if exists || !c.pause(ctx, perr.Attempts) {
			return Incident{}, err
		}
	}
}

// Enqueue sends a trigger to the Events API v2 with a routing key and
// returns PagerDuty's dedup key. The dedup key makes a retry harmless.
func (c *Client) Enqueue(ctx context.Context, routingKey, dedupKey, summary, source, severity string) (string, error) {
	ev := &pagerduty.V2Event{
		RoutingKey: routingKey,
		Action:     "trigger",
		DedupKey:   dedupKey,
		Client:     "switchboard",
		Payload:    &pagerduty.V2Payload{Summary: summary, Source: source, Severity: severity},
	}
	var resp *pagerduty.V2EventResponse
	err := c.call(ctx, "enqueue event", true, func(ctx context.Context) (err error) {
		resp, err = c.pd.ManageEventWithContext(ctx, ev)
		return err
	})
	if err != nil {
		return "", err
	}
	return resp.DedupKey, nil
}

// OnCalls lists who is on call now, at every level, for the given schedules
// (all when none are given).
func (c *Client) OnCalls(ctx context.Context, scheduleIDs []string) ([]OnCall, error) {
	opts := pagerduty.ListOnCallOptions{Limit: 100, ScheduleIDs: scheduleIDs, Earliest: true}
	var out []OnCall
	for {
		var resp *pagerduty.ListOnCallsResponse
		err := c.call(ctx, "list on-calls", true, func(ctx context.Context) (err error) {
			resp, err = c.pd.ListOnCallsWithContext(ctx, opts)
			return err
		})
		if err != nil {
			return out, err
		}
		for _, o := range resp.OnCalls {
			out = append(out, OnCall{
				User:     Ref{ID: o.User.ID, Name: first(o.User.Name, o.User.Summary)},
				Schedule: Ref{ID: o.Schedule.ID, Name: first(o.Schedule.Name, o.Schedule.Summary)},
				Policy:   Ref{ID: o.EscalationPolicy.ID, Name: first(o.EscalationPolicy.Name, o.EscalationPolicy.Summary)},
				Level:    o.EscalationLevel,
				Start:    parseTime(o.Start),
				End:      parseTime(o.End),
			})
		}
		if !resp.More || len(resp.OnCalls) == 0 || len(out) >= 1000 {
			return out, nil
		}
		opts.Offset += uint(len(resp.OnCalls))
	}
}

// UserByEmail finds the PagerDuty user with this e-mail address
// (case-insensitively; PagerDuty's query also matches names, so the answer
// is filtered).
func (c *Client) UserByEmail(ctx context.Context, email string) (User, error) {
	var resp *pagerduty.ListUsersResponse
	err := c.call(ctx, "find user", true, func(ctx context.Context) (err error) {
		resp, err = c.pd.ListUsersWithContext(ctx, pagerduty.ListUsersOptions{Query: email, Limit: 25})
		return err
	})
	if err != nil {
		return User{}, err
	}
	for _, u := range resp.Users {
		if strings.EqualFold(u.Email, email) {
			return User{ID: u.ID, Name: first(u.Name, u.Summary), Email: u.Email}, nil
		}
	}
	return User{}, ErrNoUser
}

// pause waits before another attempt of a non-idempotent call; false when
// the deadline leaves no room.
func (c *Client) pause(ctx context.Context, attempt int) bool {
	wait := c.wait(attempt, &exchange{})
	if dl, ok := ctx.Deadline(); ok && c.now().Add(wait).After(dl) {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func incident(i pagerduty.Incident) Incident {
	out := Incident{
		ID: i.ID, Number: i.IncidentNumber, Title: first(i.Title, i.Summary), Status: i.Status, Urgency: i.Urgency,
		URL: i.HTMLURL, Service: Ref{ID: i.Service.ID, Name: i.Service.Summary},
		Policy: Ref{ID: i.EscalationPolicy.ID, Name: i.EscalationPolicy.Summary},
		Key:    i.IncidentKey, CreatedAt: parseTime(i.CreatedAt),
	}
	for _, a := range i.Assignments {
		out.Assignees = append(out.Assignees, Ref{ID: a.Assignee.ID, Name: a.Assignee.Summary})
	}
	if i.Priority != nil {
		out.Priority = first(i.Priority.Name, i.Priority.Summary)
	}
	return out
}

func note(n pagerduty.IncidentNote) Note {
	return Note{ID: n.ID, Content: n.Content, User: Ref{ID: n.User.ID, Name: n.User.Summary}, CreatedAt: parseTime(n.CreatedAt)}
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339, s)
	return t
}

func first(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
