package dns

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

// managedTypes are the record types rules make; only these (and the
// ownership markers) are ever changed, even at an owned name.
var managedTypes = []string{"A", "AAAA", "CNAME", "PTR"}

// markerPrefix names the TXT record that marks a name as switchboard's,
// beside it rather than at it, because a CNAME cannot share its name.
const markerPrefix = "_sb-owner."

// Person is who made or applied a plan.
type Person struct {
	ID         string `json:"id"`
	Name       string `json:"name,omitempty"`
	Automation bool   `json:"automation,omitempty"`
}

func (p Person) String() string {
	if p.Name != "" {
		return p.Name
	}
	return p.ID
}

// Plan statuses.
const (
	StatusOpen     = "open"
	StatusApplying = "applying"
	StatusApplied  = "applied"
	StatusFailed   = "failed"
	StatusStale    = "stale"
)

// Plan is a diff a person can read and then apply exactly, kept in KV
// sb_dns_plans under plan.<id> until it expires.
type Plan struct {
	ID                string     `json:"id"`
	Planner           Person     `json:"planner"`
	CommandID         string     `json:"command_id,omitempty"`
	CreatedAt         time.Time  `json:"created_at"`
	ExpiresAt         time.Time  `json:"expires_at"`
	InventoryRevision string     `json:"inventory_revision"`
	Zones             []ZonePlan `json:"zones"`
	// Skipped holds names the rules want but switchboard does not own.
	Skipped []string `json:"skipped,omitempty"`

	Status    string    `json:"status"`
	AppliedBy *Person   `json:"applied_by,omitempty"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
	// ApplyJob is the id of the `dns apply` job that claimed the plan: a
	// replica that takes that job over resumes the apply only then.
	ApplyJob string `json:"apply_job,omitempty"`
	Outcome  string `json:"outcome,omitempty"`
	// Tally counts the outcomes once the apply ended.
	Tally *Tally `json:"tally,omitempty"`
}

// Tally counts what an apply did with a plan's changes.
type Tally struct {
	// Applied changes were made by this apply; Already ones were found in
	// place by a resumed apply (made before the take-over).
	Applied int `json:"applied"`
	Already int `json:"already,omitempty"`
	// Conflicts are RRsets a resumed apply found neither as the plan saw
	// them nor as it wanted them: someone else changed them.
	Conflicts int `json:"conflicts,omitempty"`
	Failed    int `json:"failed,omitempty"`
}

// ZonePlan is the part of a plan for one zone, with the state it was
// computed against.
type ZonePlan struct {
	Zone    string        `json:"zone"`
	State   string        `json:"state"`
	Serial  uint32        `json:"serial"`
	Changes []zone.Change `json:"changes"`
}

// Count is the number of RRset changes in the plan.
func (p *Plan) Count() int {
	n := 0
	for _, z := range p.Zones {
		n += len(z.Changes)
	}
	return n
}

// counts returns adds, updates and deletes of a zone's changes.
func counts(cs []zone.Change) (add, upd, del int) {
	for _, c := range cs {
		switch c.Op() {
		case zone.OpAdd:
			add++
		case zone.OpUpdate:
			upd++
		default:
			del++
		}
	}
	return
}

// diffZone computes the changes that make a zone hold the desired records,
// touching only what switchboard owns. It returns the changes (deletes
// first, then updates, then adds, so an UPDATE never adds a CNAME beside a
// record it is about to remove) and the names it left alone.
func (s *Service) diffZone(snap *zone.Snapshot, want map[zone.Key][]zone.Record) ([]zone.Change, []string) {
	current := zone.Group(snap.Records)
	marker := s.markerData()
	markedNames := make(map[string]bool, len(current)/2)
	// names (name → types present) is needed only for names switchboard
	// does not own yet, rare after the first apply: build it on demand.
	var names map[string][]string
	typesAt := func(name string) []string {
		if names == nil {
			names = make(map[string][]string, len(current))
			for k := range current {
				names[k.Name] = append(names[k.Name], k.Type)
			}
		}
		return names[name]
	}
	for k, rs := range current {
		if k.Type == "TXT" && strings.HasPrefix(k.Name, markerPrefix) && slices.ContainsFunc(rs, func(r zone.Record) bool { return r.Data == marker }) {
			markedNames[strings.TrimPrefix(k.Name, markerPrefix)] = true
		}
	}
	owned := func(name string) bool { return markedNames[name] || s.ownedByPattern(name) }

	var changes []zone.Change
	var skipped []string
	claim := map[string]bool{} // names that get a marker now
	wantNames := make(map[string]bool, len(want))
	// Maps are walked unsorted (a zone may hold 100,000 RRsets); only the
	// changes are sorted at the end.
	for k := range want {
		wantNames[k.Name] = true
		cur := current[k]
		if !owned(k.Name) {
			if why := s.foreign(k, typesAt(k.Name)); why != "" {
				skipped = append(skipped, fmt.Sprintf("%s %s: %s", k.Name, k.Type, why))
				continue
			}
			claim[k.Name] = true
		}
		if !zone.SameSet(cur, want[k]) {
			changes = append(changes, zone.Change{Name: k.Name, Type: k.Type, Old: cur, New: sorted(want[k])})
		}
	}
	for k := range current {
		if !slices.Contains(managedTypes, k.Type) || !owned(k.Name) {
			continue
		}
		if _, ok := want[k]; !ok {
			changes = append(changes, zone.Change{Name: k.Name, Type: k.Type, Old: current[k]})
		}
	}
	// Markers: claim new names, and release names nothing is wanted at.
	for _, n := range sortedNames(claim) {
		if markedNames[n] || s.ownedByPattern(n) {
			continue
		}
		mk := zone.Key{Name: markerPrefix + n, Type: "TXT"}
		rec := zone.Record{Name: mk.Name, Type: "TXT", TTL: s.cfg.DefaultTTL, Data: marker}
		changes = append(changes, zone.Change{Name: mk.Name, Type: "TXT", Old: current[mk], New: append(slices.Clone(current[mk]), rec)})
	}
	for n := range markedNames {
		if wantNames[n] || !zone.InZone(n, snap.Zone) {
			continue
		}
		mk := zone.Key{Name: markerPrefix + n, Type: "TXT"}
		rest := slices.DeleteFunc(slices.Clone(current[mk]), func(r zone.Record) bool { return r.Data == marker })
		changes = append(changes, zone.Change{Name: mk.Name, Type: "TXT", Old: current[mk], New: rest})
	}
	order := map[zone.Op]int{zone.OpDelete: 0, zone.OpUpdate: 1, zone.OpAdd: 2}
	slices.SortFunc(changes, func(a, b zone.Change) int {
		if c := order[a.Op()] - order[b.Op()]; c != 0 {
			return c
		}
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Type, b.Type)
	})
	slices.Sort(skipped)
	return changes, skipped
}

// foreign says why switchboard must not write RRset k at a name it does not
// own, given the types already there, or "" if it may claim the name.
func (s *Service) foreign(k zone.Key, present []string) string {
	for _, t := range present {
		switch {
		case t == k.Type || slices.Contains(managedTypes, t):
			return fmt.Sprintf("the name has %s records switchboard does not own; left alone (delete them, or add the name to dns.owned_names)", t)
		case k.Type == "CNAME":
			return fmt.Sprintf("a CNAME cannot join the %s records already there; left alone", t)
		case t == "CNAME":
			return "the name is a CNAME switchboard does not own; left alone"
		}
	}
	return ""
}

// markerData is the ownership TXT record's data.
func (s *Service) markerData() string {
	return `"heritage=switchboard,owner=` + s.cfg.Owner + `"`
}

func sorted(rs []zone.Record) []zone.Record {
	out := slices.Clone(rs)
	zone.SortRecords(out)
	return out
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
