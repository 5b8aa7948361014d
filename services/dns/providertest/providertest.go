// Package providertest is the conformance suite every DNS provider passes
// (go-cloud's drivertest, sized down): rfc2136 against a real Knot, zonefile
// on a temporary directory, and any provider added later.
package providertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

// Provider is what the dns service needs from a provider (the same method
// set as dns.Provider, repeated here so this package stays a leaf).
type Provider interface {
	Read(ctx context.Context, zone string) (*zone.Snapshot, error)
	State(ctx context.Context, zone string) (string, error)
	Apply(ctx context.Context, zone, state string, changes []zone.Change) ([]zone.Result, error)
}

// NewFunc returns a fresh provider and the name of a zone it serves. The
// zone exists and holds at least its NS records.
type NewFunc func(t *testing.T) (Provider, string)

// Run runs the conformance suite.
func Run(t *testing.T, newProvider NewFunc) {
	t.Run("Read returns the records without the SOA, and a state", func(t *testing.T) {
		p, z := newProvider(t)
		snap := mustRead(t, p, z)
		if snap.State == "" {
			t.Fatal("state is empty")
		}
		if snap.Zone != z {
			t.Fatalf("snapshot zone = %q, want %q", snap.Zone, z)
		}
		if !slices.ContainsFunc(snap.Records, func(r zone.Record) bool { return r.Type == "NS" && r.Name == z }) {
			t.Fatalf("no NS record at the apex in %v", snap.Records)
		}
		if slices.ContainsFunc(snap.Records, func(r zone.Record) bool { return r.Type == "SOA" }) {
			t.Fatal("records include the SOA")
		}
		st, err := p.State(ctx(t), z)
		if err != nil || st != snap.State {
			t.Fatalf("State = %q, %v; want %q as Read said", st, err, snap.State)
		}
	})

	t.Run("Apply adds, updates and deletes RRsets and leaves the rest alone", func(t *testing.T) {
		p, z := newProvider(t)
		before := mustRead(t, p, z)
		web := a("web1."+z, "192.0.2.1")
		rr := []zone.Record{a("www."+z, "192.0.2.1"), a("www."+z, "192.0.2.2"), a("www."+z, "192.0.2.3")}
		cname := zone.Record{Name: "api." + z, Type: "CNAME", TTL: 300, Data: "www." + z}
		six := zone.Record{Name: "web1." + z, Type: "AAAA", TTL: 300, Data: "2001:db8::1"}
		mustApply(t, p, z, before.State, []zone.Change{add(web), add(rr...), add(cname), add(six)})

		mid := mustRead(t, p, z)
		if mid.State == before.State {
			t.Fatal("state did not change after an apply")
		}
		web2 := web
		web2.Data, web2.TTL = "192.0.2.9", 600
		mustApply(t, p, z, mid.State, []zone.Change{
			{Name: web.Name, Type: "A", Old: []zone.Record{web}, New: []zone.Record{web2}},
			{Name: "www." + z, Type: "A", Old: rr, New: rr[:2]},
			{Name: cname.Name, Type: "CNAME", Old: []zone.Record{cname}},
		})
		after := mustRead(t, p, z)
		want := append(slices.Clone(before.Records), web2, rr[0], rr[1], six)
		if !zone.SameSet(after.Records, want) {
			t.Fatalf("zone after apply:\n%v\nwant:\n%v", after.Records, want)
		}
	})

	t.Run("Apply with a stale state is refused and changes nothing", func(t *testing.T) {
		p, z := newProvider(t)
		seen := mustRead(t, p, z)
		mustApply(t, p, z, seen.State, []zone.Change{add(a("behind."+z, "192.0.2.7"))})
		res, err := p.Apply(ctx(t), z, seen.State, []zone.Change{add(a("late."+z, "192.0.2.8"))})
		if !errors.Is(err, zone.ErrConflict) {
			t.Fatalf("apply with a stale state: err = %v, want ErrConflict", err)
		}
		if len(res) != 1 || res[0].Err == nil {
			t.Fatalf("results = %+v, want one failed result", res)
		}
		if has(mustRead(t, p, z), "late."+z) {
			t.Fatal("the refused change was applied")
		}
	})

	t.Run("Apply is refused when a changed RRset is not what the plan saw", func(t *testing.T) {
		p, z := newProvider(t)
		seen := mustRead(t, p, z)
		mustApply(t, p, z, seen.State, []zone.Change{add(a("web1."+z, "192.0.2.1"))})
		now := mustRead(t, p, z)
		// The plan believed web1 had another address.
		stale := a("web1."+z, "192.0.2.99")
		_, err := p.Apply(ctx(t), z, now.State, []zone.Change{
			add(a("other."+z, "192.0.2.5")),
			{Name: stale.Name, Type: "A", Old: []zone.Record{stale}, New: []zone.Record{a("web1."+z, "192.0.2.2")}},
		})
		if !errors.Is(err, zone.ErrConflict) {
			t.Fatalf("err = %v, want ErrConflict", err)
		}
		got := mustRead(t, p, z)
		if has(got, "other."+z) || !zone.SameSet(zone.Group(got.Records)[zone.Key{Name: "web1." + z, Type: "A"}], []zone.Record{a("web1."+z, "192.0.2.1")}) {
			t.Fatalf("a refused batch changed the zone: %v", got.Records)
		}
	})

	t.Run("Apply of an add for an RRset that exists is refused", func(t *testing.T) {
		p, z := newProvider(t)
		seen := mustRead(t, p, z)
		mustApply(t, p, z, seen.State, []zone.Change{add(a("web1."+z, "192.0.2.1"))})
		now := mustRead(t, p, z)
		if _, err := p.Apply(ctx(t), z, now.State, []zone.Change{add(a("web1."+z, "192.0.2.2"))}); !errors.Is(err, zone.ErrConflict) {
			t.Fatalf("err = %v, want ErrConflict", err)
		}
	})

	t.Run("Apply of 1200 changes applies them all", func(t *testing.T) {
		p, z := newProvider(t)
		seen := mustRead(t, p, z)
		var changes []zone.Change
		for i := range 1200 {
			changes = append(changes, add(a(fmt.Sprintf("h%04d.%s", i, z), fmt.Sprintf("10.0.%d.%d", i/250, i%250+1))))
		}
		res := mustApply(t, p, z, seen.State, changes)
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("change %d: %v", i, r.Err)
			}
		}
		got := mustRead(t, p, z)
		if n := len(got.Records) - len(seen.Records); n != 1200 {
			t.Fatalf("zone grew by %d records, want 1200", n)
		}
	})

	t.Run("An unknown zone is reported as such", func(t *testing.T) {
		p, _ := newProvider(t)
		if _, err := p.Read(ctx(t), "nosuch.invalid."); !errors.Is(err, zone.ErrUnknownZone) {
			t.Fatalf("Read of an unknown zone: err = %v, want ErrUnknownZone", err)
		}
		if _, err := p.State(ctx(t), "nosuch.invalid."); !errors.Is(err, zone.ErrUnknownZone) {
			t.Fatalf("State of an unknown zone: err = %v, want ErrUnknownZone", err)
		}
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func a(name, ip string) zone.Record { return zone.Record{Name: name, Type: "A", TTL: 300, Data: ip} }

func add(rs ...zone.Record) zone.Change {
	return zone.Change{Name: rs[0].Name, Type: rs[0].Type, New: rs}
}

func has(s *zone.Snapshot, name string) bool {
	return slices.ContainsFunc(s.Records, func(r zone.Record) bool { return r.Name == name })
}

func mustRead(t *testing.T, p Provider, z string) *zone.Snapshot {
	t.Helper()
	s, err := p.Read(ctx(t), z)
	if err != nil {
		t.Fatalf("read %s: %v", z, err)
	}
	return s
}

func mustApply(t *testing.T, p Provider, z, state string, changes []zone.Change) []zone.Result {
	t.Helper()
	res, err := p.Apply(ctx(t), z, state, changes)
	if err != nil {
		t.Fatalf("apply %d changes to %s: %v", len(changes), z, err)
	}
	if len(res) != len(changes) {
		t.Fatalf("apply returned %d results for %d changes", len(res), len(changes))
	}
	return res
}
