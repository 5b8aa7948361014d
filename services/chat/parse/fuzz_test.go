package parse_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/switchboard-ops/switchboard/kit/spec"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/services/chat/parse"
)

// fuzzSeeds are lines people type, and lines that broke things once.
var fuzzSeeds = []string{
	"lb drain web1,web2 www --wait --timeout 10m -- kernel update",
	`deploy carbonpickle 0.2.9.11 cop@production --dry-run -- "rolling" it’s fine`,
	"lb drain “web1” ‘web 2’ —wait — reason",
	"lb\u00a0drain\u202fweb1\tweb2",
	`say 'it'\''s' "a \"b\" \\ c" \ d`,
	"incident note 4 -- line one\r\nline two",
	"x 'unclosed",
	"x \"unclosed \\",
	"trailing \\",
	"bell \a and \x00",
	"bad \xff utf8",
	"'' \"\" '--' -- ",
	"--no-wait --wait=yes -n --mode=HARD --max_parallel=3 --",
}

// controlFree reports whether s has no control characters.
func controlFree(s string) bool {
	return !strings.ContainsFunc(s, unicode.IsControl)
}

func FuzzSplit(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		line, err := parse.Split(in)
		if err != nil {
			var pe *parse.Error
			if !errors.As(err, &pe) {
				t.Fatalf("Split(%q) error %T %v, want *parse.Error", in, err, err)
			}
			if pe.Msg == "" || pe.Pos < 0 || pe.Pos > len(in) {
				t.Fatalf("Split(%q) error %q at %d: want a message and a position within the line", in, pe.Msg, pe.Pos)
			}
			return
		}
		if len(line.Words) > parse.MaxWords {
			t.Fatalf("Split(%q) gave %d words, more than MaxWords", in, len(line.Words))
		}
		for _, w := range line.Words {
			if !utf8.ValidString(w) || !controlFree(w) {
				t.Fatalf("Split(%q) gave word %q with a control character or bad UTF-8", in, w)
			}
			if strings.ContainsAny(w, "“”‘’\u00a0") {
				t.Fatalf("Split(%q) gave word %q with a smart quote or no-break space", in, w)
			}
		}
		if line.Text != strings.TrimSpace(line.Text) || strings.ContainsFunc(line.Text, func(r rune) bool {
			return unicode.IsControl(r) && r != '\t' && r != '\n'
		}) {
			t.Fatalf("Split(%q) gave text %q: want it trimmed, without control characters but tab and newline", in, line.Text)
		}
		if !line.HasText && line.Text != "" {
			t.Fatalf("Split(%q) gave text %q without HasText", in, line.Text)
		}

		// Re-quoting the words (and re-appending the text) gives the same line.
		again := parse.Join(line.Words)
		if line.HasText {
			again += " -- " + line.Text
		}
		if len(again) > parse.MaxInput {
			return // quoting made it longer than a message may be
		}
		got, err := parse.Split(again)
		if err != nil {
			t.Fatalf("Split(%q) = %q, but Split of the re-quoted %q: %v", in, line.Words, again, err)
		}
		if diff := cmp.Diff(line, got); diff != "" {
			t.Fatalf("Split(%q) then re-quoted as %q splits differently (-first +second):\n%s", in, again, diff)
		}
	})
}

// fuzzSpecs are the specs FuzzBind binds every line to: between them they
// use every argument type, a variadic list, a rest-of-line text and
// required text.
var fuzzSpecs = []*commandv1.CommandSpec{
	{
		Name:           "lb drain",
		Usage:          "lb drain <host,host,…> [backend] [weight] [note…]",
		SupportsDryRun: true,
		Mutating:       true,
		Args: []*commandv1.ArgSpec{
			{Name: "hosts", Type: commandv1.ArgType_ARG_TYPE_HOST_LIST, Required: true},
			{Name: "backend", Type: commandv1.ArgType_ARG_TYPE_BACKEND},
			{Name: "weight", Type: commandv1.ArgType_ARG_TYPE_INT, Min: 0, Max: 256},
			{Name: "note", Type: commandv1.ArgType_ARG_TYPE_TEXT},
		},
		Flags: []*commandv1.FlagSpec{
			{Name: "wait", Type: commandv1.ArgType_ARG_TYPE_BOOL},
			{Name: "timeout", Type: commandv1.ArgType_ARG_TYPE_DURATION},
			{Name: "mode", Type: commandv1.ArgType_ARG_TYPE_ENUM, Choices: []string{"soft", "hard"}},
			{Name: "max-parallel", Type: commandv1.ArgType_ARG_TYPE_INT, Min: 1, Max: 50},
			{Name: "job", Type: commandv1.ArgType_ARG_TYPE_JOB_ID},
			{Name: "set", Type: commandv1.ArgType_ARG_TYPE_KEY_VALUE},
		},
	},
	{
		Name:         "deploy",
		Usage:        "deploy <package> <version> <role@env> [host…] -- reason",
		Mutating:     true,
		TextRequired: true,
		TextName:     "reason",
		Args: []*commandv1.ArgSpec{
			{Name: "package", Type: commandv1.ArgType_ARG_TYPE_STRING, Required: true},
			{Name: "version", Type: commandv1.ArgType_ARG_TYPE_VERSION, Required: true},
			{Name: "target", Type: commandv1.ArgType_ARG_TYPE_ROLE_ENV, Required: true},
			{Name: "hosts", Type: commandv1.ArgType_ARG_TYPE_HOST_LIST, Variadic: true},
		},
		Flags: []*commandv1.FlagSpec{
			{Name: "env", Type: commandv1.ArgType_ARG_TYPE_ENVIRONMENT},
			{Name: "host", Type: commandv1.ArgType_ARG_TYPE_HOST},
			{Name: "force", Type: commandv1.ArgType_ARG_TYPE_BOOL},
		},
	},
}

func FuzzBind(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		line, err := parse.Split(in)
		if err != nil {
			return
		}
		for _, s := range fuzzSpecs {
			b, err := parse.Bind(s, line.Words, line.Text, line.HasText)
			if err != nil {
				var pe *parse.Error
				if !errors.As(err, &pe) || pe.Msg == "" {
					t.Fatalf("Bind(%s, %q) error %T %v, want a *parse.Error with a message", s.Name, line.Words, err, err)
				}
				continue
			}
			// Every value is canonical: checking it again changes nothing.
			for _, a := range s.Args {
				v, ok := b.Args[a.Name]
				if !ok {
					continue
				}
				if c, err := spec.CheckValue(a.Type, v, a.Choices, a.Min, a.Max); err != nil || c != v {
					t.Fatalf("Bind(%s, %q) arg %s = %q, not canonical (%q, %v)", s.Name, line.Words, a.Name, v, c, err)
				}
			}
			// What the chat accepts, the service accepts.
			req := &commandv1.CommandRequest{Command: s.Name, Args: b.Args, Flags: b.Flags, Text: b.Text, DryRun: b.DryRun}
			if err := spec.Validate(s, req); err != nil {
				t.Fatalf("Bind(%s, %q) = %+v, which spec.Validate refuses: %v", s.Name, line.Words, b, err)
			}
		}
	})
}
