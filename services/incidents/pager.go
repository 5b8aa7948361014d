package incidents

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/services/incidents/pd"
	"github.com/switchboard-ops/switchboard/services/incidents/statuspage"
)

// Pager is the part of PagerDuty the commands use. *pd.Client implements
// it against the REST API v2 (tests run it against pdtest).
type Pager interface {
	incidentReader
	incidentWriter
	// OnCalls lists who is on call now for the schedules (all when none).
	OnCalls(ctx context.Context, scheduleIDs []string) ([]pd.OnCall, error)
	// UserByEmail maps a chat identity's e-mail to a PagerDuty user.
	UserByEmail(ctx context.Context, email string) (pd.User, error)
}

type incidentReader interface {
	Incidents(ctx context.Context, o pd.ListOptions) ([]pd.Incident, error)
	Incident(ctx context.Context, id string) (pd.Incident, error)
	Notes(ctx context.Context, id string) ([]pd.Note, error)
}

type incidentWriter interface {
	// Manage sets incidents acknowledged or resolved, as the user from.
	Manage(ctx context.Context, from string, ids []string, status string) ([]pd.Incident, error)
	AddNote(ctx context.Context, from, id, content string) (pd.Note, error)
	CreateIncident(ctx context.Context, from string, n pd.NewIncident) (pd.Incident, error)
	Enqueue(ctx context.Context, routingKey, dedupKey, summary, source, severity string) (string, error)
}

var _ Pager = (*pd.Client)(nil)

// userCache keeps e-mail → PagerDuty user for a while, so "pager ack" costs
// one call, not two.
type userCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]cachedUser
}

type cachedUser struct {
	u   pd.User
	exp time.Time
}

func newUserCache(ttl time.Duration) *userCache {
	return &userCache{ttl: ttl, m: map[string]cachedUser{}}
}

// actor is who a command acts as in PagerDuty.
type actor struct {
	user pd.User
	// from is the e-mail for PagerDuty's From header.
	from string
}

// requester maps the person who asked to a PagerDuty user by e-mail;
// automation acts as incidents.pagerduty.from.
func (s *Service) requester(ctx context.Context, job *command.Job) (actor, error) {
	id := job.Requester()
	email := strings.TrimSpace(id.GetEmail())
	if id.GetAutomation() && s.cfg.PagerDuty.From != "" {
		email = s.cfg.PagerDuty.From
	}
	if email == "" {
		return actor{}, command.UserErrorf("I don't know your e-mail address (your chat identity %s has none), so I can't tell who you are in PagerDuty, which needs it to record who did what", id.GetId())
	}
	key := strings.ToLower(email)
	s.users.mu.Lock()
	c, ok := s.users.m[key]
	s.users.mu.Unlock()
	if ok && time.Now().Before(c.exp) {
		return actor{user: c.u, from: c.u.Email}, nil
	}
	u, err := s.pager.UserByEmail(ctx, email)
	if errors.Is(err, pd.ErrNoUser) {
		return actor{}, command.UserErrorf("no PagerDuty user has the e-mail address %s; ask a PagerDuty admin to add it to your profile", email)
	}
	if err != nil {
		return actor{}, pdReadFailure(err, "look you up")
	}
	s.users.mu.Lock()
	s.users.m[key] = cachedUser{u: u, exp: time.Now().Add(s.users.ttl)}
	s.users.mu.Unlock()
	return actor{user: u, from: u.Email}, nil
}

// jobContext bounds a run of a command by command_timeout from its start.
// The request's Deadline is not used here: it says by when the work must
// start (kit/command refuses a request that arrives after it), and the
// chat sets it a few seconds out, far too soon for a Retry-After wait or a
// job taken over from another replica. Retries, of PagerDuty and of the
// status page, report themselves in the thread (the first and every
// fifth), so a person waiting knows why.
func (s *Service) jobContext(ctx context.Context, job *command.Job) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
	ctx = pd.WithRetryNotify(ctx, func(r pd.Retry) {
		if r.Attempt == 1 || r.Attempt%5 == 0 {
			why := "did not answer"
			switch {
			case r.Err.RateLimited:
				why = "is rate-limiting us (HTTP 429)"
			case r.Err.Status >= 500:
				why = fmt.Sprintf("answered HTTP %d", r.Err.Status)
			}
			job.Progressf(ctx, "PagerDuty %s; trying again in %s (attempt %d).", why, r.Wait.Round(100*time.Millisecond), r.Attempt+1)
		}
	})
	ctx = statuspage.WithRetryNotify(ctx, func(r statuspage.Retry) {
		if r.Attempt == 1 || r.Attempt%5 == 0 {
			why := "did not answer"
			switch {
			case r.Err.Status == http.StatusTooManyRequests:
				why = "is rate-limiting us (HTTP 429)"
			case r.Err.Status >= 500:
				why = fmt.Sprintf("answered HTTP %d", r.Err.Status)
			}
			job.Progressf(ctx, "The status page %s; trying again in %s (attempt %d).", why, r.Wait.Round(100*time.Millisecond), r.Attempt+1)
		}
	})
	return ctx, cancel
}

// pdReadFailure is pdFailure for a read: when PagerDuty could not be
// reached or failed, nothing can have changed, and the person is told so.
func pdReadFailure(err error, doing string) error {
	var perr *pd.Error
	if errors.As(err, &perr) && (perr.Unreachable || perr.Status >= 500) {
		attempts := ""
		if perr.Attempts > 1 {
			attempts = fmt.Sprintf(" (%d attempts before the command's deadline)", perr.Attempts)
		}
		why := "could not be reached"
		if !perr.Unreachable {
			why = fmt.Sprintf("answered HTTP %d", perr.Status)
		}
		return command.UserErrorf("PagerDuty %s%s, so I could not %s. Nothing was changed; try again in a moment", why, attempts, doing)
	}
	return pdFailure(err, doing)
}

// pdFailure turns a PagerDuty error into the sentence the person reads.
// Transient failures say the change was not confirmed, never that it was
// done, and never that it was not: a 5xx may come after PagerDuty applied
// it.
func pdFailure(err error, doing string) error {
	var perr *pd.Error
	if !errors.As(err, &perr) {
		if errors.Is(err, context.DeadlineExceeded) {
			return command.UserErrorf("PagerDuty did not answer in time to %s", doing)
		}
		return fmt.Errorf("%s: %w", doing, err)
	}
	attempts := ""
	if perr.Attempts > 1 {
		attempts = fmt.Sprintf(" (%d attempts before the command's deadline)", perr.Attempts)
	}
	switch {
	case perr.RateLimited:
		return command.UserErrorf("PagerDuty is rate-limiting us (HTTP 429)%s, so I could not %s. Try again in a minute", attempts, doing)
	case perr.Unreachable:
		return command.UserErrorf("PagerDuty could not be reached%s, so I could not confirm that I could %s. Check with `incident show` before trying again", attempts, doing)
	case perr.Status >= 500:
		return command.UserErrorf("PagerDuty answered HTTP %d%s, so I could not confirm that I could %s. Check with `incident show` before trying again", perr.Status, attempts, doing)
	case perr.Status == 401 || perr.Status == 403:
		return fmt.Errorf("pagerduty refused our API token (HTTP %d) while trying to %s: %w", perr.Status, doing, err)
	default:
		detail := strings.Join(perr.Details, "; ")
		if detail == "" {
			detail = perr.Message
		}
		return command.UserErrorf("PagerDuty refused to %s: %s", doing, detail)
	}
}

// ref is an incident as a person names it: "621", "#621", an id, a URL.
type ref struct {
	number uint
	id     string
	typed  string
}

func (r ref) String() string {
	if r.number != 0 {
		return "#" + strconv.FormatUint(uint64(r.number), 10)
	}
	return r.id
}

var incidentID = regexp.MustCompile(`^[A-Z0-9]{6,20}$`)

// parseRefs reads incident references separated by commas or spaces.
func parseRefs(s string) ([]ref, error) {
	var out []ref
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		r := ref{typed: w}
		if i := strings.LastIndex(w, "/incidents/"); i >= 0 {
			w = strings.Trim(w[i+len("/incidents/"):], "/")
		}
		if n, err := strconv.ParseUint(strings.TrimPrefix(w, "#"), 10, 32); err == nil && n > 0 {
			r.number = uint(n)
		} else if incidentID.MatchString(w) {
			r.id = w
		} else {
			return nil, command.UserErrorf("%q is not an incident: give its number (621 or #621), its id (PGR0VU2) or its PagerDuty link", r.typed)
		}
		if !slices.ContainsFunc(out, func(o ref) bool { return o == r }) {
			out = append(out, r)
		}
	}
	return out, nil
}

// findIncidents resolves references. Numbers are looked up among open
// incidents, and, with anyAge, among all incidents.
func (s *Service) findIncidents(ctx context.Context, refs []ref, anyAge bool) ([]pd.Incident, error) {
	var open, all []pd.Incident
	var out []pd.Incident
	for _, r := range refs {
		if r.id != "" {
			inc, err := s.pager.Incident(ctx, r.id)
			if errors.Is(err, pd.ErrNotFound) {
				return nil, command.UserErrorf("PagerDuty has no incident %s", r.id)
			}
			if err != nil {
				return nil, pdReadFailure(err, "look up incident "+r.id)
			}
			out = append(out, inc)
			continue
		}
		if open == nil {
			var err error
			if open, err = s.pager.Incidents(ctx, pd.ListOptions{Statuses: []string{pd.StatusTriggered, pd.StatusAcknowledged}}); err != nil {
				return nil, pdReadFailure(err, "list open incidents")
			}
		}
		i := slices.IndexFunc(open, func(inc pd.Incident) bool { return inc.Number == r.number })
		if i < 0 && anyAge {
			if all == nil {
				var err error
				if all, err = s.pager.Incidents(ctx, pd.ListOptions{All: true, Max: 1000}); err != nil {
					return nil, pdReadFailure(err, "list incidents")
				}
			}
			if j := slices.IndexFunc(all, func(inc pd.Incident) bool { return inc.Number == r.number }); j >= 0 {
				out = append(out, all[j])
				continue
			}
		}
		if i < 0 {
			if anyAge {
				return nil, command.UserErrorf("PagerDuty has no incident #%d", r.number)
			}
			return nil, command.UserErrorf("incident #%d is not open in PagerDuty (already resolved, or no such number)", r.number)
		}
		out = append(out, open[i])
	}
	return out, nil
}

// describe is "#621 production cop dropped points check".
func describe(inc pd.Incident) string {
	if inc.Number != 0 {
		return fmt.Sprintf("#%d %s", inc.Number, inc.Title)
	}
	return inc.ID + " " + inc.Title
}

func names(refs []pd.Ref) string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Name)
	}
	return strings.Join(out, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
