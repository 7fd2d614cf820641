package prefixindex

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func chainOf(model string, ids []uint32) []BlockHash {
	return Hasher{}.AppendChain(nil, model, nil, ids)
}

func newIndex(t testing.TB, cfg ApproximateConfig) *Approximate {
	t.Helper()
	a, err := NewApproximate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func match(a *Approximate, chain []BlockHash, eps ...string) []int {
	out := make([]int, len(eps))
	a.Match(chain, eps, out)
	return out
}

func TestApproximateFindsSharedPrefixOnTheRightEndpoint(t *testing.T) {
	system := seq(1, 160)                           // 10 blocks
	convA := cat(system, seq(1000, 48))             // 13 blocks
	convB := cat(system, seq(2000, 80))             // 15 blocks
	convA2 := cat(convA, seq(3000, 32))             // 15 blocks, extends A
	unrelated := seq(9000, 160)                     // 10 blocks
	eps := []string{"e0", "e1", "e2", "never-seen"} // e2 holds nothing
	tests := []struct {
		name string
		adds map[string][][]uint32
		ask  []uint32
		want []int
	}{
		{"empty index", nil, convA, []int{0, 0, 0, 0}},
		{"whole prompt on one endpoint", map[string][][]uint32{"e0": {convA}}, convA, []int{13, 0, 0, 0}},
		{"system prompt shared, tail differs", map[string][][]uint32{"e0": {convA}, "e1": {convB}}, convB, []int{10, 15, 0, 0}},
		{"next turn extends the last", map[string][][]uint32{"e0": {convA}, "e1": {convB}}, convA2, []int{13, 10, 0, 0}},
		{"unrelated prompt", map[string][][]uint32{"e0": {convA}, "e1": {convB}}, unrelated, []int{0, 0, 0, 0}},
		{"several chains on one endpoint", map[string][][]uint32{"e1": {convA, convB}}, convA2, []int{0, 13, 0, 0}},
		{"other model shares nothing", map[string][][]uint32{"e0": {convA}}, nil, []int{0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newIndex(t, ApproximateConfig{})
			for ep, chains := range tt.adds {
				for _, c := range chains {
					a.Add(ep, 0, chainOf("m", c))
				}
			}
			ask := chainOf("m", tt.ask)
			if tt.ask == nil {
				ask = chainOf("other", convA)
			}
			if diff := cmp.Diff(tt.want, match(a, ask, eps...)); diff != "" {
				t.Errorf("matched blocks per endpoint %v (-want +got):\n%s", eps, diff)
			}
		})
	}
}

func TestApproximateEvictionBoundsMemory(t *testing.T) {
	t.Run("per endpoint capacity keeps the most recent prefix", func(t *testing.T) {
		a := newIndex(t, ApproximateConfig{})
		long := chainOf("m", seq(1, 16*50))
		a.Add("e0", 20, long)
		if got := a.EndpointBlocks("e0"); got != 20 {
			t.Fatalf("e0 holds %d blocks, want its capacity 20", got)
		}
		if got := match(a, long, "e0"); got[0] != 20 {
			t.Errorf("e0 matches %d blocks, want the first 20", got[0])
		}
		other := chainOf("m", seq(5000, 16*15))
		a.Add("e0", 0, other) // capacity 0 keeps 20
		if got := a.EndpointBlocks("e0"); got != 20 {
			t.Fatalf("e0 holds %d blocks after a second chain, want 20", got)
		}
		if got := match(a, long, "e0", "e1"); !cmp.Equal(got, []int{5, 0}) {
			t.Errorf("after 15 newer blocks, the old chain matches %v, want its first 5 blocks", got)
		}
		a.Add("e0", 3, nil) // shrinking evicts at once
		if got := a.EndpointBlocks("e0"); got != 3 {
			t.Errorf("after shrinking to 3, e0 holds %d", got)
		}
	})
	t.Run("global bound evicts the least recent block of any endpoint", func(t *testing.T) {
		a := newIndex(t, ApproximateConfig{MaxBlocks: 100, EndpointCapacity: 1000})
		chains := make([][]BlockHash, 10)
		for i := range chains {
			chains[i] = chainOf("m", seq(100000*(i+1), 16*30))
			a.Add(fmt.Sprint("e", i), 0, chains[i])
			if st := a.Stats(); st.Blocks > 100 {
				t.Fatalf("after %d adds the index holds %d blocks, above its bound 100", i+1, st.Blocks)
			}
		}
		st := a.Stats()
		if st.Blocks != 100 || st.Evictions != 200 {
			t.Errorf("stats %+v, want 100 blocks and 200 evictions", st)
		}
		// The oldest endpoints lost everything and were released.
		if st.Endpoints != 4 {
			t.Errorf("%d endpoints hold blocks, want 4 (30+30+30+10)", st.Endpoints)
		}
		got := make([]int, 10)
		for i := range chains {
			got[i] = match(a, chains[i], fmt.Sprint("e", i))[0]
		}
		if want := []int{0, 0, 0, 0, 0, 0, 10, 30, 30, 30}; !cmp.Equal(got, want) {
			t.Errorf("matched blocks per endpoint %v, want %v", got, want)
		}
	})
	t.Run("clear forgets an endpoint", func(t *testing.T) {
		a := newIndex(t, ApproximateConfig{})
		c := chainOf("m", seq(1, 64))
		a.Add("e0", 0, c)
		a.Add("e1", 0, c)
		a.Clear("e0")
		a.Clear("unknown")
		if got := match(a, c, "e0", "e1"); !cmp.Equal(got, []int{0, 4}) {
			t.Errorf("after Clear(e0) matches are %v, want [0 4]", got)
		}
		if st := a.Stats(); st.Blocks != 4 || st.Endpoints != 1 {
			t.Errorf("stats %+v, want 4 blocks on 1 endpoint", st)
		}
	})
}

func TestNewApproximateRejectsNegativeBounds(t *testing.T) {
	for _, cfg := range []ApproximateConfig{{EndpointCapacity: -1}, {MaxBlocks: -1}} {
		if _, err := NewApproximate(cfg); err == nil {
			t.Errorf("NewApproximate(%+v) succeeded", cfg)
		}
	}
}

// refIndex is a slow, obviously correct model of Approximate.
type refIndex struct {
	defCap, max int
	caps        map[string]int
	lists       map[string][]BlockHash // most recent first
	global      []refEntry             // most recent first
}

type refEntry struct {
	ep string
	h  BlockHash
}

func (r *refIndex) removeAt(ep string, h BlockHash) {
	r.lists[ep] = slices.DeleteFunc(r.lists[ep], func(x BlockHash) bool { return x == h })
	r.global = slices.DeleteFunc(r.global, func(e refEntry) bool { return e.ep == ep && e.h == h })
}

func (r *refIndex) add(ep string, capacity int, chain []BlockHash) {
	if capacity > 0 {
		r.caps[ep] = capacity
	} else if r.caps[ep] == 0 {
		r.caps[ep] = r.defCap
	}
	c := r.caps[ep]
	for len(r.lists[ep]) > c {
		l := r.lists[ep]
		r.removeAt(ep, l[len(l)-1])
	}
	n := min(len(chain), c, r.max)
	for i := n - 1; i >= 0; i-- {
		h := chain[i]
		if slices.Contains(r.lists[ep], h) {
			r.removeAt(ep, h)
		} else {
			if l := r.lists[ep]; len(l) >= c {
				r.removeAt(ep, l[len(l)-1])
			}
			if len(r.global) >= r.max {
				last := r.global[len(r.global)-1]
				r.removeAt(last.ep, last.h)
				if last.ep != ep && len(r.lists[last.ep]) == 0 {
					delete(r.caps, last.ep) // an emptied endpoint is forgotten
				}
			}
		}
		r.lists[ep] = append([]BlockHash{h}, r.lists[ep]...)
		r.global = append([]refEntry{{ep, h}}, r.global...)
	}
	if len(r.lists[ep]) == 0 {
		delete(r.caps, ep)
	}
}

// match walks every block: no reliance on the prefix property.
func (r *refIndex) match(chain []BlockHash, eps []string) []int {
	out := make([]int, len(eps))
	for i, ep := range eps {
		for _, h := range chain {
			if !slices.Contains(r.lists[ep], h) {
				break
			}
			out[i]++
		}
	}
	return out
}

// TestApproximateAgreesWithReference drives Approximate and the reference
// model with the same random operations on conversations that share
// prefixes, under tight bounds, and compares every match.
func TestApproximateAgreesWithReference(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			const maxBlocks = 60
			a := newIndex(t, ApproximateConfig{EndpointCapacity: 25, MaxBlocks: maxBlocks})
			ref := &refIndex{defCap: 25, max: maxBlocks, caps: map[string]int{}, lists: map[string][]BlockHash{}}
			eps := []string{"e0", "e1", "e2", "e3", "e4"}
			// A few trunks; conversations extend a trunk by random turns.
			var convs [][]uint32
			for i := 0; i < 4; i++ {
				convs = append(convs, seq(10000*(i+1), 16*(1+rng.IntN(8))))
			}
			for op := 0; op < 1500; op++ {
				c := convs[rng.IntN(len(convs))]
				if rng.IntN(3) == 0 {
					ext := cat(c, seq(rng.IntN(1<<20), 1+rng.IntN(60)))
					convs = append(convs, ext)
					c = ext
				}
				chain := chainOf("m", c)
				switch r := rng.IntN(10); {
				case r < 5:
					ep := eps[rng.IntN(len(eps))]
					capacity := 0
					if rng.IntN(4) == 0 {
						capacity = 1 + rng.IntN(30)
					}
					a.Add(ep, capacity, chain)
					ref.add(ep, capacity, chain)
				case r < 6 && op%7 == 0:
					ep := eps[rng.IntN(len(eps))]
					a.Clear(ep)
					for _, h := range slices.Clone(ref.lists[ep]) {
						ref.removeAt(ep, h)
					}
					delete(ref.caps, ep) // a cleared endpoint starts afresh
				default:
					got := match(a, chain, eps...)
					want := ref.match(chain, eps)
					if !cmp.Equal(got, want) {
						t.Fatalf("op %d: Match = %v, reference %v", op, got, want)
					}
				}
				if st := a.Stats(); st.Blocks != len(ref.global) {
					t.Fatalf("op %d: index holds %d blocks, reference %d", op, st.Blocks, len(ref.global))
				}
				for _, ep := range eps {
					if got, want := a.EndpointBlocks(ep), len(ref.lists[ep]); got != want {
						t.Fatalf("op %d: %s holds %d blocks, reference %d", op, ep, got, want)
					}
				}
			}
		})
	}
}

func TestApproximateConcurrentUse(t *testing.T) {
	a := newIndex(t, ApproximateConfig{EndpointCapacity: 200, MaxBlocks: 1000})
	system := seq(1, 16*20)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			eps := []string{"e0", "e1", "e2", "e3"}
			out := make([]int, len(eps))
			for i := 0; i < 300; i++ {
				chain := chainOf("m", cat(system, seq(rng.IntN(1000)*100, 16*rng.IntN(10))))
				switch rng.IntN(8) {
				case 0:
					a.Clear(eps[rng.IntN(4)])
				case 1, 2, 3:
					a.Add(eps[rng.IntN(4)], 0, chain)
				default:
					a.Match(chain, eps, out)
					for j, m := range out {
						if m < 0 || m > len(chain) {
							t.Errorf("matched %d blocks of %d on %s", m, len(chain), eps[j])
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	if st := a.Stats(); st.Blocks > 1000 {
		t.Errorf("index holds %d blocks, above its bound", st.Blocks)
	}
}

// TestApproximateMemoryPerBlock measures what one (endpoint, block) entry
// costs, to size MaxBlocks; BytesPerBlock documents the figure.
func TestApproximateMemoryPerBlock(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a large index")
	}
	const n = 1 << 18
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a := newIndex(t, ApproximateConfig{EndpointCapacity: n, MaxBlocks: n})
	for e := 0; e < 8; e++ {
		a.Add(fmt.Sprint("e", e), 0, chainOf("m", seq(e*1000000, 16*n/8)))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.1f bytes per (endpoint, block) entry over %d entries", per, a.Stats().Blocks)
	if per > 2*BytesPerBlock {
		t.Errorf("%.1f bytes per entry, more than twice the documented %d", per, BytesPerBlock)
	}
	runtime.KeepAlive(a)
}

// benchIndex builds an index of endpoints × blocks: every endpoint holds its
// own conversations behind one system prompt of sys blocks that all share.
func benchIndex(b *testing.B, endpoints, blocks, sys int) (*Approximate, []string, [][]uint32) {
	a := newIndex(b, ApproximateConfig{})
	system := seq(1, 16*sys)
	names := make([]string, endpoints)
	prompts := make([][]uint32, endpoints)
	for e := range names {
		names[e] = fmt.Sprintf("endpoint-%03d", e)
		prompts[e] = cat(system, seq(1000000*(e+1), 16*(blocks-sys)))
		a.Add(names[e], 0, chainOf("m", prompts[e]))
	}
	return a, names, prompts
}

func BenchmarkApproximateMatch(b *testing.B) {
	a, names, prompts := benchIndex(b, 100, 500, 100)
	out := make([]int, len(names))
	cases := []struct {
		name  string
		chain []BlockHash
	}{
		{"full-hit-on-one", chainOf("m", prompts[42])},
		{"system-prompt-only", chainOf("m", cat(seq(1, 1600), seq(7, 6400)))},
		{"miss", chainOf("m", seq(77, 8000))},
	}
	for _, c := range cases {
		b.Run("endpoints=100/blocks=500/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			runtime.GC() // collect setup garbage outside the measurement
			cpu := processCPU()
			for b.Loop() {
				a.Match(c.chain, names, out)
			}
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

func BenchmarkApproximateAdd(b *testing.B) {
	a, names, prompts := benchIndex(b, 100, 500, 100)
	chain := chainOf("m", prompts[3])
	b.Run("endpoints=100/blocks=500/repeat", func(b *testing.B) {
		b.ReportAllocs()
		runtime.GC() // collect setup garbage outside the measurement
		cpu := processCPU()
		for b.Loop() {
			a.Add(names[3], 0, chain)
		}
		b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	})
	b.Run("endpoints=100/blocks=500/new-tail", func(b *testing.B) {
		b.ReportAllocs()
		ids := slices.Clone(prompts[5])
		chain := make([]BlockHash, 0, 500)
		i := 0
		runtime.GC() // collect setup garbage outside the measurement
		cpu := processCPU()
		for b.Loop() {
			i++
			ids[len(ids)-1] = uint32(i) // last block new each time
			chain = Hasher{}.AppendChain(chain[:0], "m", nil, ids)
			a.Add(names[5], 600, chain)
		}
		b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	})
}
