package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ticksPerSecond is USER_HZ, the unit of /proc/stat and /proc/self/stat;
// it is 100 on every Linux architecture Go supports.
const ticksPerSecond = 100

// CPU is a reading of the machine's and this process's CPU time, so that a
// measurement can report what it cost and whether other processes competed
// with it (on a 2-core machine another test run changes every number).
type CPU struct {
	at         time.Time
	busy, self uint64 // ticks
	ok         bool
}

// ReadCPU reads /proc/stat and /proc/self/stat; on other systems the
// reading is empty and its differences are zero.
func ReadCPU() CPU {
	c := CPU{at: time.Now()}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return c
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return c
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already counted in user
			break
		}
		c.busy += n
	}
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return c
	}
	// The command name may hold spaces; fields count from after its ')'.
	s := string(self)
	g := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(g) < 13 {
		return c
	}
	ut, _ := strconv.ParseUint(g[11], 10, 64)
	st, _ := strconv.ParseUint(g[12], 10, 64)
	c.self = ut + st
	c.ok = true
	return c
}

// CPUUse is the CPU time spent between two readings, in cores (1.0 is one
// core busy for the whole interval).
type CPUUse struct {
	// Self is this process: the server, the service and the load.
	Self float64
	// Others is every other process on the machine.
	Others float64
	// SelfTime is this process's CPU time in the interval.
	SelfTime time.Duration
}

// Since returns the CPU used from c to now.
func (c CPU) Since() CPUUse {
	now := ReadCPU()
	if !c.ok || !now.ok {
		return CPUUse{}
	}
	wall := now.at.Sub(c.at).Seconds()
	self := float64(now.self - c.self)
	busy := float64(now.busy - c.busy)
	return CPUUse{
		Self:     self / ticksPerSecond / wall,
		Others:   max(0, busy-self) / ticksPerSecond / wall,
		SelfTime: time.Duration(self * float64(time.Second) / ticksPerSecond),
	}
}

// String formats the use for a table cell.
func (u CPUUse) String() string {
	return fmt.Sprintf("%.2f / %.2f", u.Self, u.Others)
}

// WaitQuiet waits until other processes used at most maxOthers cores over
// a whole second, or until limit has passed; it reports whether the machine
// became quiet. Measurements on a shared machine start with it.
func WaitQuiet(ctx context.Context, maxOthers float64, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		c := ReadCPU()
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
		if c.Since().Others <= maxOthers {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
