package router

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// prefault maps the pages of b (those wholly inside it) in one madvise
// (MADV_POPULATE_WRITE, Linux 5.14) instead of one page fault per 4 KiB as
// the kernel's copy first touches them: a fresh 4 MiB body buffer costs
// 1,024 faults otherwise, each an exception that is dear on a
// paravirtualised VM (docs/benchmarks.md, "Long prompts, fourth pass").
// Nothing is written: pages already mapped keep their bytes and new ones
// are zero, as the Go heap expects. A kernel without the advice refuses it
// and the pages fault as before.
func prefault(b []byte) {
	c := len(b)
	if c == 0 {
		return
	}
	const page = 4096
	p := unsafe.Pointer(unsafe.SliceData(b))
	off := int((page - uintptr(p)%page) % page)
	n := (c - off) &^ (page - 1)
	if n <= 0 {
		return
	}
	_ = unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(p, off)), n), unix.MADV_POPULATE_WRITE)
}
