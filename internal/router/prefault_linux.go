package router

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// prefault maps the pages of b[from:to] (clipped to b's capacity; the
// pages at both ends included when they lie wholly within b's backing
// array) in one madvise (MADV_POPULATE_WRITE, Linux 5.14) instead of one
// page fault per 4 KiB as they are first touched: a fresh 4 MiB body
// buffer costs 1,024 faults otherwise, each an exception that is dear on
// a paravirtualised VM (docs/benchmarks.md, "Long prompts, fourth pass").
// Nothing is written: pages already mapped keep their bytes and new ones
// are zero, as the Go heap expects. A kernel without the advice refuses it
// and the pages fault as before.
func prefault(b []byte, from, to int) {
	b = b[:cap(b)]
	to = min(to, len(b))
	if from < 0 || from >= to {
		return
	}
	const page = 4096
	base := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	// Page boundaries as offsets into b: the first and last whole pages.
	first := int((page - base%page) % page)
	last := int((base+uintptr(len(b)))&^(page-1) - base)
	lo := max(first, int((base+uintptr(from))&^(page-1)-base))
	hi := min(last, int((base+uintptr(to)+page-1)&^(page-1)-base))
	if lo >= hi {
		return
	}
	_ = unix.Madvise(b[lo:hi], unix.MADV_POPULATE_WRITE)
}
