package parse_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/switchboard-ops/switchboard/services/chat/parse"
)

func TestSplit(t *testing.T) {
	t.Parallel()
	many := strings.TrimSpace(strings.Repeat("w ", parse.MaxWords))
	long := "note " + strings.Repeat("x", parse.MaxInput-len("note "))
	tests := []struct {
		name string
		in   string
		want parse.Line
	}{
		{"an empty line has no words", "", parse.Line{}},
		{"a line of spaces has no words", "  \t ", parse.Line{}},
		{"words are separated by spaces", "lb drain web1 www", parse.Line{Words: []string{"lb", "drain", "web1", "www"}}},
		{"runs of spaces and tabs separate once", "  lb \t drain\t\tweb1  ", parse.Line{Words: []string{"lb", "drain", "web1"}}},
		{"single quotes keep spaces", "say 'hello world'", parse.Line{Words: []string{"say", "hello world"}}},
		{"single quotes keep backslashes and double quotes", `'a\b "c"'`, parse.Line{Words: []string{`a\b "c"`}}},
		{"double quotes keep spaces and single quotes", `"it's here"`, parse.Line{Words: []string{"it's here"}}},
		{"double quotes unescape quote and backslash only", `"a \"b\" c\\d \n"`, parse.Line{Words: []string{`a "b" c\d \n`}}},
		{"a backslash outside quotes escapes a space", `web\ 1`, parse.Line{Words: []string{"web 1"}}},
		{"a backslash outside quotes escapes quotes and itself", `\' \" \\`, parse.Line{Words: []string{"'", `"`, `\`}}},
		{"a backslash outside quotes escapes an ordinary letter to itself", `\a`, parse.Line{Words: []string{"a"}}},
		{"quoted and unquoted parts join into one word", `a"b c"'d e'f`, parse.Line{Words: []string{"ab cd ef"}}},
		{"empty quotes are an empty word", `x '' ""`, parse.Line{Words: []string{"x", "", ""}}},
		{"a tab inside quotes becomes a space", "'a\tb'", parse.Line{Words: []string{"a b"}}},
		{"smart double quotes are double quotes", "note “hello world”", parse.Line{Words: []string{"note", "hello world"}}},
		{"smart single quotes are single quotes", "note ‘hello world’", parse.Line{Words: []string{"note", "hello world"}}},
		{"smart quotes mix with ASCII ones", "“it's” 'a“b'", parse.Line{Words: []string{"it's", `a"b`}}},
		{"non-breaking spaces separate words", "lb\u00a0drain\u202fweb1\u2007www", parse.Line{Words: []string{"lb", "drain", "web1", "www"}}},
		{"a non-breaking space inside quotes is a space", "'a\u00a0b'", parse.Line{Words: []string{"a b"}}},
		{"unicode words are kept", "deploy naïve 🚀", parse.Line{Words: []string{"deploy", "naïve", "🚀"}}},
		{"a trailing line break is ignored", "lb status\r\n", parse.Line{Words: []string{"lb", "status"}}},
		{"a bare -- starts the text", `lb drain web1 -- kernel "update" now  `,
			parse.Line{Words: []string{"lb", "drain", "web1"}, Text: `kernel "update" now`, HasText: true}},
		{"the text keeps quotes and backslashes as typed", `x -- it's a \ "mess`,
			parse.Line{Words: []string{"x"}, Text: `it's a \ "mess`, HasText: true}},
		{"the text keeps smart quotes as typed", "x -- it’s “fine”",
			parse.Line{Words: []string{"x"}, Text: "it’s “fine”", HasText: true}},
		{"a -- at the end gives empty text", "lb drain web1 --", parse.Line{Words: []string{"lb", "drain", "web1"}, HasText: true}},
		{"a -- at the start gives only text", "-- hello", parse.Line{Text: "hello", HasText: true}},
		{"the text may span lines", "incident note 4 -- line one\r\nline two\n\tindented\n",
			parse.Line{Words: []string{"incident", "note", "4"}, Text: "line one\nline two\n\tindented", HasText: true}},
		{"a -- before a line break starts the text", "x --\nreason", parse.Line{Words: []string{"x"}, Text: "reason", HasText: true}},
		{"a -- before a tab starts the text", "x --\treason", parse.Line{Words: []string{"x"}, Text: "reason", HasText: true}},
		{"a -- before a non-breaking space starts the text", "x --\u00a0reason", parse.Line{Words: []string{"x"}, Text: "reason", HasText: true}},
		{"a second -- is part of the text", "x -- a -- b", parse.Line{Words: []string{"x"}, Text: "a -- b", HasText: true}},
		{"a bare em dash starts the text", "lb drain web1 — kernel update", parse.Line{Words: []string{"lb", "drain", "web1"}, Text: "kernel update", HasText: true}},
		{"a bare en dash starts the text", "lb drain web1 – kernel update", parse.Line{Words: []string{"lb", "drain", "web1"}, Text: "kernel update", HasText: true}},
		{"a flag is a word", "lb drain --wait --timeout=10m", parse.Line{Words: []string{"lb", "drain", "--wait", "--timeout=10m"}}},
		{"a quoted -- is a word", `x '--' "--" \-- y`, parse.Line{Words: []string{"x", "--", "--", "--", "y"}}},
		{"a -- inside a word is part of it", "a-- --b a--b", parse.Line{Words: []string{"a--", "--b", "a--b"}}},
		{"quotes after -- in a word do not start text", `--"x y"`, parse.Line{Words: []string{"--x y"}}},
		{"the most words allowed", many, parse.Line{Words: strings.Fields(many)}},
		{"the longest line allowed", long, parse.Line{Words: strings.Fields(long)}},
		{"a long text after -- does not count as words", "x -- " + many, parse.Line{Words: []string{"x"}, Text: many, HasText: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parse.Split(tt.in)
			if err != nil {
				t.Fatalf("Split(%q) error: %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("Split(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestSplitErrors(t *testing.T) {
	t.Parallel()
	tooManyWords := strings.TrimSpace(strings.Repeat("w ", parse.MaxWords+1))
	tests := []struct {
		name    string
		in      string
		wantMsg string
		wantPos int
	}{
		{"a message over the limit", strings.Repeat("x", 5123),
			"message is 5123 bytes; the limit is 4000", 4000},
		{"a message one byte over the limit", strings.Repeat("x", parse.MaxInput+1),
			"message is 4001 bytes; the limit is 4000", 4000},
		{"a bell character", "lb drain \aweb1",
			"control character U+0007 at byte 9", 9},
		{"a NUL inside single quotes", "x 'a\x00'",
			"control character U+0000 at byte 4", 4},
		{"an escape character inside double quotes", "x \"\x1b[31m\"",
			"control character U+001B at byte 3", 3},
		{"an escaped control character", "x \\\x01",
			"control character U+0001 at byte 3", 3},
		{"a DEL character", "x\x7f",
			"control character U+007F at byte 1", 1},
		{"a C1 control character", "x \u0085",
			"control character U+0085 at byte 2", 2},
		{"a line break between words", "lb drain\nweb1",
			"line break at byte 8; only the text after -- may span lines", 8},
		{"a carriage return between words", "lb drain\r\nweb1",
			"line break at byte 8; only the text after -- may span lines", 8},
		{"a control character in the text", "x -- a\x00b",
			"control character U+0000 at byte 6", 6},
		{"a lone carriage return in the text", "x -- a\rb",
			"control character U+000D at byte 6", 6},
		{"invalid UTF-8 in a word", "lb \xffdrain",
			"invalid UTF-8 at byte 3", 3},
		{"invalid UTF-8 in the text", "lb -- caf\xc3",
			"invalid UTF-8 at byte 9", 9},
		{"an unclosed double quote", `lb note "abc`,
			`unclosed " quote starting at byte 8`, 8},
		{"an unclosed single quote", `lb note it's`,
			`unclosed ' quote starting at byte 10 (to write an apostrophe, use \' or put the text after --)`, 10},
		{"an unclosed smart quote", "x “abc",
			`unclosed " quote starting at byte 2`, 2},
		{"a smart apostrophe opens a quote", "x can’t",
			`unclosed ' quote starting at byte 5 (to write an apostrophe, use \' or put the text after --)`, 5},
		{"an escaped quote does not close double quotes", `x "abc\"`,
			`unclosed " quote starting at byte 2`, 2},
		{"a backslash at the end inside double quotes", `x "abc\`,
			`unclosed " quote starting at byte 2`, 2},
		{"a trailing backslash", `lb drain web1\`,
			`trailing backslash at byte 13 (write \\ for a backslash)`, 13},
		{"too many words", tooManyWords,
			"more than 200 words; the limit is 200", 2 * parse.MaxWords},
		{"too many words counting quoted empty ones", strings.Repeat("'' ", parse.MaxWords+1),
			"more than 200 words; the limit is 200", 3 * parse.MaxWords},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parse.Split(tt.in)
			if err == nil {
				t.Fatalf("Split(%q) = %+v, want error %q", tt.in, got, tt.wantMsg)
			}
			var pe *parse.Error
			if !errors.As(err, &pe) {
				t.Fatalf("Split(%q) error %T, want *parse.Error", tt.in, err)
			}
			if pe.Msg != tt.wantMsg || pe.Pos != tt.wantPos {
				t.Fatalf("Split(%q) error\n got: %q at %d\nwant: %q at %d", tt.in, pe.Msg, pe.Pos, tt.wantMsg, tt.wantPos)
			}
			if err.Error() != pe.Msg {
				t.Fatalf("Error() = %q, want the message %q", err.Error(), pe.Msg)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"a plain word is left alone", "web1", "web1"},
		{"a flag is left alone", "--timeout=10m", "--timeout=10m"},
		{"unicode is left alone", "naïve", "naïve"},
		{"an empty word is quoted", "", "''"},
		{"a word with a space is single-quoted", "a b", "'a b'"},
		{"a backslash is single-quoted", `a\b`, `'a\b'`},
		{"a double quote is single-quoted", `say "hi"`, `'say "hi"'`},
		{"a single quote is double-quoted", "it's", `"it's"`},
		{"both quotes and a backslash", `it's "x\y"`, `"it's \"x\\y\""`},
		{"a bare -- is quoted so it stays a word", "--", "'--'"},
		{"a bare em dash is quoted so it stays a word", "—", "'—'"},
		{"a smart quote is quoted", "“", "'“'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := parse.Quote(tt.in)
			if got != tt.want {
				t.Fatalf("Quote(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestJoinRoundTrips(t *testing.T) {
	t.Parallel()
	words := []string{"lb", "drain", "", "a b", "it's", `"q"`, `\`, "--", "—", "–", "--x", "-n", "naïve 🚀"}
	line, err := parse.Split(parse.Join(words))
	if err != nil {
		t.Fatalf("Split(Join(%q)) error: %v", words, err)
	}
	if diff := cmp.Diff(parse.Line{Words: words}, line); diff != "" {
		t.Fatalf("Split(Join(words)) mismatch (-want +got):\n%s", diff)
	}
}
