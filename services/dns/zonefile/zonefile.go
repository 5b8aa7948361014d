// Package zonefile keeps zones as BIND-format zone files in a directory, one
// file per zone (<dir>/<zone>zone, e.g. example.com.zone). Every apply
// rewrites the file atomically with a bumped serial, so any primary that
// loads zone files (Knot, BIND, NSD) can serve it; it is switchboard's
// embedded default, needing no DNS server to plan against.
//
// The state token is the serial plus a hash of the file, so an edit by hand
// that forgot to bump the serial is still noticed by an apply.
//
// Replicas may share the directory: an apply holds an exclusive flock(2) on
// the zone's lock file (<dir>/.<zone>zone.lock) from reading the file to
// renaming the new one into place, so one replica's update cannot be
// overwritten by another that read the file before it.
package zonefile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

// Provider reads and writes zone files under one directory.
type Provider struct {
	dir   string
	zones map[string]bool
	now   func() time.Time
	ns    string
}

// Option configures a Provider.
type Option func(*Provider)

// WithNow sets the clock used for date-based serials (tests).
func WithNow(now func() time.Time) Option { return func(p *Provider) { p.now = now } }

// WithNameServer is the name server that the SOA and NS of a zone created
// by an apply name (default "localhost.", which needs no glue; set the
// real primary).
func WithNameServer(name string) Option { return func(p *Provider) { p.ns = zone.Canonical(name) } }

// New returns a provider for the zones, kept in dir. A zone whose file does
// not exist yet reads as empty and is created by its first apply, with an
// SOA and NS naming the WithNameServer name.
func New(dir string, zones []string, opts ...Option) *Provider {
	p := &Provider{dir: dir, zones: map[string]bool{}, now: time.Now, ns: "localhost."}
	for _, z := range zones {
		p.zones[zone.Canonical(z)] = true
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Path is the file of a zone.
func (p *Provider) Path(name string) string {
	return filepath.Join(p.dir, strings.TrimSuffix(zone.Canonical(name), ".")+".zone")
}

// LockPath is the file an apply to the zone locks. It is not the zone file
// itself because an apply replaces that by a rename: a lock on the old file
// would not stop a replica that opens the new one.
func (p *Provider) LockPath(name string) string {
	return filepath.Join(p.dir, "."+strings.TrimSuffix(zone.Canonical(name), ".")+".zone.lock")
}

// lockZone takes an exclusive flock on the zone's lock file, waiting for
// another apply (in this process or another one sharing the directory) to
// finish, until ctx ends. Each call opens the file anew, and flock locks
// belong to the open file, so two Providers in one process exclude each
// other as two processes do. unlock releases the lock.
func (p *Provider) lockZone(ctx context.Context, name string) (unlock func(), err error) {
	path := p.LockPath(name)
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock zone %s: %w", name, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock zone %s: %w", name, err)
	}
	fd := int(f.Fd())
	// LOCK_NB and a short poll rather than a blocking flock, which no
	// context can interrupt.
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() {
				unix.Flock(fd, unix.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock zone %s: flock %s: %w", name, path, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("lock zone %s: another apply holds %s: %w", name, path, context.Cause(ctx))
		case <-t.C:
		}
	}
}

type parsed struct {
	soa     *dns.SOA
	records []zone.Record
	state   string
}

// absent is the state of a zone whose file does not exist yet.
const absent = "absent"

func (p *Provider) load(name string) (*parsed, error) {
	if !p.zones[name] {
		return nil, fmt.Errorf("zone file provider: %s: %w", name, zone.ErrUnknownZone)
	}
	path := p.Path(name)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &parsed{state: absent}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read zone file %s: %w", path, err)
	}
	zp := dns.NewZoneParser(bytes.NewReader(b), name, path)
	out := &parsed{}
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if s, isSOA := rr.(*dns.SOA); isSOA {
			out.soa = s
			continue
		}
		h := rr.Header()
		out.records = append(out.records, zone.Record{
			Name: strings.ToLower(h.Name), Type: dns.TypeToString[h.Rrtype], TTL: h.Ttl,
			Data: strings.TrimPrefix(rr.String(), h.String()),
		})
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("parse zone file %s: %w", path, err)
	}
	if out.soa == nil {
		return nil, fmt.Errorf("parse zone file %s: no SOA record", path)
	}
	sum := sha256.Sum256(b)
	out.state = strconv.FormatUint(uint64(out.soa.Serial), 10) + "/" + hex.EncodeToString(sum[:8])
	return out, nil
}

// Read parses the zone's file.
func (p *Provider) Read(_ context.Context, name string) (*zone.Snapshot, error) {
	name = zone.Canonical(name)
	z, err := p.load(name)
	if err != nil {
		return nil, err
	}
	s := &zone.Snapshot{Zone: name, State: z.state, Records: z.records}
	if z.soa != nil {
		s.Serial = z.soa.Serial
	}
	return s, nil
}

// State is the serial and hash of the zone's file as it is now.
func (p *Provider) State(ctx context.Context, name string) (string, error) {
	s, err := p.Read(ctx, name)
	if err != nil {
		return "", err
	}
	return s.State, nil
}

// Apply applies every change, or none: the file must still have the given
// state and every changed RRset must still be what the change says it was.
// The new file gets the next serial (YYYYMMDDnn when the zone uses
// date-based serials, otherwise serial+1) and replaces the old one with a
// rename, so a server loading it never sees half a file. The zone's lock
// is held from the read to the rename (see LockPath), so of two applies
// made against the same state, one fails with zone.ErrConflict.
func (p *Provider) Apply(ctx context.Context, name, state string, changes []zone.Change) ([]zone.Result, error) {
	name = zone.Canonical(name)
	results := make([]zone.Result, len(changes))
	fail := func(err error) ([]zone.Result, error) {
		for i, ch := range changes {
			results[i] = zone.Result{Change: ch, Err: err}
		}
		return results, err
	}
	if !p.zones[name] {
		return fail(fmt.Errorf("zone file provider: %s: %w", name, zone.ErrUnknownZone))
	}
	unlock, err := p.lockZone(ctx, name)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	z, err := p.load(name)
	if err != nil {
		return fail(err)
	}
	if state != z.state {
		return fail(fmt.Errorf("zone file %s: %w (state %s, expected %s)", p.Path(name), zone.ErrConflict, z.state, state))
	}
	sets := zone.Group(z.records)
	for _, ch := range changes {
		if !zone.InZone(ch.Name, name) {
			return fail(fmt.Errorf("change %s: %s is not in zone %s", ch.Key(), ch.Name, name))
		}
		if !sameData(sets[ch.Key()], ch.Old) {
			return fail(fmt.Errorf("zone file %s: %s: %w", p.Path(name), ch.Key(), zone.ErrConflict))
		}
		for _, r := range ch.New {
			if _, err := dns.NewRR(r.String()); err != nil {
				return fail(fmt.Errorf("change %s: record %q: %w", ch.Key(), r.String(), err))
			}
		}
		if len(ch.New) == 0 {
			delete(sets, ch.Key())
		} else {
			sets[ch.Key()] = ch.New
		}
	}
	soa := z.soa
	if soa == nil {
		soa = &dns.SOA{
			Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
			Ns:  p.ns, Mbox: "hostmaster." + name,
			Refresh: 3600, Retry: 900, Expire: 1209600, Minttl: 300,
		}
		ns := zone.Key{Name: name, Type: "NS"}
		if len(sets[ns]) == 0 {
			sets[ns] = []zone.Record{{Name: name, Type: "NS", TTL: 3600, Data: p.ns}}
		}
	}
	soa.Serial = nextSerial(soa.Serial, p.now())
	var all []zone.Record
	for _, rs := range sets {
		all = append(all, rs...)
	}
	zone.SortRecords(all)
	if err := p.write(name, Render(name, soa.String(), all)); err != nil {
		return fail(err)
	}
	for i, ch := range changes {
		results[i] = zone.Result{Change: ch}
	}
	return results, nil
}

// sameData compares RRsets by data and TTL, in any order.
func sameData(have, want []zone.Record) bool { return zone.SameSet(have, want) }

func (p *Provider) write(name string, b []byte) error {
	path := p.Path(name)
	tmp, err := os.CreateTemp(p.dir, ".tmp-*.zone")
	if err != nil {
		return fmt.Errorf("write zone file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write zone file %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write zone file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write zone file %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write zone file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write zone file %s: %w", path, err)
	}
	return nil
}

// Render writes a zone file: $ORIGIN, the SOA line, then the records in the
// order given, with absolute names so the file reads the same anywhere.
func Render(name, soa string, records []zone.Record) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "; zone %s, written by switchboard; edits by hand are noticed, but prefer the inventory\n", name)
	fmt.Fprintf(&b, "$ORIGIN %s\n", name)
	b.WriteString(soa)
	b.WriteByte('\n')
	for _, r := range records {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// nextSerial follows RFC 1912's YYYYMMDDnn convention when the serial
// already looks like a date (or the zone is new), and adds one otherwise.
func nextSerial(old uint32, now time.Time) uint32 {
	today := uint32(now.UTC().Year()*1000000 + int(now.UTC().Month())*10000 + now.UTC().Day()*100)
	switch {
	case old == 0:
		return today
	case old >= 1970010100 && old < today:
		return today
	default:
		return old + 1
	}
}
