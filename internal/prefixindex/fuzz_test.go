package prefixindex

import (
	"encoding/binary"
	"testing"
)

// FuzzChain checks the chain's defining properties on arbitrary prompts:
// only full blocks are hashed, a prompt's chain extends the chain of any of
// its prefixes, and a different first byte changes every hash.
func FuzzChain(f *testing.F) {
	f.Add([]byte("The quick brown fox jumps over the lazy dog, again and again."), uint8(4), uint8(8))
	f.Add([]byte{}, uint8(0), uint8(0))
	f.Add(make([]byte, 1000), uint8(255), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, bt, cb uint8) {
		h := Hasher{BlockTokens: int(bt%32) + 1, ChunkBytes: int(cb%64) + 1}
		ids := make([]uint32, len(data)/4)
		for i := range ids {
			ids[i] = binary.LittleEndian.Uint32(data[4*i:])
		}
		for _, form := range []struct {
			name  string
			text  []byte
			ids   []uint32
			cut   func(n int) ([]byte, []uint32)
			total int
		}{
			{"text", data, nil, func(n int) ([]byte, []uint32) { return data[:n], nil }, len(data)},
			{"tokens", nil, ids, func(n int) ([]byte, []uint32) { return nil, ids[:n] }, len(ids)},
		} {
			if form.name == "tokens" && len(ids) == 0 {
				continue
			}
			full := h.AppendChain(nil, "m", form.text, form.ids)
			if len(full) != h.Blocks(form.text, form.ids) {
				t.Fatalf("%s: %d hashes, Blocks says %d", form.name, len(full), h.Blocks(form.text, form.ids))
			}
			half := form.total / 2
			text, tok := form.cut(half)
			if form.name == "tokens" && half == 0 {
				continue
			}
			part := h.AppendChain(nil, "m", text, tok)
			for i := range part {
				if part[i] != full[i] {
					t.Fatalf("%s: the chain of the first half differs at block %d", form.name, i)
				}
			}
		}
	})
}
