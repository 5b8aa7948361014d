package spec_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/switchboard-ops/switchboard/kit/spec"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
)

const (
	tString   = commandv1.ArgType_ARG_TYPE_STRING
	tHost     = commandv1.ArgType_ARG_TYPE_HOST
	tHostList = commandv1.ArgType_ARG_TYPE_HOST_LIST
	tBackend  = commandv1.ArgType_ARG_TYPE_BACKEND
	tEnv      = commandv1.ArgType_ARG_TYPE_ENVIRONMENT
	tRoleEnv  = commandv1.ArgType_ARG_TYPE_ROLE_ENV
	tVersion  = commandv1.ArgType_ARG_TYPE_VERSION
	tInt      = commandv1.ArgType_ARG_TYPE_INT
	tDuration = commandv1.ArgType_ARG_TYPE_DURATION
	tText     = commandv1.ArgType_ARG_TYPE_TEXT
	tBool     = commandv1.ArgType_ARG_TYPE_BOOL
	tEnum     = commandv1.ArgType_ARG_TYPE_ENUM
	tJobID    = commandv1.ArgType_ARG_TYPE_JOB_ID
	tKV       = commandv1.ArgType_ARG_TYPE_KEY_VALUE
)

// long253 is a host name of the greatest length allowed.
var long253 = strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 61)

// hosts returns n distinct host names joined by commas.
func hosts(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("web")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString(strings.Repeat("1", i/26+1))
	}
	return b.String()
}

func TestCheckValueAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		typ      commandv1.ArgType
		in       string
		choices  []string
		min, max int64
		want     string
	}{
		{"a plain word is a string", tString, "carbonpickle", nil, 0, 0, "carbonpickle"},
		{"a string keeps punctuation and unicode", tString, "naïve/x:y", nil, 0, 0, "naïve/x:y"},
		{"an unspecified type is checked like a string", commandv1.ArgType_ARG_TYPE_UNSPECIFIED, "anything", nil, 0, 0, "anything"},
		{"a short host name", tHost, "web1", nil, 0, 0, "web1"},
		{"a host name is lower-cased", tHost, "Web1.Example.COM", nil, 0, 0, "web1.example.com"},
		{"a host label may start with a digit", tHost, "1web.example", nil, 0, 0, "1web.example"},
		{"a host label may contain hyphens inside", tHost, "agg-01.dc-2", nil, 0, 0, "agg-01.dc-2"},
		{"a host name of 253 characters", tHost, long253, nil, 0, 0, long253},
		{"a host label of 63 characters", tHost, strings.Repeat("a", 63), nil, 0, 0, strings.Repeat("a", 63)},
		{"a host list of one", tHostList, "web1", nil, 0, 0, "web1"},
		{"a host list keeps order", tHostList, "web3,web1,web2", nil, 0, 0, "web3,web1,web2"},
		{"a host list drops duplicates after lower-casing", tHostList, "web1,WEB2,web1,web2", nil, 0, 0, "web1,web2"},
		{"a host list forgives spaces around commas", tHostList, "web1, web2 ,web3", nil, 0, 0, "web1,web2,web3"},
		{"a host list of 500 names", tHostList, hosts(500), nil, 0, 0, hosts(500)},
		{"a backend name", tBackend, "www_backend-2.v4", nil, 0, 0, "www_backend-2.v4"},
		{"a backend keeps its case", tBackend, "WWW", nil, 0, 0, "WWW"},
		{"an environment name", tEnv, "production", nil, 0, 0, "production"},
		{"an environment name of 100 characters", tEnv, strings.Repeat("e", 100), nil, 0, 0, strings.Repeat("e", 100)},
		{"a role at an environment", tRoleEnv, "cop@production", nil, 0, 0, "cop@production"},
		{"a role at an environment with punctuation", tRoleEnv, "carbon_relay.v2@eu-west", nil, 0, 0, "carbon_relay.v2@eu-west"},
		{"a dotted version", tVersion, "0.2.9.11", nil, 0, 0, "0.2.9.11"},
		{"a semantic version with a pre-release and build", tVersion, "v1.4.0-rc1+build.7", nil, 0, 0, "v1.4.0-rc1+build.7"},
		{"a whole number", tInt, "42", nil, 0, 0, "42"},
		{"a negative whole number without bounds", tInt, "-7", nil, 0, 0, "-7"},
		{"a whole number with a plus sign is canonicalised", tInt, "+8", nil, 0, 0, "8"},
		{"leading zeros are dropped", tInt, "007", nil, 0, 0, "7"},
		{"the minimum is inclusive", tInt, "0", nil, 0, 256, "0"},
		{"the maximum is inclusive", tInt, "256", nil, 0, 256, "256"},
		{"a max below min means no upper bound", tInt, "1000000", nil, 1, 0, "1000000"},
		{"a negative range", tInt, "-5", nil, -10, -1, "-5"},
		{"a duration in seconds is printed the Go way", tDuration, "90s", nil, 0, 0, "1m30s"},
		{"a duration in minutes", tDuration, "10m", nil, 0, 0, "10m0s"},
		{"a compound duration", tDuration, "1h30m", nil, 0, 0, "1h30m0s"},
		{"a fractional duration", tDuration, "1.5h", nil, 0, 0, "1h30m0s"},
		{"text with spaces, tabs and newlines", tText, "kernel update\n\tthen reboot", nil, 0, 0, "kernel update\n\tthen reboot"},
		{"empty text", tText, "", nil, 0, 0, ""},
		{"text with unicode", tText, "naïve “quotes” 🚀", nil, 0, 0, "naïve “quotes” 🚀"},
		{"true is true", tBool, "true", nil, 0, 0, "true"},
		{"yes is true", tBool, "YES", nil, 0, 0, "true"},
		{"1 is true", tBool, "1", nil, 0, 0, "true"},
		{"false is false", tBool, "False", nil, 0, 0, "false"},
		{"no is false", tBool, "no", nil, 0, 0, "false"},
		{"0 is false", tBool, "0", nil, 0, 0, "false"},
		{"an enum choice", tEnum, "canary", []string{"production", "canary"}, 0, 0, "canary"},
		{"an enum choice in another case gives the choice's spelling", tEnum, "PRODUCTION", []string{"Production", "canary"}, 0, 0, "Production"},
		{"a job id", tJobID, "3fa9c1e2b7d4", nil, 0, 0, "3fa9c1e2b7d4"},
		{"an upper-case job id is lower-cased", tJobID, "3FA9C1E2B7D4", nil, 0, 0, "3fa9c1e2b7d4"},
		{"a key and a value", tKV, "max_parallel=3", nil, 0, 0, "max_parallel=3"},
		{"a value may contain = and spaces", tKV, "query=a=b c", nil, 0, 0, "query=a=b c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := spec.CheckValue(tt.typ, tt.in, tt.choices, tt.min, tt.max)
			if err != nil {
				t.Fatalf("CheckValue(%s, %q) error: %v", tt.typ, tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("CheckValue(%s, %q) = %q, want %q", tt.typ, tt.in, got, tt.want)
			}
			// The canonical form is itself accepted and unchanged.
			again, err := spec.CheckValue(tt.typ, got, tt.choices, tt.min, tt.max)
			if err != nil || again != got {
				t.Fatalf("CheckValue(%s, canonical %q) = %q, %v; want it unchanged", tt.typ, got, again, err)
			}
		})
	}
}

func TestCheckValueRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		typ      commandv1.ArgType
		in       string
		choices  []string
		min, max int64
		want     string // the whole message
	}{
		{"an empty string", tString, "", nil, 0, 0, `"" is not a single word`},
		{"a string with a space", tString, "two words", nil, 0, 0, `"two words" is not a single word`},
		{"a string with a control character", tString, "a\x07b", nil, 0, 0, `"a\ab" is not a single word (control character U+0007)`},
		{"a string that is not UTF-8", tString, "a\xffb", nil, 0, 0, `"a\xffb" is not valid UTF-8`},
		{"a host with an underscore and a bang", tHost, "web_1!", nil, 0, 0, `"web_1!" is not a host name ('_' is not allowed)`},
		{"an empty host", tHost, "", nil, 0, 0, `"" is not a host name (it is empty)`},
		{"a host with a trailing dot", tHost, "web1.example.", nil, 0, 0, `"web1.example." is not a host name (it starts or ends with a dot)`},
		{"a host with a leading dot", tHost, ".web1", nil, 0, 0, `".web1" is not a host name (it starts or ends with a dot)`},
		{"a host with two dots in a row", tHost, "web1..example", nil, 0, 0, `"web1..example" is not a host name (two dots in a row)`},
		{"a host label starting with a hyphen", tHost, "-web1", nil, 0, 0, `"-web1" is not a host name (a part between dots starts or ends with '-')`},
		{"a host label ending with a hyphen", tHost, "web1-.example", nil, 0, 0, `"web1-.example" is not a host name (a part between dots starts or ends with '-')`},
		{"a host label of 64 characters", tHost, strings.Repeat("a", 64), nil, 0, 0, `"` + strings.Repeat("a", 59) + `…" is not a host name (a part between dots is longer than 63 characters)`},
		{"a host name of 254 characters", tHost, strings.Repeat("a.", 127), nil, 0, 0, `"` + strings.Repeat("a.", 29) + `a…" is not a host name (254 characters; the limit is 253)`},
		{"a host with a Kelvin sign", tHost, "\u212aelvin", nil, 0, 0, "\"\u212aelvin\" is not a host name ('\u212a' (U+212A) is not allowed)"},
		{"a host with a zero-width space shows it escaped", tHost, "web1\u200b", nil, 0, 0, `"web1\u200b" is not a host name ('\u200b' is not allowed)`},
		{"a host with a space", tHost, "web 1", nil, 0, 0, `"web 1" is not a host name (' ' is not allowed)`},
		{"an empty host list", tHostList, "", nil, 0, 0, `the host list is empty`},
		{"a host list with an empty item", tHostList, "web1,,web2", nil, 0, 0, `"web1,,web2" has an empty item; separate host names with single commas, like web1,web2`},
		{"a host list with a trailing comma", tHostList, "web1,", nil, 0, 0, `"web1," has an empty item; separate host names with single commas, like web1,web2`},
		{"a host list with a bad host names the item", tHostList, "web1,web_2", nil, 0, 0, `"web_2" is not a host name ('_' is not allowed; item 2 of the list)`},
		{"a host list of one bad host", tHostList, "web_2", nil, 0, 0, `"web_2" is not a host name ('_' is not allowed)`},
		{"a host list of 501 names", tHostList, hosts(501), nil, 0, 0, `the host list has 501 names; the limit is 500`},
		{"a backend starting with a dot", tBackend, ".www", nil, 0, 0, `".www" is not a backend name (it must start with a letter or digit)`},
		{"a backend with a slash", tBackend, "www/1", nil, 0, 0, `"www/1" is not a backend name ('/' is not allowed)`},
		{"an empty backend", tBackend, "", nil, 0, 0, `"" is not a backend name`},
		{"an environment with a space", tEnv, "prod uction", nil, 0, 0, `"prod uction" is not an environment name (' ' is not allowed)`},
		{"an environment of 101 characters", tEnv, strings.Repeat("e", 101), nil, 0, 0, `"` + strings.Repeat("e", 59) + `…" is not an environment name (101 characters; the limit is 100)`},
		{"a role without an environment", tRoleEnv, "cop", nil, 0, 0, `"cop" is not role@environment (like cop@production)`},
		{"a role with an empty environment", tRoleEnv, "cop@", nil, 0, 0, `"cop@" is not role@environment (like cop@production)`},
		{"a role at two environments", tRoleEnv, "cop@prod@eu", nil, 0, 0, `"cop@prod@eu" is not role@environment ("prod@eu" is not an environment name ('@' is not allowed))`},
		{"a role with a bad character", tRoleEnv, "c!op@prod", nil, 0, 0, `"c!op@prod" is not role@environment ("c!op" is not a role name ('!' is not allowed))`},
		{"a version starting with a plus", tVersion, "+1", nil, 0, 0, `"+1" is not a version (it must start with a letter or digit)`},
		{"a version with a slash", tVersion, "1.0/2", nil, 0, 0, `"1.0/2" is not a version ('/' is not allowed)`},
		{"letters are not a whole number", tInt, "abc", nil, 0, 0, `"abc" is not a whole number`},
		{"a decimal is not a whole number", tInt, "1.5", nil, 0, 0, `"1.5" is not a whole number`},
		{"hex is not a whole number", tInt, "0x10", nil, 0, 0, `"0x10" is not a whole number`},
		{"underscores are not a whole number", tInt, "1_000", nil, 0, 0, `"1_000" is not a whole number`},
		{"an empty whole number", tInt, "", nil, 0, 0, `"" is not a whole number`},
		{"a huge number", tInt, "99999999999999999999", nil, 0, 0, `"99999999999999999999" is not a whole number this command can use (too large)`},
		{"a number above the maximum", tInt, "300", nil, 0, 256, `300 is above the maximum 256`},
		{"a number below the minimum", tInt, "-1", nil, 0, 256, `-1 is below the minimum 0`},
		{"a number below a minimum without maximum", tInt, "0", nil, 1, 0, `0 is below the minimum 1`},
		{"a bad duration", tDuration, "5x", nil, 0, 0, `"5x" is not a duration (try 90s, 10m or 1h30m)`},
		{"a duration without a unit", tDuration, "90", nil, 0, 0, `"90" is not a duration (add a unit, like 90s or 90m)`},
		{"a duration in days", tDuration, "2d", nil, 0, 0, `"2d" is not a duration (try 90s, 10m or 1h30m; a day is 24h)`},
		{"a zero duration", tDuration, "0s", nil, 0, 0, `"0s" is not a positive duration`},
		{"a negative duration", tDuration, "-5m", nil, 0, 0, `"-5m" is not a positive duration`},
		{"an empty duration", tDuration, "", nil, 0, 0, `"" is not a duration (try 90s, 10m or 1h30m)`},
		{"text with a bell", tText, "ding\adong", nil, 0, 0, `the text has a control character U+0007 at byte 4`},
		{"text with a carriage return", tText, "a\r\nb", nil, 0, 0, `the text has a control character U+000D at byte 1`},
		{"text with a C1 control", tText, "a\u0085b", nil, 0, 0, `the text has a control character U+0085 at byte 1`},
		{"maybe is not a boolean", tBool, "maybe", nil, 0, 0, `"maybe" is not true or false`},
		{"an empty boolean", tBool, "", nil, 0, 0, `"" is not true or false`},
		{"a value outside the choices", tEnum, "staging", []string{"production", "canary"}, 0, 0, `"staging" is not one of: production, canary`},
		{"an enum without choices", tEnum, "x", nil, 0, 0, `"x" is not allowed (the command lists no choices)`},
		{"a short job id", tJobID, "3fa9c1", nil, 0, 0, `"3fa9c1" is not a job id (12 hex digits, like 3fa9c1e2b7d4)`},
		{"a job id with a non-hex letter", tJobID, "3fa9c1e2b7dg", nil, 0, 0, `"3fa9c1e2b7dg" is not a job id (12 hex digits, like 3fa9c1e2b7d4)`},
		{"a key without a value", tKV, "key=", nil, 0, 0, `"key=" is not key=value (the value is empty)`},
		{"a value without a key", tKV, "=value", nil, 0, 0, `"=value" is not key=value (the key is empty)`},
		{"no equals sign", tKV, "keyvalue", nil, 0, 0, `"keyvalue" is not key=value`},
		{"a key with a space", tKV, "a key=v", nil, 0, 0, `"a key=v" is not key=value (' ' is not allowed in the key)`},
		{"a value with a newline", tKV, "k=a\nb", nil, 0, 0, `"k=a\nb" is not key=value (control character U+000A in the value)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := spec.CheckValue(tt.typ, tt.in, tt.choices, tt.min, tt.max)
			if err == nil {
				t.Fatalf("CheckValue(%s, %q) = %q, want error %q", tt.typ, tt.in, got, tt.want)
			}
			var se *spec.Error
			if !errors.As(err, &se) {
				t.Fatalf("CheckValue(%s, %q) error %T, want *spec.Error", tt.typ, tt.in, err)
			}
			if err.Error() != tt.want {
				t.Fatalf("CheckValue(%s, %q) error\n got: %s\nwant: %s", tt.typ, tt.in, err, tt.want)
			}
		})
	}
}

// FuzzCheckValue checks that CheckValue never panics, always fails with a
// *spec.Error, and that a canonical value is a fixed point.
func FuzzCheckValue(f *testing.F) {
	for _, s := range []string{"web1", "Web1,web2,WEB1", "90s", "-5", "yes", "cop@prod", "k=v", "3FA9C1E2B7D4", "a\x00", "\xff"} {
		for typ := range int32(16) {
			f.Add(typ, s)
		}
	}
	choices := []string{"production", "Canary"}
	f.Fuzz(func(t *testing.T, typ int32, v string) {
		at := commandv1.ArgType(typ)
		got, err := spec.CheckValue(at, v, choices, -5, 300)
		if err != nil {
			var se *spec.Error
			if !errors.As(err, &se) || se.Message == "" {
				t.Fatalf("CheckValue(%s, %q) error %#v, want a *spec.Error with a message", at, v, err)
			}
			return
		}
		again, err := spec.CheckValue(at, got, choices, -5, 300)
		if err != nil || again != got {
			t.Fatalf("CheckValue(%s, %q) = %q, but CheckValue of that = %q, %v", at, v, got, again, err)
		}
	})
}
