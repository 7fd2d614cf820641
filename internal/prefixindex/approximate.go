package prefixindex

import (
	"fmt"
	"sync"
)

// Defaults of ApproximateConfig.
const (
	// DefaultEndpointCapacity is the per-endpoint bound, in blocks, when the
	// caller gives none: 27,500 blocks of 16 tokens, the 440k tokens of KV
	// cache a Llama-3-8B engine has on an 80 GB H100 (DESIGN.md §7).
	DefaultEndpointCapacity = 27_500
	// DefaultMaxBlocks bounds the whole index: 2^20 (endpoint, block) entries,
	// about 70 MiB (see BytesPerBlock), enough to mirror the whole KV cache of
	// 38 such engines.
	DefaultMaxBlocks = 1 << 20
)

// BytesPerBlock is the approximate memory one (endpoint, block) entry costs:
// a 32-byte node plus its share of the hash map (68 bytes measured by
// TestApproximateMemoryPerBlock with 2^18 entries); a figure for sizing
// MaxBlocks, not a bound.
const BytesPerBlock = 68

// ApproximateConfig bounds an Approximate index. Zero fields take defaults.
type ApproximateConfig struct {
	// EndpointCapacity is the per-endpoint bound in blocks used when Add is
	// given no capacity. Default DefaultEndpointCapacity.
	EndpointCapacity int
	// MaxBlocks bounds the (endpoint, block) entries of the whole index; past
	// it the least recently routed block of any endpoint is forgotten first.
	// Default DefaultMaxBlocks.
	MaxBlocks int
}

// Approximate is a bounded index of the blocks recently routed to each
// endpoint. It is safe for concurrent use: Match takes a read lock, Add and
// Clear a write lock.
//
// Each endpoint's blocks form an LRU list, and all blocks a global one. Add
// touches a chain's blocks from the last to the first, so within any chain a
// block is always more recent than the blocks after it; eviction, which takes
// the least recent block, therefore never removes a block while keeping a
// later one of the same chain. The blocks an endpoint holds of any chain are
// thus a prefix of it, which lets Match bisect instead of walking every
// block.
type Approximate struct {
	mu        sync.RWMutex
	cfg       ApproximateConfig
	nodes     []node
	free      int32 // head of the free-node list, linked through enext
	byHash    map[BlockHash]int32
	slots     []endpointSlot
	freeSlots []int32
	byName    map[string]int32
	ghead     int32 // most recently touched node of any endpoint
	gtail     int32
	total     int
	evictions uint64

	scratch sync.Pool // *matchScratch
}

const none int32 = -1

// node is one (endpoint, block) entry. Nodes live in one slice and link by
// index, so the index holds no pointers for the garbage collector to scan.
type node struct {
	hash         BlockHash
	slot         int32 // endpoint slot, or none when free
	hnext        int32 // next node with the same hash
	eprev, enext int32 // endpoint LRU list, most recent first
	gprev, gnext int32 // global LRU list, most recent first
}

type endpointSlot struct {
	name       string
	head, tail int32
	count      int
	capacity   int
}

type matchScratch struct {
	cand []int32 // slot → candidate index + 1, or 0 (negative while marked)
	set  []int32 // the slots of cand set by this match, to clear after it
}

// NewApproximate returns an empty index.
func NewApproximate(cfg ApproximateConfig) (*Approximate, error) {
	if cfg.EndpointCapacity < 0 {
		return nil, fmt.Errorf("endpoint capacity: must not be negative, got %d", cfg.EndpointCapacity)
	}
	if cfg.MaxBlocks < 0 {
		return nil, fmt.Errorf("max blocks: must not be negative, got %d", cfg.MaxBlocks)
	}
	if cfg.EndpointCapacity == 0 {
		cfg.EndpointCapacity = DefaultEndpointCapacity
	}
	if cfg.MaxBlocks == 0 {
		cfg.MaxBlocks = DefaultMaxBlocks
	}
	return &Approximate{
		cfg:    cfg,
		free:   none,
		byHash: make(map[BlockHash]int32),
		byName: make(map[string]int32),
		ghead:  none,
		gtail:  none,
	}, nil
}

// Add records that the blocks of chain are now cached on endpoint, the first
// block most recent. capacity is the endpoint's bound in blocks (its KV
// capacity); capacity <= 0 keeps the endpoint's current bound, or the
// configured default for a new endpoint. Only the first capacity blocks of a
// longer chain are recorded. An endpoint whose last block was evicted is
// forgotten, its bound included, so that endpoints that went away cost
// nothing.
func (a *Approximate) Add(endpoint string, capacity int, chain []BlockHash) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.slotFor(endpoint)
	ep := &a.slots[s]
	switch {
	case capacity > 0:
		ep.capacity = capacity
	case ep.capacity == 0:
		ep.capacity = a.cfg.EndpointCapacity
	}
	for ep.count > ep.capacity {
		a.evict(ep.tail)
	}
	n := min(len(chain), ep.capacity, a.cfg.MaxBlocks)
	// By the prefix property the endpoint holds chain[:k] and nothing after.
	// Blocks are processed from the last to the first: chain[k:] are new,
	// chain[:k] are touched, most of them found through their neighbour in
	// the endpoint's list (a chain added before sits there in order).
	k := a.heldPrefix(chain[:n], s)
	for i := n - 1; i >= k; i-- {
		a.insertBounded(chain[i], s)
	}
	hint := none
	for i := k - 1; i >= 0; i-- {
		h := chain[i]
		x := hint
		if x == none || a.nodes[x].slot != s || a.nodes[x].hash != h {
			x = a.find(h, s)
		}
		if x == none { // evicted by the inserts above
			a.insertBounded(h, s)
			hint = none
			continue
		}
		hint = a.nodes[x].eprev
		a.touch(x)
	}
	if ep.count == 0 {
		a.releaseSlot(s)
	}
}

// heldPrefix returns how many leading blocks of chain slot s holds, by
// bisection on the prefix property.
func (a *Approximate) heldPrefix(chain []BlockHash, s int32) int {
	n := len(chain)
	if n == 0 || a.slots[s].count == 0 || a.find(chain[0], s) == none {
		return 0
	}
	if a.find(chain[n-1], s) != none {
		return n
	}
	lo, hi := 0, n-1 // chain[lo] held, chain[hi] not
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if a.find(chain[mid], s) != none {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// insertBounded adds a node for h on slot s, evicting first to respect the
// endpoint's and the index's bounds.
func (a *Approximate) insertBounded(h BlockHash, s int32) {
	if a.slots[s].count >= a.slots[s].capacity {
		a.evict(a.slots[s].tail)
	}
	if a.total >= a.cfg.MaxBlocks {
		// The least recent block of the whole index may be this endpoint's
		// last one; its slot stays, as a block follows.
		if t := a.evict(a.gtail); t != s && a.slots[t].count == 0 {
			a.releaseSlot(t)
		}
	}
	a.insert(h, s)
}

// Clear forgets every block of endpoint, for example when it is removed or
// its engine reports that its cache was cleared.
func (a *Approximate) Clear(endpoint string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.byName[endpoint]
	if !ok {
		return
	}
	for a.slots[s].head != none {
		a.remove(a.slots[s].head)
	}
	a.releaseSlot(s)
}

// Match writes into matched[i] how many leading blocks of chain endpoints[i]
// holds (0 for an unknown endpoint). len(matched) must be len(endpoints).
func (a *Approximate) Match(chain []BlockHash, endpoints []string, matched []int) {
	clear(matched)
	if len(chain) == 0 || len(endpoints) == 0 {
		return
	}
	sc, _ := a.scratch.Get().(*matchScratch)
	if sc == nil {
		sc = &matchScratch{}
	}
	defer a.scratch.Put(sc)

	a.mu.RLock()
	defer a.mu.RUnlock()
	if cap(sc.cand) < len(a.slots) {
		sc.cand = make([]int32, len(a.slots))
	}
	cand := sc.cand[:len(a.slots)]
	set := sc.set[:0]
	for i, name := range endpoints {
		if s, ok := a.byName[name]; ok {
			cand[s] = int32(i) + 1
			set = append(set, s)
		}
	}
	if len(set) > 0 {
		m := matcher{a: a, chain: chain, cand: cand, matched: matched}
		m.run()
	}
	for _, s := range set {
		cand[s] = 0
	}
	sc.set = set
}

// matcher finds, for every candidate endpoint, the length of the prefix of
// chain it holds. holders(k), the candidates holding chain[k], shrinks as k
// grows (the prefix property of Approximate), so the number of holders is a
// step function of k and each step is found by bisection.
type matcher struct {
	a       *Approximate
	chain   []BlockHash
	cand    []int32
	matched []int
}

func (m *matcher) run() {
	last := len(m.chain) - 1
	c0 := m.count(0)
	if c0 == 0 {
		return
	}
	cl := c0
	if last > 0 {
		cl = m.count(last)
	}
	if cl < c0 {
		m.bisect(0, last, c0, cl)
	}
	if cl > 0 {
		m.assign(last, -1, len(m.chain))
	}
}

// count returns how many candidates hold chain[k].
func (m *matcher) count(k int) int {
	n := 0
	for x := m.head(k); x != none; x = m.a.nodes[x].hnext {
		if m.cand[m.a.nodes[x].slot] > 0 {
			n++
		}
	}
	return n
}

func (m *matcher) head(k int) int32 {
	if x, ok := m.a.byHash[m.chain[k]]; ok {
		return x
	}
	return none
}

// bisect handles lo < hi with count(lo) = clo > count(hi) = chi.
func (m *matcher) bisect(lo, hi, clo, chi int) {
	if hi == lo+1 {
		m.assign(lo, hi, lo+1)
		return
	}
	mid := lo + (hi-lo)/2
	cm := m.count(mid)
	if cm < clo {
		m.bisect(lo, mid, clo, cm)
	}
	if cm > chi {
		m.bisect(mid, hi, cm, chi)
	}
}

// assign sets matched to blocks for the candidates that hold chain[k] but not
// chain[next] (next < 0: every holder of chain[k]). Holders of chain[next]
// are marked by negating their candidate entry for the duration.
func (m *matcher) assign(k, next, blocks int) {
	nodes := m.a.nodes
	if next >= 0 {
		for x := m.head(next); x != none; x = nodes[x].hnext {
			if c := &m.cand[nodes[x].slot]; *c > 0 {
				*c = -*c
			}
		}
	}
	for x := m.head(k); x != none; x = nodes[x].hnext {
		if c := m.cand[nodes[x].slot]; c > 0 {
			m.matched[c-1] = blocks
		}
	}
	if next >= 0 {
		for x := m.head(next); x != none; x = nodes[x].hnext {
			if c := &m.cand[nodes[x].slot]; *c < 0 {
				*c = -*c
			}
		}
	}
}

// Stats describes an index's size.
type Stats struct {
	// Blocks is the number of (endpoint, block) entries held.
	Blocks int
	// Endpoints is the number of endpoints holding at least one block.
	Endpoints int
	// Evictions counts entries forgotten to respect a bound.
	Evictions uint64
}

// Stats returns the index's current size.
func (a *Approximate) Stats() Stats {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return Stats{Blocks: a.total, Endpoints: len(a.byName), Evictions: a.evictions}
}

// EndpointBlocks returns how many blocks endpoint holds.
func (a *Approximate) EndpointBlocks(endpoint string) int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if s, ok := a.byName[endpoint]; ok {
		return a.slots[s].count
	}
	return 0
}

func (a *Approximate) slotFor(name string) int32 {
	if s, ok := a.byName[name]; ok {
		return s
	}
	var s int32
	if n := len(a.freeSlots); n > 0 {
		s = a.freeSlots[n-1]
		a.freeSlots = a.freeSlots[:n-1]
	} else {
		s = int32(len(a.slots))
		a.slots = append(a.slots, endpointSlot{})
	}
	a.slots[s] = endpointSlot{name: name, head: none, tail: none}
	a.byName[name] = s
	return s
}

func (a *Approximate) releaseSlot(s int32) {
	delete(a.byName, a.slots[s].name)
	a.slots[s] = endpointSlot{head: none, tail: none}
	a.freeSlots = append(a.freeSlots, s)
}

// find returns the node of hash h on slot s, or none.
func (a *Approximate) find(h BlockHash, s int32) int32 {
	x, ok := a.byHash[h]
	if !ok {
		return none
	}
	for ; x != none; x = a.nodes[x].hnext {
		if a.nodes[x].slot == s {
			return x
		}
	}
	return none
}

func (a *Approximate) insert(h BlockHash, s int32) {
	var x int32
	if a.free != none {
		x = a.free
		a.free = a.nodes[x].enext
	} else {
		x = int32(len(a.nodes))
		a.nodes = append(a.nodes, node{})
	}
	hnext := none
	if head, ok := a.byHash[h]; ok {
		hnext = head
	}
	a.byHash[h] = x
	a.nodes[x] = node{hash: h, slot: s, hnext: hnext, eprev: none, enext: none, gprev: none, gnext: none}
	a.pushFront(x)
	a.slots[s].count++
	a.total++
}

// touch makes node x the most recent of its endpoint and of the index:
// unlinkLRU then pushFront, fused over one local view of the nodes (Add
// touches every held block of a chain; issue 14).
func (a *Approximate) touch(x int32) {
	nodes := a.nodes
	n := &nodes[x]
	ep := &a.slots[n.slot]
	if n.eprev != none { // not already its endpoint's most recent
		if n.enext != none {
			nodes[n.enext].eprev = n.eprev
		} else {
			ep.tail = n.eprev
		}
		nodes[n.eprev].enext = n.enext
		nodes[ep.head].eprev = x
		n.eprev, n.enext = none, ep.head
		ep.head = x
	}
	if n.gprev != none { // not already the index's most recent
		if n.gnext != none {
			nodes[n.gnext].gprev = n.gprev
		} else {
			a.gtail = n.gprev
		}
		nodes[n.gprev].gnext = n.gnext
		nodes[a.ghead].gprev = x
		n.gprev, n.gnext = none, a.ghead
		a.ghead = x
	}
}

func (a *Approximate) pushFront(x int32) {
	n := &a.nodes[x]
	ep := &a.slots[n.slot]
	n.eprev, n.enext = none, ep.head
	if ep.head != none {
		a.nodes[ep.head].eprev = x
	}
	ep.head = x
	if ep.tail == none {
		ep.tail = x
	}
	n.gprev, n.gnext = none, a.ghead
	if a.ghead != none {
		a.nodes[a.ghead].gprev = x
	}
	a.ghead = x
	if a.gtail == none {
		a.gtail = x
	}
}

func (a *Approximate) unlinkLRU(x int32) {
	n := &a.nodes[x]
	ep := &a.slots[n.slot]
	if n.eprev != none {
		a.nodes[n.eprev].enext = n.enext
	} else {
		ep.head = n.enext
	}
	if n.enext != none {
		a.nodes[n.enext].eprev = n.eprev
	} else {
		ep.tail = n.eprev
	}
	if n.gprev != none {
		a.nodes[n.gprev].gnext = n.gnext
	} else {
		a.ghead = n.gnext
	}
	if n.gnext != none {
		a.nodes[n.gnext].gprev = n.gprev
	} else {
		a.gtail = n.gprev
	}
}

// evict removes node x to respect a bound and returns its endpoint's slot.
func (a *Approximate) evict(x int32) int32 {
	s := a.nodes[x].slot
	a.remove(x)
	a.evictions++
	return s
}

// remove forgets node x. Its endpoint's slot stays, even when empty.
func (a *Approximate) remove(x int32) {
	a.unlinkLRU(x)
	n := &a.nodes[x]
	h, s := n.hash, n.slot
	head := a.byHash[h]
	if head == x {
		if n.hnext == none {
			delete(a.byHash, h)
		} else {
			a.byHash[h] = n.hnext
		}
	} else {
		for p := head; p != none; p = a.nodes[p].hnext {
			if a.nodes[p].hnext == x {
				a.nodes[p].hnext = n.hnext
				break
			}
		}
	}
	*n = node{slot: none, hnext: none, eprev: none, enext: a.free, gprev: none, gnext: none}
	a.free = x
	a.total--
	a.slots[s].count--
}
