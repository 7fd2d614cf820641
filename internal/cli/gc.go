package cli

import (
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// defaultRouterGOGC is the router's GOGC unless the environment sets one.
// The router's live heap is small and its garbage is per request, so Go's
// default (100) collects very often under load: at 400 a router proxying
// to a zero-latency engine spent about 6 % less CPU per request (see
// docs/benchmarks.md), for a heap target five times the live heap instead
// of twice.
const defaultRouterGOGC = 400

// cgroupMemoryMax is where cgroup v2 publishes the container's memory limit.
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// memoryLimitShare of the container's memory limit becomes the soft memory
// limit, so that the larger heap target gives way before the container's
// limit is reached.
const memoryLimitShare = 0.9

// gcSettings are the GC settings the router applies; zero means unchanged.
type gcSettings struct {
	Percent     int
	MemoryLimit int64
}

// routerGC decides the router's GC settings: gogc (the --gogc flag) unless
// GOGC is set, and, when the cgroup limits memory and GOMEMLIMIT is not
// set, a soft memory limit of 90 % of it. gogc <= 0 keeps Go's default.
func routerGC(gogc int, getenv func(string) string, cgroupMax string) gcSettings {
	var s gcSettings
	if getenv("GOGC") == "" && gogc > 0 {
		s.Percent = gogc
	}
	if getenv("GOMEMLIMIT") == "" && s.Percent > 0 {
		if n, err := strconv.ParseInt(strings.TrimSpace(cgroupMax), 10, 64); err == nil && n > 0 {
			s.MemoryLimit = int64(float64(n) * memoryLimitShare)
		}
	}
	return s
}

// applyRouterGC applies routerGC's settings to this process.
func applyRouterGC(gogc int, log *slog.Logger) {
	cgroupMax, _ := os.ReadFile(cgroupMemoryMax)
	s := routerGC(gogc, os.Getenv, string(cgroupMax))
	if s.Percent > 0 {
		debug.SetGCPercent(s.Percent)
	}
	if s.MemoryLimit > 0 {
		debug.SetMemoryLimit(s.MemoryLimit)
	}
	if s.Percent > 0 || s.MemoryLimit > 0 {
		log.Info("garbage collector tuned", "gogc", s.Percent, "memory_limit_bytes", s.MemoryLimit)
	}
}
