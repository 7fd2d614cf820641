package kvevents

import "testing"

// stepBatch is a busy engine step: 8 requests each storing 4 blocks of 16
// tokens, and 4 evictions of 8 blocks.
func stepBatch() *Batch {
	rank := 0
	b := &Batch{TS: 1764201600.5, DataParallelRank: &rank}
	h := uint64(1 << 62)
	for r := range 8 {
		ev := &BlockStored{BlockSize: 16, Medium: ptr(MediumGPU)}
		if r > 0 {
			ev.ParentBlockHash = ptr(IntHash(h))
		}
		for range 4 {
			h += 7919
			ev.BlockHashes = append(ev.BlockHashes, IntHash(h))
		}
		for i := range 64 {
			ev.TokenIDs = append(ev.TokenIDs, uint32(1000+r*64+i)*37%128000)
		}
		b.Events = append(b.Events, ev)
	}
	for range 4 {
		ev := &BlockRemoved{Medium: ptr(MediumGPU)}
		for range 8 {
			h += 104729
			ev.BlockHashes = append(ev.BlockHashes, IntHash(h))
		}
		b.Events = append(b.Events, ev)
	}
	return b
}

func BenchmarkEncodeStepBatch(b *testing.B) {
	for _, f := range []Format{FormatArray, FormatMap} {
		b.Run(f.String(), func(b *testing.B) {
			batch := stepBatch()
			buf, _ := EncodeBatch(nil, batch, f)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = EncodeBatch(buf[:0], batch, f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeStepBatch(b *testing.B) {
	for _, f := range []Format{FormatArray, FormatMap} {
		b.Run(f.String(), func(b *testing.B) {
			payload, err := EncodeBatch(nil, stepBatch(), f)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeBatch(payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRehashStepBatch applies a step's stores and removals through the
// Rehasher into a no-op index.
func BenchmarkRehashStepBatch(b *testing.B) {
	batch := stepBatch()
	r, err := NewRehasher(RehasherConfig{Hash: fnvChain, Root: fnvRoot, Index: nopIndex{}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, ev := range batch.Events {
			switch e := ev.(type) {
			case *BlockStored:
				r.BlockStored("e0", e)
			case *BlockRemoved:
				r.BlockRemoved("e0", e)
			}
		}
		r.AllCleared("e0")
	}
}

type nopIndex struct{}

func (nopIndex) Stored(string, []uint64)  {}
func (nopIndex) Removed(string, []uint64) {}
func (nopIndex) Cleared(string)           {}
