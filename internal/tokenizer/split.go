package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
)

// Pre-tokenizer patterns of the byte-level BPE models Halyard knows. Each
// has a hand-written splitter that gives the same pieces as the regular
// expression (Go's regexp lacks the lookahead they use, and the hand-written
// form is several times faster than a backtracking engine).
const (
	// PatternCL100K is cl100k_base's pattern, which Llama 3 shares.
	PatternCL100K = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// PatternQwen2 is Qwen2's: cl100k's with single digits.
	PatternQwen2 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// PatternO200K is o200k_base's pattern.
	PatternO200K = `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// PatternGPT2 is GPT-2's (r50k_base, and Hugging Face's ByteLevel
	// pre-tokenizer with use_regex).
	PatternGPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
)

// splitter cuts text into pre-tokens: piece returns the end of the piece
// that starts at i < len(text). (regexSplitter is not one: it splits the
// whole text at once.)
type splitter interface {
	piece(text string, i int) int
}

// newSplitter returns the splitter of a pattern: a hand-written one for the
// patterns above, else nil and a regexp2 (.NET-style, with lookarounds)
// matcher.
func newSplitter(pattern string) (splitter, *regexSplitter, error) {
	switch pattern {
	case PatternCL100K:
		return cl100kSplitter{maxDigits: 3}, nil, nil
	case PatternQwen2:
		return cl100kSplitter{maxDigits: 1}, nil, nil
	case PatternO200K:
		return o200kSplitter{}, nil, nil
	case PatternGPT2:
		return gpt2Splitter{}, nil, nil
	}
	re, err := regexp2.Compile(pattern, regexp2.None)
	if err != nil {
		return nil, nil, fmt.Errorf("pre-tokenizer pattern: %w", err)
	}
	return nil, &regexSplitter{re: re}, nil
}

// Character classes. Text that is not valid UTF-8 is read one invalid byte
// at a time, each of class other.
const (
	clsOther   = iota
	clsUpper   // \p{Lu}, \p{Lt}
	clsLower   // \p{Ll}
	clsLetterO // \p{Lm}, \p{Lo}: letters of neither case
	clsMark    // \p{M}
	clsNumber  // \p{N}
	clsNewline // \r, \n
	clsSpace   // other \s
)

var asciiClass = func() (t [128]uint8) {
	for c := range 128 {
		r := rune(c)
		switch {
		case r == '\r' || r == '\n':
			t[c] = clsNewline
		case unicode.IsSpace(r):
			t[c] = clsSpace
		case 'A' <= r && r <= 'Z':
			t[c] = clsUpper
		case 'a' <= r && r <= 'z':
			t[c] = clsLower
		case '0' <= r && r <= '9':
			t[c] = clsNumber
		default:
			t[c] = clsOther
		}
	}
	return t
}()

// class returns the class of the rune at text[i] and its size in bytes.
func class(text string, i int) (uint8, int) {
	c := text[i]
	if c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, n := utf8.DecodeRuneInString(text[i:])
	if r == utf8.RuneError && n == 1 {
		return clsOther, 1
	}
	switch {
	case unicode.IsLetter(r):
		switch {
		case unicode.IsUpper(r) || unicode.IsTitle(r):
			return clsUpper, n
		case unicode.IsLower(r):
			return clsLower, n
		default:
			return clsLetterO, n
		}
	case unicode.IsMark(r):
		return clsMark, n
	case unicode.IsNumber(r):
		return clsNumber, n
	case unicode.IsSpace(r):
		return clsSpace, n
	}
	return clsOther, n
}

func isLetter(c uint8) bool { return c == clsUpper || c == clsLower || c == clsLetterO }
func isWS(c uint8) bool     { return c == clsSpace || c == clsNewline }

// punct is [^\s\p{L}\p{N}].
func isPunct(c uint8) bool { return c == clsOther || c == clsMark }

// contraction returns the length of (?i:'s|'t|'re|'ve|'m|'ll|'d) at i, or 0.
// Case folding makes ſ (U+017F, long s) an s.
func contraction(text string, i int) int {
	if i+1 >= len(text) || text[i] != '\'' {
		return 0
	}
	if strings.HasPrefix(text[i+1:], "\u017f") {
		return 3
	}
	switch text[i+1] | 0x20 {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		if i+2 < len(text) && text[i+2]|0x20 == 'e' {
			return 3
		}
	case 'l':
		if i+2 < len(text) && text[i+2]|0x20 == 'l' {
			return 3
		}
	}
	return 0
}

// whitespace handles \s*[\r\n]+|\s+(?!\S)|\s+ at i, where text[i] is
// whitespace, and returns the end of the piece.
func whitespace(text string, i int) int {
	end, lastNL, last := i, -1, i
	for end < len(text) {
		c, n := class(text, end)
		if !isWS(c) {
			break
		}
		if c == clsNewline {
			lastNL = end
		}
		last = end
		end += n
	}
	switch {
	case lastNL >= 0:
		// \s*[\r\n]+ backtracks to the last newline of the run.
		return lastNL + 1
	case end == len(text) || last == i:
		// \s+(?!\S) at the end of the text, or \s+ for one space before \S.
		return end
	default:
		// \s+(?!\S) leaves the last space to the next piece.
		return last
	}
}

// cl100kSplitter implements PatternCL100K (maxDigits 3) and PatternQwen2
// (maxDigits 1).
type cl100kSplitter struct{ maxDigits int }

func (s cl100kSplitter) piece(text string, i int) int {
	if n := contraction(text, i); n > 0 {
		return i + n
	}
	c, n := class(text, i)
	switch {
	case isLetter(c):
		return letters(text, i+n)
	case c == clsNumber:
		end := i + n
		for d := 1; d < s.maxDigits && end < len(text); d++ {
			c, n := class(text, end)
			if c != clsNumber {
				break
			}
			end += n
		}
		return end
	case c != clsNewline && i+n < len(text):
		// [^\r\n\p{L}\p{N}]\p{L}+
		if c2, n2 := class(text, i+n); isLetter(c2) {
			return letters(text, i+n+n2)
		}
	}
	if end := punctRun(text, i, false); end > i {
		return end
	}
	return whitespace(text, i)
}

// letters extends a run of \p{L} from i.
func letters(text string, i int) int {
	for i < len(text) {
		c, n := class(text, i)
		if !isLetter(c) {
			break
		}
		i += n
	}
	return i
}

// punctRun matches ` ?[^\s\p{L}\p{N}]+[\r\n]*` (with '/' among the trailing
// characters when slash is set) at i, returning i when it does not match.
func punctRun(text string, i int, slash bool) int {
	j := i
	if text[j] == ' ' {
		j++
	}
	start := j
	for j < len(text) {
		c, n := class(text, j)
		if !isPunct(c) {
			break
		}
		j += n
	}
	if j == start {
		return i
	}
	for j < len(text) && (text[j] == '\r' || text[j] == '\n' || (slash && text[j] == '/')) {
		j++
	}
	return j
}

// o200kSplitter implements PatternO200K.
type o200kSplitter struct{}

func isO200KUpper(c uint8) bool { return c == clsUpper || c == clsLetterO || c == clsMark }
func isO200KLower(c uint8) bool { return c == clsLower || c == clsLetterO || c == clsMark }

func (o200kSplitter) piece(text string, i int) int {
	c, n := class(text, i)
	prefixOK := c != clsNewline && !isLetter(c) && c != clsNumber
	// First alternative, with then without the optional prefix.
	if prefixOK && i+n < len(text) {
		if end := o200kWordLower(text, i+n); end > 0 {
			return end
		}
	}
	if end := o200kWordLower(text, i); end > 0 {
		return end
	}
	// Second alternative.
	if prefixOK && i+n < len(text) {
		if end := o200kWordUpper(text, i+n); end > 0 {
			return end
		}
	}
	if end := o200kWordUpper(text, i); end > 0 {
		return end
	}
	if c == clsNumber {
		end := i + n
		for d := 1; d < 3 && end < len(text); d++ {
			c, n := class(text, end)
			if c != clsNumber {
				break
			}
			end += n
		}
		return end
	}
	if end := punctRun(text, i, true); end > i {
		return end
	}
	return whitespace(text, i)
}

// o200kWordLower matches [U]*[L]+ contraction? at s, returning its end or 0.
func o200kWordLower(text string, s int) int {
	// Positions where the upper run could stop, so that backtracking can
	// try them from the longest.
	var stops [16]int
	k := append(stops[:0], s)
	j := s
	for j < len(text) {
		c, n := class(text, j)
		if !isO200KUpper(c) {
			break
		}
		j += n
		k = append(k, j)
	}
	for idx := len(k) - 1; idx >= 0; idx-- {
		p := k[idx]
		if p >= len(text) {
			continue
		}
		c, n := class(text, p)
		if !isO200KLower(c) {
			continue
		}
		end := p + n
		for end < len(text) {
			c, n := class(text, end)
			if !isO200KLower(c) {
				break
			}
			end += n
		}
		return end + contraction(text, end)
	}
	return 0
}

// o200kWordUpper matches [U]+[L]* contraction? at s, returning its end or 0.
func o200kWordUpper(text string, s int) int {
	j := s
	for j < len(text) {
		c, n := class(text, j)
		if !isO200KUpper(c) {
			break
		}
		j += n
	}
	if j == s {
		return 0
	}
	for j < len(text) {
		c, n := class(text, j)
		if !isO200KLower(c) {
			break
		}
		j += n
	}
	return j + contraction(text, j)
}

// gpt2Splitter implements PatternGPT2.
type gpt2Splitter struct{}

// contractionCS returns the length of 's|'t|'re|'ve|'m|'ll|'d at i, or 0.
func contractionCS(text string, i int) int {
	if i+1 >= len(text) || text[i] != '\'' {
		return 0
	}
	switch text[i+1] {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		if i+2 < len(text) && text[i+2] == 'e' {
			return 3
		}
	case 'l':
		if i+2 < len(text) && text[i+2] == 'l' {
			return 3
		}
	}
	return 0
}

func (gpt2Splitter) piece(text string, i int) int {
	if n := contractionCS(text, i); n > 0 {
		return i + n
	}
	j := i
	if text[j] == ' ' && j+1 < len(text) {
		j++
	}
	c, n := class(text, j)
	switch {
	case isLetter(c):
		return letters(text, j+n)
	case c == clsNumber:
		j += n
		for j < len(text) {
			c, n := class(text, j)
			if c != clsNumber {
				break
			}
			j += n
		}
		return j
	case isPunct(c):
		j += n
		for j < len(text) {
			c, n := class(text, j)
			if !isPunct(c) {
				break
			}
			j += n
		}
		return j
	}
	// \s+(?!\S)|\s+ (no newline rule in GPT-2's pattern).
	end, last := i, i
	for end < len(text) {
		c, n := class(text, end)
		if !isWS(c) {
			break
		}
		last = end
		end += n
	}
	if end == len(text) || last == i {
		return end
	}
	return last
}

// regexSplitter runs an arbitrary pattern with regexp2 over the whole text
// at once (regexp2 works on runes; an invalid UTF-8 byte counts as one rune,
// as Go's []rune conversion makes it). Characters no match covers become
// pieces of their own.
type regexSplitter struct {
	re *regexp2.Regexp
}

// ends returns the end offset of every piece of text, in bytes.
func (s *regexSplitter) ends(text string) []int {
	var ends []int
	byteAt, runeAt := 0, 0 // a rune index and its byte offset
	advance := func(to int) {
		for runeAt < to && byteAt < len(text) {
			_, n := utf8.DecodeRuneInString(text[byteAt:])
			byteAt += n
			runeAt++
		}
	}
	m, err := s.re.FindStringMatch(text)
	for err == nil && m != nil {
		for runeAt < m.RuneIndex {
			advance(runeAt + 1)
			ends = append(ends, byteAt)
		}
		if m.RuneLength > 0 {
			advance(m.RuneIndex + m.RuneLength)
			ends = append(ends, byteAt)
		}
		m, err = s.re.FindNextMatch(m)
	}
	for byteAt < len(text) {
		advance(runeAt + 1)
		ends = append(ends, byteAt)
	}
	return ends
}

// Interface guards.
var (
	_ splitter = cl100kSplitter{}
	_ splitter = o200kSplitter{}
	_ splitter = gpt2Splitter{}
)
