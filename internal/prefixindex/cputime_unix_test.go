//go:build unix

package prefixindex

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time the process has used, all threads (the
// garbage collector's included). Benchmarks report it per op next to
// ns/op, which on a shared machine also counts time spent waiting for a CPU.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
