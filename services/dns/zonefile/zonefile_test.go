package zonefile_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// Two replicas sharing a zone directory are two Providers on one dir. Each
// round both apply a different change against the same state at once: the
// zone's file lock must let exactly one through and refuse the other as a
// conflict, and every change reported applied must be in the zone at the
// end, with one serial bump per apply — never an update silently lost.
func TestTwoProvidersOnOneDirectoryNeverLoseAnUpdate(t *testing.T) {
	dir := t.TempDir()
	const z = "example.test."
	replicas := []*zonefile.Provider{zonefile.New(dir, []string{z}), zonefile.New(dir, []string{z})}
	if err := os.WriteFile(replicas[0].Path(z), []byte(knottest.Default(z)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first, err := replicas[0].Read(ctx, z)
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 20
	var applied []zone.Record
	for round := range rounds {
		seen, err := replicas[round%2].Read(ctx, z)
		if err != nil {
			t.Fatal(err)
		}
		recs := make([]zone.Record, len(replicas))
		errs := make([]error, len(replicas))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, p := range replicas {
			recs[i] = zone.Record{Name: fmt.Sprintf("r%d-replica%d.%s", round, i, z), Type: "A", TTL: 300, Data: fmt.Sprintf("192.0.2.%d", i+1)}
			wg.Go(func() {
				<-start
				_, errs[i] = p.Apply(ctx, z, seen.State, []zone.Change{{Name: recs[i].Name, Type: "A", New: []zone.Record{recs[i]}}})
			})
		}
		close(start)
		wg.Wait()
		var won []int
		for i, err := range errs {
			switch {
			case err == nil:
				won = append(won, i)
				applied = append(applied, recs[i])
			case !errors.Is(err, zone.ErrConflict):
				t.Fatalf("round %d: replica %d: err = %v, want nil or a conflict", round, i, err)
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d applies against one state succeeded (errors %v), want exactly 1", round, len(won), errs)
		}
	}
	got, err := replicas[1].Read(ctx, z)
	if err != nil {
		t.Fatal(err)
	}
	have := zone.Group(got.Records)
	for _, r := range applied {
		if !zone.SameSet(have[r.Key()], []zone.Record{r}) {
			t.Errorf("%s was reported applied but is not in the zone", r.Name)
		}
	}
	// The zone's serial (1) is not a date, so each apply adds one.
	if want := first.Serial + rounds; got.Serial != want {
		t.Fatalf("serial after %d applies = %d, want %d (one bump per apply)", rounds, got.Serial, want)
	}
}

// An apply waits while another replica holds the zone's lock, and is
// refused if that replica changed the zone meanwhile.
func TestAnApplyWaitsForTheZoneLockAndSeesTheOtherReplicasChange(t *testing.T) {
	dir := t.TempDir()
	const z = "example.test."
	p := zonefile.New(dir, []string{z})
	path := p.Path(z)
	if err := os.WriteFile(path, []byte(knottest.Default(z)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seen, err := p.Read(ctx, z)
	if err != nil {
		t.Fatal(err)
	}
	// The other replica is in the middle of an apply: it holds the lock.
	lock, err := os.OpenFile(p.LockPath(z), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	mine := []zone.Change{{Name: "mine." + z, Type: "A", New: []zone.Record{{Name: "mine." + z, Type: "A", TTL: 300, Data: "192.0.2.1"}}}}

	// Meanwhile an apply with a deadline gives up, changing nothing.
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if _, err := p.Apply(short, z, seen.State, mine); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("apply while another replica holds the lock: err = %v, want it to wait until its deadline", err)
	}
	// One without a deadline waits; the other replica writes its change
	// and lets go; the waiting apply then sees the zone is not what it read.
	done := make(chan error, 1)
	go func() {
		_, err := p.Apply(ctx, z, seen.State, mine)
		done <- err
	}()
	theirs := knottest.Default(z) + "theirs 300 IN A 192.0.2.2\n"
	if err := os.WriteFile(path+".new", []byte(theirs), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, zone.ErrConflict) {
		t.Fatalf("apply after the other replica's: err = %v, want a conflict", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != theirs {
		t.Fatalf("the refused apply changed the zone file:\n%s", b)
	}
}
