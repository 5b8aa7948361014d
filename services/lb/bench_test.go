package lb

import (
	"context"
	"fmt"
	"testing"

	"github.com/switchboard-ops/switchboard/services/lb/haproxy"
	"github.com/switchboard-ops/switchboard/services/lb/haproxytest"
)

// BenchmarkDrain50On3 measures the Runtime API work of `lb drain` of 50
// servers on 3 HAProxy instances: reading every instance (the plan and its
// safety checks) and applying 50 state changes on each, in parallel across
// instances. "pipelined" is how lb talks to HAProxy (one connection per
// instance per step); "per-command" opens a connection per command, as
// scripts around socat do. Each iteration alternates drain and ready so
// every command is a real change.
//
//	go test ./services/lb -run '^$' -bench Drain50On3 -benchtime 50x
func BenchmarkDrain50On3(b *testing.B) {
	var servers []haproxytest.Server
	for i := 1; i <= 100; i++ {
		servers = append(servers, haproxytest.Server{Name: fmt.Sprintf("bulk%03d", i), Addr: "127.0.0.1:9"})
	}
	var ins []*haproxytest.Instance
	for i := 0; i < 3; i++ {
		ins = append(ins, haproxytest.Start(b, haproxytest.Config{Backends: []haproxytest.Backend{{Name: "bulk", Servers: servers}}}))
	}
	changes := func(st haproxy.State) []haproxy.Change {
		out := make([]haproxy.Change, 50)
		for i := range out {
			out[i] = haproxy.Change{Kind: haproxy.SetState, Backend: "bulk", Server: servers[i].Name, State: st}
		}
		return out
	}
	drain, ready := changes(haproxy.StateDrain), changes(haproxy.StateReady)
	for _, mode := range []struct {
		name string
		opts []haproxy.Option
	}{
		{"pipelined", nil},
		{"per-command", []haproxy.Option{haproxy.WithoutPipelining()}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			f := &fleet{envs: map[string][]*instance{}}
			for i, in := range ins {
				f.envs["production"] = append(f.envs["production"], &instance{name: fmt.Sprintf("lb%d", i+1), env: "production",
					rt: haproxy.NewClient("unix", in.Socket, mode.opts...)})
			}
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ch := drain
				if i%2 == 1 {
					ch = ready
				}
				v := f.view(ctx, "production")
				if len(v.reachable()) != 3 {
					b.Fatalf("unreachable: %s", v.unreachableText())
				}
				if res := f.apply(ctx, "production", ch, nil); res.failed() {
					b.Fatalf("apply: %s", res.summary(ch))
				}
			}
		})
	}
}
