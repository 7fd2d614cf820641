package openai

import (
	"encoding/binary"
	"math/bits"
)

// This file validates a request body as encoding/json's Valid does, in the
// pass that finds the top-level members (walkObject). It is hand-written
// instead of jsontext's decoder because a long prompt is one string of
// megabytes: jsontext reads it a byte at a time, twice when an escape
// comes late (its fast path gives up and starts the string again), while
// validString reads eight bytes at a time and only stops at quotes,
// backslashes and control bytes. BenchmarkWalkObject compares the two in
// one run (docs/benchmarks.md); FuzzValidate asserts that validate agrees
// with json.Valid on every input.

// Masks for the word-at-a-time scan of a string: lsb has the low bit of
// every byte set, msb the high one.
const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// specialMask returns the high bit of each of the eight bytes of w
// (little-endian) that is below 0x20 (a control byte, not allowed raw in a
// JSON string), a quote or a backslash, and possibly of bytes above such a
// byte (a borrow); the lowest bit set is exact, and 0 means none.
func specialMask(w uint64) uint64 {
	ctl := (w - 0x20*lsb) &^ w
	q := w ^ ('"' * lsb)
	quote := (q - lsb) &^ q
	b := w ^ ('\\' * lsb)
	bs := (b - lsb) &^ b
	return (ctl | quote | bs) & msb
}

// stopsString marks the bytes validString stops at.
var stopsString = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// shortEscape marks the bytes that follow a backslash in a two-byte escape.
var shortEscape = [256]bool{'"': true, '\\': true, '/': true, 'b': true, 'f': true, 'n': true, 'r': true, 't': true}

// validString returns the index after the string literal that starts at
// doc[i] == '"', or -1 when it is not a valid JSON string as json.Valid
// sees one: no raw byte below 0x20, escapes among \" \\ \/ \b \f \n \r \t
// and \u with four hex digits. Other bytes pass as they are, invalid UTF-8
// and lone surrogates included, as json.Valid lets them.
func validString(doc []byte, i int) int {
	j := i + 1
	for {
		// To the next quote, backslash or control byte: the first eight
		// bytes one at a time (text full of escapes), then a word at a
		// time, the lowest flagged byte of a word being the first such
		// byte.
		end := min(j+8, len(doc))
		for _, c := range doc[j:end] {
			if stopsString[c] {
				break
			}
			j++
		}
		if j == end {
			for j+8 <= len(doc) {
				if m := specialMask(binary.LittleEndian.Uint64(doc[j:])); m != 0 {
					j += bits.TrailingZeros64(m) >> 3
					break
				}
				j += 8
			}
			for j < len(doc) && !stopsString[doc[j]] {
				j++
			}
		}
		if j >= len(doc) {
			return -1
		}
		c := doc[j]
		switch {
		case c == '"':
			return j + 1
		case c != '\\' || j+1 >= len(doc): // a control byte, or a cut escape
			return -1
		case shortEscape[doc[j+1]]:
			j += 2
		case doc[j+1] == 'u' && j+6 <= len(doc) && hex4(doc[j+2:j+6]):
			j += 6
		default:
			return -1
		}
	}
}

func hex4(b []byte) bool {
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// validNumber returns the index after the JSON number that starts at
// doc[i], or -1: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func validNumber(doc []byte, i int) int {
	if i < len(doc) && doc[i] == '-' {
		i++
	}
	switch {
	case i >= len(doc):
		return -1
	case doc[i] == '0':
		i++
	case '1' <= doc[i] && doc[i] <= '9':
		i = digits(doc, i)
	default:
		return -1
	}
	if i < len(doc) && doc[i] == '.' {
		j := digits(doc, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(doc) && (doc[i] == 'e' || doc[i] == 'E') {
		i++
		if i < len(doc) && (doc[i] == '+' || doc[i] == '-') {
			i++
		}
		j := digits(doc, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func digits(doc []byte, i int) int {
	for i < len(doc) && '0' <= doc[i] && doc[i] <= '9' {
		i++
	}
	return i
}

// validLiteral returns the index after lit at doc[i], or -1.
func validLiteral(doc []byte, i int, lit string) int {
	if len(doc)-i < len(lit) || string(doc[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// validValue returns the index after the JSON value that starts at doc[i]
// (no space before it), or -1 when it is not valid. depth is the nesting
// of the value's container (0 at the top); objects and arrays may nest
// MaxNesting deep in all, as json.Valid allows. Containers are walked
// with an explicit stack, not recursion.
func validValue(doc []byte, i, depth int) int {
	var stack []byte // '{' or '[' per open container inside this value
	for {
		// A value starts at doc[i].
		if i >= len(doc) {
			return -1
		}
		switch c := doc[i]; c {
		case '{', '[':
			if depth+len(stack)+1 > MaxNesting {
				return -1
			}
			stack = append(stack, c)
			i = skipSpace(doc, i+1)
			if i < len(doc) && doc[i] == c+2 { // '}' or ']': empty
				stack = stack[:len(stack)-1]
				i++
				break
			}
			if c == '{' {
				if i = member(doc, i); i < 0 {
					return -1
				}
			}
			continue // the container's first value
		case '"':
			i = validString(doc, i)
		case 't':
			i = validLiteral(doc, i, "true")
		case 'f':
			i = validLiteral(doc, i, "false")
		case 'n':
			i = validLiteral(doc, i, "null")
		default:
			i = validNumber(doc, i)
		}
		if i < 0 {
			return -1
		}
		// After a value: close containers or go on to the next value.
		for {
			if len(stack) == 0 {
				return i
			}
			i = skipSpace(doc, i)
			if i >= len(doc) {
				return -1
			}
			top := stack[len(stack)-1]
			if doc[i] == top+2 {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			if doc[i] != ',' {
				return -1
			}
			i = skipSpace(doc, i+1)
			if top == '{' {
				if i = member(doc, i); i < 0 {
					return -1
				}
			}
			break
		}
	}
}

// member reads an object member's name and colon at doc[i] and returns
// the index of its value (space skipped), or -1.
func member(doc []byte, i int) int {
	_, v := memberName(doc, i)
	return v
}

// memberName is member returning also the index after the name's literal
// (doc[i:nameEnd] is the quoted name); value is -1 when either is invalid.
func memberName(doc []byte, i int) (nameEnd, value int) {
	if i >= len(doc) || doc[i] != '"' {
		return -1, -1
	}
	if nameEnd = validString(doc, i); nameEnd < 0 {
		return -1, -1
	}
	i = skipSpace(doc, nameEnd)
	if i >= len(doc) || doc[i] != ':' {
		return -1, -1
	}
	return nameEnd, skipSpace(doc, i+1)
}

// validate reports whether doc is one JSON value with optional space
// around it, as json.Valid does.
func validate(doc []byte) bool {
	i := skipSpace(doc, 0)
	end := validValue(doc, i, 0)
	return end >= 0 && skipSpace(doc, end) == len(doc)
}
