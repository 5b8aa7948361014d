package incidents

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"text/template"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	eventv1 "github.com/switchboard-ops/switchboard/proto/sb/event/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// HooksConfig configures POST /hooks/<source>: who may post (a bearer
// token or a signature per source) and how a body becomes an Event.
type HooksConfig struct {
	// Sources by the name in the URL path.
	Sources map[string]HookSource `yaml:"sources"`
	// Templates of your own, by name; "github_actions" and "circleci" are
	// built in.
	Templates map[string]HookTemplate `yaml:"templates"`
}

// HookSource is one system allowed to post.
type HookSource struct {
	// Auth is how a delivery proves where it comes from: "bearer"
	// (Authorization: Bearer <token>), "github" (X-Hub-Signature-256) or
	// "circleci" (circleci-signature).
	Auth string `yaml:"auth"`
	// TokenFile holds the bearer token or the signing secret; Token may be
	// set instead (tests).
	TokenFile string `yaml:"token_file"`
	Token     string `yaml:"-"`
	// Template maps the JSON body to an Event.
	Template string `yaml:"template"`
	// EventSource is the Event's source, the <source> in
	// sb.event.<source>.<type> (default: the source's name).
	EventSource string `yaml:"event_source"`
}

// HookTemplate maps a decoded JSON body to an Event. Each field is a Go
// text/template executed with the body as dot; a field that renders empty
// is left unset. Functions: short (7 characters, for commit ids), lower,
// upper, title, trunc N, default D V, outcome (success → Passed, failure →
// Failed, …), result (success → succeeded, failure → failed, …), level
// (a conclusion → info|warning|error), json.
type HookTemplate struct {
	// Skip: when it renders "true", the delivery is acknowledged and
	// nothing is published (a build that started, a ping).
	Skip string `yaml:"skip"`
	// ID identifies the delivery for de-duplication (default: a hash of
	// the body).
	ID string `yaml:"id"`
	// Type is the dotted event type ("build.failed"); required.
	Type string `yaml:"type"`
	// Severity: info, warning, error or critical.
	Severity      string            `yaml:"severity"`
	Title         string            `yaml:"title"`
	Text          string            `yaml:"text"`
	URL           string            `yaml:"url"`
	CorrelationID string            `yaml:"correlation_id"`
	Fields        map[string]string `yaml:"fields"`
}

func (h HooksConfig) validate() error {
	for name, src := range h.Sources {
		key := "incidents.hooks.sources." + name
		if wire.Token(name) != name {
			return fmt.Errorf("%s: a source name is letters, digits, '-' and '_'", key)
		}
		switch src.Auth {
		case "bearer", "github", "circleci":
		default:
			return fmt.Errorf("%s.auth: %q, want bearer, github or circleci", key, src.Auth)
		}
		if src.TokenFile == "" && src.Token == "" {
			return fmt.Errorf("%s.token_file: required", key)
		}
		if _, ok := h.template(src.Template); !ok {
			return fmt.Errorf("%s.template: no template %q (built in: github_actions, circleci)", key, src.Template)
		}
		if src.EventSource != "" && wire.Token(src.EventSource) != src.EventSource {
			return fmt.Errorf("%s.event_source: %q is not a subject token", key, src.EventSource)
		}
	}
	for name, t := range h.Templates {
		if _, err := t.compile(name); err != nil {
			return fmt.Errorf("incidents.hooks.templates.%s: %w", name, err)
		}
	}
	return nil
}

func (h *HooksConfig) load() error {
	out := map[string]HookSource{}
	for name, src := range h.Sources {
		if src.Token == "" {
			b, err := os.ReadFile(src.TokenFile)
			if err != nil {
				return fmt.Errorf("incidents.hooks.sources.%s.token_file: %w", name, err)
			}
			if src.Token = strings.TrimSpace(string(b)); src.Token == "" {
				return fmt.Errorf("incidents.hooks.sources.%s.token_file: %s is empty", name, src.TokenFile)
			}
		}
		out[name] = src
	}
	h.Sources = out
	return nil
}

func (h HooksConfig) template(name string) (HookTemplate, bool) {
	if t, ok := h.Templates[name]; ok {
		return t, true
	}
	t, ok := BuiltinTemplates[name]
	return t, ok
}

// hookSource is a configured source, ready to serve.
type hookSource struct {
	name   string
	src    HookSource
	secret []byte // sha256 of the bearer token, or the signing secret
	tmpl   *compiledTemplate
}

func (h HooksConfig) compile() (map[string]*hookSource, error) {
	out := map[string]*hookSource{}
	for name, src := range h.Sources {
		t, _ := h.template(src.Template)
		ct, err := t.compile(src.Template)
		if err != nil {
			return nil, fmt.Errorf("incidents.hooks.templates.%s: %w", src.Template, err)
		}
		hs := &hookSource{name: name, src: src, tmpl: ct}
		if src.Auth == "bearer" {
			sum := sha256.Sum256([]byte(src.Token))
			hs.secret = sum[:]
		} else {
			hs.secret = []byte(src.Token)
		}
		if hs.src.EventSource == "" {
			hs.src.EventSource = name
		}
		out[name] = hs
	}
	return out, nil
}

// authenticate checks a delivery's credentials in constant time.
func (h *hookSource) authenticate(r *http.Request, body []byte) bool {
	switch h.src.Auth {
	case "bearer":
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			return false
		}
		// Compare digests, so the comparison takes the same time whatever
		// the length of what was sent.
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		return subtle.ConstantTimeCompare(sum[:], h.secret) == 1
	case "github":
		return hmacMatches(r.Header.Get("X-Hub-Signature-256"), "sha256=", body, h.secret)
	case "circleci":
		return hmacMatches(r.Header.Get("Circleci-Signature"), "v1=", body, h.secret)
	}
	return false
}

// hmacMatches checks "<prefix><hex HMAC-SHA256>" entries, comma-separated.
func hmacMatches(header, prefix string, body, secret []byte) bool {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	want := m.Sum(nil)
	for _, part := range strings.Split(header, ",") {
		hexSig, ok := strings.CutPrefix(strings.TrimSpace(part), prefix)
		if !ok {
			continue
		}
		if sig, err := hex.DecodeString(hexSig); err == nil && hmac.Equal(sig, want) {
			return true
		}
	}
	return false
}

// hook is POST /hooks/{source}.
func (s *Service) hook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("source")
	ctx, span := s.tracer.Start(r.Context(), "hook "+wire.Token(name), trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	outcome := "published"
	defer func() {
		s.deliveries.Add(ctx, 1, metric.WithAttributes(attribute.String("source", "hook"), attribute.String("outcome", outcome)))
	}()
	hs, ok := s.hooks[name]
	if !ok {
		outcome = "unknown_source"
		answer(w, http.StatusNotFound, "error", "no hook source with that name")
		return
	}
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
	if !hs.authenticate(r, body) {
		outcome = "unauthorized"
		s.log.Warn("hook refused: bad credentials", "hook", name, "remote", r.RemoteAddr)
		answer(w, http.StatusUnauthorized, "error", "missing or wrong credentials for this source")
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // ids and run numbers print as written, not as 3.0433642e+07
	var doc any
	if err := dec.Decode(&doc); err != nil {
		outcome = "malformed"
		answer(w, http.StatusBadRequest, "error", "body is not JSON: "+err.Error())
		return
	}
	ev, skip, err := hs.tmpl.event(doc, body)
	switch {
	case err != nil:
		outcome = "malformed"
		answer(w, http.StatusBadRequest, "error", err.Error())
		return
	case skip:
		outcome = "skipped"
		answer(w, http.StatusAccepted, "status", "skipped by the source's template")
		return
	}
	ev.Source = hs.src.EventSource
	dup, err := s.publishOnce(ctx, "hook."+wire.Token(name)+"."+wire.Token(ev.GetId()), ev)
	switch {
	case err != nil:
		outcome = "unavailable"
		s.log.Error("publish hook", "hook", name, "error", err)
		answer(w, http.StatusServiceUnavailable, "error", "could not publish; retry later")
	case dup:
		outcome = "duplicate"
		answer(w, http.StatusOK, "status", "duplicate of an earlier delivery")
	default:
		answer(w, http.StatusAccepted, "status", "published")
	}
}

type compiledTemplate struct {
	skip, id, typ, severity, title, text, url, correlation *template.Template
	fields                                                 map[string]*template.Template
}

var templateFuncs = template.FuncMap{
	"short": func(v any) string {
		s := fmt.Sprint(v)
		if len(s) > 7 {
			return s[:7]
		}
		return s
	},
	"lower": func(v any) string { return strings.ToLower(fmt.Sprint(v)) },
	"upper": func(v any) string { return strings.ToUpper(fmt.Sprint(v)) },
	"title": func(v any) string {
		s := fmt.Sprint(v)
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
	"trunc": func(n int, v any) string {
		s := []rune(fmt.Sprint(v))
		if len(s) > n {
			return string(s[:n]) + "…"
		}
		return string(s)
	},
	"default": func(def, v any) any {
		if v == nil || fmt.Sprint(v) == "" {
			return def
		}
		return v
	},
	"outcome": func(v any) string {
		switch c := strings.ToLower(fmt.Sprint(v)); c {
		case "success", "succeeded", "passed":
			return "Passed"
		case "failure", "failed":
			return "Failed"
		case "error", "errored":
			return "Errored"
		case "cancelled", "canceled":
			return "Cancelled"
		case "timed_out":
			return "Timed out"
		case "", "<nil>":
			return "Finished"
		default:
			return strings.ToUpper(c[:1]) + strings.ReplaceAll(c[1:], "_", " ")
		}
	},
	"result": func(v any) string {
		switch c := strings.ToLower(fmt.Sprint(v)); c {
		case "success", "succeeded", "passed":
			return "succeeded"
		case "failure", "failed":
			return "failed"
		case "error", "errored":
			return "errored"
		case "cancelled", "canceled":
			return "cancelled"
		case "", "<nil>":
			return "finished"
		default:
			return wire.Token(c)
		}
	},
	"level": func(v any) string {
		switch strings.ToLower(fmt.Sprint(v)) {
		case "success", "succeeded", "passed", "neutral", "skipped":
			return "info"
		case "failure", "failed", "error", "errored", "timed_out", "startup_failure":
			return "error"
		default:
			return "warning"
		}
	},
	"json": func(v any) string { b, _ := json.Marshal(v); return string(b) },
	"num":  numberString,
}

func (t HookTemplate) compile(name string) (*compiledTemplate, error) {
	if strings.TrimSpace(t.Type) == "" {
		return nil, errors.New("type: required")
	}
	parse := func(field, text string) (*template.Template, error) {
		if text == "" {
			return nil, nil
		}
		tt, err := template.New(name + "." + field).Funcs(templateFuncs).Option("missingkey=zero").Parse(text)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return tt, nil
	}
	c := &compiledTemplate{fields: map[string]*template.Template{}}
	var err error
	for _, f := range []struct {
		dst  **template.Template
		name string
		text string
	}{
		{&c.skip, "skip", t.Skip}, {&c.id, "id", t.ID}, {&c.typ, "type", t.Type}, {&c.severity, "severity", t.Severity},
		{&c.title, "title", t.Title}, {&c.text, "text", t.Text}, {&c.url, "url", t.URL}, {&c.correlation, "correlation_id", t.CorrelationID},
	} {
		if *f.dst, err = parse(f.name, f.text); err != nil {
			return nil, err
		}
	}
	for k, v := range t.Fields {
		if c.fields[k], err = parse("fields."+k, v); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// render executes one field; a missing key or path renders empty.
// text/template prints a missing map key as "<no value>" even with
// missingkey=zero, so that is removed.
func render(t *template.Template, doc any) (string, error) {
	if t == nil {
		return "", nil
	}
	var b strings.Builder
	if err := t.Execute(&b, doc); err != nil {
		// A path through a missing object (.a.b when there is no a) is
		// "not there", like a missing key, not a broken delivery.
		if strings.Contains(err.Error(), "nil pointer evaluating") {
			return "", nil
		}
		return "", fmt.Errorf("template %s: %v", t.Name(), err)
	}
	return strings.TrimSpace(strings.ReplaceAll(b.String(), "<no value>", "")), nil
}

var severities = map[string]eventv1.Severity{
	"": eventv1.Severity_SEVERITY_INFO, "info": eventv1.Severity_SEVERITY_INFO, "warning": eventv1.Severity_SEVERITY_WARNING,
	"error": eventv1.Severity_SEVERITY_ERROR, "critical": eventv1.Severity_SEVERITY_CRITICAL,
}

// event maps a decoded body to an Event (without its source).
func (c *compiledTemplate) event(doc any, raw []byte) (*eventv1.Event, bool, error) {
	skip, err := render(c.skip, doc)
	if err != nil {
		return nil, false, err
	}
	if skip == "true" {
		return nil, true, nil
	}
	ev := &eventv1.Event{Fields: map[string]string{}}
	for _, f := range []struct {
		dst *string
		t   *template.Template
	}{{&ev.Id, c.id}, {&ev.Type, c.typ}, {&ev.Title, c.title}, {&ev.Text, c.text}, {&ev.Url, c.url}, {&ev.CorrelationId, c.correlation}} {
		if *f.dst, err = render(f.t, doc); err != nil {
			return nil, false, err
		}
	}
	sev, err := render(c.severity, doc)
	if err != nil {
		return nil, false, err
	}
	s, ok := severities[strings.ToLower(sev)]
	if !ok {
		return nil, false, fmt.Errorf("template severity rendered %q, want info, warning, error or critical", sev)
	}
	ev.Severity = s
	for k, t := range c.fields {
		v, err := render(t, doc)
		if err != nil {
			return nil, false, err
		}
		if v != "" {
			ev.Fields[k] = v
		}
	}
	if ev.Type == "" {
		return nil, false, errors.New("the source's template gave this body no event type")
	}
	for _, part := range strings.Split(ev.Type, ".") {
		if part == "" || wire.Token(part) != part {
			return nil, false, fmt.Errorf("the source's template gave the event type %q, which is not a dotted name", ev.Type)
		}
	}
	if ev.Id == "" {
		// Without an id from the body, the same body is the same delivery.
		sum := sha256.Sum256(raw)
		ev.Id = hex.EncodeToString(sum[:16])
	}
	return ev, false, nil
}
