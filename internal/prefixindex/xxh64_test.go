package prefixindex

import (
	"math/rand/v2"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// TestSum64SeedMatchesXXHash holds the one-shot XXH64 equal to the
// library's seeded Digest on random inputs of every length up to 300 bytes
// (every tail shape, one to nine stripes) and random seeds.
func TestSum64SeedMatchesXXHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 4))
	buf := make([]byte, 300)
	var d xxhash.Digest
	for n := 0; n <= len(buf); n++ {
		for range 20 {
			for i := range buf[:n] {
				buf[i] = byte(rng.Uint32())
			}
			seed := rng.Uint64()
			d.ResetWithSeed(seed)
			_, _ = d.Write(buf[:n])
			if got, want := sum64Seed(buf[:n], seed), d.Sum64(); got != want {
				t.Fatalf("len %d seed %#x: sum64Seed = %#x, xxhash = %#x", n, seed, got, want)
			}
		}
	}
}

// TestChainsMatchXXHashDigest holds the token and text chains equal to
// chains built block by block with the library's Digest.
func TestChainsMatchXXHashDigest(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 5))
	for range 50 {
		ids := make([]uint32, rng.IntN(400))
		for i := range ids {
			ids[i] = rng.Uint32()
		}
		text := make([]byte, rng.IntN(1500))
		for i := range text {
			text[i] = byte(rng.Uint32())
		}
		block, chunk := 1+rng.IntN(40), 1+rng.IntN(130)
		seed := BlockHash(rng.Uint64())

		var want []BlockHash
		var d xxhash.Digest
		h := seed
		for i := 0; i+block <= len(ids); i += block {
			d.ResetWithSeed(uint64(h))
			for _, id := range ids[i : i+block] {
				_, _ = d.Write([]byte{byte(id), byte(id >> 8), byte(id >> 16), byte(id >> 24)})
			}
			h = BlockHash(d.Sum64())
			want = append(want, h)
		}
		got := AppendTokenChain(nil, seed, ids, block)
		if len(got) != len(want) {
			t.Fatalf("token chain: %d hashes, want %d", len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("token chain block %d (size %d): %#x, want %#x", i, block, got[i], want[i])
			}
		}

		want = want[:0]
		h = seed
		for i := 0; i+chunk <= len(text); i += chunk {
			d.ResetWithSeed(uint64(h))
			_, _ = d.Write(text[i : i+chunk])
			h = BlockHash(d.Sum64())
			want = append(want, h)
		}
		got = AppendTextChain(nil, seed, text, chunk)
		if len(got) != len(want) {
			t.Fatalf("text chain: %d hashes, want %d", len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("text chain block %d (size %d): %#x, want %#x", i, chunk, got[i], want[i])
			}
		}
	}
}

// BenchmarkSum64Seed compares a 64-byte block (16 token ids) hashed by the
// one-shot XXH64 and by the library's seeded Digest.
func BenchmarkSum64Seed(b *testing.B) {
	block := make([]byte, 64)
	for i := range block {
		block[i] = byte(i * 7)
	}
	b.Run("impl=oneshot", func(b *testing.B) {
		h := uint64(1)
		for b.Loop() {
			h = sum64Seed(block, h)
		}
	})
	b.Run("impl=digest", func(b *testing.B) {
		var d xxhash.Digest
		h := uint64(1)
		for b.Loop() {
			d.ResetWithSeed(h)
			_, _ = d.Write(block)
			h = d.Sum64()
		}
	})
}
