package openai

import "bytes"

// Prescan validates a body's long strings while the body arrives, each
// part right after it was read (still in the processor's cache), so that
// parsing the whole body afterwards (ParseHeadPrescanned) skips them
// instead of reading megabytes of prompt a second time from memory.
//
// It finds strings the way a JSON lexer does (a quote outside a string
// opens one) and scans each with scanString, resuming where the previous
// part stopped. It checks nothing else: for each string of at least
// prescanMin bytes it records where the literal starts and what
// validString answers there (its end, or invalid). Parsing uses a record
// only when its walk reaches a string at that very index, and validString
// from an index depends on the bytes from there on only, so the verdict is
// the one a single pass gives whatever the lexer made of the bytes before
// (FuzzPrescan). The zero value is ready; a Prescan belongs to one body.
type Prescan struct {
	pos   int  // next index to look at
	in    bool // pos is inside a string's content
	start int  // index of the current string's opening quote
	known []knownString
	full  bool // known reached prescanMax: no more records
	min   int  // records strings of at least min bytes; 0: prescanMin
}

// knownString is a string literal at start whose validString answer is end.
type knownString struct{ start, end int }

// Strings shorter than prescanMin are left to the parse (where they cost
// less than a record); at most prescanMax are recorded (a 16 MiB body holds
// at most 256 of 64 KiB).
const (
	prescanMin = 64 << 10
	prescanMax = 256
)

// Feed scans the bytes of doc not scanned yet. doc is the body so far:
// each call's doc must begin with the previous call's doc (the buffer may
// have moved; the bytes may not change).
func (p *Prescan) Feed(doc []byte) {
	if p == nil || p.full {
		return
	}
	for p.pos < len(doc) {
		if !p.in {
			q := bytes.IndexByte(doc[p.pos:], '"')
			if q < 0 {
				p.pos = len(doc)
				return
			}
			p.start, p.in = p.pos+q, true
			p.pos = p.start + 1
		}
		end, resume := scanString(doc, p.pos)
		if end == stringCut {
			p.pos = resume
			return
		}
		if end == stringInvalid {
			// The lexer cannot tell where this string would end.
			p.record(p.start, stringInvalid)
			p.full = true
			return
		}
		if end-p.start >= p.minLen() {
			p.record(p.start, end)
		}
		p.in, p.pos = false, end
		if p.full {
			return
		}
	}
}

func (p *Prescan) minLen() int {
	if p.min > 0 {
		return p.min
	}
	return prescanMin
}

func (p *Prescan) record(start, end int) {
	p.known = append(p.known, knownString{start, end})
	if len(p.known) >= prescanMax {
		p.full = true
	}
}

// stringAt is validString(doc, i) for a string literal at doc[i], from
// the records when one starts at i (the parse's walk is in index order,
// so p.known is consumed from the front).
func (p *Prescan) stringAt(doc []byte, i int) int {
	if p != nil {
		for len(p.known) > 0 && p.known[0].start < i {
			p.known = p.known[1:]
		}
		if len(p.known) > 0 && p.known[0].start == i {
			end := p.known[0].end
			p.known = p.known[1:]
			return end
		}
	}
	return validString(doc, i)
}
