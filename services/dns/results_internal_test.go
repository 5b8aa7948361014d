package dns

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

func TestRecordLinesSpellOutEachRecord(t *testing.T) {
	const n = "www.example.test."
	a := func(ip string, ttl uint32) zone.Record { return zone.Record{Name: n, Type: "A", TTL: ttl, Data: ip} }
	cases := []struct {
		name   string
		change zone.Change
		status outcomeStatus
		err    error
		want   []string
	}{
		{"an added set is one line per record", zone.Change{Name: n, Type: "A", New: []zone.Record{a("192.0.2.1", 60), a("192.0.2.2", 60)}}, outcomeApplied, nil,
			[]string{"✓ add www.example.test. A 192.0.2.1", "✓ add www.example.test. A 192.0.2.2"}},
		{"a deleted record", zone.Change{Name: n, Type: "A", Old: []zone.Record{a("192.0.2.1", 60)}}, outcomeApplied, nil,
			[]string{"✓ delete www.example.test. A 192.0.2.1"}},
		{"a record with a new value is a change", zone.Change{Name: n, Type: "A", Old: []zone.Record{a("192.0.2.1", 60)}, New: []zone.Record{a("192.0.2.9", 60)}}, outcomeApplied, nil,
			[]string{"✓ change www.example.test. A 192.0.2.9 (was 192.0.2.1)"}},
		{"a record with a new TTL is a change", zone.Change{Name: n, Type: "A", Old: []zone.Record{a("192.0.2.1", 300)}, New: []zone.Record{a("192.0.2.1", 60)}}, outcomeApplied, nil,
			[]string{"✓ change www.example.test. A 192.0.2.1 (ttl 300 → 60)"}},
		{"a record with both new", zone.Change{Name: n, Type: "A", Old: []zone.Record{a("192.0.2.1", 300)}, New: []zone.Record{a("192.0.2.9", 60)}}, outcomeApplied, nil,
			[]string{"✓ change www.example.test. A 192.0.2.9 (was 192.0.2.1, ttl 300 → 60)"}},
		{"a set that grows and shrinks lists only what changed", zone.Change{Name: n, Type: "A",
			Old: []zone.Record{a("192.0.2.1", 60), a("192.0.2.2", 60)}, New: []zone.Record{a("192.0.2.1", 60), a("192.0.2.3", 300)}}, outcomeApplied, nil,
			[]string{"✓ delete www.example.test. A 192.0.2.2", "✓ add www.example.test. A 192.0.2.3"}},
		{"a set whose TTL changes", zone.Change{Name: n, Type: "A",
			Old: []zone.Record{a("192.0.2.1", 300), a("192.0.2.2", 300)}, New: []zone.Record{a("192.0.2.1", 60), a("192.0.2.2", 60)}}, outcomeApplied, nil,
			[]string{"✓ change www.example.test. A 192.0.2.1 (ttl 300 → 60)", "✓ change www.example.test. A 192.0.2.2 (ttl 300 → 60)"}},
		{"a failed change says why on each record", zone.Change{Name: n, Type: "A", New: []zone.Record{a("192.0.2.1", 60), a("192.0.2.2", 60)}}, outcomeFailed, errors.New("REFUSED"),
			[]string{"✗ add www.example.test. A 192.0.2.1: REFUSED", "✗ add www.example.test. A 192.0.2.2: REFUSED"}},
		{"a change found in place after a take-over", zone.Change{Name: n, Type: "A", New: []zone.Record{a("192.0.2.1", 60)}}, outcomeAlready, nil,
			[]string{"= add www.example.test. A 192.0.2.1: already applied before the take-over"}},
		{"a change someone else made first", zone.Change{Name: n, Type: "A", Old: []zone.Record{a("192.0.2.1", 60)}}, outcomeConflict, nil,
			[]string{"≠ delete www.example.test. A 192.0.2.1: changed by someone else since the plan; left as it is"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := recordLines([]outcome{{zone: "example.test.", change: tc.change, status: tc.status, err: tc.err}})
			if !slices.Equal(got, tc.want) {
				t.Fatalf("record lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
