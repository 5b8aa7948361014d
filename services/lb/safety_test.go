package lb

import (
	"strings"
	"testing"
)

func TestCheckSafety(t *testing.T) {
	six := []string{"web1", "web2", "web3", "web4", "web5", "web6"}
	allReady := map[string]bool{"web1": true, "web2": true, "web3": true, "web4": true, "web5": true, "web6": true}
	tests := []struct {
		name    string
		all     []string
		ready   map[string]bool
		targets []string
		max     float64
		want    string // "" for allowed
	}{
		{"half of six may go", six, allReady, []string{"web1", "web2", "web3"}, 0.5, ""},
		{"more than half of six may not", six, allReady, []string{"web1", "web2", "web3", "web4"}, 0.5, "4 of 6 servers"},
		{"servers already down count against the limit", six, map[string]bool{"web1": true, "web2": true, "web3": true, "web4": true}, []string{"web1", "web2"}, 0.5, "4 of 6 servers of backend www out of service; the limit is 3 (50%, counting the 2 already out)"},
		{"a series of small steps cannot go past the limit either", six, map[string]bool{"web1": true, "web2": true, "web3": true}, []string{"web1"}, 0.5, "4 of 6"},
		{"the last ready server may not go even with a generous limit", []string{"web1", "web2"}, map[string]bool{"web1": true}, []string{"web1"}, 1, "last ready server"},
		{"all servers at once may not go", []string{"web1", "web2"}, map[string]bool{"web1": true, "web2": true}, []string{"web1", "web2"}, 1, "no server in service"},
		{"a target already out changes nothing", []string{"web1", "web2"}, map[string]bool{"web2": true}, []string{"web1"}, 0.1, ""},
		{"one of two with a limit of 50%", []string{"web1", "web2"}, map[string]bool{"web1": true, "web2": true}, []string{"web1"}, 0.5, ""},
		{"one of three with a limit of 25%", []string{"a", "b", "c"}, map[string]bool{"a": true, "b": true, "c": true}, []string{"a"}, 0.25, "limit is 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSafety("www", tt.all, tt.ready, tt.targets, tt.max)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one containing %q", err, tt.want)
			}
		})
	}
}
