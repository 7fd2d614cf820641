package kvcache

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// recorder keeps the hook calls as strings.
type recorder struct{ got []string }

func (r *recorder) BlockStored(b StoredBlock) {
	r.got = append(r.got, fmt.Sprintf("stored %x parent=%v tokens=%v", uint64(b.Hash)&0xffff, b.HasParent, b.Tokens))
}
func (r *recorder) BlockRemoved(h BlockHash) {
	r.got = append(r.got, fmt.Sprintf("removed %x", uint64(h)&0xffff))
}
func (r *recorder) AllBlocksCleared() { r.got = append(r.got, "cleared") }

func TestHashChaining(t *testing.T) {
	root := RootHash("")
	a := []uint32{1, 2, 3, 4, 5, 6, 7, 8}
	b := []uint32{1, 2, 3, 4, 9, 9, 9, 9}
	ha := AppendChain(nil, root, a, 4)
	hb := AppendChain(nil, root, b, 4)
	tests := []struct {
		name string
		got  bool
		want bool
	}{
		{"equal first blocks hash equal", ha[0] == hb[0], true},
		{"different second blocks differ", ha[1] == hb[1], false},
		{"same block after different parents differs", HashBlock(ha[0], a[4:]) == HashBlock(hb[1], a[4:]), false},
		{"chain equals manual chain", ha[1] == HashBlock(HashBlock(root, a[:4]), a[4:]), true},
		{"root differs by extra key", RootHash("") == RootHash("lora-a"), false},
		{"partial block not hashed", len(AppendChain(nil, root, a[:7], 4)) == 1, true},
		{"deterministic", AppendChain(nil, root, a, 4)[1] == ha[1], true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestPoolAllocateFreeRefcounts(t *testing.T) {
	p, err := New(4, 16, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := p.Allocate(3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]BlockID{0, 1, 2}, ids); diff != "" {
		t.Errorf("allocated ids (-want +got):\n%s", diff)
	}
	if got := p.NumFree(); got != 1 {
		t.Errorf("NumFree = %d, want 1", got)
	}
	if got, want := p.Usage(), 0.75; got != want {
		t.Errorf("Usage = %v, want %v", got, want)
	}
	if _, err := p.Allocate(2, nil); !errors.Is(err, ErrNoFreeBlocks) {
		t.Errorf("over-allocation error = %v, want ErrNoFreeBlocks", err)
	}
	if got := p.NumFree(); got != 1 {
		t.Errorf("failed allocation changed NumFree to %d", got)
	}
	p.Touch(ids[0]) // a second sequence shares block 0
	if got := p.RefCount(ids[0]); got != 2 {
		t.Errorf("RefCount after Touch = %d, want 2", got)
	}
	p.Free(ids)
	if got := p.RefCount(ids[0]); got != 1 {
		t.Errorf("RefCount of shared block after one Free = %d, want 1", got)
	}
	if got := p.NumFree(); got != 3 {
		t.Errorf("NumFree after Free = %d, want 3", got)
	}
	p.Free(ids[:1])
	if got := p.NumFree(); got != 4 {
		t.Errorf("NumFree after last Free = %d, want 4", got)
	}
}

func TestPoolPrefixReuseAndLRUEviction(t *testing.T) {
	rec := &recorder{}
	p, err := New(4, 2, rec)
	if err != nil {
		t.Fatal(err)
	}
	root := RootHash("")
	// Sequence A: two full blocks, stored and freed.
	tokA := []uint32{1, 2, 3, 4}
	hA := AppendChain(nil, root, tokA, 2)
	idsA, _ := p.Allocate(2, nil)
	for i, id := range idsA {
		p.Store(id, StoredBlock{Hash: hA[i], HasParent: i > 0, Tokens: tokA[2*i : 2*i+2]})
	}
	p.Free(idsA)
	if got := p.MatchPrefix(hA); got != 2 {
		t.Fatalf("MatchPrefix after free = %d, want 2 (freed blocks stay reusable)", got)
	}
	// Sequence B reuses A's first block.
	id0, ok := p.Lookup(hA[0])
	if !ok {
		t.Fatal("Lookup of A's first block failed")
	}
	p.Touch(id0)
	if got := p.NumFree(); got != 3 {
		t.Errorf("NumFree after reuse = %d, want 3", got)
	}
	// Allocating 3 blocks takes the two never-used blocks first, then the
	// least recently freed cached block: A's second block (freed before the
	// first, since Free releases in reverse order) is evicted.
	if _, err := p.Allocate(3, nil); err != nil {
		t.Fatal(err)
	}
	if got := p.MatchPrefix(hA); got != 1 {
		t.Errorf("MatchPrefix after eviction = %d, want 1", got)
	}
	p.Reset()
	want := []string{
		fmt.Sprintf("stored %x parent=false tokens=[1 2]", uint64(hA[0])&0xffff),
		fmt.Sprintf("stored %x parent=true tokens=[3 4]", uint64(hA[1])&0xffff),
		fmt.Sprintf("removed %x", uint64(hA[1])&0xffff),
		"cleared",
	}
	if diff := cmp.Diff(want, rec.got); diff != "" {
		t.Errorf("hook calls (-want +got):\n%s", diff)
	}
	if p.NumCached() != 0 {
		t.Errorf("NumCached after Reset = %d", p.NumCached())
	}
}

func TestPoolStoreDuplicateHashKeepsFirst(t *testing.T) {
	p, _ := New(2, 2, nil)
	ids, _ := p.Allocate(2, nil)
	h := HashBlock(RootHash(""), []uint32{7, 7})
	if !p.Store(ids[0], StoredBlock{Hash: h}) {
		t.Fatal("first Store reported false")
	}
	if p.Store(ids[1], StoredBlock{Hash: h}) {
		t.Fatal("duplicate Store reported true")
	}
	if id, _ := p.Lookup(h); id != ids[0] {
		t.Errorf("Lookup = %d, want the first block %d", id, ids[0])
	}
}

func TestNewRejectsBadSizes(t *testing.T) {
	for _, tc := range []struct{ blocks, size int }{{0, 16}, {10, 0}, {-1, 16}} {
		if _, err := New(tc.blocks, tc.size, nil); err == nil {
			t.Errorf("New(%d, %d) succeeded", tc.blocks, tc.size)
		}
	}
}

func BenchmarkAppendChain(b *testing.B) {
	tokens := make([]uint32, 4096)
	for i := range tokens {
		tokens[i] = uint32(i * 7919)
	}
	dst := make([]BlockHash, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(tokens) * 4))
	for b.Loop() {
		dst = AppendChain(dst[:0], RootHash(""), tokens, 16)
	}
}
