package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Summary describes a set of latencies.
type Summary struct {
	N                  int
	P50, P90, P99, Max time.Duration
	Mean               time.Duration
	sorted             []time.Duration
}

// Summarize sorts a copy of d and picks its percentiles (nearest rank).
func Summarize(d []time.Duration) Summary {
	s := Summary{N: len(d), sorted: slices.Clone(d)}
	if len(d) == 0 {
		return s
	}
	slices.Sort(s.sorted)
	var sum time.Duration
	for _, v := range s.sorted {
		sum += v
	}
	s.Mean = sum / time.Duration(len(d))
	s.P50, s.P90, s.P99 = s.Quantile(0.50), s.Quantile(0.90), s.Quantile(0.99)
	s.Max = s.sorted[len(s.sorted)-1]
	return s
}

// Quantile returns the q-quantile (0 < q ≤ 1) by nearest rank.
func (s Summary) Quantile(q float64) time.Duration {
	if len(s.sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(s.sorted))+0.999999) - 1
	return s.sorted[max(0, min(i, len(s.sorted)-1))]
}

// Sample runs op sequentially: warmup times untimed, then n times timed.
// It stops at the first error.
func Sample(ctx context.Context, warmup, n int, op func(context.Context) error) ([]time.Duration, error) {
	for i := 0; i < warmup; i++ {
		if err := op(ctx); err != nil {
			return nil, fmt.Errorf("warm-up %d: %w", i, err)
		}
	}
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := op(ctx); err != nil {
			return out, fmt.Errorf("sample %d: %w", i, err)
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

// LoadResult is what a fixed-duration run of concurrent senders did.
type LoadResult struct {
	Senders int
	// Elapsed is from the start until the last sender finished its last
	// operation (which may run past the duration).
	Elapsed time.Duration
	// Done counts operations that succeeded; their latencies are in Latency.
	Done    int
	Errors  int
	Latency Summary
	// FirstErr is the first error any sender met.
	FirstErr error
}

// PerSecond is the throughput of successful operations.
func (r LoadResult) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Done) / r.Elapsed.Seconds()
}

// Load runs senders goroutines that each call op back to back until d has
// passed; op gets the sender's number and returns the latency to record.
// A failed operation is counted, and the sender goes on.
func Load(ctx context.Context, senders int, d time.Duration, op func(ctx context.Context, sender int) (time.Duration, error)) LoadResult {
	var (
		mu   sync.Mutex
		all  []time.Duration
		res  = LoadResult{Senders: senders}
		wg   sync.WaitGroup
		t0   = time.Now()
		stop = t0.Add(d)
	)
	for i := 0; i < senders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			errs := 0
			var first error
			for time.Now().Before(stop) && ctx.Err() == nil {
				l, err := op(ctx, i)
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, l)
			}
			mu.Lock()
			all = append(all, lat...)
			res.Errors += errs
			if res.FirstErr == nil {
				res.FirstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(t0)
	res.Done = len(all)
	res.Latency = Summarize(all)
	return res
}
