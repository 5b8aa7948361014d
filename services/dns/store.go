package dns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// store keeps plans in KV sb_dns_plans, key plan.<id>, as JSON. The
// bucket's TTL is the plan expiry, so old plans go away by themselves; an
// applied plan is rewritten and so lives one more TTL, long enough to
// answer "already applied".
type store struct {
	kv jetstream.KeyValue
}

// errPlanNotFound means no plan has that id (never made, or expired).
var errPlanNotFound = errors.New("plan not found")

func planKey(id string) string { return "plan." + id }

// create stores a new plan; it returns jetstream.ErrKeyExists when a plan
// with the same id exists (a retried command or a redelivered event).
func (st *store) create(ctx context.Context, p *Plan) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode plan %s: %w", p.ID, err)
	}
	if _, err := st.kv.Create(ctx, planKey(p.ID), b); err != nil {
		return fmt.Errorf("store plan %s: %w", p.ID, err)
	}
	return nil
}

// get returns a plan and its revision.
func (st *store) get(ctx context.Context, id string) (*Plan, uint64, error) {
	e, err := st.kv.Get(ctx, planKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, errPlanNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read plan %s: %w", id, err)
	}
	var p Plan
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return nil, 0, fmt.Errorf("decode plan %s: %w", id, err)
	}
	return &p, e.Revision(), nil
}

// update writes p if the plan is still at rev; a concurrent writer makes it
// fail with jetstream.ErrKeyExists (the KV's wrong-revision error).
func (st *store) update(ctx context.Context, p *Plan, rev uint64) (uint64, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return 0, fmt.Errorf("encode plan %s: %w", p.ID, err)
	}
	r, err := st.kv.Update(ctx, planKey(p.ID), b, rev)
	if err != nil {
		return 0, fmt.Errorf("update plan %s: %w", p.ID, err)
	}
	return r, nil
}

// list returns every stored plan, newest first.
func (st *store) list(ctx context.Context) ([]*Plan, error) {
	keys, err := st.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list plans: %w", err)
	}
	var out []*Plan
	for k := range keys.Keys() {
		if !strings.HasPrefix(k, "plan.") {
			continue
		}
		p, _, err := st.get(ctx, strings.TrimPrefix(k, "plan."))
		if errors.Is(err, errPlanNotFound) {
			continue // expired meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Plan) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, nil
}
