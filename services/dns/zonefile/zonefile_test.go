package zonefile_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/dns/knottest"
	"github.com/switchboard-ops/switchboard/services/dns/providertest"
	"github.com/switchboard-ops/switchboard/services/dns/zone"
	"github.com/switchboard-ops/switchboard/services/dns/zonefile"
)

func TestConformance(t *testing.T) {
	providertest.Run(t, func(t *testing.T) (providertest.Provider, string) {
		dir := t.TempDir()
		p := zonefile.New(dir, []string{"example.test."})
		if err := os.WriteFile(p.Path("example.test."), []byte(knottest.Default("example.test.")), 0o644); err != nil {
			t.Fatal(err)
		}
		return p, "example.test."
	})
}

// The rendered file must load in Knot: kzonecheck runs Knot's own loader
// and semantic checks on it.
func TestOutputPassesKzonecheck(t *testing.T) {
	knottest.Binaries(t, "kzonecheck")
	dir := t.TempDir()
	now := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	p := zonefile.New(dir, []string{"example.test.", "2.0.192.in-addr.arpa."}, zonefile.WithNow(func() time.Time { return now }), zonefile.WithNameServer("ns1.example.test."))
	ctx := context.Background()
	for _, z := range []string{"example.test.", "2.0.192.in-addr.arpa."} {
		snap, err := p.Read(ctx, z)
		if err != nil {
			t.Fatal(err)
		}
		var changes []zone.Change
		if z == "example.test." {
			changes = []zone.Change{
				{Name: "web1.example.test.", Type: "A", New: []zone.Record{{Name: "web1.example.test.", Type: "A", TTL: 300, Data: "192.0.2.1"}}},
				{Name: "web1.example.test.", Type: "AAAA", New: []zone.Record{{Name: "web1.example.test.", Type: "AAAA", TTL: 300, Data: "2001:db8::1"}}},
				{Name: "www.example.test.", Type: "CNAME", New: []zone.Record{{Name: "www.example.test.", Type: "CNAME", TTL: 300, Data: "web1.example.test."}}},
				{Name: "_sb-owner.web1.example.test.", Type: "TXT", New: []zone.Record{{Name: "_sb-owner.web1.example.test.", Type: "TXT", TTL: 300, Data: `"heritage=switchboard,owner=test"`}}},
				{Name: "ns1.example.test.", Type: "A", New: []zone.Record{{Name: "ns1.example.test.", Type: "A", TTL: 300, Data: "192.0.2.53"}}},
			}
		} else {
			changes = []zone.Change{{Name: "1.2.0.192.in-addr.arpa.", Type: "PTR", New: []zone.Record{{Name: "1.2.0.192.in-addr.arpa.", Type: "PTR", TTL: 300, Data: "web1.example.test."}}}}
		}
		if _, err := p.Apply(ctx, z, snap.State, changes); err != nil {
			t.Fatalf("apply to new zone %s: %v", z, err)
		}
		out, err := exec.Command("kzonecheck", "-o", z, p.Path(z)).CombinedOutput()
		if err != nil {
			b, _ := os.ReadFile(p.Path(z))
			t.Fatalf("kzonecheck %s: %v\n%s\nzone file:\n%s", z, err, out, b)
		}
		after, err := p.Read(ctx, z)
		if err != nil {
			t.Fatal(err)
		}
		if after.Serial != 2026031400 {
			t.Fatalf("serial of a new zone = %d, want 2026031400 (date-based)", after.Serial)
		}
		// A second apply the same day bumps the serial by one.
		if _, err := p.Apply(ctx, z, after.State, []zone.Change{{Name: "x." + z, Type: "TXT", New: []zone.Record{{Name: "x." + z, Type: "TXT", TTL: 60, Data: `"x"`}}}}); err != nil {
			t.Fatal(err)
		}
		again, _ := p.Read(ctx, z)
		if again.Serial != 2026031401 {
			t.Fatalf("serial after a second apply = %d, want 2026031401", again.Serial)
		}
		b, _ := os.ReadFile(p.Path(z))
		if !strings.Contains(string(b), "$ORIGIN "+z) {
			t.Fatalf("zone file lacks $ORIGIN:\n%s", b)
		}
	}
}

func TestAnEditByHandWithoutASerialBumpIsNoticed(t *testing.T) {
	dir := t.TempDir()
	p := zonefile.New(dir, []string{"example.test."})
	path := p.Path("example.test.")
	os.WriteFile(path, []byte(knottest.Default("example.test.")), 0o644)
	ctx := context.Background()
	seen, err := p.Read(ctx, "example.test.")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("handmade 300 IN A 192.0.2.77\n")
	f.Close()
	_, err = p.Apply(ctx, "example.test.", seen.State, []zone.Change{{Name: "a.example.test.", Type: "A", New: []zone.Record{{Name: "a.example.test.", Type: "A", TTL: 300, Data: "192.0.2.1"}}}})
	if err == nil || !strings.Contains(err.Error(), zone.ErrConflict.Error()) {
		t.Fatalf("apply after a hand edit: err = %v, want a conflict", err)
	}
}
