package prefixindex

import (
	"math"
	"sync"
	"time"
)

// Precise is an exact index of the blocks engines report holding: each
// endpoint's set of block hashes as its KV-cache events describe it
// (Stored, Removed, Cleared, in the router's own chain hashes), plus a hash →
// holders map so that Match looks every block up once for all candidates.
//
// Beside what engines report, an endpoint may hold pending blocks: blocks of
// a request just sent there, which the engine will cache once it has
// prefilled them. A pending block counts as held until its deadline, or until
// the engine reports it stored; it closes the window between routing a
// request and hearing the engine cache its prompt, in which a second request
// with the same prefix would otherwise look uncached.
//
// Unlike Approximate, Precise does not assume that what an endpoint holds of
// a chain is a prefix of it (the engine evicts in its own order): Match walks
// the chain block by block until no candidate holds the next block.
//
// Precise is safe for concurrent use: Match takes a read lock, the rest a
// write lock.
type Precise struct {
	now func() time.Time

	mu        sync.RWMutex
	byHash    map[BlockHash][]holder
	slots     []preciseSlot
	byName    map[string]int32
	freeSlots []int32
	stored    int // (endpoint, block) pairs reported stored
	pending   int // (endpoint, block) pairs pending and not stored

	scratch sync.Pool // *preciseScratch
}

// holder is one endpoint's claim on a block.
type holder struct {
	slot   int32
	stored bool
	// until is the pending deadline in Unix nanoseconds, 0 when not pending.
	until int64
}

type preciseSlot struct {
	name    string
	stored  map[BlockHash]struct{}
	pending map[BlockHash]int64 // pending and not stored → deadline
}

type preciseScratch struct {
	slot  []int32 // candidate → slot, or -1
	alive []int32 // candidates still matching
	mark  []bool  // slot → holds the current block
}

// PreciseStats describes a Precise index.
type PreciseStats struct {
	// Endpoints is the number of endpoints with at least one block, stored
	// or pending.
	Endpoints int
	// Stored counts (endpoint, block) pairs engines reported cached.
	Stored int
	// Pending counts (endpoint, block) pairs pending and not yet stored.
	Pending int
}

// NewPrecise returns an empty index; now gives the time against which
// pending deadlines are checked (nil: time.Now).
func NewPrecise(now func() time.Time) *Precise {
	if now == nil {
		now = time.Now
	}
	return &Precise{now: now, byHash: make(map[BlockHash][]holder), byName: make(map[string]int32)}
}

// Stored records that endpoint now caches the blocks of hashes (any order;
// blocks it already holds are left as they are). The signature is
// kvevents.Index's.
func (p *Precise) Stored(endpoint string, hashes []uint64) {
	if len(hashes) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.slotFor(endpoint)
	ep := &p.slots[s]
	for _, u := range hashes {
		h := BlockHash(u)
		if _, ok := ep.stored[h]; ok {
			continue
		}
		ep.stored[h] = struct{}{}
		p.stored++
		if _, ok := ep.pending[h]; ok {
			delete(ep.pending, h)
			p.pending--
		}
		p.setHolder(h, s, func(ho *holder) { ho.stored, ho.until = true, 0 })
	}
}

// Removed records that endpoint evicted the blocks of hashes. Pending
// claims on them are dropped too: the engine has shown what it holds.
func (p *Precise) Removed(endpoint string, hashes []uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.byName[endpoint]
	if !ok {
		return
	}
	ep := &p.slots[s]
	for _, u := range hashes {
		h := BlockHash(u)
		_, st := ep.stored[h]
		_, pe := ep.pending[h]
		if !st && !pe {
			continue
		}
		if st {
			delete(ep.stored, h)
			p.stored--
		}
		if pe {
			delete(ep.pending, h)
			p.pending--
		}
		p.dropHolder(h, s)
	}
	p.releaseIfEmpty(s)
}

// Cleared forgets everything endpoint holds, stored and pending.
func (p *Precise) Cleared(endpoint string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.byName[endpoint]
	if !ok {
		return
	}
	ep := &p.slots[s]
	for h := range ep.stored {
		p.dropHolder(h, s)
	}
	for h := range ep.pending {
		p.dropHolder(h, s)
	}
	p.stored -= len(ep.stored)
	p.pending -= len(ep.pending)
	clear(ep.stored)
	clear(ep.pending)
	p.releaseIfEmpty(s)
}

// AddPending claims the blocks of chain for endpoint until the deadline,
// unless the engine reports them stored (then they simply are) or removed
// first. A block already stored is left alone; a pending one gets the later
// deadline.
func (p *Precise) AddPending(endpoint string, chain []BlockHash, until time.Time) {
	if len(chain) == 0 {
		return
	}
	dl := until.UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.slotFor(endpoint)
	ep := &p.slots[s]
	for _, h := range chain {
		if _, ok := ep.stored[h]; ok {
			continue
		}
		if old, ok := ep.pending[h]; ok && old >= dl {
			continue
		} else if !ok {
			p.pending++
		}
		ep.pending[h] = dl
		p.setHolder(h, s, func(ho *holder) { ho.until = dl })
	}
}

// ExpirePending drops pending claims whose deadline is not after now and
// returns how many it dropped. Match already ignores them; this frees their
// memory.
func (p *Precise) ExpirePending(now time.Time) int {
	t := now.UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for s := range p.slots {
		ep := &p.slots[s]
		if ep.name == "" {
			continue
		}
		for h, dl := range ep.pending {
			if dl > t {
				continue
			}
			delete(ep.pending, h)
			p.dropHolder(h, int32(s))
			n++
		}
		p.releaseIfEmpty(int32(s))
	}
	p.pending -= n
	return n
}

// Match writes into matched[i] how many leading blocks of chain endpoints[i]
// holds, stored or pending: the blocks before the first one it does not
// hold.
func (p *Precise) Match(chain []BlockHash, endpoints []string, matched []int) {
	p.match(chain, endpoints, matched, true)
}

// MatchStored is Match counting only the blocks engines reported stored,
// not pending claims.
func (p *Precise) MatchStored(chain []BlockHash, endpoints []string, matched []int) {
	p.match(chain, endpoints, matched, false)
}

func (p *Precise) match(chain []BlockHash, endpoints []string, matched []int, pending bool) {
	for i := range endpoints {
		matched[i] = 0
	}
	if len(chain) == 0 || len(endpoints) == 0 {
		return
	}
	sc, _ := p.scratch.Get().(*preciseScratch)
	if sc == nil {
		sc = &preciseScratch{}
	}
	defer p.scratch.Put(sc)
	now := int64(math.MaxInt64) // pending claims never count
	if pending {
		now = p.now().UnixNano()
	}

	p.mu.RLock()
	defer p.mu.RUnlock()
	sc.slot = sc.slot[:0]
	sc.alive = sc.alive[:0]
	for i, name := range endpoints {
		s, ok := p.byName[name]
		if !ok {
			s = none
		} else {
			sc.alive = append(sc.alive, int32(i))
		}
		sc.slot = append(sc.slot, s)
	}
	if cap(sc.mark) < len(p.slots) {
		sc.mark = make([]bool, len(p.slots))
	}
	mark := sc.mark[:len(p.slots)]
	alive := sc.alive
	for k, h := range chain {
		hs := p.byHash[h]
		if len(hs) == 0 {
			return
		}
		for _, ho := range hs {
			if ho.stored || ho.until > now {
				mark[ho.slot] = true
			}
		}
		next := alive[:0]
		for _, i := range alive {
			if mark[sc.slot[i]] {
				matched[i] = k + 1
				next = append(next, i)
			}
		}
		for _, ho := range hs {
			mark[ho.slot] = false
		}
		alive = next
		if len(alive) == 0 {
			return
		}
	}
}

// Holds reports whether endpoint holds h, stored or pending.
func (p *Precise) Holds(endpoint string, h BlockHash) bool {
	now := p.now().UnixNano()
	p.mu.RLock()
	defer p.mu.RUnlock()
	s, ok := p.byName[endpoint]
	if !ok {
		return false
	}
	if _, ok := p.slots[s].stored[h]; ok {
		return true
	}
	dl, ok := p.slots[s].pending[h]
	return ok && dl > now
}

// EndpointBlocks returns how many blocks endpoint's engine reported it holds
// (pending ones not counted).
func (p *Precise) EndpointBlocks(endpoint string) int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if s, ok := p.byName[endpoint]; ok {
		return len(p.slots[s].stored)
	}
	return 0
}

// Stats returns the index's size.
func (p *Precise) Stats() PreciseStats {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return PreciseStats{Endpoints: len(p.byName), Stored: p.stored, Pending: p.pending}
}

func (p *Precise) slotFor(name string) int32 {
	if s, ok := p.byName[name]; ok {
		return s
	}
	var s int32
	if n := len(p.freeSlots); n > 0 {
		s = p.freeSlots[n-1]
		p.freeSlots = p.freeSlots[:n-1]
	} else {
		s = int32(len(p.slots))
		p.slots = append(p.slots, preciseSlot{})
	}
	p.slots[s] = preciseSlot{name: name, stored: make(map[BlockHash]struct{}), pending: make(map[BlockHash]int64)}
	p.byName[name] = s
	return s
}

func (p *Precise) releaseIfEmpty(s int32) {
	ep := &p.slots[s]
	if len(ep.stored) > 0 || len(ep.pending) > 0 {
		return
	}
	delete(p.byName, ep.name)
	p.slots[s] = preciseSlot{}
	p.freeSlots = append(p.freeSlots, s)
}

// setHolder applies f to slot s's holder of h, adding one if needed.
func (p *Precise) setHolder(h BlockHash, s int32, f func(*holder)) {
	hs := p.byHash[h]
	for i := range hs {
		if hs[i].slot == s {
			f(&hs[i])
			return
		}
	}
	hs = append(hs, holder{slot: s})
	f(&hs[len(hs)-1])
	p.byHash[h] = hs
}

func (p *Precise) dropHolder(h BlockHash, s int32) {
	hs := p.byHash[h]
	for i := range hs {
		if hs[i].slot != s {
			continue
		}
		last := len(hs) - 1
		hs[i] = hs[last]
		hs = hs[:last]
		break
	}
	if len(hs) == 0 {
		delete(p.byHash, h)
	} else {
		p.byHash[h] = hs
	}
}
