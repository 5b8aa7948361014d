package spec

import (
	"fmt"
	"slices"
	"strings"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
)

// Error is a problem with a command's arguments, described for the person
// who typed it. Message is shown in the chat as it is.
type Error struct {
	// Message is one or more sentences for a person, for example
	// `missing <backend>; usage: lb weight <host> <backend> <0-256>`.
	Message string
	// Name is the argument ("backend") or flag ("--timeout") the problem is
	// about, or "" when it is about the command as a whole.
	Name string
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// errorf returns an *Error with a formatted message.
func errorf(format string, args ...any) *Error {
	return &Error{Message: fmt.Sprintf(format, args...)}
}

// Usage returns the command's one-line usage: the spec's own Usage if it has
// one, otherwise a line built from its args, flags and text, such as
// "lb drain <hosts…> [backend] [--wait] [--timeout=<duration>] [-- reason]".
func Usage(s *commandv1.CommandSpec) string {
	if u := strings.TrimSpace(s.GetUsage()); u != "" {
		return u
	}
	parts := []string{commandName(s)}
	for _, a := range s.GetArgs() {
		name := a.GetName()
		if a.GetVariadic() {
			name += "…"
		}
		if a.GetRequired() {
			parts = append(parts, "<"+name+">")
		} else {
			parts = append(parts, "["+name+"]")
		}
	}
	for _, f := range s.GetFlags() {
		switch f.GetType() {
		case commandv1.ArgType_ARG_TYPE_BOOL:
			parts = append(parts, "[--"+f.GetName()+"]")
		case commandv1.ArgType_ARG_TYPE_ENUM:
			parts = append(parts, "[--"+f.GetName()+"="+strings.Join(f.GetChoices(), "|")+"]")
		default:
			parts = append(parts, "[--"+f.GetName()+"=<"+typeWord(f.GetType())+">]")
		}
	}
	if s.GetSupportsDryRun() {
		parts = append(parts, "[--dry-run]")
	}
	switch text := textName(s); {
	case s.GetTextRequired():
		parts = append(parts, "-- "+text)
	case s.GetTextName() != "":
		parts = append(parts, "[-- "+text+"]")
	}
	return strings.Join(parts, " ")
}

// Validate checks a request against the command's spec: every required
// argument is present, no argument or flag is unknown, every value passes
// CheckValue, the text after "--" is there when the spec requires it, and
// dry_run is set only when the command supports it. It reports the first
// problem as an *Error with the command's usage appended. Validate does not
// modify req.
//
// An optional argument with an empty value counts as absent. Text is
// accepted even when the spec does not name it (people add notes).
func Validate(s *commandv1.CommandSpec, req *commandv1.CommandRequest) error {
	if s == nil {
		return &Error{Message: "internal error: the command has no spec"}
	}
	if req == nil {
		return &Error{Message: "empty request; usage: " + Usage(s)}
	}
	fail := func(name, format string, args ...any) error {
		return &Error{Message: fmt.Sprintf(format, args...) + "; usage: " + Usage(s), Name: name}
	}

	known := make(map[string]bool, len(s.GetArgs()))
	for _, a := range s.GetArgs() {
		known[a.GetName()] = true
		v, ok := req.GetArgs()[a.GetName()]
		if !ok || v == "" {
			if a.GetRequired() {
				return fail(a.GetName(), "missing <%s>", a.GetName())
			}
			continue
		}
		if _, err := CheckValue(a.GetType(), v, a.GetChoices(), a.GetMin(), a.GetMax()); err != nil {
			return fail(a.GetName(), "<%s>: %s", a.GetName(), err.(*Error).Message)
		}
	}
	for _, name := range sortedKeys(req.GetArgs()) {
		if !known[name] {
			return fail(name, "%s has no argument %s", commandName(s), show(name))
		}
	}

	knownFlags := make(map[string]bool, len(s.GetFlags()))
	for _, f := range s.GetFlags() {
		knownFlags[f.GetName()] = true
		v, ok := req.GetFlags()[f.GetName()]
		if !ok {
			continue
		}
		if _, err := CheckValue(f.GetType(), v, f.GetChoices(), f.GetMin(), f.GetMax()); err != nil {
			return fail("--"+f.GetName(), "--%s: %s", f.GetName(), err.(*Error).Message)
		}
	}
	for _, name := range sortedKeys(req.GetFlags()) {
		if !knownFlags[name] {
			return fail("--"+name, "%s has no flag --%s", commandName(s), name)
		}
	}

	if s.GetTextRequired() && strings.TrimSpace(req.GetText()) == "" {
		return fail("", "missing the %s after --", textName(s))
	}
	if err := checkText(req.GetText()); err != nil {
		return fail("", "%s", err.(*Error).Message)
	}
	if req.GetDryRun() && !s.GetSupportsDryRun() {
		return &Error{Message: NoDryRun(s), Name: "--dry-run"}
	}
	return nil
}

// NoDryRun is the sentence for a --dry-run on a command that has none, such
// as "lb status does not change anything; --dry-run does not apply".
func NoDryRun(s *commandv1.CommandSpec) string {
	if s.GetMutating() {
		return commandName(s) + " cannot show a dry run; run it without --dry-run"
	}
	return commandName(s) + " does not change anything; --dry-run does not apply"
}

// commandName is the spec's name, or a stand-in for a spec without one.
func commandName(s *commandv1.CommandSpec) string {
	if n := s.GetName(); n != "" {
		return n
	}
	return "this command"
}

// textName is what the text after "--" is called in messages.
func textName(s *commandv1.CommandSpec) string {
	if n := s.GetTextName(); n != "" {
		return n
	}
	return "text"
}

// typeWord names a type in generated usage lines.
func typeWord(t commandv1.ArgType) string {
	switch t {
	case commandv1.ArgType_ARG_TYPE_HOST:
		return "host"
	case commandv1.ArgType_ARG_TYPE_HOST_LIST:
		return "host,host,…"
	case commandv1.ArgType_ARG_TYPE_BACKEND:
		return "backend"
	case commandv1.ArgType_ARG_TYPE_ENVIRONMENT:
		return "environment"
	case commandv1.ArgType_ARG_TYPE_ROLE_ENV:
		return "role@environment"
	case commandv1.ArgType_ARG_TYPE_VERSION:
		return "version"
	case commandv1.ArgType_ARG_TYPE_INT:
		return "number"
	case commandv1.ArgType_ARG_TYPE_DURATION:
		return "duration"
	case commandv1.ArgType_ARG_TYPE_BOOL:
		return "true|false"
	case commandv1.ArgType_ARG_TYPE_JOB_ID:
		return "job"
	case commandv1.ArgType_ARG_TYPE_KEY_VALUE:
		return "key=value"
	}
	return "value"
}

// sortedKeys returns m's keys in order, so that "the first problem" is the
// same on every replica.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
