package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Member is one top-level member of a JSON object: a key and its value as
// raw JSON.
type Member struct {
	Key   string
	Value json.RawMessage
}

// Patch changes the top-level members of a JSON object body.
type Patch struct {
	// Set gives members their values: every member with the key is given
	// the value in place, and a key the body lacks is appended.
	Set []Member
	// Delete removes every member with one of these keys.
	Delete []string
}

// ErrNotObject is returned for a body that is not a JSON object.
var ErrNotObject = errors.New("the body is not a JSON object")

// Apply returns doc with the patch applied. Members it does not touch keep
// their bytes, in order; the separators between members are rewritten.
// Values in Set must be valid JSON.
func (p Patch) Apply(doc []byte) ([]byte, error) {
	if !json.Valid(doc) {
		return nil, ErrNotObject
	}
	for _, m := range p.Set {
		if !json.Valid(m.Value) {
			return nil, fmt.Errorf("patch: member %q: value is not JSON", m.Key)
		}
	}
	end := len(bytes.TrimRight(doc, " \t\r\n")) - 1 // the closing brace
	out := make([]byte, 0, len(doc)+64)
	set := make([]bool, len(p.Set))
	n := 0
	member := func(key, value []byte) {
		if n > 0 {
			out = append(out, ',')
		}
		n++
		out = append(out, key...)
		out = append(out, ':')
		out = append(out, value...)
	}
	first := true
	err := topFields(doc, func(f field) bool {
		if first {
			out = append(out, doc[:f.keyStart]...) // "{" and what follows it
			first = false
		}
		k := string(f.key)
		for _, d := range p.Delete {
			if d == k {
				return true
			}
		}
		keyLit := doc[f.keyStart:skipSpaceBack(doc, f.start)]
		for i, m := range p.Set {
			if m.Key == k {
				set[i] = true
				member(keyLit, m.Value)
				return true
			}
		}
		member(keyLit, doc[f.start:f.end])
		return true
	})
	if err != nil || end < 0 || doc[end] != '}' {
		return nil, ErrNotObject
	}
	if first {
		out = append(out, '{')
	}
	for i, m := range p.Set {
		if set[i] {
			continue
		}
		kq, _ := json.Marshal(m.Key) // a string always marshals
		member(kq, m.Value)
	}
	out = append(out, '}')
	return append(out, doc[end+1:]...), nil
}

// skipSpaceBack returns the index of the colon before the value at i: the
// key literal and its spacing end there.
func skipSpaceBack(doc []byte, i int) int {
	for i > 0 {
		i--
		if doc[i] == ':' {
			return trimRightSpace(doc, i)
		}
	}
	return i
}

func trimRightSpace(doc []byte, i int) int {
	for i > 0 {
		switch doc[i-1] {
		case ' ', '\t', '\n', '\r':
			i--
		default:
			return i
		}
	}
	return i
}

// TopLevel returns the raw value of the last top-level member named key of
// the JSON object doc, and whether there is one.
func TopLevel(doc []byte, key string) (json.RawMessage, bool, error) {
	if !json.Valid(doc) {
		return nil, false, ErrNotObject
	}
	var v []byte
	found := false
	err := topFields(doc, func(f field) bool {
		if string(f.key) == key {
			v, found = doc[f.start:f.end], true
		}
		return true
	})
	if err != nil {
		return nil, false, ErrNotObject
	}
	return v, found, nil
}
