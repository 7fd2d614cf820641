package kvevents

import (
	"context"
	"hash/fnv"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fnvChain is a stand-in for the prefix index's chain hash.
func fnvChain(parent uint64, tokens []uint32) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for i := range 8 {
		b[i] = byte(parent >> (8 * i))
	}
	h.Write(b[:])
	for _, t := range tokens {
		h.Write([]byte{byte(t), byte(t >> 8), byte(t >> 16), byte(t >> 24)})
	}
	return h.Sum64()
}

func fnvRoot(lora string) uint64 {
	h := fnv.New64a()
	h.Write([]byte("llama|" + lora))
	return h.Sum64()
}

// chain hashes tokens block by block from the root of lora.
func chain(lora string, bs int, tokens ...uint32) []uint64 {
	var out []uint64
	p := fnvRoot(lora)
	for i := 0; i+bs <= len(tokens); i += bs {
		p = fnvChain(p, tokens[i:i+bs])
		out = append(out, p)
	}
	return out
}

// setIndex is an Index holding each endpoint's block set.
type setIndex struct {
	mu      sync.Mutex
	blocks  map[string]map[uint64]bool
	cleared int
}

func newSetIndex() *setIndex {
	return &setIndex{blocks: map[string]map[uint64]bool{}}
}

func (x *setIndex) Stored(ep string, hs []uint64) {
	x.mu.Lock()
	if x.blocks[ep] == nil {
		x.blocks[ep] = map[uint64]bool{}
	}
	for _, h := range hs {
		x.blocks[ep][h] = true
	}
	x.mu.Unlock()
}

func (x *setIndex) Removed(ep string, hs []uint64) {
	x.mu.Lock()
	for _, h := range hs {
		delete(x.blocks[ep], h)
	}
	x.mu.Unlock()
}

func (x *setIndex) Cleared(ep string) {
	x.mu.Lock()
	delete(x.blocks, ep)
	x.cleared++
	x.mu.Unlock()
}

func (x *setIndex) set(ep string) []uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []uint64
	for h := range x.blocks[ep] {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

func sorted(hs ...[]uint64) []uint64 {
	out := slices.Concat(hs...)
	slices.Sort(out)
	return slices.Compact(out)
}

var _ Index = (*setIndex)(nil)

func newTestRehasher(t *testing.T, x Index, mutate func(*RehasherConfig)) *Rehasher {
	t.Helper()
	cfg := RehasherConfig{Hash: fnvChain, Root: fnvRoot, Index: x, Logger: testLogger(t)}
	if mutate != nil {
		mutate(&cfg)
	}
	r, err := NewRehasher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRehasher(t *testing.T) {
	toks := []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	full := chain("", 4, toks...)
	cpu := "CPU"
	tests := []struct {
		name   string
		events []Event
		want   []uint64
	}{
		{
			name:   "one event, chain from the root",
			events: []Event{stored([]uint64{100, 101, 102}, nil, toks...)},
			want:   sorted(full),
		},
		{
			name: "a later event continues its parent's chain",
			events: []Event{
				stored([]uint64{100, 101}, nil, toks[:8]...),
				stored([]uint64{102}, ptr[uint64](101), toks[8:]...),
			},
			want: sorted(full),
		},
		{
			name: "removal maps the engine hash back",
			events: []Event{
				stored([]uint64{100, 101, 102}, nil, toks...),
				removed(102, 999),
			},
			want: sorted(full[:2]),
		},
		{
			name: "a block stored twice survives one removal",
			events: []Event{
				stored([]uint64{100}, nil, toks[:4]...),
				stored([]uint64{100}, nil, toks[:4]...),
				removed(100),
			},
			want: sorted(full[:1]),
		},
		{
			name: "and goes with the second",
			events: []Event{
				stored([]uint64{100}, nil, toks[:4]...),
				stored([]uint64{100}, nil, toks[:4]...),
				removed(100),
				removed(100),
			},
			want: nil,
		},
		{
			name:   "unknown parent: the chain cannot be placed",
			events: []Event{stored([]uint64{102}, ptr[uint64](7), toks[8:]...)},
			want:   nil,
		},
		{
			name: "other media and groups are ignored",
			events: []Event{
				&BlockStored{BlockHashes: []BlockHash{IntHash(1)}, TokenIDs: toks[:4], BlockSize: 4, Medium: &cpu},
				&BlockStored{BlockHashes: []BlockHash{IntHash(2)}, TokenIDs: toks[:4], BlockSize: 4, GroupIdx: ptr[int64](1)},
				stored([]uint64{100}, nil, toks[:4]...),
				&BlockRemoved{BlockHashes: []BlockHash{IntHash(100)}, Medium: &cpu},
			},
			want: sorted(full[:1]),
		},
		{
			name:   "token count must be blocks times block size",
			events: []Event{&BlockStored{BlockHashes: []BlockHash{IntHash(1), IntHash(2)}, TokenIDs: toks[:6], BlockSize: 4}},
			want:   nil,
		},
		{
			name: "a LoRA adapter has its own root",
			events: []Event{
				&BlockStored{BlockHashes: []BlockHash{IntHash(1)}, TokenIDs: toks[:4], BlockSize: 4, LoRAName: ptr("sql")},
				&BlockStored{BlockHashes: []BlockHash{IntHash(2)}, TokenIDs: toks[:4], BlockSize: 4, LoRAID: ptr[int64](3)},
			},
			want: sorted(chain("sql", 4, toks[:4]...), chain("id:3", 4, toks[:4]...)),
		},
		{
			name: "cleared",
			events: []Event{
				stored([]uint64{100, 101, 102}, nil, toks...),
				&AllBlocksCleared{},
				stored([]uint64{101}, ptr[uint64](100), toks[4:8]...), // parent gone with the rest
			},
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newSetIndex()
			r := newTestRehasher(t, x, nil)
			for _, ev := range tt.events {
				switch e := ev.(type) {
				case *BlockStored:
					r.BlockStored("e0", e)
				case *BlockRemoved:
					r.BlockRemoved("e0", e)
				case *AllBlocksCleared:
					r.AllCleared("e0")
				}
			}
			if diff := cmp.Diff(tt.want, x.set("e0")); diff != "" {
				t.Errorf("index (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRehasherUnreliableAndOverflow(t *testing.T) {
	x := newSetIndex()
	m := discardMetrics()
	var told []string
	r := newTestRehasher(t, x, func(c *RehasherConfig) {
		c.MaxBlocks = 2
		c.Metrics = m
		c.OnUnreliable = func(ep, reason string) { told = append(told, ep+" "+reason) }
	})
	r.BlockStored("e0", stored([]uint64{1}, nil, 1))
	r.BlockStored("e1", stored([]uint64{1}, nil, 1))
	r.Unreliable("e0", ReasonGap)
	if r.Len("e0") != 0 || len(x.set("e0")) != 0 {
		t.Errorf("e0 not cleared: mapping %d, index %v", r.Len("e0"), x.set("e0"))
	}
	if r.Len("e1") != 1 {
		t.Errorf("e1 mapping = %d, want 1 (untouched)", r.Len("e1"))
	}
	r.BlockStored("e1", stored([]uint64{2, 3}, ptr[uint64](1), 2, 3))
	if r.Len("e1") != 0 || len(x.set("e1")) != 0 {
		t.Errorf("e1 not dropped on overflow: mapping %d, index %v", r.Len("e1"), x.set("e1"))
	}
	if diff := cmp.Diff([]string{"e0 gap", "e1 " + ReasonOverflow}, told); diff != "" {
		t.Errorf("OnUnreliable (-want +got):\n%s", diff)
	}
	r.BlockStored("e2", stored([]uint64{5}, ptr[uint64](4), 1))
	if got := testutil.ToFloat64(m.UnanchoredDrop.WithLabelValues("e2")); got != 1 {
		t.Errorf("unanchored = %v, want 1", got)
	}
}

func TestRehasherConfigErrors(t *testing.T) {
	x := newSetIndex()
	for _, cfg := range []RehasherConfig{
		{Root: fnvRoot, Index: x},
		{Hash: fnvChain, Index: x},
		{Hash: fnvChain, Root: fnvRoot},
	} {
		if _, err := NewRehasher(cfg); err == nil {
			t.Errorf("NewRehasher(%+v) succeeded", cfg)
		}
	}
}

// TestPreciseIndexFollowsEngine runs publisher → TCP → subscriber →
// rehasher → index, with a dropped batch on the wire, and checks that the
// index ends up holding exactly the router-side chain hashes of what the
// engine still caches.
func TestPreciseIndexFollowsEngine(t *testing.T) {
	m := discardMetrics()
	p := newPublisher(t, m, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
	drop := func(seq uint64) bool { return seq == 2 }
	p.dropSend.Store(&drop)
	x := newSetIndex()
	r := newTestRehasher(t, x, nil)
	s, err := NewSubscriber(SubscriberConfig{Name: "e0", Endpoint: p.Endpoint(), ReplayEndpoint: p.ReplayEndpoint(), Consumer: r, Metrics: m, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitSubscribed(t, p)

	a := []uint32{1, 2, 3, 4, 5, 6, 7, 8}
	b := []uint32{1, 2, 3, 4, 9, 9, 9, 9}
	p.Publish(stored([]uint64{10, 11}, nil, a...))             // seq 0: prompt a
	p.Publish(stored([]uint64{12}, ptr[uint64](10), b[4:]...)) // seq 1: prompt b shares a's first block
	p.Publish(removed(11))                                     // seq 2: lost on the wire
	p.Publish(stored([]uint64{13}, ptr[uint64](12), 7, 7, 7, 7))
	want := sorted(chain("", 4, a[:4]...), chain("", 4, append(slices.Clone(b), 7, 7, 7, 7)...))
	waitFor(t, "index to match", func() bool { return cmp.Equal(want, x.set("e0")) })
	if got := testutil.ToFloat64(m.Gaps.WithLabelValues("e0")); got != 1 {
		t.Errorf("gaps = %v, want 1", got)
	}
	// Then the engine drops everything.
	p.Publish(&AllBlocksCleared{})
	waitFor(t, "index cleared", func() bool { return len(x.set("e0")) == 0 })
}
