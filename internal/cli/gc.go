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

// machineMemoryShare of the machine's memory is the soft memory limit
// outside a cgroup limit.
const machineMemoryShare = 0.5

// bufferHeadroom is added to twice the buffer budget for the soft memory
// limit: the live heap beside buffered bodies (routes, indexes, conns).
const bufferHeadroom = 256 << 20

// routerGC decides the router's GC settings: gogc (the --gogc flag) unless
// GOGC is set; and unless GOMEMLIMIT is set, a soft memory limit of 90 % of
// the cgroup's limit, or half the machine's memory without one, lowered to
// twice the buffer budget (router.limits.bufferBytes) plus bufferHeadroom
// when that is less: buffered bytes are bounded by the budget, and garbage
// of as much again is collected before the heap grows past it. gogc <= 0
// keeps Go's default percentage.
func routerGC(gogc int, getenv func(string) string, cgroupMax string, machine, budget int64) gcSettings {
	var s gcSettings
	if getenv("GOGC") == "" && gogc > 0 {
		s.Percent = gogc
	}
	if getenv("GOMEMLIMIT") != "" {
		return s
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(cgroupMax), 10, 64); err == nil && n > 0 {
		s.MemoryLimit = int64(float64(n) * memoryLimitShare)
	} else if machine > 0 {
		s.MemoryLimit = int64(float64(machine) * machineMemoryShare)
	}
	if budget > 0 && (s.MemoryLimit == 0 || 2*budget+bufferHeadroom < s.MemoryLimit) {
		s.MemoryLimit = 2*budget + bufferHeadroom
	}
	return s
}

// applyRouterGC applies routerGC's settings to this process.
func applyRouterGC(gogc int, budget int64, log *slog.Logger) {
	cgroupMax, _ := os.ReadFile(cgroupMemoryMax)
	s := routerGC(gogc, os.Getenv, string(cgroupMax), machineMemory(), budget)
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

// machineMemory is MemTotal of /proc/meminfo in bytes, 0 if unknown.
func machineMemory() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return n << 10
			}
		}
	}
	return 0
}
