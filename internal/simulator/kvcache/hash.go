package kvcache

// BlockHash identifies the content of a full block together with everything
// before it: HashBlock chains the parent's hash into the block's own.
type BlockHash uint64

const (
	hashOffset = 14695981039346656037
	hashPrime  = 1099511628211
)

// RootHash returns the parent hash of a sequence's first block. Sequences
// with different extra keys (for example different LoRA adapters) never
// share blocks, as in vLLM where the adapter is part of the block key.
func RootHash(extra string) BlockHash {
	h := uint64(hashOffset)
	for i := 0; i < len(extra); i++ {
		h ^= uint64(extra[i])
		h *= hashPrime
	}
	return BlockHash(mix(h))
}

// HashBlock returns the chain hash of one block: H(parent, tokens).
func HashBlock(parent BlockHash, tokens []uint32) BlockHash {
	h := uint64(parent) ^ hashOffset
	for _, t := range tokens {
		h ^= uint64(t)
		h *= hashPrime
	}
	h ^= uint64(len(tokens))
	return BlockHash(mix(h))
}

// mix is the splitmix64 finaliser; it spreads FNV's weak high bits.
func mix(z uint64) uint64 {
	z ^= z >> 30
	z *= 0xbf58476d1ce4e5b9
	z ^= z >> 27
	z *= 0x94d049bb133111eb
	z ^= z >> 31
	return z
}

// AppendChain appends to dst the chain hashes of every full block of tokens,
// starting from parent, and returns the extended slice.
func AppendChain(dst []BlockHash, parent BlockHash, tokens []uint32, blockSize int) []BlockHash {
	for i := 0; i+blockSize <= len(tokens); i += blockSize {
		parent = HashBlock(parent, tokens[i:i+blockSize])
		dst = append(dst, parent)
	}
	return dst
}
