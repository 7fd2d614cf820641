package kvevents

import (
	"encoding/binary"
	"encoding/hex"
	"strconv"
)

// Event tags as vLLM writes them: the msgspec class names.
const (
	TagBlockStored      = "BlockStored"
	TagBlockRemoved     = "BlockRemoved"
	TagAllBlocksCleared = "AllBlocksCleared"
)

// MediumGPU is the medium vLLM gives blocks in GPU memory.
const MediumGPU = "GPU"

// BlockHash is an engine's block hash as it travels on the wire. vLLM sends
// an integer (the low 8 bytes of its SHA-256 block hash, or Python's hash()
// in older versions, which may be negative) or, with
// VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0, the raw bytes. The zero value is
// the integer 0. BlockHash is comparable and can key a map.
type BlockHash struct {
	// Int holds an integer hash. A negative integer is kept in two's
	// complement with Negative set.
	Int uint64
	// Negative records that Int was a negative integer on the wire.
	Negative bool
	// Binary records that the engine sent a byte string, held in Bytes.
	Binary bool
	Bytes  string
}

// IntHash returns the hash of an unsigned integer.
func IntHash(v uint64) BlockHash { return BlockHash{Int: v} }

// SignedHash returns the hash of a signed integer.
func SignedHash(v int64) BlockHash { return BlockHash{Int: uint64(v), Negative: v < 0} }

// BytesHash returns the hash of a byte string.
func BytesHash(b []byte) BlockHash { return BlockHash{Bytes: string(b), Binary: true} }

// Uint64 folds the hash into 64 bits the way vLLM converts its byte hashes
// to integers: the last 8 bytes, big-endian (shorter strings are
// zero-extended on the left).
func (h BlockHash) Uint64() uint64 {
	if !h.Binary {
		return h.Int
	}
	var buf [8]byte
	b := h.Bytes
	if len(b) > 8 {
		b = b[len(b)-8:]
	}
	copy(buf[8-len(b):], b)
	return binary.BigEndian.Uint64(buf[:])
}

// String renders the hash for logs.
func (h BlockHash) String() string {
	switch {
	case h.Binary:
		return "0x" + hex.EncodeToString([]byte(h.Bytes))
	case h.Negative:
		return strconv.FormatInt(int64(h.Int), 10)
	default:
		return strconv.FormatUint(h.Int, 10)
	}
}

// Batch is vLLM's EventBatch: a timestamp (seconds since the epoch), the
// events of one engine step, and the data-parallel rank of the publisher.
type Batch struct {
	TS     float64
	Events []Event
	// DataParallelRank is the publisher's DP rank; nil when absent.
	DataParallelRank *int
}

// Event is one KV-cache event: *BlockStored, *BlockRemoved,
// *AllBlocksCleared, or *UnknownEvent for a tag this package does not know.
type Event interface {
	// Tag is the event's type name on the wire.
	Tag() string
}

// BlockStored reports full blocks that entered the engine's prefix cache.
// TokenIDs holds the tokens of all the blocks in order, BlockSize per block.
// Optional fields are nil when the publisher did not send them (older vLLM
// versions send fewer fields).
type BlockStored struct {
	BlockHashes []BlockHash
	// ParentBlockHash is the block preceding the first of BlockHashes, nil
	// when the first block starts the sequence.
	ParentBlockHash *BlockHash
	TokenIDs        []uint32
	BlockSize       int
	LoRAID          *int64
	Medium          *string
	LoRAName        *string
	// GroupIdx is the KV-cache group of hybrid models.
	GroupIdx                 *int64
	KVCacheSpecKind          *string
	KVCacheSpecSlidingWindow *int64
}

// Tag implements Event.
func (*BlockStored) Tag() string { return TagBlockStored }

// BlockRemoved reports blocks evicted from the engine's prefix cache.
type BlockRemoved struct {
	BlockHashes []BlockHash
	Medium      *string
	GroupIdx    *int64
}

// Tag implements Event.
func (*BlockRemoved) Tag() string { return TagBlockRemoved }

// AllBlocksCleared reports that the engine dropped its whole prefix cache.
type AllBlocksCleared struct{}

// Tag implements Event.
func (*AllBlocksCleared) Tag() string { return TagAllBlocksCleared }

// UnknownEvent is an event whose tag this package does not know; decoders
// keep it so that callers can count it, and otherwise skip it.
type UnknownEvent struct {
	Type string
}

// Tag implements Event.
func (e *UnknownEvent) Tag() string { return e.Type }

// Interface guards.
var (
	_ Event = (*BlockStored)(nil)
	_ Event = (*BlockRemoved)(nil)
	_ Event = (*AllBlocksCleared)(nil)
	_ Event = (*UnknownEvent)(nil)
)

// Uint64Hashes wraps integer block hashes, as an engine that hashes blocks
// into 64 bits (the simulator) publishes them.
func Uint64Hashes(hs []uint64) []BlockHash {
	out := make([]BlockHash, len(hs))
	for i, h := range hs {
		out[i] = IntHash(h)
	}
	return out
}

// NewBlockStored returns the event for full GPU blocks just cached: hashes in
// chain order, parent the block before the first (nil for the first block of
// a sequence), tokens the blocks' tokens, blockSize per block.
func NewBlockStored(hashes []uint64, parent *uint64, tokens []uint32, blockSize int) *BlockStored {
	gpu := MediumGPU
	ev := &BlockStored{BlockHashes: Uint64Hashes(hashes), TokenIDs: tokens, BlockSize: blockSize, Medium: &gpu}
	if parent != nil {
		p := IntHash(*parent)
		ev.ParentBlockHash = &p
	}
	return ev
}

// NewBlockRemoved returns the event for GPU blocks just evicted.
func NewBlockRemoved(hashes []uint64) *BlockRemoved {
	gpu := MediumGPU
	return &BlockRemoved{BlockHashes: Uint64Hashes(hashes), Medium: &gpu}
}
