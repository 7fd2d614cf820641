package router

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPrefaultMapsPagesWithoutWriting: after prefault, writing every page
// of fresh anonymous memory takes (nearly) no page faults, and prefault
// leaves bytes already there as they were.
func TestPrefaultMapsPagesWithoutWriting(t *testing.T) {
	const size = 8 << 20
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Munmap(mem) }()
	mem[0], mem[size/2] = 'a', 'b' // two pages already mapped, with bytes
	// Offset by one byte, as a heap slice need not start on a page.
	prefault(mem[1:], 0, size-2)
	if mem[0] != 'a' || mem[size/2] != 'b' || mem[1] != 0 || mem[size-1] != 0 {
		t.Fatalf("prefault changed the memory: %q %q %q %q", mem[0], mem[size/2], mem[1], mem[size-1])
	}
	before := minorFaultCount()
	for i := 0; i < size; i += 4096 {
		mem[i] = 1
	}
	// 2,048 pages; without prefault each would fault once. The pages at
	// both ends (partly outside the advised range) and the runtime's own
	// faults meanwhile may add a few.
	if faults := minorFaultCount() - before; faults > 64 {
		t.Fatalf("touching 2048 prefaulted pages took %d page faults, want (nearly) none", faults)
	}
}

func minorFaultCount() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Minflt
}
