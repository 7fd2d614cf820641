package router

import (
	"slices"
	"sync"
)

// A long prompt's body (4 MiB for 1M tokens) used to land in a new buffer
// for each request: fresh memory, which the kernel maps page by page as the
// body's bytes are copied in (a page fault per 4 KiB, about a sixth of the
// router's CPU on the live long-prompt run, docs/benchmarks.md). bodyPool
// keeps a few such buffers once their request is done, so that the next
// long body is read into memory already mapped. Only bodies of a declared
// length of at least bodyPoolMin are pooled; the pool holds at most its
// limit in bytes beyond the requests in flight (idle buffers are not
// counted in the buffer budget, which counts requests' bytes).
type bodyPool struct {
	mu    sync.Mutex
	free  [][]byte
	bytes int64
	limit int64
}

// Sizes of pooled body buffers: the smallest body pooled, and the step
// their capacity is rounded up to so that bodies of about the same length
// share buffers.
const (
	bodyPoolMin  = 1 << 20
	bodyPoolStep = 256 << 10
)

// defaultBodyPoolBytes is the most the pool keeps: eight 4 MiB bodies.
const defaultBodyPoolBytes = 32 << 20

// poolCap is the capacity of a pooled buffer for a body of n bytes.
func poolCap(n int64) int64 { return (n + bodyPoolStep - 1) / bodyPoolStep * bodyPoolStep }

// get returns an empty buffer that holds n bytes, taken from the pool, or
// nil when none fits: the smallest free buffer of at least n bytes and at
// most poolCap(n)+bodyPoolStep, so a small body does not hold a large one.
func (p *bodyPool) get(n int64) []byte {
	if p == nil || n < bodyPoolMin {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	best := -1
	for i, b := range p.free {
		c := int64(cap(b))
		if c >= n && c <= poolCap(n)+bodyPoolStep && (best < 0 || c < int64(cap(p.free[best]))) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	b := p.free[best]
	p.free = slices.Delete(p.free, best, best+1)
	p.bytes -= int64(cap(b))
	return b[:0]
}

// put gives b back once nothing refers to it. A buffer the pool has no
// room for is left to the garbage collector, the oldest first: a full pool
// drops its oldest buffer to keep the newest.
func (p *bodyPool) put(b []byte) {
	c := int64(cap(b))
	if p == nil || c < bodyPoolMin || c > p.limit {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.bytes+c > p.limit && len(p.free) > 0 {
		p.bytes -= int64(cap(p.free[0]))
		p.free = slices.Delete(p.free, 0, 1)
	}
	p.free = append(p.free, b[:0])
	p.bytes += c
}
