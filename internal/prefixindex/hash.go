package prefixindex

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// BlockHash identifies a block of a prompt together with all blocks before it.
type BlockHash uint64

// Defaults of Hasher.
const (
	// DefaultBlockTokens is vLLM's default KV block size.
	DefaultBlockTokens = 16
	// DefaultChunkBytes is the byte chunk used without token ids; at about
	// four bytes per token it spans about DefaultBlockTokens tokens.
	DefaultChunkBytes = 64
)

// textDomain separates byte-chunk chains from token chains of the same model,
// so that a chunk of text never collides with a block of token ids by layout.
const textDomain = 0x9e3779b97f4a7c15

// littleEndian reports whether token ids can be hashed in place: their
// memory is then the little-endian layout the hash is defined over.
var littleEndian = func() bool {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], 1)
	return b[0] == 1
}()

// Seed returns the first parent of a token chain for model.
func Seed(model string) BlockHash { return BlockHash(xxhash.Sum64String(model)) }

// TextSeed returns the first parent of a byte-chunk chain for model.
func TextSeed(model string) BlockHash { return Seed(model) ^ textDomain }

// NextTokens returns the hash of a block of token ids that follows parent:
// XXH64 of the ids (4 bytes each, little-endian) with parent as the seed.
// The precise index uses it to rehash the token ids engines publish in KV
// events.
func NextTokens(parent BlockHash, ids []uint32) BlockHash {
	var d xxhash.Digest
	return nextTokens(&d, parent, ids)
}

func nextTokens(d *xxhash.Digest, parent BlockHash, ids []uint32) BlockHash {
	if len(ids) == 0 {
		return BlockHash(sum64Seed(nil, uint64(parent)))
	}
	if littleEndian {
		return BlockHash(sum64Seed(unsafe.Slice((*byte)(unsafe.Pointer(&ids[0])), 4*len(ids)), uint64(parent)))
	}
	d.ResetWithSeed(uint64(parent))
	var buf [64]byte
	for len(ids) > 0 {
		n := min(len(ids), len(buf)/4)
		for j, id := range ids[:n] {
			binary.LittleEndian.PutUint32(buf[4*j:], id)
		}
		_, _ = d.Write(buf[:4*n])
		ids = ids[n:]
	}
	return BlockHash(d.Sum64())
}

// NextBytes returns the hash of a chunk of bytes that follows parent: XXH64
// of the chunk with parent as the seed.
func NextBytes(parent BlockHash, chunk []byte) BlockHash {
	return BlockHash(sum64Seed(chunk, uint64(parent)))
}

// AppendTokenChain appends to dst the chain hashes of the full blocks of
// blockTokens ids in ids, starting from seed. A trailing partial block is not
// hashed.
func AppendTokenChain(dst []BlockHash, seed BlockHash, ids []uint32, blockTokens int) []BlockHash {
	if blockTokens <= 0 {
		return dst
	}
	var d xxhash.Digest
	h := seed
	for i := 0; i+blockTokens <= len(ids); i += blockTokens {
		h = nextTokens(&d, h, ids[i:i+blockTokens])
		dst = append(dst, h)
	}
	return dst
}

// AppendTextChain appends to dst the chain hashes of the full chunks of
// chunkBytes bytes in text, starting from seed. A trailing partial chunk is
// not hashed.
func AppendTextChain(dst []BlockHash, seed BlockHash, text []byte, chunkBytes int) []BlockHash {
	if chunkBytes <= 0 {
		return dst
	}
	h := seed
	for i := 0; i+chunkBytes <= len(text); i += chunkBytes {
		h = BlockHash(sum64Seed(text[i:i+chunkBytes], uint64(h)))
		dst = append(dst, h)
	}
	return dst
}

// Hasher cuts prompts into blocks and hashes them as chains. The zero value
// uses the defaults.
type Hasher struct {
	// BlockTokens is the number of token ids per block; 0 means
	// DefaultBlockTokens.
	BlockTokens int
	// ChunkBytes is the number of prompt bytes per block when the prompt has
	// no token ids; 0 means DefaultChunkBytes.
	ChunkBytes int
}

// Validate reports a negative size.
func (h Hasher) Validate() error {
	if h.BlockTokens < 0 {
		return fmt.Errorf("blockSize: must be positive, got %d", h.BlockTokens)
	}
	if h.ChunkBytes < 0 {
		return fmt.Errorf("chunkBytes: must be positive, got %d", h.ChunkBytes)
	}
	return nil
}

func (h Hasher) blockTokens() int {
	if h.BlockTokens <= 0 {
		return DefaultBlockTokens
	}
	return h.BlockTokens
}

func (h Hasher) chunkBytes() int {
	if h.ChunkBytes <= 0 {
		return DefaultChunkBytes
	}
	return h.ChunkBytes
}

// Sizes returns the block sizes in use: token ids per block and prompt
// bytes per chunk, defaults applied.
func (h Hasher) Sizes() (blockTokens, chunkBytes int) { return h.blockTokens(), h.chunkBytes() }

// Blocks returns how many full blocks the prompt has: blocks of token ids
// when ids is non-empty, else chunks of text.
func (h Hasher) Blocks(text []byte, ids []uint32) int {
	if len(ids) > 0 {
		return len(ids) / h.blockTokens()
	}
	return len(text) / h.chunkBytes()
}

// AppendChain appends the prompt's chain hashes for model to dst: over the
// token ids when there are any, else over the text's bytes.
func (h Hasher) AppendChain(dst []BlockHash, model string, text []byte, ids []uint32) []BlockHash {
	if len(ids) > 0 {
		return AppendTokenChain(dst, Seed(model), ids, h.blockTokens())
	}
	return AppendTextChain(dst, TextSeed(model), text, h.chunkBytes())
}
