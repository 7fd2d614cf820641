package tokenizer

import "strings"

// Tokenizer converts between text and token ids.
type Tokenizer interface {
	// Encode returns the token ids of text.
	Encode(text string) []uint32
	// Decode returns text whose encoding is ids.
	Decode(ids []uint32) string
}

// DefaultVocabSize is Llama-3's vocabulary size.
const DefaultVocabSize = 128256

// maxPieceLen caps a run of letters and digits in one token, so that long
// words become several tokens as they do under BPE.
const maxPieceLen = 4

// Pseudo is a deterministic pseudo-tokenizer. Whitespace separates tokens and
// is dropped; a token is a run of up to four ASCII letters or digits, or any
// single other byte. A run of one to four lowercase letters that spells a
// vocabulary word (see Word) has that word's id; every other piece hashes
// into the vocabulary. Decode writes Word(id) separated by single spaces, so
// Encode(Decode(ids)) == ids for every id below VocabSize.
//
// The zero value uses DefaultVocabSize.
type Pseudo struct {
	// VocabSize bounds the ids; 0 means DefaultVocabSize.
	VocabSize uint32
}

func (p Pseudo) vocab() uint32 {
	if p.VocabSize == 0 {
		return DefaultVocabSize
	}
	return p.VocabSize
}

// Encode tokenises text.
func (p Pseudo) Encode(text string) []uint32 {
	ids := make([]uint32, 0, len(text)/4+1)
	p.scan(text, func(id uint32) { ids = append(ids, id) })
	return ids
}

// AppendEncode appends the token ids of text to dst.
func (p Pseudo) AppendEncode(dst []uint32, text string) []uint32 {
	p.scan(text, func(id uint32) { dst = append(dst, id) })
	return dst
}

// Count returns len(Encode(text)) without allocating. It only finds the
// pieces' bounds (no piece ids), about an order of magnitude faster than
// Encode on long prompts.
func (Pseudo) Count(text string) int { return countPieces(text) }

// CountBytes is Count of a prompt held as bytes, without copying it to a
// string (a 1M-token prompt is about 4 MiB).
func (Pseudo) CountBytes(text []byte) int { return countPieces(text) }

// countPieces counts the pieces scan would emit.
func countPieces[T string | []byte](text T) int {
	n, i := 0, 0
	for i < len(text) {
		c := text[i]
		switch {
		case isSpace(c):
			i++
			continue
		case isAlnum(c):
			j := i + 1
			for j < len(text) && j-i < maxPieceLen && isAlnum(text[j]) {
				j++
			}
			i = j
		default:
			i++
		}
		n++
	}
	return n
}

func (p Pseudo) scan(text string, emit func(uint32)) {
	v := p.vocab()
	i := 0
	for i < len(text) {
		c := text[i]
		switch {
		case isSpace(c):
			i++
		case isAlnum(c):
			j := i + 1
			for j < len(text) && j-i < maxPieceLen && isAlnum(text[j]) {
				j++
			}
			emit(pieceID(text[i:j], v))
			i = j
		default:
			emit(pieceID(text[i:i+1], v))
			i++
		}
	}
}

// Decode renders ids as vocabulary words separated by spaces.
func (p Pseudo) Decode(ids []uint32) string {
	var b strings.Builder
	b.Grow(len(ids) * 4)
	v := p.vocab()
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(Word(id % v))
	}
	return b.String()
}

// Word returns the vocabulary word of id: the bijective base-26 numeral of
// id+1 in lowercase letters ("a" is 0, "z" 25, "aa" 26, ...). Every id below
// 475,254 has a word of at most four letters.
func Word(id uint32) string {
	var buf [8]byte
	n := uint64(id) + 1
	i := len(buf)
	for n > 0 {
		n--
		i--
		buf[i] = byte('a' + n%26)
		n /= 26
	}
	return string(buf[i:])
}

// pieceID maps one piece to its id.
func pieceID(piece string, vocab uint32) uint32 {
	if v, ok := wordValue(piece); ok && v < uint64(vocab) {
		return uint32(v)
	}
	// FNV-1a, 32 bit.
	h := uint32(2166136261)
	for i := 0; i < len(piece); i++ {
		h ^= uint32(piece[i])
		h *= 16777619
	}
	return h % vocab
}

// wordValue inverts Word for runs of lowercase letters.
func wordValue(piece string) (uint64, bool) {
	var n uint64
	for i := 0; i < len(piece); i++ {
		c := piece[i]
		if c < 'a' || c > 'z' {
			return 0, false
		}
		n = n*26 + uint64(c-'a'+1)
	}
	return n - 1, true
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

var _ Tokenizer = Pseudo{}
