package parse_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/switchboard-ops/switchboard/services/chat/parse"
)

func TestSuggest(t *testing.T) {
	t.Parallel()
	commands := []string{"lb drain", "lb status", "lb add", "lb remove", "deploy", "dns plan", "dns apply", "pager ack", "help"}
	tests := []struct {
		name       string
		in         string
		candidates []string
		want       []string
	}{
		{"a swapped pair of letters is one edit", "lb drian", commands, []string{"lb drain"}},
		{"a missing letter", "lb stats", commands, []string{"lb status"}},
		{"an extra letter", "deeploy", commands, []string{"deploy"}},
		{"two edits still match", "dns apyl", commands, []string{"dns apply"}},
		{"case is ignored", "HELP", commands, []string{"help"}},
		{"an abbreviation of three letters matches by prefix", "dep", commands, []string{"deploy"}},
		{"a shared prefix of three letters matches however long the rest", "deployment-status", commands, []string{"deploy"}},
		{"an exact match comes first", "lb add", commands, []string{"lb add"}},
		{"ties rank the longer shared prefix first, then candidate order", "lb stat",
			[]string{"lb start", "lb status", "lb stats"}, []string{"lb status", "lb stats", "lb start"}},
		{"at most three are returned", "web", []string{"web1", "web2", "web3", "web4"}, []string{"web1", "web2", "web3"}},
		{"duplicate candidates are returned once", "wiat", []string{"wait", "wait"}, []string{"wait"}},
		{"nothing near gives nothing", "xyzzy", commands, nil},
		{"a one-letter name does not match every short word", "x", []string{"lb", "ok"}, nil},
		{"a two-letter typo matches", "ls", []string{"lb", "dns plan"}, []string{"lb"}},
		{"an empty name gives nothing", "", commands, nil},
		{"no candidates give nothing", "deploy", nil, nil},
		{"a pasted paragraph gives nothing", strings.Repeat("deploy ", 50), commands, nil},
		{"unicode is compared by character", "déploy", commands, []string{"deploy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := parse.Suggest(tt.in, tt.candidates)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("Suggest(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}
