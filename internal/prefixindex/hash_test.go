package prefixindex

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func seq(from, n int) []uint32 {
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = uint32(from + i)
	}
	return ids
}

func cat(parts ...[]uint32) []uint32 {
	var out []uint32
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// commonPrefix returns how many leading hashes a and b share.
func commonPrefix(a, b []BlockHash) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func TestTokenChainSharesExactlyTheCommonPrefix(t *testing.T) {
	base := seq(1, 64) // four blocks of 16
	tests := []struct {
		name       string
		a, b       []uint32
		modelA     string
		modelB     string
		wantLenA   int
		wantLenB   int
		wantShared int
	}{
		{"identical", base, base, "m", "m", 4, 4, 4},
		{"extension", base, cat(base, seq(500, 40)), "m", "m", 4, 6, 4},
		{"partial block ignored", cat(base, seq(900, 15)), base, "m", "m", 4, 4, 4},
		{"diverge in block 2", base, cat(seq(1, 40), []uint32{7}, seq(42, 23)), "m", "m", 4, 4, 2},
		{"diverge in first token", base, cat([]uint32{0}, seq(2, 63)), "m", "m", 4, 4, 0},
		{"other model", base, base, "m", "n", 4, 4, 0},
		{"shorter than a block", seq(1, 15), seq(1, 15), "m", "m", 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Hasher
			ca := h.AppendChain(nil, tt.modelA, nil, tt.a)
			cb := h.AppendChain(nil, tt.modelB, nil, tt.b)
			if len(ca) != tt.wantLenA || len(cb) != tt.wantLenB {
				t.Fatalf("chain lengths %d, %d; want %d, %d", len(ca), len(cb), tt.wantLenA, tt.wantLenB)
			}
			if got := commonPrefix(ca, cb); got != tt.wantShared {
				t.Errorf("shared blocks = %d, want %d", got, tt.wantShared)
			}
			if got := h.Blocks(nil, tt.a); got != tt.wantLenA {
				t.Errorf("Blocks = %d, want %d", got, tt.wantLenA)
			}
		})
	}
}

// renderChat renders a conversation the way the router does for chat
// requests: every message in order, so a later turn extends an earlier one.
func renderChat(msgs ...string) []byte {
	var b strings.Builder
	for i, m := range msgs {
		role := "user"
		if i == 0 {
			role = "system"
		} else if i%2 == 0 {
			role = "assistant"
		}
		fmt.Fprintf(&b, "<|%s|>\n%s\n", role, m)
	}
	return []byte(b.String())
}

func TestTextChainMatchesMultiTurnChat(t *testing.T) {
	system := strings.Repeat("You are a careful assistant who answers in full sentences. ", 40)
	turn1 := renderChat(system, "What is the capital of France?")
	turn2 := renderChat(system, "What is the capital of France?", "Paris is the capital of France.", "And of Italy?")
	other := renderChat(system, "How tall is Mont Blanc?")
	var h Hasher
	c1 := h.AppendChain(nil, "m", turn1, nil)
	c2 := h.AppendChain(nil, "m", turn2, nil)
	c3 := h.AppendChain(nil, "m", other, nil)
	if got, want := len(c1), len(turn1)/DefaultChunkBytes; got != want {
		t.Fatalf("turn 1 has %d blocks, want %d (full chunks only)", got, want)
	}
	if got := commonPrefix(c1, c2); got != len(c1) {
		t.Errorf("turn 2 shares %d of turn 1's %d blocks, want all", got, len(c1))
	}
	// Another question after the same system prompt shares the system
	// prompt's full chunks and no more.
	sysBlocks := len(renderChat(system)) / DefaultChunkBytes
	if got := commonPrefix(c1, c3); got < sysBlocks-1 || got > sysBlocks {
		t.Errorf("other conversation shares %d blocks, want about %d (the system prompt)", got, sysBlocks)
	}
}

func TestTextAndTokenChainsDoNotCollide(t *testing.T) {
	ids := seq(0x61616161, 16) // 64 bytes little-endian...
	text := make([]byte, 0, 64)
	for _, id := range ids {
		text = append(text, byte(id), byte(id>>8), byte(id>>16), byte(id>>24))
	}
	var h Hasher
	tok := h.AppendChain(nil, "m", nil, ids)
	txt := h.AppendChain(nil, "m", text, nil)
	if len(tok) != 1 || len(txt) != 1 || tok[0] == txt[0] {
		t.Fatalf("token chain %v and text chain %v of the same bytes must both have one block and differ", tok, txt)
	}
}

func TestNextAgreesWithChains(t *testing.T) {
	for _, bs := range []int{1, 16, 256, 300} {
		t.Run(fmt.Sprint("block", bs), func(t *testing.T) {
			n := 3*bs + bs - 1 // three full blocks and a partial one
			ids := seq(7, n)
			got := AppendTokenChain(nil, Seed("m"), ids, bs)
			want := make([]BlockHash, 0, 3)
			h := Seed("m")
			for i := 0; i < 3; i++ {
				h = NextTokens(h, ids[i*bs:(i+1)*bs])
				want = append(want, h)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("token chain (-NextTokens +AppendTokenChain):\n%s", diff)
			}
			text := []byte(strings.Repeat("abcdefghij", n/10+1))[:n]
			gotT := AppendTextChain(nil, TextSeed("m"), text, bs)
			wantT := make([]BlockHash, 0, 3)
			h = TextSeed("m")
			for i := 0; i < 3; i++ {
				h = NextBytes(h, text[i*bs:(i+1)*bs])
				wantT = append(wantT, h)
			}
			if diff := cmp.Diff(wantT, gotT); diff != "" {
				t.Errorf("text chain (-NextBytes +AppendTextChain):\n%s", diff)
			}
		})
	}
}

// TestChainGolden pins the hash function: the precise index and anything
// that compares hashes across versions rely on it not changing silently.
func TestChainGolden(t *testing.T) {
	var b strings.Builder
	h := Hasher{BlockTokens: 4, ChunkBytes: 8}
	for _, model := range []string{"llama-3-8b", "sql-lora"} {
		fmt.Fprintf(&b, "model %s tokens 1..12 block 4: %x\n", model, h.AppendChain(nil, model, nil, seq(1, 12)))
		fmt.Fprintf(&b, "model %s text %q chunk 8: %x\n", model, "The quick brown fox jumps", h.AppendChain(nil, model, []byte("The quick brown fox jumps"), nil))
	}
	got := b.String()
	path := filepath.Join("testdata", "chain.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("chain hashes changed (-golden +got):\n%s", diff)
	}
}

func TestHasherValidate(t *testing.T) {
	tests := []struct {
		h    Hasher
		want string
	}{
		{Hasher{}, ""},
		{Hasher{BlockTokens: -1}, "blockSize"},
		{Hasher{ChunkBytes: -1}, "chunkBytes"},
	}
	for _, tt := range tests {
		err := tt.h.Validate()
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Validate(%+v) = %v, want error naming %q", tt.h, err, tt.want)
		}
	}
}

func TestChainHashingDoesNotAllocate(t *testing.T) {
	ids := seq(1, 8000)
	text := []byte(strings.Repeat("lorem ipsum dolor sit amet ", 1200))
	dst := make([]BlockHash, 0, 2000)
	var h Hasher
	if n := testing.AllocsPerRun(20, func() { dst = h.AppendChain(dst[:0], "llama-3-8b", nil, ids) }); n != 0 {
		t.Errorf("token chain: %v allocations per run, want 0", n)
	}
	if n := testing.AllocsPerRun(20, func() { dst = h.AppendChain(dst[:0], "llama-3-8b", text, nil) }); n != 0 {
		t.Errorf("text chain: %v allocations per run, want 0", n)
	}
}

func BenchmarkChain(b *testing.B) {
	ids := seq(1, 8000)
	text := []byte(strings.Repeat("lorem ipsum dolor sit amet ", 1186))[:32000]
	var h Hasher
	b.Run("tokens=8000", func(b *testing.B) {
		b.ReportAllocs()
		dst := make([]BlockHash, 0, 500)
		b.SetBytes(int64(4 * len(ids)))
		runtime.GC() // collect setup garbage outside the measurement
		cpu := processCPU()
		for b.Loop() {
			dst = h.AppendChain(dst[:0], "llama-3-8b", nil, ids)
		}
		b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	})
	b.Run("text=32000B", func(b *testing.B) {
		b.ReportAllocs()
		dst := make([]BlockHash, 0, 500)
		b.SetBytes(int64(len(text)))
		runtime.GC() // collect setup garbage outside the measurement
		cpu := processCPU()
		for b.Loop() {
			dst = h.AppendChain(dst[:0], "llama-3-8b", text, nil)
		}
		b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	})
}

// TestNextTokensFitsTheRehasher checks what the KV-event rehasher relies
// on: NextTokens chains like AppendTokenChain from Seed, and allocates
// nothing per block.
func TestNextTokensFitsTheRehasher(t *testing.T) {
	hash := func(parent uint64, tokens []uint32) uint64 { return uint64(NextTokens(BlockHash(parent), tokens)) }
	ids := seq(3, 64)
	p := uint64(Seed("llama-3-8b"))
	var got []BlockHash
	for i := 0; i < 4; i++ {
		p = hash(p, ids[16*i:16*(i+1)])
		got = append(got, BlockHash(p))
	}
	if diff := cmp.Diff(AppendTokenChain(nil, Seed("llama-3-8b"), ids, 16), got); diff != "" {
		t.Errorf("chained NextTokens vs AppendTokenChain (-+):\n%s", diff)
	}
	if n := testing.AllocsPerRun(100, func() { p = hash(p, ids[:16]) }); n != 0 {
		t.Errorf("NextTokens: %v allocations per block, want 0", n)
	}
}
