package parse_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/switchboard-ops/switchboard/kit/spec"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
	"github.com/switchboard-ops/switchboard/services/chat/parse"
)

const (
	tString   = commandv1.ArgType_ARG_TYPE_STRING
	tHost     = commandv1.ArgType_ARG_TYPE_HOST
	tHostList = commandv1.ArgType_ARG_TYPE_HOST_LIST
	tBackend  = commandv1.ArgType_ARG_TYPE_BACKEND
	tInt      = commandv1.ArgType_ARG_TYPE_INT
	tDuration = commandv1.ArgType_ARG_TYPE_DURATION
	tText     = commandv1.ArgType_ARG_TYPE_TEXT
	tBool     = commandv1.ArgType_ARG_TYPE_BOOL
	tEnum     = commandv1.ArgType_ARG_TYPE_ENUM
)

// Sample specs, shaped like the ones the services declare.
var (
	drainSpec = &commandv1.CommandSpec{
		Name:           "lb drain",
		Usage:          "lb drain <host,host,…> [backend] [--wait] [--timeout 10m] [-- reason]",
		SupportsDryRun: true,
		Mutating:       true,
		TextName:       "reason",
		Args: []*commandv1.ArgSpec{
			{Name: "hosts", Type: tHostList, Required: true},
			{Name: "backend", Type: tBackend},
		},
		Flags: []*commandv1.FlagSpec{
			{Name: "wait", Type: tBool},
			{Name: "timeout", Type: tDuration},
			{Name: "mode", Type: tEnum, Choices: []string{"soft", "hard"}},
			{Name: "max-parallel", Type: tInt, Min: 1, Max: 50},
		},
	}
	weightSpec = &commandv1.CommandSpec{
		Name:           "lb weight",
		Usage:          "lb weight <host> <backend> <0-256>",
		SupportsDryRun: true,
		Mutating:       true,
		Args: []*commandv1.ArgSpec{
			{Name: "host", Type: tHost, Required: true},
			{Name: "backend", Type: tBackend, Required: true},
			{Name: "weight", Type: tInt, Required: true, Min: 0, Max: 256},
		},
	}
	statusSpec = &commandv1.CommandSpec{
		Name:  "lb status",
		Usage: "lb status [backend]",
		Args:  []*commandv1.ArgSpec{{Name: "backend", Type: tBackend}},
		Flags: []*commandv1.FlagSpec{{Name: "verbose", Type: tBool}},
	}
	ackSpec = &commandv1.CommandSpec{
		Name:           "pager ack",
		Usage:          "pager ack",
		SupportsDryRun: true,
	}
	addSpec = &commandv1.CommandSpec{
		Name:           "lb add",
		Usage:          "lb add <backend> <host…>",
		SupportsDryRun: true,
		Args: []*commandv1.ArgSpec{
			{Name: "backend", Type: tBackend, Required: true},
			{Name: "hosts", Type: tHostList, Required: true, Variadic: true},
		},
	}
	noteSpec = &commandv1.CommandSpec{
		Name:  "incident note",
		Usage: "incident note <incident> <note…>",
		Args: []*commandv1.ArgSpec{
			{Name: "incident", Type: tString, Required: true},
			{Name: "note", Type: tText, Required: true},
		},
	}
	saySpec = &commandv1.CommandSpec{
		Name:  "say",
		Usage: "say <words…>",
		Args:  []*commandv1.ArgSpec{{Name: "words", Type: tText, Required: true, Variadic: true}},
	}
	retireSpec = &commandv1.CommandSpec{
		Name:           "host retire",
		Usage:          "host retire <host> -- reason",
		SupportsDryRun: true,
		Mutating:       true,
		TextRequired:   true,
		TextName:       "reason",
		Args:           []*commandv1.ArgSpec{{Name: "host", Type: tHost, Required: true}},
	}
)

// w is shorthand for a list of words.
func w(words ...string) []string { return words }

func TestBind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		spec    *commandv1.CommandSpec
		words   []string
		text    string
		hasText bool
		want    *parse.Bound
	}{
		{"positional words fill the arguments in order", weightSpec, w("web1", "www", "128"), "", false,
			&parse.Bound{Args: map[string]string{"host": "web1", "backend": "www", "weight": "128"}, Flags: map[string]string{}}},
		{"values are canonicalised", weightSpec, w("WEB1.Example.com", "www", "+007"), "", false,
			&parse.Bound{Args: map[string]string{"host": "web1.example.com", "backend": "www", "weight": "7"}, Flags: map[string]string{}}},
		{"an optional argument may be left out", drainSpec, w("web1,web2"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1,web2"}, Flags: map[string]string{}}},
		{"a command without arguments binds nothing", statusSpec, nil, "", false,
			&parse.Bound{Args: map[string]string{}, Flags: map[string]string{}}},
		{"a flag with = takes its value", drainSpec, w("web1", "--timeout=90s"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{"timeout": "1m30s"}}},
		{"a flag takes the next word as its value", drainSpec, w("--timeout", "10m", "web1"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{"timeout": "10m0s"}}},
		{"a boolean flag alone is true", drainSpec, w("web1", "--wait", "www"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1", "backend": "www"}, Flags: map[string]string{"wait": "true"}}},
		{"a boolean flag does not take the next word", drainSpec, w("--wait", "web1"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{"wait": "true"}}},
		{"a boolean flag takes a value after =", drainSpec, w("web1", "--wait=no"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{"wait": "false"}}},
		{"--no- makes a boolean flag false", drainSpec, w("web1", "--no-wait"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{"wait": "false"}}},
		{"flag names ignore case and underscores", drainSpec, w("web1", "--Max_Parallel=3"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{"max-parallel": "3"}}},
		{"a flag with one dash is read like two", drainSpec, w("web1", "-wait"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{"wait": "true"}}},
		{"an em dash made by macOS is read as --", drainSpec, w("web1", "—wait", "—mode", "HARD"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{"wait": "true", "mode": "hard"}}},
		{"the same flag twice with the same value is fine", drainSpec, w("web1", "--timeout=60s", "--timeout", "1m"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{"timeout": "1m0s"}}},
		{"--dry-run sets dry run", drainSpec, w("web1", "--dry-run"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{}, DryRun: true}},
		{"-n sets dry run", drainSpec, w("-n", "web1"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{}, DryRun: true}},
		{"--dry_run is --dry-run", drainSpec, w("web1", "--dry_run"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{}, DryRun: true}},
		{"--dry-run=false is no dry run, even where there is none", statusSpec, w("--dry-run=false"), "", false,
			&parse.Bound{Args: map[string]string{}, Flags: map[string]string{}}},
		{"--no-dry-run undoes -n", drainSpec, w("-n", "web1", "--no-dry-run"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{}}},
		{"a negative number is a value, not a flag", &commandv1.CommandSpec{Name: "offset", Args: []*commandv1.ArgSpec{{Name: "n", Type: tInt}}},
			w("-5"), "", false, &parse.Bound{Args: map[string]string{"n": "-5"}, Flags: map[string]string{}}},
		{"a quoted -- makes later words positional", saySpec, w("--", "--wait", "-n"), "", false,
			&parse.Bound{Args: map[string]string{"words": "--wait -n"}, Flags: map[string]string{}}},
		{"a variadic host list joins words with commas", addSpec, w("www", "web1", "web2,", "web3,web4", "WEB1"), "", false,
			&parse.Bound{Args: map[string]string{"backend": "www", "hosts": "web1,web2,web3,web4"}, Flags: map[string]string{}}},
		{"a variadic host list forgives lone commas", addSpec, w("www", "web1", ",", "web2"), "", false,
			&parse.Bound{Args: map[string]string{"backend": "www", "hosts": "web1,web2"}, Flags: map[string]string{}}},
		{"a host list continues over a comma at the end of a word", drainSpec, w("web1,", "WEB2", ",web3", "www"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1,web2,web3", "backend": "www"}, Flags: map[string]string{}}},
		{"a host list forgives doubled commas", drainSpec, w("web1,,web2,"), "", false,
			&parse.Bound{Args: map[string]string{"hosts": "web1,web2"}, Flags: map[string]string{}}},
		{"a variadic text joins words with spaces", saySpec, w("hello", "big", "world"), "", false,
			&parse.Bound{Args: map[string]string{"words": "hello big world"}, Flags: map[string]string{}}},
		{"a last text argument takes the rest of the words", noteSpec, w("INC-1", "the", "db", "is", "slow"), "", false,
			&parse.Bound{Args: map[string]string{"incident": "INC-1", "note": "the db is slow"}, Flags: map[string]string{}}},
		{"the text after -- fills a missing last text argument", noteSpec, w("INC-1"), "the db is slow", true,
			&parse.Bound{Args: map[string]string{"incident": "INC-1", "note": "the db is slow"}, Flags: map[string]string{}}},
		{"a last text argument takes one word when there is text after --", noteSpec, w("INC-1", "slow"), "see graphs", true,
			&parse.Bound{Args: map[string]string{"incident": "INC-1", "note": "slow"}, Flags: map[string]string{}, Text: "see graphs"}},
		{"text after -- is kept as a note when the spec names none", weightSpec, w("web1", "www", "5"), "rebalancing", true,
			&parse.Bound{Args: map[string]string{"host": "web1", "backend": "www", "weight": "5"}, Flags: map[string]string{}, Text: "rebalancing"}},
		{"text after -- is the reason", drainSpec, w("web1"), "kernel update", true,
			&parse.Bound{Args: map[string]string{"hosts": "web1"}, Flags: map[string]string{}, Text: "kernel update"}},
		{"required text is given", retireSpec, w("web1"), "hardware failure", true,
			&parse.Bound{Args: map[string]string{"host": "web1"}, Flags: map[string]string{}, Text: "hardware failure"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parse.Bind(tt.spec, tt.words, tt.text, tt.hasText)
			if err != nil {
				t.Fatalf("Bind(%s, %q) error: %v", tt.spec.GetName(), tt.words, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("Bind(%s, %q) mismatch (-want +got):\n%s", tt.spec.GetName(), tt.words, diff)
			}
			// What Bind accepts, the service accepts.
			if err := spec.Validate(tt.spec, request(tt.spec, got)); err != nil {
				t.Fatalf("spec.Validate of the bound request: %v", err)
			}
		})
	}
}

func TestBindErrors(t *testing.T) {
	t.Parallel()
	const (
		drainUsage  = "; usage: lb drain <host,host,…> [backend] [--wait] [--timeout 10m] [-- reason]"
		weightUsage = "; usage: lb weight <host> <backend> <0-256>"
	)
	tests := []struct {
		name      string
		spec      *commandv1.CommandSpec
		words     []string
		text      string
		hasText   bool
		want      string
		wantValue bool // the error wraps a *spec.Error
	}{
		{"a missing argument is named with the usage", weightSpec, w("web1"), "", false,
			"missing <backend>" + weightUsage, false},
		{"no words at all names the first argument", weightSpec, nil, "", false,
			"missing <host>" + weightUsage, false},
		{"a bad host is explained with the usage", weightSpec, w("web_1!", "www", "5"), "", false,
			`<host>: "web_1!" is not a host name ('_' is not allowed)` + weightUsage, true},
		{"a number out of range", weightSpec, w("web1", "www", "300"), "", false,
			"<weight>: 300 is above the maximum 256" + weightUsage, true},
		{"a negative number below the minimum", weightSpec, w("web1", "www", "-5"), "", false,
			"<weight>: -5 is below the minimum 0" + weightUsage, true},
		{"an extra word is named", weightSpec, w("web1", "www", "5", "now"), "", false,
			`too many arguments: "now" is extra` + weightUsage, false},
		{"hosts separated by spaces get a hint", drainSpec, w("web1", "web2", "web3"), "", false,
			`too many arguments: "web3" is extra (separate host names with commas, like web1,web2)` + drainUsage, false},
		{"a command without arguments names the word", ackSpec, w("now"), "", false,
			`pager ack takes no arguments, but got "now"; usage: pager ack`, false},
		{"an unknown flag gets a did-you-mean", drainSpec, w("web1", "--wiat"), "", false,
			"lb drain has no flag --wiat; did you mean --wait?", false},
		{"an unknown flag with = gets a did-you-mean", drainSpec, w("web1", "--timout=5m"), "", false,
			"lb drain has no flag --timout; did you mean --timeout?", false},
		{"an abbreviated flag gets a did-you-mean", drainSpec, w("web1", "--max=3"), "", false,
			"lb drain has no flag --max; did you mean --max-parallel?", false},
		{"a misspelt --dry-run gets a did-you-mean", drainSpec, w("web1", "--dryrun-x"), "", false,
			"lb drain has no flag --dryrun-x; did you mean --dry-run?", false},
		{"a short flag suggests long flags with its letter", drainSpec, w("web1", "-w"), "", false,
			"lb drain has no flag -w; did you mean --wait?", false},
		{"an unknown flag without a near name shows the usage", drainSpec, w("web1", "--force"), "", false,
			"lb drain has no flag --force" + drainUsage, false},
		{"an unknown flag in a rest-of-line text says how to write it", noteSpec, w("INC-1", "used", "--force"), "", false,
			"incident note has no flag --force (to write it in the <note>, put the text after --); usage: incident note <incident> <note…>", false},
		{"--no- works only for boolean flags", drainSpec, w("web1", "--no-timeout"), "", false,
			"lb drain has no flag --no-timeout; did you mean --timeout?", false},
		{"a flag with an empty value after =", drainSpec, w("web1", "--timeout="), "", false,
			"--timeout needs a value" + drainUsage, false},
		{"a flag at the end without a value", drainSpec, w("web1", "--timeout"), "", false,
			"--timeout needs a value" + drainUsage, false},
		{"a flag followed by another flag has no value", drainSpec, w("web1", "--timeout", "--wait"), "", false,
			"--timeout needs a value" + drainUsage, false},
		{"a bad flag value is explained", drainSpec, w("web1", "--timeout", "5x"), "", false,
			`--timeout: "5x" is not a duration (try 90s, 10m or 1h30m)`, true},
		{"a bad choice lists the choices", drainSpec, w("web1", "--mode=gentle"), "", false,
			`--mode: "gentle" is not one of: soft, hard`, true},
		{"a boolean flag with a bad value", drainSpec, w("web1", "--wait=maybe"), "", false,
			`--wait: "maybe" is not true or false`, true},
		{"a boolean flag with an empty value", drainSpec, w("web1", "--wait="), "", false,
			"--wait needs a value (true or false)" + drainUsage, false},
		{"--no- takes no value", drainSpec, w("web1", "--no-wait=true"), "", false,
			"--no-wait takes no value" + drainUsage, false},
		{"a flag given twice with different values", drainSpec, w("web1", "--timeout=1m", "--timeout=2m"), "", false,
			"--timeout is given twice (1m0s and 2m0s); give it once", false},
		{"an odd unknown flag is quoted", drainSpec, w("web1", "--a b\u200b"), "", false,
			`lb drain has no flag "--a b\u200b"` + drainUsage, false},
		{"a flag without a name", drainSpec, w("web1", "--=x"), "", false,
			`"--=x" is not a flag (there is no name before the =)` + drainUsage, false},
		{"--dry-run on a command that changes nothing", statusSpec, w("--dry-run"), "", false,
			"lb status does not change anything; --dry-run does not apply", false},
		{"-n on a command that changes nothing", statusSpec, w("www", "-n"), "", false,
			"lb status does not change anything; --dry-run does not apply", false},
		{"--dry-run on a changing command without dry runs", &commandv1.CommandSpec{Name: "pager escalate", Mutating: true}, w("--dry-run"), "", false,
			"pager escalate cannot show a dry run; run it without --dry-run", false},
		{"missing required text", retireSpec, w("web1"), "", false,
			"missing the reason after --; usage: host retire <host> -- reason", false},
		{"empty required text after --", retireSpec, w("web1"), "  ", true,
			"missing the reason after --; usage: host retire <host> -- reason", false},
		{"an empty variadic text is missing", saySpec, w(""), "", false,
			"missing <words>; usage: say <words…>", false},
		{"a quoted word with a space is not one string", noteSpec, w("INC 1", "x"), "", false,
			`<incident>: "INC 1" is not a single word; usage: incident note <incident> <note…>`, true},
		{"text with control characters", drainSpec, w("web1"), "a\x00b", true,
			"the reason: the text has a control character U+0000 at byte 1", true},
		{"a host list of only commas is empty", drainSpec, w(",,"), "", false,
			"<hosts>: the host list is empty" + drainUsage, true},
		{"a bad item in a host list is named", addSpec, w("www", "web1", "web_2"), "", false,
			`<hosts>: "web_2" is not a host name ('_' is not allowed; item 2 of the list); usage: lb add <backend> <host…>`, true},
		{"a nil spec", nil, w("x"), "", false,
			"internal error: the command has no spec", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parse.Bind(tt.spec, tt.words, tt.text, tt.hasText)
			if err == nil {
				t.Fatalf("Bind(%q) = %+v, want error %q", tt.words, got, tt.want)
			}
			var pe *parse.Error
			if !errors.As(err, &pe) {
				t.Fatalf("Bind(%q) error %T, want *parse.Error", tt.words, err)
			}
			if pe.Msg != tt.want {
				t.Fatalf("Bind(%q) error\n got: %s\nwant: %s", tt.words, pe.Msg, tt.want)
			}
			var se *spec.Error
			if errors.As(err, &se) != tt.wantValue {
				t.Fatalf("Bind(%q) error wraps a *spec.Error: %v, want %v", tt.words, !tt.wantValue, tt.wantValue)
			}
		})
	}
}

func TestSplitThenBind(t *testing.T) {
	t.Parallel()
	line, err := parse.Split(`lb drain WEB1, “web2” --timeout 90s -n — kernel “update”, don’t page`)
	if err != nil {
		t.Fatalf("Split: %v", err)
	}
	got, err := parse.Bind(drainSpec, line.Words[2:], line.Text, line.HasText)
	if err != nil {
		t.Fatalf("Bind: %v", err)
	}
	want := &parse.Bound{
		Args:   map[string]string{"hosts": "web1,web2"},
		Flags:  map[string]string{"timeout": "1m30s"},
		Text:   "kernel “update”, don’t page",
		DryRun: true,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("mismatch (-want +got):\n%s", diff)
	}
}

// request builds the CommandRequest the chat router would send for b.
func request(s *commandv1.CommandSpec, b *parse.Bound) *commandv1.CommandRequest {
	return &commandv1.CommandRequest{
		Command: s.GetName(),
		Args:    b.Args,
		Flags:   b.Flags,
		Text:    b.Text,
		DryRun:  b.DryRun,
	}
}
