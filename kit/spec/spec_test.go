package spec_test

import (
	"errors"
	"testing"

	"github.com/switchboard-ops/switchboard/kit/spec"
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
)

// weightSpec is lb weight as the lb service declares it.
var weightSpec = &commandv1.CommandSpec{
	Name:           "lb weight",
	Usage:          "lb weight <host> <backend> <0-256>",
	SupportsDryRun: true,
	Mutating:       true,
	Args: []*commandv1.ArgSpec{
		{Name: "host", Type: tHost, Required: true},
		{Name: "backend", Type: tBackend, Required: true},
		{Name: "weight", Type: tInt, Required: true, Min: 0, Max: 256},
	},
	Flags: []*commandv1.FlagSpec{
		{Name: "timeout", Type: tDuration, Default: "1m0s"},
		{Name: "wait", Type: tBool},
	},
}

// drainSpec has no usage of its own, an optional argument and required text.
var drainSpec = &commandv1.CommandSpec{
	Name:           "lb drain",
	SupportsDryRun: true,
	Mutating:       true,
	TextRequired:   true,
	TextName:       "reason",
	Args: []*commandv1.ArgSpec{
		{Name: "hosts", Type: tHostList, Required: true},
		{Name: "backend", Type: tBackend},
	},
	Flags: []*commandv1.FlagSpec{
		{Name: "wait", Type: tBool},
		{Name: "timeout", Type: tDuration},
		{Name: "mode", Type: tEnum, Choices: []string{"soft", "hard"}},
	},
}

// statusSpec changes nothing.
var statusSpec = &commandv1.CommandSpec{
	Name:  "lb status",
	Usage: "lb status [backend]",
	Args:  []*commandv1.ArgSpec{{Name: "backend", Type: tBackend}},
}

func TestUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec *commandv1.CommandSpec
		want string
	}{
		{"a spec's own usage is used as it is", weightSpec, "lb weight <host> <backend> <0-256>"},
		{"a usage is built from args, flags and text when the spec has none", drainSpec,
			"lb drain <hosts> [backend] [--wait] [--timeout=<duration>] [--mode=soft|hard] [--dry-run] -- reason"},
		{"variadic arguments and optional text", &commandv1.CommandSpec{
			Name:     "incident note",
			TextName: "note",
			Args:     []*commandv1.ArgSpec{{Name: "ids", Type: tString, Required: true, Variadic: true}},
		}, "incident note <ids…> [-- note]"},
		{"a nil spec", nil, "this command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := spec.Usage(tt.spec); got != tt.want {
				t.Fatalf("Usage() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	good := func() *commandv1.CommandRequest {
		return &commandv1.CommandRequest{
			Command: "lb weight",
			Args:    map[string]string{"host": "web1", "backend": "www", "weight": "128"},
		}
	}
	tests := []struct {
		name     string
		spec     *commandv1.CommandSpec
		req      func() *commandv1.CommandRequest
		wantErr  string // "" for success
		wantName string
	}{
		{"a complete request passes", weightSpec, good, "", ""},
		{"flags with good values pass", weightSpec, func() *commandv1.CommandRequest {
			r := good()
			r.Flags = map[string]string{"timeout": "90s", "wait": "true"}
			return r
		}, "", ""},
		{"a dry run passes where supported", weightSpec, func() *commandv1.CommandRequest {
			r := good()
			r.DryRun = true
			return r
		}, "", ""},
		{"text is accepted as a note even when the spec names none", weightSpec, func() *commandv1.CommandRequest {
			r := good()
			r.Text = "rebalancing after the kernel update"
			return r
		}, "", ""},
		{"an optional argument may be absent", statusSpec, func() *commandv1.CommandRequest {
			return &commandv1.CommandRequest{}
		}, "", ""},
		{"an empty optional argument counts as absent", statusSpec, func() *commandv1.CommandRequest {
			return &commandv1.CommandRequest{Args: map[string]string{"backend": ""}}
		}, "", ""},
		{"a missing required argument is named with the usage", weightSpec, func() *commandv1.CommandRequest {
			r := good()
			delete(r.Args, "backend")
			return r
		}, "missing <backend>; usage: lb weight <host> <backend> <0-256>", "backend"},
		{"an empty required argument is missing", weightSpec, func() *commandv1.CommandRequest {
			r := good()
			r.Args["host"] = ""
			return r
		}, "missing <host>; usage: lb weight <host> <backend> <0-256>", "host"},
		{"the first missing argument in spec order is reported", weightSpec, func() *commandv1.CommandRequest {
			return &commandv1.CommandRequest{}
		}, "missing <host>; usage: lb weight <host> <backend> <0-256>", "host"},
		{"a bad value is explained", weightSpec, func() *commandv1.CommandRequest {
			r := good()
			r.Args["weight"] = "300"
			return r
		}, "<weight>: 300 is above the maximum 256; usage: lb weight <host> <backend> <0-256>", "weight"},
		{"an unknown argument is refused", weightSpec, func() *commandv1.CommandRequest {
			r := good()
			r.Args["colour"] = "blue"
			return r
		}, `lb weight has no argument "colour"; usage: lb weight <host> <backend> <0-256>`, "colour"},
		{"an unknown flag is refused", weightSpec, func() *commandv1.CommandRequest {
			r := good()
			r.Flags = map[string]string{"force": "true"}
			return r
		}, "lb weight has no flag --force; usage: lb weight <host> <backend> <0-256>", "--force"},
		{"a bad flag value is explained", weightSpec, func() *commandv1.CommandRequest {
			r := good()
			r.Flags = map[string]string{"timeout": "5x"}
			return r
		}, `--timeout: "5x" is not a duration (try 90s, 10m or 1h30m); usage: lb weight <host> <backend> <0-256>`, "--timeout"},
		{"a boolean flag must be true or false", weightSpec, func() *commandv1.CommandRequest {
			r := good()
			r.Flags = map[string]string{"wait": ""}
			return r
		}, `--wait: "" is not true or false; usage: lb weight <host> <backend> <0-256>`, "--wait"},
		{"required text must be there", drainSpec, func() *commandv1.CommandRequest {
			return &commandv1.CommandRequest{Args: map[string]string{"hosts": "web1,web2"}, Text: "  "}
		}, "missing the reason after --; usage: lb drain <hosts> [backend] [--wait] [--timeout=<duration>] [--mode=soft|hard] [--dry-run] -- reason", ""},
		{"text with control characters is refused", drainSpec, func() *commandv1.CommandRequest {
			return &commandv1.CommandRequest{Args: map[string]string{"hosts": "web1"}, Text: "reboot\x1b[2J"}
		}, "the text has a control character U+001B at byte 6; usage: lb drain <hosts> [backend] [--wait] [--timeout=<duration>] [--mode=soft|hard] [--dry-run] -- reason", ""},
		{"a dry run of a command that changes nothing is refused", statusSpec, func() *commandv1.CommandRequest {
			return &commandv1.CommandRequest{DryRun: true}
		}, "lb status does not change anything; --dry-run does not apply", "--dry-run"},
		{"a dry run of a changing command without dry-run support is refused", &commandv1.CommandSpec{Name: "host retire", Mutating: true}, func() *commandv1.CommandRequest {
			return &commandv1.CommandRequest{DryRun: true}
		}, "host retire cannot show a dry run; run it without --dry-run", "--dry-run"},
		{"a nil request is refused", statusSpec, func() *commandv1.CommandRequest { return nil },
			"empty request; usage: lb status [backend]", ""},
		{"a nil spec is an internal error", nil, good, "internal error: the command has no spec", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := tt.req()
			err := spec.Validate(tt.spec, req)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var se *spec.Error
			if !errors.As(err, &se) {
				t.Fatalf("Validate() = %#v, want a *spec.Error %q", err, tt.wantErr)
			}
			if se.Message != tt.wantErr || se.Name != tt.wantName {
				t.Fatalf("Validate() error\n got: %q (name %q)\nwant: %q (name %q)", se.Message, se.Name, tt.wantErr, tt.wantName)
			}
		})
	}
}

func TestValidateDoesNotChangeTheRequest(t *testing.T) {
	t.Parallel()
	req := &commandv1.CommandRequest{Args: map[string]string{"host": "WEB1", "backend": "www", "weight": "+5"}}
	if err := spec.Validate(weightSpec, req); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	if req.Args["host"] != "WEB1" || req.Args["weight"] != "+5" {
		t.Fatalf("Validate() changed the request: %v", req.Args)
	}
}
