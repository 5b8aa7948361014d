package bench

import (
	"context"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/switchboard-ops/switchboard/proto/sb/wire"
)

// CountedStreams are the streams whose writes a command's cost is counted
// in: the CHAT posts, the AUDIT records and the sb_jobs bucket.
var CountedStreams = []string{wire.StreamChat, wire.StreamAudit, "KV_" + wire.BucketJobs}

// Counters are server totals read before and after a run, so that a run can
// say what one command cost in messages and stored writes.
type Counters struct {
	// InMsgs and OutMsgs are the messages the server received from and sent
	// to clients (its own JetStream traffic included).
	InMsgs, OutMsgs int64
	// Stored is the last sequence of each counted stream: every stored
	// message, KV deletes included, advances it by one.
	Stored map[string]uint64
	// Bytes is the size of the counted streams (what the limits keep).
	Bytes uint64
}

// Counters reads the server's totals.
func (e *Env) Counters(ctx context.Context) (Counters, error) {
	v, err := e.Server().Varz(&server.VarzOptions{})
	if err != nil {
		return Counters{}, fmt.Errorf("varz: %w", err)
	}
	c := Counters{InMsgs: v.InMsgs, OutMsgs: v.OutMsgs, Stored: map[string]uint64{}}
	for _, name := range CountedStreams {
		st, err := e.JS.Stream(ctx, name)
		if err != nil {
			return Counters{}, fmt.Errorf("stream %s: %w", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return Counters{}, fmt.Errorf("stream %s: %w", name, err)
		}
		c.Stored[name] = info.State.LastSeq
		c.Bytes += info.State.Bytes
	}
	return c, nil
}

// Per divides the difference from before by n operations.
func (c Counters) Per(before Counters, n int) (in, out float64, stored map[string]float64) {
	stored = map[string]float64{}
	if n == 0 {
		return 0, 0, stored
	}
	for k, v := range c.Stored {
		stored[k] = float64(v-before.Stored[k]) / float64(n)
	}
	return float64(c.InMsgs-before.InMsgs) / float64(n), float64(c.OutMsgs-before.OutMsgs) / float64(n), stored
}
