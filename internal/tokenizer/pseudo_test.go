package tokenizer

import (
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPseudoEncode(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []uint32
	}{
		{"empty", "", []uint32{}},
		{"words", "a b z", []uint32{0, 1, 25}},
		{"two letters", "aa ab", []uint32{26, 27}},
		{"whitespace dropped", "  a\n\tb  ", []uint32{0, 1}},
		{"long word splits into runs of four", "abcdabcdab", []uint32{mustWord(t, "abcd"), mustWord(t, "abcd"), mustWord(t, "ab")}},
		{"punctuation is its own token", "a,b", []uint32{0, pieceID(",", DefaultVocabSize), 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Pseudo{}.Encode(tt.text)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Encode(%q) (-want +got):\n%s", tt.text, diff)
			}
			if n := (Pseudo{}).Count(tt.text); n != len(tt.want) {
				t.Errorf("Count(%q) = %d, want %d", tt.text, n, len(tt.want))
			}
		})
	}
}

func mustWord(t *testing.T, w string) uint32 {
	t.Helper()
	v, ok := wordValue(w)
	if !ok {
		t.Fatalf("%q is not a word", w)
	}
	return uint32(v)
}

func TestPseudoRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ids := make([]uint32, 5000)
	for i := range ids {
		ids[i] = r.Uint32N(DefaultVocabSize)
	}
	ids = append(ids, 0, 25, 26, DefaultVocabSize-1)
	got := Pseudo{}.Encode(Pseudo{}.Decode(ids))
	if diff := cmp.Diff(ids, got); diff != "" {
		t.Fatalf("Encode(Decode(ids)) differs (-want +got):\n%s", diff)
	}
}

func TestPseudoDeterministicForArbitraryText(t *testing.T) {
	text := "Hello, World! Ünïcödé 12345 tokens\nand more."
	a, b := Pseudo{}.Encode(text), Pseudo{}.Encode(text)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Fatal(diff)
	}
	for _, id := range a {
		if id >= DefaultVocabSize {
			t.Fatalf("id %d outside the vocabulary", id)
		}
	}
}

func FuzzPseudo(f *testing.F) {
	f.Add("hello world")
	f.Add("a,b;c\x00\xff")
	f.Add("abcdefghij  \t\r\n12345é😀")
	f.Fuzz(func(t *testing.T, text string) {
		ids := Pseudo{}.Encode(text)
		if len(ids) != (Pseudo{}).Count(text) || len(ids) != (Pseudo{}).CountBytes([]byte(text)) {
			t.Fatalf("Count or CountBytes disagrees with Encode")
		}
		again := Pseudo{}.Encode(Pseudo{}.Decode(ids))
		if diff := cmp.Diff(ids, again); diff != "" {
			t.Fatalf("Decode is not inverted by Encode: %s", diff)
		}
	})
}

func BenchmarkPseudoEncode(b *testing.B) {
	text := Pseudo{}.Decode(make([]uint32, 8000))
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		_ = Pseudo{}.Encode(text)
	}
}
