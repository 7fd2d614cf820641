package kvcache

import (
	"errors"
	"fmt"
)

// ErrNoFreeBlocks is returned when an allocation asks for more blocks than
// the pool has free (including evictable cached blocks).
var ErrNoFreeBlocks = errors.New("no free KV blocks")

// BlockID indexes a block of the pool, from 0 to NumBlocks()-1.
type BlockID int32

// StoredBlock describes a block that has just entered the prefix cache.
type StoredBlock struct {
	// Hash is the block's chain hash.
	Hash BlockHash
	// Parent is the previous block's hash; HasParent is false for the first
	// block of a sequence (Parent is then the sequence's root hash).
	Parent    BlockHash
	HasParent bool
	// Tokens are the block's token ids. The slice is only valid during the
	// call: copy it to keep it.
	Tokens []uint32
	// Extra is the sequence's extra key (its LoRA adapter), "" for none.
	Extra string
}

// Hooks observe the prefix cache. Every method is called synchronously with
// the pool's owner's lock held, so an implementation must be quick and must
// not call back into the engine; a publisher typically appends to a buffer
// and flushes it elsewhere.
type Hooks interface {
	// BlockStored is called when a full block becomes reusable by hash.
	BlockStored(b StoredBlock)
	// BlockRemoved is called when a cached block is evicted.
	BlockRemoved(hash BlockHash)
	// AllBlocksCleared is called when the whole prefix cache is dropped.
	AllBlocksCleared()
}

// NopHooks ignores every event.
type NopHooks struct{}

func (NopHooks) BlockStored(StoredBlock) {}
func (NopHooks) BlockRemoved(BlockHash)  {}
func (NopHooks) AllBlocksCleared()       {}

const none = -1

type blockMeta struct {
	hash   BlockHash
	cached bool  // registered in Pool.cached under hash
	ref    int32 // number of sequences using the block
	// prev and next link the free queue; inFree tells membership.
	prev, next int32
	inFree     bool
}

// Pool is a fixed set of KV blocks with prefix caching. It is not safe for
// concurrent use: its owner (the engine) serialises calls.
type Pool struct {
	blockSize int
	blocks    []blockMeta
	// free queue: head is evicted/allocated first, tail was freed last.
	head, tail int32
	numFree    int
	cached     map[BlockHash]BlockID
	hooks      Hooks
}

// New returns a pool of numBlocks blocks of blockSize tokens. hooks may be
// nil.
func New(numBlocks, blockSize int, hooks Hooks) (*Pool, error) {
	if numBlocks <= 0 {
		return nil, fmt.Errorf("kvcache: number of blocks must be positive, got %d", numBlocks)
	}
	if blockSize <= 0 {
		return nil, fmt.Errorf("kvcache: block size must be positive, got %d", blockSize)
	}
	if hooks == nil {
		hooks = NopHooks{}
	}
	p := &Pool{
		blockSize: blockSize,
		blocks:    make([]blockMeta, numBlocks),
		head:      none,
		tail:      none,
		cached:    make(map[BlockHash]BlockID, numBlocks),
		hooks:     hooks,
	}
	for i := range p.blocks {
		p.blocks[i].prev, p.blocks[i].next = none, none
		p.pushTail(int32(i))
	}
	return p, nil
}

// BlockSize is the number of tokens per block.
func (p *Pool) BlockSize() int { return p.blockSize }

// NumBlocks is the pool's capacity in blocks.
func (p *Pool) NumBlocks() int { return len(p.blocks) }

// NumFree is the number of blocks that an allocation can take: unused blocks
// and cached blocks that no sequence holds.
func (p *Pool) NumFree() int { return p.numFree }

// NumCached is the number of blocks reusable by hash, held or not.
func (p *Pool) NumCached() int { return len(p.cached) }

// Usage is the fraction of blocks held by sequences, 0 to 1, as vLLM's
// kv_cache_usage_perc.
func (p *Pool) Usage() float64 {
	return 1 - float64(p.numFree)/float64(len(p.blocks))
}

// RefCount returns the number of sequences holding block id.
func (p *Pool) RefCount(id BlockID) int { return int(p.blocks[id].ref) }

// Lookup returns the cached block with hash h.
func (p *Pool) Lookup(h BlockHash) (BlockID, bool) {
	id, ok := p.cached[h]
	return id, ok
}

// MatchPrefix returns how many leading hashes are cached, stopping at the
// first miss. It changes nothing.
func (p *Pool) MatchPrefix(hashes []BlockHash) int {
	for i, h := range hashes {
		if _, ok := p.cached[h]; !ok {
			return i
		}
	}
	return len(hashes)
}

// Touch takes a reference on block id, taking it out of the free queue if it
// was there. Use it on cached blocks that a new sequence reuses.
func (p *Pool) Touch(id BlockID) {
	b := &p.blocks[id]
	if b.inFree {
		p.unlink(int32(id))
	}
	b.ref++
}

// Allocate appends n fresh blocks to dst, each with one reference. A cached
// block taken from the free queue is evicted from the cache first
// (BlockRemoved). With fewer than n free blocks it allocates none and returns
// ErrNoFreeBlocks.
func (p *Pool) Allocate(n int, dst []BlockID) ([]BlockID, error) {
	if n > p.numFree {
		return dst, ErrNoFreeBlocks
	}
	for range n {
		i := p.head
		p.unlink(i)
		b := &p.blocks[i]
		if b.cached {
			delete(p.cached, b.hash)
			b.cached = false
			p.hooks.BlockRemoved(b.hash)
		}
		b.ref = 1
		dst = append(dst, BlockID(i))
	}
	return dst, nil
}

// Free drops one reference on each block. Blocks whose count reaches zero go
// to the tail of the free queue in reverse order, so that a sequence's last
// blocks are evicted before its first ones (its prefix is the likeliest to be
// reused). Cached blocks stay reusable by hash until evicted.
func (p *Pool) Free(ids []BlockID) {
	for k := len(ids) - 1; k >= 0; k-- {
		i := int32(ids[k])
		b := &p.blocks[i]
		if b.ref <= 0 {
			panic(fmt.Sprintf("kvcache: double free of block %d", i))
		}
		b.ref--
		if b.ref == 0 {
			p.pushTail(i)
		}
	}
}

// Store registers a full, held block under its chain hash so that later
// sequences can reuse it. If another block already holds that hash the pool
// keeps the first one and Store reports false. BlockStored is called for a
// newly stored block.
func (p *Pool) Store(id BlockID, b StoredBlock) bool {
	m := &p.blocks[id]
	if m.cached {
		return m.hash == b.Hash
	}
	if _, dup := p.cached[b.Hash]; dup {
		return false
	}
	m.hash = b.Hash
	m.cached = true
	p.cached[b.Hash] = id
	p.hooks.BlockStored(b)
	return true
}

// Reset drops every cached hash (held blocks stay allocated) and calls
// AllBlocksCleared.
func (p *Pool) Reset() {
	for h, id := range p.cached {
		p.blocks[id].cached = false
		delete(p.cached, h)
	}
	p.hooks.AllBlocksCleared()
}

func (p *Pool) pushTail(i int32) {
	b := &p.blocks[i]
	b.prev, b.next, b.inFree = p.tail, none, true
	if p.tail == none {
		p.head = i
	} else {
		p.blocks[p.tail].next = i
	}
	p.tail = i
	p.numFree++
}

func (p *Pool) unlink(i int32) {
	b := &p.blocks[i]
	if b.prev == none {
		p.head = b.next
	} else {
		p.blocks[b.prev].next = b.next
	}
	if b.next == none {
		p.tail = b.prev
	} else {
		p.blocks[b.next].prev = b.prev
	}
	b.prev, b.next, b.inFree = none, none, false
	p.numFree--
}

var _ Hooks = NopHooks{}
