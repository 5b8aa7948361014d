package parse

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/switchboard-ops/switchboard/kit/spec"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
)

// Bound is a command line bound to a command's spec: every value checked
// and in canonical form, ready for a CommandRequest.
type Bound struct {
	// Args are the positional arguments given, by their spec name.
	Args map[string]string
	// Flags are the flags given, by their spec name; booleans are "true" or
	// "false". Defaults are not filled in.
	Flags map[string]string
	// Text is the free text after "--" (unless it filled the command's last
	// text argument).
	Text string
	// DryRun is set by --dry-run or -n.
	DryRun bool
}

// Bind assigns words (the words after the command name) and the text after
// "--" to the arguments and flags of s, and checks every value with
// spec.CheckValue.
//
// Flags may appear anywhere among the words, as --name=value, --name value
// (not for booleans), --name (booleans: true) or --no-name (booleans: false);
// names ignore case and "_" stands for "-". --dry-run and -n are understood
// for every command and refused for one without SupportsDryRun. A word "--"
// (it can reach Bind only quoted) makes every later word positional, for
// values that start with a dash.
//
// Positional words fill the spec's args in order. A variadic last arg takes
// every remaining word, joined by spaces for TEXT and by commas otherwise
// (so "web1 web2" and "web1, web2" are both the list web1,web2). A last TEXT
// arg that is not variadic takes the rest of the words when there is no
// "--" text; when there is, and the spec names no text of its own, the text
// fills that arg if no word did. Any other text is kept in Bound.Text.
//
// Errors are *Error (Pos -1) with a sentence and, where it helps, the
// usage; a value that fails its check also wraps the *spec.Error.
func Bind(s *commandv1.CommandSpec, words []string, text string, hasText bool) (*Bound, error) {
	if s == nil {
		return nil, &Error{Msg: "internal error: the command has no spec", Pos: -1}
	}
	b := &binder{spec: s, usage: spec.Usage(s), name: s.GetName()}
	if b.name == "" {
		b.name = "this command"
	}
	return b.bind(words, text, hasText)
}

// binder holds what one Bind call needs for its messages.
type binder struct {
	spec  *commandv1.CommandSpec
	usage string
	name  string
}

// fail returns an *Error with the usage appended.
func (b *binder) fail(format string, args ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, args...) + "; usage: " + b.usage, Pos: -1}
}

// failValue returns an *Error for a value that failed spec.CheckValue.
func (b *binder) failValue(what string, err error, withUsage bool) *Error {
	msg := what + ": " + err.Error()
	if withUsage {
		msg += "; usage: " + b.usage
	}
	return &Error{Msg: msg, Pos: -1, Err: err}
}

// bind reads the flags in one pass, then assigns the positional words.
func (b *binder) bind(words []string, text string, hasText bool) (*Bound, error) {
	out := &Bound{Args: map[string]string{}, Flags: map[string]string{}}
	flags := make(map[string]*commandv1.FlagSpec, len(b.spec.GetFlags()))
	for _, f := range b.spec.GetFlags() {
		flags[flagKey(f.GetName())] = f
	}

	var positional []string
	onlyPositional := false
	for i := 0; i < len(words); i++ {
		w := words[i]
		if onlyPositional {
			positional = append(positional, w)
			continue
		}
		if w == "--" {
			onlyPositional = true
			continue
		}
		body, ok := flagBody(w)
		if !ok {
			positional = append(positional, w)
			continue
		}
		typed, _, _ := strings.Cut(w, "=")
		typed = showFlag(typed)
		name, value, hasValue := strings.Cut(body, "=")
		key := flagKey(name)

		switch {
		case name == "":
			return nil, b.fail("%s is not a flag (there is no name before the =)", show(w))

		case key == "dry-run" || key == "dryrun" || key == "n" && typed == "-n":
			dry := "true"
			if hasValue {
				v, err := b.boolValue(typed, value)
				if err != nil {
					return nil, err
				}
				dry = v
			}
			out.DryRun = dry == "true"
			if out.DryRun && !b.spec.GetSupportsDryRun() {
				return nil, &Error{Msg: spec.NoDryRun(b.spec), Pos: -1}
			}
			continue

		case key == "no-dry-run" || key == "no-dryrun":
			if hasValue {
				return nil, b.fail("%s takes no value", typed)
			}
			out.DryRun = false
			continue
		}

		f, negated := flags[key], false
		if f == nil {
			if rest, ok := strings.CutPrefix(key, "no-"); ok {
				if g := flags[rest]; g != nil && g.GetType() == commandv1.ArgType_ARG_TYPE_BOOL {
					f, negated = g, true
				}
			}
		}
		if f == nil {
			return nil, b.unknownFlag(typed, name)
		}

		var v string
		switch {
		case negated:
			if hasValue {
				return nil, b.fail("%s takes no value", typed)
			}
			v = "false"
		case f.GetType() == commandv1.ArgType_ARG_TYPE_BOOL:
			v = "true"
			if hasValue {
				var err error
				if v, err = b.boolValue(typed, value); err != nil {
					return nil, err
				}
			}
		case hasValue:
			if value == "" {
				return nil, b.fail("%s needs a value", typed)
			}
			v = value
		case i+1 < len(words) && !isLongFlag(words[i+1]):
			i++
			v = words[i]
		default:
			return nil, b.fail("%s needs a value", typed)
		}
		canon, err := spec.CheckValue(f.GetType(), v, f.GetChoices(), f.GetMin(), f.GetMax())
		if err != nil {
			return nil, b.failValue("--"+f.GetName(), err, false)
		}
		if prev, ok := out.Flags[f.GetName()]; ok && prev != canon {
			return nil, &Error{Msg: fmt.Sprintf("--%s is given twice (%s and %s); give it once", f.GetName(), prev, canon), Pos: -1}
		}
		out.Flags[f.GetName()] = canon
	}

	if err := b.assign(out, positional, text, hasText); err != nil {
		return nil, err
	}
	return out, nil
}

// assign fills the positional arguments and the text.
func (b *binder) assign(out *Bound, positional []string, text string, hasText bool) error {
	args := b.spec.GetArgs()
	last := len(args) - 1
	next := 0
	for ai, a := range args {
		if next >= len(positional) {
			break
		}
		var v string
		switch {
		case ai == last && a.GetVariadic():
			v = joinRest(a.GetType(), positional[next:])
			next = len(positional)
		case ai == last && a.GetType() == commandv1.ArgType_ARG_TYPE_TEXT && !hasText:
			v = strings.Join(positional[next:], " ")
			next = len(positional)
		case a.GetType() == commandv1.ArgType_ARG_TYPE_HOST_LIST:
			// "web1, web2 www": a comma at the edge of a word continues
			// the list into the next word.
			v = positional[next]
			next++
			for next < len(positional) && (strings.HasSuffix(v, ",") || strings.HasPrefix(positional[next], ",")) {
				v += "," + positional[next]
				next++
			}
			v = joinRest(a.GetType(), []string{v})
		default:
			v = positional[next]
			next++
		}
		if err := b.set(out, a, v); err != nil {
			return err
		}
	}
	if next < len(positional) {
		return b.tooMany(positional[next])
	}

	textUsed := false
	if hasText && last >= 0 && b.spec.GetTextName() == "" && !b.spec.GetTextRequired() {
		a := args[last]
		if _, given := out.Args[a.GetName()]; !given && a.GetType() == commandv1.ArgType_ARG_TYPE_TEXT {
			if err := b.set(out, a, text); err != nil {
				return err
			}
			textUsed = true
		}
	}
	for _, a := range args {
		if _, ok := out.Args[a.GetName()]; !ok && a.GetRequired() {
			return b.fail("missing <%s>", a.GetName())
		}
	}
	if hasText && !textUsed {
		if _, err := spec.CheckValue(commandv1.ArgType_ARG_TYPE_TEXT, text, nil, 0, 0); err != nil {
			return b.failValue("the "+textName(b.spec), err, false)
		}
		out.Text = text
	}
	if b.spec.GetTextRequired() && strings.TrimSpace(out.Text) == "" {
		return b.fail("missing the %s after --", textName(b.spec))
	}
	return nil
}

// set checks v for a and stores its canonical form. An empty value (only
// text can be empty) counts as not given, as spec.Validate counts it.
func (b *binder) set(out *Bound, a *commandv1.ArgSpec, v string) error {
	canon, err := spec.CheckValue(a.GetType(), v, a.GetChoices(), a.GetMin(), a.GetMax())
	if err != nil {
		return b.failValue("<"+a.GetName()+">", err, true)
	}
	if canon != "" {
		out.Args[a.GetName()] = canon
	}
	return nil
}

// tooMany describes a positional word the spec has no place for.
func (b *binder) tooMany(extra string) error {
	if len(b.spec.GetArgs()) == 0 {
		return b.fail("%s takes no arguments, but got %s", b.name, show(extra))
	}
	hint := ""
	for _, a := range b.spec.GetArgs() {
		if a.GetType() == commandv1.ArgType_ARG_TYPE_HOST_LIST && !a.GetVariadic() {
			if _, err := spec.CheckValue(commandv1.ArgType_ARG_TYPE_HOST, extra, nil, 0, 0); err == nil {
				hint = " (separate host names with commas, like web1,web2)"
			}
		}
	}
	return b.fail("too many arguments: %s is extra%s", show(extra), hint)
}

// unknownFlag describes a flag the spec does not have, with a did-you-mean.
func (b *binder) unknownFlag(typed, name string) error {
	var known []string
	for _, f := range b.spec.GetFlags() {
		known = append(known, f.GetName())
	}
	if b.spec.GetSupportsDryRun() {
		known = append(known, "dry-run")
	}
	var sugg []string
	if utf8.RuneCountInString(name) == 1 {
		// A short flag: offer the long ones that start with its letter.
		for _, k := range known {
			if strings.HasPrefix(flagKey(k), flagKey(name)) && len(sugg) < 3 {
				sugg = append(sugg, k)
			}
		}
	} else {
		sugg = Suggest(flagKey(name), known)
		if rest, ok := strings.CutPrefix(flagKey(name), "no-"); ok && len(sugg) == 0 {
			sugg = Suggest(rest, known) // --no-timeout for a flag that is not a boolean
		}
	}
	hint := ""
	if args := b.spec.GetArgs(); len(args) > 0 && args[len(args)-1].GetType() == commandv1.ArgType_ARG_TYPE_TEXT {
		hint = fmt.Sprintf(" (to write it in the <%s>, put the text after --)", args[len(args)-1].GetName())
	}
	if len(sugg) == 0 {
		return b.fail("%s has no flag %s%s", b.name, typed, hint)
	}
	for i, s := range sugg {
		sugg[i] = "--" + s
	}
	return &Error{Msg: fmt.Sprintf("%s has no flag %s; did you mean %s?%s", b.name, typed, orList(sugg), hint), Pos: -1}
}

// boolValue checks the value of a boolean flag given with "=".
func (b *binder) boolValue(typed, value string) (string, error) {
	if value == "" {
		return "", b.fail("%s needs a value (true or false)", typed)
	}
	v, err := spec.CheckValue(commandv1.ArgType_ARG_TYPE_BOOL, value, nil, 0, 0)
	if err != nil {
		return "", b.failValue(typed, err, false)
	}
	return v, nil
}

// flagBody returns the part of w after its dashes if w is a flag: --name,
// —name (what macOS makes of "--" in a chat box), or -name. A lone "-" and
// negative numbers ("-5", "-.5") are not flags.
func flagBody(w string) (string, bool) {
	if body, ok := strings.CutPrefix(w, "--"); ok && body != "" {
		return body, true
	}
	for _, dash := range []string{"—", "–"} {
		if body, ok := strings.CutPrefix(w, dash); ok {
			r, _ := utf8.DecodeRuneInString(body)
			return body, unicode.IsLetter(r)
		}
	}
	if body, ok := strings.CutPrefix(w, "-"); ok && body != "" {
		r, _ := utf8.DecodeRuneInString(body)
		return body, !unicode.IsDigit(r) && r != '.'
	}
	return "", false
}

// isLongFlag reports whether w looks like a --flag, so that "--timeout
// --wait" says --timeout needs a value instead of taking "--wait" as one.
func isLongFlag(w string) bool {
	if strings.HasPrefix(w, "-") && !strings.HasPrefix(w, "--") {
		return false // -5 is a value; -n after a flag is a mistake the check reports
	}
	_, ok := flagBody(w)
	return ok
}

// flagKey is how flag names are compared: lower case, "_" as "-".
func flagKey(name string) string {
	return strings.ToLower(strings.ReplaceAll(name, "_", "-"))
}

// joinRest joins the words a variadic argument takes: by spaces for text,
// by commas otherwise. For a host list, empty items are dropped, so that
// "web1, web2" and "web1 , web2," are both the list web1,web2.
func joinRest(t commandv1.ArgType, words []string) string {
	switch t {
	case commandv1.ArgType_ARG_TYPE_TEXT:
		return strings.Join(words, " ")
	case commandv1.ArgType_ARG_TYPE_HOST_LIST:
		var items []string
		for _, w := range words {
			for item := range strings.SplitSeq(w, ",") {
				if strings.TrimSpace(item) != "" {
					items = append(items, item)
				}
			}
		}
		return strings.Join(items, ",")
	}
	return strings.Join(words, ",")
}

// textName is what the text after "--" is called in messages.
func textName(s *commandv1.CommandSpec) string {
	if n := s.GetTextName(); n != "" {
		return n
	}
	return "text"
}

// orList joins items as "a", "a or b", "a, b or c".
func orList(items []string) string {
	if len(items) <= 1 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// showFlag returns a flag as the person typed it, for a message; a long or
// odd one is quoted like any other word.
func showFlag(typed string) string {
	if utf8.RuneCountInString(typed) > 40 || strings.ContainsFunc(typed, func(r rune) bool {
		return !unicode.IsPrint(r) || unicode.IsSpace(r) || r == '"'
	}) {
		return show(typed)
	}
	return typed
}

// show quotes a word for a message, shortened so that a pasted paragraph
// does not fill the thread, with invisible characters escaped.
func show(w string) string {
	const max = 60
	if utf8.RuneCountInString(w) > max {
		w = string([]rune(w)[:max-1]) + "…"
	}
	return strconv.Quote(w)
}
