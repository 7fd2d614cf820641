package wire

import (
	"bytes"
	"encoding/json"
)

// A light scanner over JSON already known to be valid (json.Valid on the
// whole body): it splits objects into members and arrays into elements
// without decoding them, so that a body is validated once rather than by
// every nested json.Unmarshal.

// skipSpace returns the index of the first non-space byte at or after i.
func skipSpace(v []byte, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just past the value starting at v[i].
func skipValue(v []byte, i int) int {
	switch v[i] {
	case '"':
		return skipString(v, i)
	case '{', '[':
		depth := 0
		for i < len(v) {
			switch v[i] {
			case '"':
				i = skipString(v, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(v) && v[i] != ',' && v[i] != '}' && v[i] != ']' && v[i] != ' ' && v[i] != '\t' && v[i] != '\n' && v[i] != '\r' {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at v[i].
func skipString(v []byte, i int) int {
	for i++; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// scanObject splits a valid JSON object into its members; false when v is
// not an object. Of duplicate keys the last one counts, as in Python.
func scanObject(v []byte) (object, bool) {
	i := skipSpace(v, 0)
	if i >= len(v) || v[i] != '{' {
		return nil, false
	}
	obj := object{}
	i = skipSpace(v, i+1)
	for i < len(v) && v[i] != '}' {
		end := skipString(v, i)
		key, ok := asString(v[i:end])
		if !ok {
			return nil, false
		}
		i = skipSpace(v, end)
		i = skipSpace(v, i+1) // the colon
		end = skipValue(v, i)
		obj[key] = json.RawMessage(v[i:end])
		i = skipSpace(v, end)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
	return obj, true
}

// scanArray splits a valid JSON array into its elements; false when v is
// not an array.
func scanArray(v []byte) ([]json.RawMessage, bool) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || v[0] != '[' {
		return nil, false
	}
	var items []json.RawMessage
	i := skipSpace(v, 1)
	for i < len(v) && v[i] != ']' {
		end := skipValue(v, i)
		items = append(items, json.RawMessage(v[i:end]))
		i = skipSpace(v, end)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
	return items, true
}
