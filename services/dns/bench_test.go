package dns

// Benchmarks against a real Knot on loopback (go test -bench . -benchtime 5x
// -run '^$' ./services/dns/). The zone holds 100,000 records: 50,000 hosts'
// A records and their 50,000 ownership markers.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"

	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/services/dns/knottest"
	"github.com/switchboard-ops/switchboard/services/dns/rfc2136"
	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

const (
	benchZone  = "hosts.bench.test."
	benchHosts = 50000
)

func benchIP(i, variant int) string {
	return fmt.Sprintf("10.%d.%d.%d", variant*64+i/65536%64, i/256%256, i%256)
}

// benchKnot serves a zone of 100,000 records.
func benchKnot(b *testing.B) *knottest.Server {
	b.Helper()
	var body strings.Builder
	body.WriteString(knottest.Default(benchZone))
	for i := range benchHosts {
		fmt.Fprintf(&body, "h%05d 300 IN A %s\n_sb-owner.h%05d 300 IN TXT \"heritage=switchboard,owner=bench\"\n", i, benchIP(i, 0), i)
	}
	return knottest.Start(b, knottest.Zone{Name: benchZone, Body: body.String()})
}

func benchService(k *knottest.Server, batch int) *Service {
	cfg := DefaultConfig()
	cfg.Zones = []string{benchZone}
	cfg.Owner = "bench"
	cfg.Rules = []Rule{{Type: "A", Name: "{host}." + benchZone}}
	return &Service{
		cfg: cfg, zones: []string{benchZone}, now: time.Now, log: slog.New(slog.DiscardHandler),
		provider: rfc2136.New(k.Addr, rfc2136.WithTSIG(k.KeyName, k.Algorithm, k.Secret), rfc2136.WithBatchSize(batch), rfc2136.WithTimeout(30*time.Second)),
	}
}

// benchInventory is the zone's hosts with the first `changed` of them moved
// to a new address.
func benchInventory(changed int) *inventory.Snapshot {
	snap := &inventory.Snapshot{Meta: &inventoryv1.Meta{Revision: "bench"}, Hosts: make(map[string]*inventoryv1.Host, benchHosts)}
	for i := range benchHosts {
		v := 0
		if i < changed {
			v = 1
		}
		n := fmt.Sprintf("h%05d", i)
		snap.Hosts[n] = &inventoryv1.Host{Name: n, Ipv4: benchIP(i, v), State: inventoryv1.HostState_HOST_STATE_ACTIVE}
	}
	return snap
}

// BenchmarkPlan100kZone1000Changes is `dns plan`: AXFR of the 100,000-record
// zone from Knot, the desired records of 50,000 hosts, and the diff.
func BenchmarkPlan100kZone1000Changes(b *testing.B) {
	k := benchKnot(b)
	s := benchService(k, 500)
	snap := benchInventory(1000)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		p, err := s.planFrom(ctx, "bench", s.zones, Person{ID: "bench"}, "", snap)
		if err != nil {
			b.Fatal(err)
		}
		if p.Count() != 1000 {
			b.Fatalf("plan has %d changes, want 1000", p.Count())
		}
	}
}

// BenchmarkAXFR100kZone is the baseline: the zone transfer alone.
func BenchmarkAXFR100kZone(b *testing.B) {
	k := benchKnot(b)
	c := rfc2136.New(k.Addr, rfc2136.WithTSIG(k.KeyName, k.Algorithm, k.Secret), rfc2136.WithTimeout(30*time.Second))
	ctx := context.Background()
	for b.Loop() {
		s, err := c.Read(ctx, benchZone)
		if err != nil {
			b.Fatal(err)
		}
		if len(s.Records) < 100000 {
			b.Fatalf("%d records", len(s.Records))
		}
	}
}

// BenchmarkApply1000Changes is `dns apply` of 1,000 changed A records: the
// state check and batched UPDATEs with prerequisites. Each run moves the
// hosts back and forth between two addresses.
func BenchmarkApply1000Changes(b *testing.B) { benchApply(b, 500) }

// BenchmarkApply1000ChangesUnbatched is the baseline: one UPDATE per change.
func BenchmarkApply1000ChangesUnbatched(b *testing.B) { benchApply(b, 1) }

func benchApply(b *testing.B, batch int) {
	k := benchKnot(b)
	s := benchService(k, batch)
	ctx := context.Background()
	variant := 0
	for b.Loop() {
		next := 1 - variant
		var changes []zone.Change
		for i := range 1000 {
			n := fmt.Sprintf("h%05d.%s", i, benchZone)
			changes = append(changes, zone.Change{Name: n, Type: "A",
				Old: []zone.Record{{Name: n, Type: "A", TTL: 300, Data: benchIP(i, variant)}},
				New: []zone.Record{{Name: n, Type: "A", TTL: 300, Data: benchIP(i, next)}}})
		}
		st, err := s.provider.State(ctx, benchZone)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.provider.Apply(ctx, benchZone, st, changes); err != nil {
			b.Fatal(err)
		}
		variant = next
	}
}
