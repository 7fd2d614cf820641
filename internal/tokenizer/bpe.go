package tokenizer

import (
	"math"
	"slices"
	"strings"

	"golang.org/x/text/unicode/norm"
)

// BPE is a byte-level byte-pair-encoding tokenizer of the kind GPT-4
// (cl100k_base), GPT-4o (o200k_base), Llama 3 and Qwen2 use: a pre-tokenizer
// cuts text into pieces, and each piece's bytes are merged pairwise, lowest
// rank first, into tokens. Build one with LoadTiktoken, LoadHF or Load; it
// is safe for concurrent use.
type BPE struct {
	name string
	// ranks maps a token's bytes to its id. In tiktoken files the id is the
	// merge rank; Hugging Face models use it for the whole-piece shortcut.
	ranks map[string]uint32
	// pairs maps (left id, right id) to their merge. For a tiktoken file it
	// holds every pair of tokens whose concatenation is a token, with that
	// token's rank; for Hugging Face, the merges list.
	pairs *pairTable
	// wholePiece lets a piece that is itself a token skip merging (always
	// for tiktoken; Hugging Face's ignore_merges).
	wholePiece bool
	words      *wordTable // ranks, for the whole-piece lookup
	byteID     [256]uint32
	// tokens maps an id to its bytes; "" for ids without a token.
	tokens []string

	specials     map[string]uint32
	specialFirst [256][]string // specials by first byte, longest first
	nfc          bool

	split splitter
	regex *regexSplitter
}

type merge struct{ rank, id uint32 }

// noRank marks a pair that does not merge.
const noRank = math.MaxUint32

// Name identifies the vocabulary (a file's base name).
func (t *BPE) Name() string { return t.name }

// VocabSize returns one more than the largest token id.
func (t *BPE) VocabSize() int { return len(t.tokens) }

// Special returns the id of a special token such as "<|eot_id|>".
func (t *BPE) Special(s string) (uint32, bool) {
	id, ok := t.specials[s]
	return id, ok
}

// Encode returns the token ids of text. Special tokens written in the text
// (for instance "<|begin_of_text|>" in a rendered chat template) become
// their ids, as Hugging Face tokenizers treat added tokens.
func (t *BPE) Encode(text string) []uint32 {
	return t.AppendEncode(make([]uint32, 0, len(text)/3+1), text)
}

// Count returns len(Encode(text)).
func (t *BPE) Count(text string) int {
	if t.nfc || len(t.specials) > 0 || t.regex != nil {
		return len(t.Encode(text))
	}
	buf := make([]uint32, 0, 64)
	n := 0
	for i := 0; i < len(text); {
		end := t.split.piece(text, i)
		buf = t.encodePiece(buf[:0], text[i:end])
		n += len(buf)
		i = end
	}
	return n
}

// AppendEncode appends the token ids of text to dst.
func (t *BPE) AppendEncode(dst []uint32, text string) []uint32 {
	if t.nfc && !norm.NFC.IsNormalString(text) {
		text = norm.NFC.String(text)
	}
	if len(t.specials) == 0 {
		return t.encodeOrdinary(dst, text)
	}
	start := 0
	for i := 0; i < len(text); i++ {
		cands := t.specialFirst[text[i]]
		if cands == nil {
			continue
		}
		for _, s := range cands {
			if strings.HasPrefix(text[i:], s) {
				dst = t.encodeOrdinary(dst, text[start:i])
				dst = append(dst, t.specials[s])
				i += len(s) - 1
				start = i + 1
				break
			}
		}
	}
	return t.encodeOrdinary(dst, text[start:])
}

func (t *BPE) encodeOrdinary(dst []uint32, text string) []uint32 {
	if t.regex != nil {
		start := 0
		for _, end := range t.regex.ends(text) {
			dst = t.encodePiece(dst, text[start:end])
			start = end
		}
		return dst
	}
	for i := 0; i < len(text); {
		end := t.split.piece(text, i)
		dst = t.encodePiece(dst, text[i:end])
		i = end
	}
	return dst
}

// smallPiece is the length up to which merging scans linearly, on the
// stack; longer pieces (long words, runs of symbols) use a heap, so that a
// pathological input costs O(n log n) rather than O(n²).
const smallPiece = 64

func (t *BPE) encodePiece(dst []uint32, piece string) []uint32 {
	if len(piece) == 1 {
		return append(dst, t.byteID[piece[0]])
	}
	if t.wholePiece {
		if id, ok := t.words.get(piece); ok {
			return append(dst, id)
		}
	}
	if len(piece) <= smallPiece {
		return t.mergeSmall(dst, piece)
	}
	return t.mergeHeap(dst, piece)
}

// rank returns the merge of two adjacent parts.
func (t *BPE) rank(a, b uint32) merge {
	if m, ok := t.pairs.get(pairKey(a, b)); ok {
		return m
	}
	return merge{noRank, 0}
}

// mergeSmall merges a short piece with linear scans for the lowest rank,
// the leftmost among equals, as tiktoken does.
func (t *BPE) mergeSmall(dst []uint32, piece string) []uint32 {
	var (
		idBuf [smallPiece]uint32
		mBuf  [smallPiece]merge
	)
	n := len(piece)
	ids := idBuf[:n]
	ms := mBuf[:n] // ms[i] merges parts i and i+1
	for i := 0; i < n; i++ {
		ids[i] = t.byteID[piece[i]]
	}
	for i := 0; i < n-1; i++ {
		ms[i] = t.rank(ids[i], ids[i+1])
	}
	ms[n-1] = merge{noRank, 0}
	parts := n
	for parts > 1 {
		best, bi := uint32(noRank), -1
		for i := 0; i < parts-1; i++ {
			if ms[i].rank < best {
				best, bi = ms[i].rank, i
			}
		}
		if bi < 0 {
			break
		}
		ids[bi] = ms[bi].id
		// Drop part bi+1.
		copy(ids[bi+1:parts-1], ids[bi+2:parts])
		copy(ms[bi+1:parts-1], ms[bi+2:parts])
		parts--
		if bi+1 < parts {
			ms[bi] = t.rank(ids[bi], ids[bi+1])
		} else {
			ms[bi] = merge{noRank, 0}
		}
		if bi > 0 {
			ms[bi-1] = t.rank(ids[bi-1], ids[bi])
		}
	}
	return append(dst, ids[:parts]...)
}

// candidate is a possible merge of part left with the part after it, valid
// while both parts keep the versions they had when it was made.
type candidate struct {
	rank, id   uint32
	left       int32
	right      int32
	lver, rver uint32
}

func (c candidate) less(d candidate) bool {
	return c.rank < d.rank || (c.rank == d.rank && c.left < d.left)
}

// mergeHeap merges a long piece: parts form a linked list, candidate merges
// sit in a min-heap ordered by rank then position, and stale candidates are
// skipped when popped.
func (t *BPE) mergeHeap(dst []uint32, piece string) []uint32 {
	n := len(piece)
	next := make([]int32, n) // -1 ends the list
	prev := make([]int32, n)
	ids := make([]uint32, n)
	ver := make([]uint32, n)
	dead := make([]bool, n)
	for i := range n {
		next[i], prev[i] = int32(i+1), int32(i-1)
		ids[i] = t.byteID[piece[i]]
	}
	next[n-1] = -1
	h := make([]candidate, 0, n)
	push := func(l int32) {
		r := next[l]
		if l < 0 || r < 0 {
			return
		}
		m := t.rank(ids[l], ids[r])
		if m.rank == noRank {
			return
		}
		h = append(h, candidate{m.rank, m.id, l, r, ver[l], ver[r]})
		// sift up
		for i := len(h) - 1; i > 0; {
			p := (i - 1) / 2
			if !h[i].less(h[p]) {
				break
			}
			h[i], h[p] = h[p], h[i]
			i = p
		}
	}
	pop := func() candidate {
		c := h[0]
		last := len(h) - 1
		h[0] = h[last]
		h = h[:last]
		for i := 0; ; {
			l, r, m := 2*i+1, 2*i+2, i
			if l < len(h) && h[l].less(h[m]) {
				m = l
			}
			if r < len(h) && h[r].less(h[m]) {
				m = r
			}
			if m == i {
				break
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
		return c
	}
	for i := range int32(n - 1) {
		push(i)
	}
	for len(h) > 0 {
		c := pop()
		l, r := c.left, c.right
		if dead[l] || dead[r] || next[l] != r || ver[l] != c.lver || ver[r] != c.rver {
			continue
		}
		ids[l] = c.id
		ver[l]++
		dead[r] = true
		next[l] = next[r]
		if next[r] >= 0 {
			prev[next[r]] = l
		}
		push(l)
		if prev[l] >= 0 {
			push(prev[l])
		}
	}
	for i := int32(0); i >= 0; i = next[i] {
		dst = append(dst, ids[i])
	}
	return dst
}

// Decode returns the text of ids. Ids outside the vocabulary are skipped.
// Decode(Encode(s)) == s for every s (after NFC normalisation, for models
// that normalise).
func (t *BPE) Decode(ids []uint32) string {
	var b strings.Builder
	for _, id := range ids {
		if int(id) < len(t.tokens) {
			b.WriteString(t.tokens[id])
		}
	}
	return b.String()
}

// setSpecials installs special tokens.
func (t *BPE) setSpecials(specials map[string]uint32) {
	if len(specials) == 0 {
		return
	}
	t.specials = specials
	for s, id := range specials {
		if s == "" {
			continue
		}
		t.specialFirst[s[0]] = append(t.specialFirst[s[0]], s)
		for int(id) >= len(t.tokens) {
			t.tokens = append(t.tokens, "")
		}
		t.tokens[id] = s
	}
	for i := range t.specialFirst {
		slices.SortFunc(t.specialFirst[i], func(a, b string) int { return len(b) - len(a) })
	}
}

var _ Tokenizer = (*BPE)(nil)
