package prefixindex

import (
	"encoding/binary"
	"fmt"

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

// stackBlockBytes is the largest block (parent hash included) hashed from a
// buffer on the stack; larger blocks use a heap buffer per call.
const stackBlockBytes = 8 + 4*256

// Seed returns the first parent of a token chain for model.
func Seed(model string) BlockHash { return BlockHash(xxhash.Sum64String(model)) }

// TextSeed returns the first parent of a byte-chunk chain for model.
func TextSeed(model string) BlockHash { return Seed(model) ^ textDomain }

// NextTokens returns the hash of a block of token ids that follows parent:
// xxhash64 over parent (8 bytes, little-endian) and the ids (4 bytes each,
// little-endian). The precise index uses it to rehash the token ids that
// engines publish in KV events.
func NextTokens(parent BlockHash, ids []uint32) BlockHash {
	var stack [stackBlockBytes]byte
	buf := stack[:0]
	if n := 8 + 4*len(ids); n > len(stack) {
		buf = make([]byte, 0, n)
	}
	return nextTokens(buf, parent, ids)
}

// nextTokens hashes parent and ids laid out in buf, whose capacity must hold
// 8+4*len(ids) bytes.
func nextTokens(buf []byte, parent BlockHash, ids []uint32) BlockHash {
	n := 8 + 4*len(ids)
	buf = buf[:n]
	binary.LittleEndian.PutUint64(buf, uint64(parent))
	out := buf[8:n]
	for j, id := range ids {
		binary.LittleEndian.PutUint32(out[4*j:], id)
	}
	return BlockHash(xxhash.Sum64(buf))
}

// NextBytes returns the hash of a chunk of bytes that follows parent:
// xxhash64 over parent (8 bytes, little-endian) and the chunk.
func NextBytes(parent BlockHash, chunk []byte) BlockHash {
	var stack [stackBlockBytes]byte
	buf := stack[:0]
	if n := 8 + len(chunk); n > len(stack) {
		buf = make([]byte, 0, n)
	}
	return nextBytes(buf, parent, chunk)
}

func nextBytes(buf []byte, parent BlockHash, chunk []byte) BlockHash {
	buf = binary.LittleEndian.AppendUint64(buf[:0], uint64(parent))
	buf = append(buf, chunk...)
	return BlockHash(xxhash.Sum64(buf))
}

// AppendTokenChain appends to dst the chain hashes of the full blocks of
// blockTokens ids in ids, starting from seed. A trailing partial block is not
// hashed.
func AppendTokenChain(dst []BlockHash, seed BlockHash, ids []uint32, blockTokens int) []BlockHash {
	if blockTokens <= 0 {
		return dst
	}
	var stack [stackBlockBytes]byte
	buf := stack[:0]
	if n := 8 + 4*blockTokens; n > len(stack) {
		buf = make([]byte, 0, n)
	}
	h := seed
	for i := 0; i+blockTokens <= len(ids); i += blockTokens {
		h = nextTokens(buf, h, ids[i:i+blockTokens])
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
	var stack [stackBlockBytes]byte
	buf := stack[:0]
	if n := 8 + chunkBytes; n > len(stack) {
		buf = make([]byte, 0, n)
	}
	h := seed
	for i := 0; i+chunkBytes <= len(text); i += chunkBytes {
		h = nextBytes(buf, h, text[i:i+chunkBytes])
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
