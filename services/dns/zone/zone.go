// Package zone is the contract between the dns service and its providers:
// the record, change and result types, the errors a provider reports, and
// name helpers. It imports nothing from switchboard, so provider packages
// (rfc2136, zonefile, and later route53) stay leaves.
package zone

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Record is one resource record. Names are absolute, lower case and end in
// a dot; Data is the record data in presentation format as a zone file
// writes it ("192.0.2.10", "web1.example.com.", "\"text\"").
type Record struct {
	Name string `json:"name"`
	Type string `json:"type"`
	TTL  uint32 `json:"ttl"`
	Data string `json:"data"`
}

// String is the record as one zone file line.
func (r Record) String() string {
	return fmt.Sprintf("%s\t%d\tIN\t%s\t%s", r.Name, r.TTL, r.Type, r.Data)
}

// Key is the RRset a record belongs to.
func (r Record) Key() Key { return Key{Name: r.Name, Type: r.Type} }

// Key names an RRset: every record of one type at one name.
type Key struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

func (k Key) String() string { return k.Name + " " + k.Type }

// Snapshot is a zone as a provider read it.
type Snapshot struct {
	Zone string
	// State is an opaque token that changes whenever the zone changes (the
	// SOA for RFC 2136, serial and content hash for a zone file). A plan
	// keeps it and an apply is refused when it no longer matches.
	State string
	// Serial is the SOA serial, for people.
	Serial uint32
	// Records holds every record except the SOA.
	Records []Record
}

// Change replaces one RRset: Old is what the plan saw (empty: the RRset did
// not exist), New is what it should be (empty: delete it). A provider applies
// a change only if the RRset is still exactly Old.
type Change struct {
	Name string   `json:"name"`
	Type string   `json:"type"`
	Old  []Record `json:"old,omitempty"`
	New  []Record `json:"new,omitempty"`
}

// Key is the RRset the change replaces.
func (c Change) Key() Key { return Key{Name: c.Name, Type: c.Type} }

// Op says what kind of change it is.
func (c Change) Op() Op {
	switch {
	case len(c.Old) == 0:
		return OpAdd
	case len(c.New) == 0:
		return OpDelete
	default:
		return OpUpdate
	}
}

// Op is add, delete or update.
type Op string

// The three kinds of change.
const (
	OpAdd    Op = "add"
	OpDelete Op = "delete"
	OpUpdate Op = "update"
)

// Result is the outcome of one change: Err is nil when it was applied.
type Result struct {
	Change Change `json:"-"`
	Err    error  `json:"-"`
}

// Errors providers report; callers match them with errors.Is.
var (
	// ErrConflict means the zone no longer is what the plan saw: its state
	// token or one of the changed RRsets differs. Nothing of the refused
	// part was applied.
	ErrConflict = errors.New("zone changed since it was read")
	// ErrUnknownZone means the provider does not serve the zone.
	ErrUnknownZone = errors.New("unknown zone")
	// ErrAuth means the server refused the credentials (a TSIG key).
	ErrAuth = errors.New("not authorised by the DNS server")
	// ErrNotAttempted marks changes after a failed batch.
	ErrNotAttempted = errors.New("not attempted")
)

// Canonical returns name in lower case with a trailing dot.
func Canonical(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// InZone reports whether the canonical name is the zone's apex or below it.
func InZone(name, zone string) bool {
	return name == zone || strings.HasSuffix(name, "."+zone) || zone == "."
}

// NameProblem says what is wrong with name as an owner name for the records
// switchboard writes (RFC 1123 labels; '_' only at the start of a label, as
// in service names), or "" if nothing is.
func NameProblem(name string) string {
	if name == "" || name == "." {
		return "it is empty"
	}
	if !strings.HasSuffix(name, ".") {
		return "it is not absolute (no trailing dot)"
	}
	if len(name) > 254 {
		return fmt.Sprintf("%d characters; the limit is 253", len(name)-1)
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(name, "."), ".") {
		if label == "" {
			return "it has an empty label (two dots in a row)"
		}
		if len(label) > 63 {
			return fmt.Sprintf("label %q is longer than 63 characters", label)
		}
		if label == "*" {
			continue
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' && i == 0
			if !ok {
				return fmt.Sprintf("label %q has %q, which a host name may not contain", label, string(c))
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Sprintf("label %q starts or ends with '-'", label)
		}
	}
	return ""
}

// SortRecords orders records by name, type and data, the order plans and
// zone files show them in.
func SortRecords(rs []Record) {
	slices.SortFunc(rs, func(a, b Record) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.Data, b.Data)
	})
}

// SameSet reports whether a and b hold the same records (TTL included),
// in any order.
func SameSet(a, b []Record) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 1 { // the common case, without allocating
		return a[0] == b[0]
	}
	x, y := slices.Clone(a), slices.Clone(b)
	SortRecords(x)
	SortRecords(y)
	return slices.Equal(x, y)
}

// Group collects records into RRsets. Records of one RRset that are next to
// each other (as a zone transfer sends them) share rs's memory rather than
// being copied, which matters for a zone of 100,000 records.
func Group(rs []Record) map[Key][]Record {
	m := make(map[Key][]Record, len(rs))
	for i := 0; i < len(rs); {
		k := rs[i].Key()
		j := i + 1
		for j < len(rs) && rs[j].Type == k.Type && rs[j].Name == k.Name {
			j++
		}
		// The full slice expression caps the group, so a later append for
		// the same key copies instead of overwriting its neighbours.
		if old, ok := m[k]; ok {
			m[k] = append(old, rs[i:j:j]...)
		} else {
			m[k] = rs[i:j:j]
		}
		i = j
	}
	return m
}
