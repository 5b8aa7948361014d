package spec

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
)

// Limits on single values. They keep a pasted log line from becoming a
// "host name" and bound the work a single request can ask for.
const (
	maxHostLen  = 253 // RFC 1035 section 2.3.4, without the trailing dot
	maxLabelLen = 63
	maxHosts    = 500 // items in a HOST_LIST after de-duplication
	maxNameLen  = 100 // BACKEND, ENVIRONMENT, each half of ROLE_ENV, VERSION
	maxShown    = 60  // runes of a bad value echoed back in an error
)

// CheckValue checks v against typ and returns its canonical form: host names
// lower-cased, host lists de-duplicated and comma-joined, numbers and
// durations in Go's format, booleans as "true" or "false", an enum value as
// spelled in choices. choices is used by ARG_TYPE_ENUM only; min and max
// bound ARG_TYPE_INT (inclusive) unless both are zero, and a max below min
// (min 1, max 0) means "no upper bound".
//
// The error, always a *Error, is a sentence for a person:
//
//	"web_1!" is not a host name ('_' is not allowed)
//	"5x" is not a duration (try 90s, 10m or 1h30m)
//	300 is above the maximum 256
//
// An unspecified or unknown type (a newer service's spec seen by an older
// chat replica) is checked like one word of text: the service that knows the
// type checks it again on receipt.
func CheckValue(typ commandv1.ArgType, v string, choices []string, min, max int64) (string, error) {
	if !utf8.ValidString(v) {
		return "", errorf("%s is not valid UTF-8", show(v))
	}
	switch typ {
	case commandv1.ArgType_ARG_TYPE_HOST:
		return checkHost(v)
	case commandv1.ArgType_ARG_TYPE_HOST_LIST:
		return checkHostList(v)
	case commandv1.ArgType_ARG_TYPE_BACKEND:
		return v, checkName(v, "a backend name", "_.-")
	case commandv1.ArgType_ARG_TYPE_ENVIRONMENT:
		return v, checkName(v, "an environment name", "_.-")
	case commandv1.ArgType_ARG_TYPE_ROLE_ENV:
		return checkRoleEnv(v)
	case commandv1.ArgType_ARG_TYPE_VERSION:
		return v, checkName(v, "a version", "._+-")
	case commandv1.ArgType_ARG_TYPE_INT:
		return checkInt(v, min, max)
	case commandv1.ArgType_ARG_TYPE_DURATION:
		return checkDuration(v)
	case commandv1.ArgType_ARG_TYPE_TEXT:
		return v, checkText(v)
	case commandv1.ArgType_ARG_TYPE_BOOL:
		return checkBool(v)
	case commandv1.ArgType_ARG_TYPE_ENUM:
		return checkEnum(v, choices)
	case commandv1.ArgType_ARG_TYPE_JOB_ID:
		return checkJobID(v)
	case commandv1.ArgType_ARG_TYPE_KEY_VALUE:
		return v, checkKeyValue(v)
	default: // STRING, UNSPECIFIED and types this build does not know
		return v, checkWord(v)
	}
}

// checkWord accepts one non-empty word without spaces or control characters.
func checkWord(v string) error {
	if v == "" {
		return errorf(`"" is not a single word`)
	}
	for _, r := range v {
		switch {
		case unicode.IsControl(r):
			return errorf("%s is not a single word (control character %U)", show(v), r)
		case unicode.IsSpace(r):
			return errorf("%s is not a single word", show(v))
		}
	}
	return nil
}

// checkHost accepts an RFC 1123 host name and returns it lower-cased. Only
// ASCII is lower-cased: strings.ToLower would turn the Kelvin sign into 'k'
// and so accept a name nobody typed.
func checkHost(v string) (string, error) {
	if why := hostProblem(v); why != "" {
		return "", errorf("%s is not a host name (%s)", show(v), why)
	}
	return asciiLower(v), nil
}

// hostProblem says what is wrong with v as a host name, or "" if nothing is.
func hostProblem(v string) string {
	switch {
	case v == "":
		return "it is empty"
	case len(v) > maxHostLen:
		return fmt.Sprintf("%d characters; the limit is %d", len(v), maxHostLen)
	}
	for _, r := range v {
		if !isAlnum(r) && r != '-' && r != '.' {
			return fmt.Sprintf("%s is not allowed", quoteRune(r))
		}
	}
	for label := range strings.SplitSeq(v, ".") {
		switch {
		case label == "" && (strings.HasPrefix(v, ".") || strings.HasSuffix(v, ".")):
			return "it starts or ends with a dot"
		case label == "":
			return "two dots in a row"
		case len(label) > maxLabelLen:
			return fmt.Sprintf("a part between dots is longer than %d characters", maxLabelLen)
		case label[0] == '-' || label[len(label)-1] == '-':
			return "a part between dots starts or ends with '-'"
		}
	}
	return ""
}

// checkHostList accepts host names separated by commas (spaces around the
// commas are forgiven), and returns them lower-cased, without duplicates, in
// the order given.
func checkHostList(v string) (string, error) {
	if strings.TrimSpace(v) == "" {
		return "", errorf("the host list is empty")
	}
	items := strings.Split(v, ",")
	seen := make(map[string]bool, len(items))
	out := make([]string, 0, len(items))
	for i, item := range items {
		item = strings.Trim(item, " \t")
		if item == "" {
			return "", errorf("%s has an empty item; separate host names with single commas, like web1,web2", show(v))
		}
		h, err := checkHost(item)
		if err != nil {
			if len(items) == 1 {
				return "", err
			}
			return "", errorf("%s is not a host name (%s; item %d of the list)", show(item), hostProblem(item), i+1)
		}
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	if len(out) > maxHosts {
		return "", errorf("the host list has %d names; the limit is %d", len(out), maxHosts)
	}
	return strings.Join(out, ","), nil
}

// checkName accepts [A-Za-z0-9][A-Za-z0-9<punct>]* up to maxNameLen bytes.
func checkName(v, what, punct string) error {
	switch {
	case v == "":
		return errorf(`"" is not %s`, what)
	case len(v) > maxNameLen:
		return errorf("%s is not %s (%d characters; the limit is %d)", show(v), what, len(v), maxNameLen)
	}
	for i, r := range v {
		if isAlnum(r) {
			continue
		}
		if i == 0 {
			return errorf("%s is not %s (it must start with a letter or digit)", show(v), what)
		}
		if !strings.ContainsRune(punct, r) {
			return errorf("%s is not %s (%s is not allowed)", show(v), what, quoteRune(r))
		}
	}
	return nil
}

// checkRoleEnv accepts role@environment with both halves shaped like an
// environment name.
func checkRoleEnv(v string) (string, error) {
	role, env, ok := strings.Cut(v, "@")
	if !ok || role == "" || env == "" {
		return "", errorf("%s is not role@environment (like cop@production)", show(v))
	}
	if err := checkName(role, "a role name", "_.-"); err != nil {
		return "", errorf("%s is not role@environment (%s)", show(v), err.(*Error).Message)
	}
	if err := checkName(env, "an environment name", "_.-"); err != nil {
		return "", errorf("%s is not role@environment (%s)", show(v), err.(*Error).Message)
	}
	return v, nil
}

// checkInt accepts a base-10 integer within [min, max] when bounds are set.
func checkInt(v string, min, max int64) (string, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return "", errorf("%s is not a whole number this command can use (too large)", show(v))
		}
		return "", errorf("%s is not a whole number", show(v))
	}
	if min != 0 || max != 0 {
		if n < min {
			return "", errorf("%d is below the minimum %d", n, min)
		}
		if max >= min && n > max {
			return "", errorf("%d is above the maximum %d", n, max)
		}
	}
	return strconv.FormatInt(n, 10), nil
}

// checkDuration accepts a positive Go duration and returns it as Go prints
// it ("90s" becomes "1m30s").
func checkDuration(v string) (string, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		switch {
		case v != "" && strings.Trim(v, "0123456789") == "":
			return "", errorf("%s is not a duration (add a unit, like %ss or %sm)", show(v), v, v)
		case strings.HasSuffix(v, "d") && !strings.Contains(v, " "):
			return "", errorf("%s is not a duration (try 90s, 10m or 1h30m; a day is 24h)", show(v))
		}
		return "", errorf("%s is not a duration (try 90s, 10m or 1h30m)", show(v))
	}
	if d <= 0 {
		return "", errorf("%s is not a positive duration", show(v))
	}
	return d.String(), nil
}

// checkText accepts any text without control characters other than tab
// and newline.
func checkText(v string) error {
	for i, r := range v {
		if unicode.IsControl(r) && r != '\t' && r != '\n' {
			return errorf("the text has a control character %U at byte %d", r, i)
		}
	}
	return nil
}

// checkBool accepts true/false, yes/no and 1/0 in any case.
func checkBool(v string) (string, error) {
	switch strings.ToLower(v) {
	case "true", "yes", "1":
		return "true", nil
	case "false", "no", "0":
		return "false", nil
	}
	return "", errorf("%s is not true or false", show(v))
}

// checkEnum accepts one of choices, ignoring case, and returns the choice.
func checkEnum(v string, choices []string) (string, error) {
	for _, c := range choices {
		if strings.EqualFold(v, c) {
			return c, nil
		}
	}
	if len(choices) == 0 {
		return "", errorf("%s is not allowed (the command lists no choices)", show(v))
	}
	return "", errorf("%s is not one of: %s", show(v), strings.Join(choices, ", "))
}

// checkJobID accepts 12 hex digits; upper case (copied from somewhere that
// shouts) is lower-cased.
func checkJobID(v string) (string, error) {
	if len(v) != 12 || strings.Trim(v, "0123456789abcdefABCDEF") != "" {
		return "", errorf("%s is not a job id (12 hex digits, like 3fa9c1e2b7d4)", show(v))
	}
	return asciiLower(v), nil
}

// checkKeyValue accepts key=value with a [A-Za-z0-9_.-]+ key and a non-empty
// value without control characters.
func checkKeyValue(v string) error {
	key, val, ok := strings.Cut(v, "=")
	switch {
	case !ok:
		return errorf("%s is not key=value", show(v))
	case key == "":
		return errorf("%s is not key=value (the key is empty)", show(v))
	case val == "":
		return errorf("%s is not key=value (the value is empty)", show(v))
	}
	for _, r := range key {
		if !isAlnum(r) && r != '_' && r != '.' && r != '-' {
			return errorf("%s is not key=value (%s is not allowed in the key)", show(v), quoteRune(r))
		}
	}
	for _, r := range val {
		if unicode.IsControl(r) {
			return errorf("%s is not key=value (control character %U in the value)", show(v), r)
		}
	}
	return nil
}

// isAlnum reports whether r is an ASCII letter or digit.
func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// asciiLower lower-cases ASCII letters only.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// quoteRune quotes a character for an error message. A printable non-ASCII
// character also gets its code point, because the Kelvin sign looks exactly
// like 'K' in a chat window.
func quoteRune(r rune) string {
	if r >= utf8.RuneSelf && strconv.IsPrint(r) {
		return fmt.Sprintf("%s (%U)", strconv.QuoteRune(r), r)
	}
	return strconv.QuoteRune(r)
}

// show quotes a value for an error message, shortened so that a pasted log
// line does not fill the thread, with invisible characters escaped.
func show(v string) string {
	if utf8.RuneCountInString(v) > maxShown {
		r := []rune(v)
		v = string(r[:maxShown-1]) + "…"
	}
	return strconv.Quote(v)
}
