package parse

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on one command line. A chat message longer than this is not a
// command someone typed, and the limits bound the work a message can cause.
const (
	// MaxInput is the longest line Split accepts, in bytes.
	MaxInput = 4000
	// MaxWords is the most words Split accepts before the "--" text.
	MaxWords = 200
)

// Error is a problem with what a person typed, as a sentence for them.
type Error struct {
	// Msg is the sentence shown in the chat, such as
	// `unclosed " quote starting at byte 7`.
	Msg string
	// Pos is the byte offset in the line where the problem is, or -1 when
	// the problem is not at one place (most errors from Bind).
	Pos int
	// Err is the underlying *spec.Error when a value failed its type check.
	Err error
}

// Error returns the message.
func (e *Error) Error() string { return e.Msg }

// Unwrap returns the underlying *spec.Error, if any.
func (e *Error) Unwrap() error { return e.Err }

// errorAt returns an *Error at byte pos.
func errorAt(pos int, format string, args ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, args...), Pos: pos}
}

// Line is a command line split into words and free text.
type Line struct {
	// Words are the words before a bare "--", with quotes and escapes
	// removed. They never contain control characters.
	Words []string
	// Text is everything after the bare "--", trimmed, exactly as typed
	// (quotes are not interpreted; CRLF becomes LF).
	Text string
	// HasText is true when the line has a bare "--", even with no text
	// after it.
	HasText bool
}

// Split cuts a command line into words the way a shell would, without any
// expansion:
//
//   - words are separated by spaces and tabs;
//   - 'single quotes' keep everything literally;
//   - "double quotes" keep everything except \" and \\, which stand for "
//     and \ (any other backslash is kept as it is);
//   - outside quotes, a backslash makes the next character literal;
//   - a bare -- word ends the words: what follows, trimmed and with quotes
//     left as they are, is Text.
//
// Before parsing, the "smart quotes" chat clients and macOS put in (“ ” ‘ ’)
// are read as " and ', non-breaking and other Unicode spaces as spaces, and
// a bare — or – (what macOS makes of "--") as --. Errors are *Error with the
// byte offset of the problem in line.
func Split(line string) (Line, error) {
	if len(line) > MaxInput {
		return Line{}, errorAt(MaxInput, "message is %d bytes; the limit is %d", len(line), MaxInput)
	}
	// A CLI reading a line from stdin sends its newline too.
	line = strings.TrimRight(line, "\r\n")
	for i, r := range line {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(line[i:]); size == 1 {
				return Line{}, errorAt(i, "invalid UTF-8 at byte %d", i)
			}
		}
	}

	var (
		out    Line
		word   strings.Builder
		inWord bool
	)
	// begin marks the start of a word at byte i.
	begin := func(i int) error {
		if !inWord {
			if len(out.Words) == MaxWords {
				return errorAt(i, "more than %d words; the limit is %d", MaxWords, MaxWords)
			}
			inWord = true
		}
		return nil
	}
	end := func() {
		if inWord {
			out.Words = append(out.Words, word.String())
			word.Reset()
			inWord = false
		}
	}
	// next decodes the rune at i, refusing control characters, and returns
	// it as read (smart quotes and spaces normalised) with its size.
	next := func(i int) (rune, int, error) {
		r, size := utf8.DecodeRuneInString(line[i:])
		if err := wordControl(r, i); err != nil {
			return 0, 0, err
		}
		return normalize(r), size, nil
	}

	for i := 0; i < len(line); {
		r, size, err := next(i)
		if err != nil {
			return Line{}, err
		}
		switch {
		case r == ' ':
			end()
			i += size

		case !inWord && textMarker(line, i) > 0:
			text, err := freeText(line, i+textMarker(line, i))
			if err != nil {
				return Line{}, err
			}
			out.Text, out.HasText = text, true
			return out, nil

		case r == '\'':
			if err := begin(i); err != nil {
				return Line{}, err
			}
			start := i
			for i += size; ; i += size {
				if i >= len(line) {
					return Line{}, errorAt(start, "unclosed ' quote starting at byte %d (to write an apostrophe, use \\' or put the text after --)", start)
				}
				if r, size, err = next(i); err != nil {
					return Line{}, err
				}
				if r == '\'' {
					i += size
					break
				}
				word.WriteRune(r)
			}

		case r == '"':
			if err := begin(i); err != nil {
				return Line{}, err
			}
			start := i
			for i += size; ; i += size {
				if i >= len(line) {
					return Line{}, errorAt(start, "unclosed \" quote starting at byte %d", start)
				}
				if r, size, err = next(i); err != nil {
					return Line{}, err
				}
				if r == '"' {
					i += size
					break
				}
				if r == '\\' && i+size < len(line) {
					// Only \" and \\ are escapes inside double quotes.
					r2, size2, err := next(i + size)
					if err != nil {
						return Line{}, err
					}
					if r2 == '"' || r2 == '\\' {
						word.WriteRune(r2)
						size += size2
						continue
					}
				}
				word.WriteRune(r)
			}

		case r == '\\':
			if err := begin(i); err != nil {
				return Line{}, err
			}
			if i+size >= len(line) {
				return Line{}, errorAt(i, "trailing backslash at byte %d (write \\\\ for a backslash)", i)
			}
			r2, size2, err := next(i + size)
			if err != nil {
				return Line{}, err
			}
			word.WriteRune(r2)
			i += size + size2

		default:
			if err := begin(i); err != nil {
				return Line{}, err
			}
			word.WriteRune(r)
			i += size
		}
	}
	end()
	return out, nil
}

// normalize reads what people paste as what they meant: smart quotes as
// ASCII quotes, tabs and Unicode spaces (no-break, narrow no-break, em …) as
// a space. Control characters are refused before this is called.
func normalize(r rune) rune {
	switch r {
	case '“', '”':
		return '"'
	case '‘', '’':
		return '\''
	case '\t':
		return ' '
	}
	if r >= utf8.RuneSelf && unicode.IsSpace(r) {
		return ' '
	}
	return r
}

// wordControl refuses a control character (other than tab) at byte i in the
// words part of a line.
func wordControl(r rune, i int) error {
	switch {
	case r == '\t' || !unicode.IsControl(r):
		return nil
	case r == '\n' || r == '\r':
		return errorAt(i, "line break at byte %d; only the text after -- may span lines", i)
	}
	return errorAt(i, "control character %U at byte %d", r, i)
}

// textMarker returns the length of a bare "--" (or the — or – a Mac makes of
// it) starting at byte i, or 0 if there is none. Bare means followed by the
// end of the line, a space or a line break.
func textMarker(line string, i int) int {
	var n int
	switch {
	case strings.HasPrefix(line[i:], "--"):
		n = 2
	case strings.HasPrefix(line[i:], "—"), strings.HasPrefix(line[i:], "–"):
		n = len("—")
	default:
		return 0
	}
	if i+n == len(line) {
		return n
	}
	r, _ := utf8.DecodeRuneInString(line[i+n:])
	if r == '\n' || r == '\r' || normalize(r) == ' ' {
		return n
	}
	return 0
}

// freeText returns the text from byte i on, trimmed, with CRLF as LF. It may
// span lines, but no other control characters than tab and line breaks are
// allowed.
func freeText(line string, i int) (string, error) {
	text := line[i:]
	for j, r := range text {
		if !unicode.IsControl(r) || r == '\t' || r == '\n' {
			continue
		}
		if r == '\r' && strings.HasPrefix(text[j+1:], "\n") {
			continue
		}
		return "", errorAt(i+j, "control character %U at byte %d", r, i+j)
	}
	return strings.TrimSpace(strings.ReplaceAll(text, "\r\n", "\n")), nil
}

// Quote returns w written so that Split reads it back as the single word w:
// w itself when it needs no quoting, otherwise w in single quotes, or in
// double quotes with \" and \\ escapes when it contains a single quote.
//
// Every word Split returns round-trips. A word with characters Split never
// returns (control characters, smart quotes, Unicode spaces) comes back
// normalised.
func Quote(w string) string {
	if w != "" && textMarker(w, 0) != len(w) && !needsQuotes(w) {
		return w
	}
	if !strings.ContainsRune(w, '\'') {
		return "'" + w + "'"
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range w {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// needsQuotes reports whether w has a character that Split treats specially.
func needsQuotes(w string) bool {
	for _, r := range w {
		if r == ' ' || r == '\'' || r == '"' || r == '\\' || normalize(r) != r || unicode.IsControl(r) {
			return true
		}
	}
	return false
}

// Join returns words quoted with Quote and separated by spaces: a line that
// Split reads back as the same words.
func Join(words []string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = Quote(w)
	}
	return strings.Join(quoted, " ")
}
