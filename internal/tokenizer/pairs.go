package tokenizer

import (
	"hash/maphash"
	"math/bits"
)

// pairTable maps a pair of adjacent token ids to their merge. It is an
// open-addressing hash table on 64-bit keys (left id << 32 | right id),
// kept at most half full, which the merge loop probes far faster than a
// Go map on byte strings.
type pairTable struct {
	keys  []uint64
	vals  []merge
	mask  uint64
	shift uint
	n     int
}

const emptyPair = ^uint64(0) // ids stay below 2^24, so no pair key is this

func newPairTable(capacity int) *pairTable {
	size := 16
	for size < 2*capacity {
		size *= 2
	}
	p := &pairTable{
		keys:  make([]uint64, size),
		vals:  make([]merge, size),
		mask:  uint64(size - 1),
		shift: uint(64 - bits.TrailingZeros(uint(size))),
	}
	for i := range p.keys {
		p.keys[i] = emptyPair
	}
	return p
}

func pairKey(a, b uint32) uint64 { return uint64(a)<<32 | uint64(b) }

func (p *pairTable) slot(k uint64) uint64 { return (k * 0x9e3779b97f4a7c15) >> p.shift }

// get returns the merge of a pair.
func (p *pairTable) get(k uint64) (merge, bool) {
	for i := p.slot(k); ; i = (i + 1) & p.mask {
		switch p.keys[i] {
		case k:
			return p.vals[i], true
		case emptyPair:
			return merge{}, false
		}
	}
}

// putIfAbsent adds a pair unless it is there; it reports whether it added.
func (p *pairTable) putIfAbsent(k uint64, m merge) bool {
	if 2*(p.n+1) > len(p.keys) {
		p.grow()
	}
	for i := p.slot(k); ; i = (i + 1) & p.mask {
		switch p.keys[i] {
		case k:
			return false
		case emptyPair:
			p.keys[i], p.vals[i] = k, m
			p.n++
			return true
		}
	}
}

func (p *pairTable) grow() {
	old := *p
	*p = *newPairTable(len(old.keys))
	for i, k := range old.keys {
		if k != emptyPair {
			p.putIfAbsent(k, old.vals[i])
		}
	}
}

// Len returns the number of pairs.
func (p *pairTable) Len() int { return p.n }

// wordTable finds the token whose bytes are a whole piece. It is an
// open-addressing table of token ids, each slot tagged with the high bits of
// its hash so that a probe compares bytes only on a likely hit.
type wordTable struct {
	slots  []uint64 // hash tag << 32 | id+1; 0 is empty
	mask   uint64
	seed   maphash.Seed
	tokens []string
	n      int // tokens that are not "" (ids may be sparse)
}

// count is the number of tokens in the table.
func (w *wordTable) count() int { return w.n }

func newWordTable(tokens []string) *wordTable {
	n := 0
	for _, tok := range tokens {
		if tok != "" {
			n++
		}
	}
	size := 16
	for size < 2*n {
		size *= 2
	}
	w := &wordTable{slots: make([]uint64, size), mask: uint64(size - 1), seed: maphash.MakeSeed(), tokens: tokens, n: n}
	for id, tok := range tokens {
		if tok == "" {
			continue
		}
		h := maphash.String(w.seed, tok)
		for i := h & w.mask; ; i = (i + 1) & w.mask {
			if w.slots[i] == 0 {
				w.slots[i] = h&^0xffffffff | uint64(id+1)
				break
			}
		}
	}
	return w
}

// get returns the id of the token spelled s.
func (w *wordTable) get(s string) (uint32, bool) {
	h := maphash.String(w.seed, s)
	tag := h &^ 0xffffffff
	for i := h & w.mask; ; i = (i + 1) & w.mask {
		v := w.slots[i]
		if v == 0 {
			return 0, false
		}
		if v&^0xffffffff == tag {
			id := uint32(v) - 1
			if w.tokens[id] == s {
				return id, true
			}
		}
	}
}
