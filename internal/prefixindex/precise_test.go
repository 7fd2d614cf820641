package prefixindex

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func u64s(chain []BlockHash) []uint64 {
	out := make([]uint64, len(chain))
	for i, h := range chain {
		out[i] = uint64(h)
	}
	return out
}

func preciseMatch(p *Precise, chain []BlockHash, eps ...string) []int {
	out := make([]int, len(eps))
	p.Match(chain, eps, out)
	return out
}

// fakeNow is a settable clock for pending deadlines.
type fakeNow struct{ t time.Time }

func (f *fakeNow) now() time.Time { return f.t }

func TestPreciseFollowsStoresRemovalsAndClears(t *testing.T) {
	system := chainOf("m", seq(1, 160)) // 10 blocks
	convA := chainOf("m", cat(seq(1, 160), seq(1000, 48)))
	convB := chainOf("m", cat(seq(1, 160), seq(2000, 80)))
	eps := []string{"e0", "e1", "unknown"}
	type op struct {
		kind string // stored, removed, cleared
		ep   string
		hs   []BlockHash
	}
	tests := []struct {
		name string
		ops  []op
		ask  []BlockHash
		want []int
	}{
		{"empty", nil, convA, []int{0, 0, 0}},
		{"stored whole prompt", []op{{"stored", "e0", convA}}, convA, []int{13, 0, 0}},
		{"stored out of order", []op{{"stored", "e0", convA[5:]}, {"stored", "e0", convA[:5]}}, convA, []int{13, 0, 0}},
		{"shared system prompt", []op{{"stored", "e0", convA}, {"stored", "e1", convB}}, convB, []int{10, 15, 0}},
		{"tail evicted", []op{{"stored", "e0", convA}, {"removed", "e0", convA[11:]}}, convA, []int{11, 0, 0}},
		{"middle evicted stops the match", []op{{"stored", "e0", convA}, {"removed", "e0", convA[4:5]}}, convA, []int{4, 0, 0}},
		{"first block evicted", []op{{"stored", "e0", convA}, {"removed", "e0", convA[:1]}}, convA, []int{0, 0, 0}},
		{"cleared", []op{{"stored", "e0", convA}, {"stored", "e1", convA}, {"cleared", "e0", nil}}, convA, []int{0, 13, 0}},
		{"stored again after clear", []op{{"stored", "e0", convA}, {"cleared", "e0", nil}, {"stored", "e0", system}}, convA, []int{10, 0, 0}},
		{"removing what is not held is a no-op", []op{{"stored", "e0", system}, {"removed", "e0", convB[10:]}, {"removed", "e1", system}}, convA, []int{10, 0, 0}},
		{"duplicate stores count once", []op{{"stored", "e0", system}, {"stored", "e0", system}, {"removed", "e0", system[9:]}}, convA, []int{9, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPrecise(nil)
			for _, o := range tt.ops {
				switch o.kind {
				case "stored":
					p.Stored(o.ep, u64s(o.hs))
				case "removed":
					p.Removed(o.ep, u64s(o.hs))
				case "cleared":
					p.Cleared(o.ep)
				}
			}
			if diff := cmp.Diff(tt.want, preciseMatch(p, tt.ask, eps...)); diff != "" {
				t.Errorf("matched (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrecisePendingBlocksCountUntilTheirDeadline(t *testing.T) {
	clk := &fakeNow{t: time.Unix(1000, 0)}
	p := NewPrecise(clk.now)
	chain := chainOf("m", seq(1, 160)) // 10 blocks
	p.Stored("e0", u64s(chain[:3]))
	p.AddPending("e0", chain, clk.t.Add(5*time.Second))
	p.AddPending("e1", chain[:6], clk.t.Add(time.Second))

	if diff := cmp.Diff([]int{10, 6}, preciseMatch(p, chain, "e0", "e1")); diff != "" {
		t.Errorf("pending counted (-want +got):\n%s", diff)
	}
	stored := make([]int, 2)
	p.MatchStored(chain, []string{"e0", "e1"}, stored)
	if diff := cmp.Diff([]int{3, 0}, stored); diff != "" {
		t.Errorf("MatchStored counts pending claims (-want +got):\n%s", diff)
	}
	if got, want := p.Stats(), (PreciseStats{Endpoints: 2, Stored: 3, Pending: 13}); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}

	clk.t = clk.t.Add(2 * time.Second) // e1's deadline passed
	if diff := cmp.Diff([]int{10, 0}, preciseMatch(p, chain, "e0", "e1")); diff != "" {
		t.Errorf("after e1's deadline (-want +got):\n%s", diff)
	}
	if n := p.ExpirePending(clk.t); n != 6 {
		t.Errorf("expired %d, want 6", n)
	}

	// The engine reports the blocks it actually cached: they stay after the
	// pending deadline.
	p.Stored("e0", u64s(chain[:8]))
	clk.t = clk.t.Add(10 * time.Second)
	if diff := cmp.Diff([]int{8, 0}, preciseMatch(p, chain, "e0", "e1")); diff != "" {
		t.Errorf("after e0's deadline (-want +got):\n%s", diff)
	}
	p.ExpirePending(clk.t)
	if got, want := p.Stats(), (PreciseStats{Endpoints: 1, Stored: 8, Pending: 0}); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}

	// A reset clears pending claims too.
	p.AddPending("e0", chain, clk.t.Add(time.Minute))
	p.Cleared("e0")
	if diff := cmp.Diff([]int{0}, preciseMatch(p, chain, "e0")); diff != "" {
		t.Errorf("after clear (-want +got):\n%s", diff)
	}
	if got := p.Stats(); got != (PreciseStats{}) {
		t.Errorf("stats after clear %+v, want zero", got)
	}
}

// TestPreciseMatchesAReferenceModel drives the index and a plain model (a
// set per endpoint) with random operations and compares every match.
func TestPreciseMatchesAReferenceModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	clk := &fakeNow{t: time.Unix(0, 0)}
	p := NewPrecise(clk.now)
	names := []string{"a", "b", "c", "d", "e"}
	type claim struct {
		stored bool
		until  time.Time
	}
	model := map[string]map[BlockHash]claim{}
	for _, n := range names {
		model[n] = map[BlockHash]claim{}
	}
	// A few prompts sharing prefixes, so that chains overlap.
	var prompts [][]BlockHash
	for i := range 12 {
		prefix := seq(1+i%3*10000, 16*(4+i%5))
		prompts = append(prompts, chainOf("m", cat(prefix, seq(100000+i*1000, 16*(1+i%7)))))
	}
	held := func(n string, h BlockHash) bool {
		c, ok := model[n][h]
		return ok && (c.stored || c.until.After(clk.t))
	}
	for step := range 20000 {
		n := names[rng.IntN(len(names))]
		pr := prompts[rng.IntN(len(prompts))]
		lo := rng.IntN(len(pr))
		hi := lo + 1 + rng.IntN(len(pr)-lo)
		switch r := rng.IntN(100); {
		case r < 40:
			p.Stored(n, u64s(pr[lo:hi]))
			for _, h := range pr[lo:hi] {
				model[n][h] = claim{stored: true}
			}
		case r < 60:
			p.Removed(n, u64s(pr[lo:hi]))
			for _, h := range pr[lo:hi] {
				delete(model[n], h)
			}
		case r < 62:
			p.Cleared(n)
			clear(model[n])
		case r < 80:
			until := clk.t.Add(time.Duration(1+rng.IntN(100)) * time.Millisecond)
			p.AddPending(n, pr[lo:hi], until)
			for _, h := range pr[lo:hi] {
				c, ok := model[n][h]
				if ok && c.stored {
					continue
				}
				if !ok || until.After(c.until) {
					model[n][h] = claim{until: until}
				}
			}
		case r < 85:
			clk.t = clk.t.Add(time.Duration(rng.IntN(30)) * time.Millisecond)
		case r < 86:
			p.ExpirePending(clk.t)
			for _, n := range names {
				for h, c := range model[n] {
					if !c.stored && !c.until.After(clk.t) {
						delete(model[n], h)
					}
				}
			}
		default:
			got := preciseMatch(p, pr, names...)
			want := make([]int, len(names))
			for i, n := range names {
				for _, h := range pr {
					if !held(n, h) {
						break
					}
					want[i]++
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("step %d: matched (-want +got):\n%s", step, diff)
			}
		}
	}
	var stored, pending int
	for _, n := range names {
		for _, c := range model[n] {
			if c.stored {
				stored++
			} else {
				pending++
			}
		}
	}
	if st := p.Stats(); st.Stored != stored || st.Pending != pending {
		t.Errorf("stats %+v, model has %d stored and %d pending", st, stored, pending)
	}
}

func TestPreciseIsSafeForConcurrentUse(t *testing.T) {
	p := NewPrecise(nil)
	chain := chainOf("m", seq(1, 16*64))
	var wg sync.WaitGroup
	for w := range 4 {
		ep := fmt.Sprintf("e%d", w)
		wg.Go(func() {
			for i := range 200 {
				p.Stored(ep, u64s(chain[:1+i%64]))
				p.AddPending(ep, chain, time.Now().Add(time.Millisecond))
				if i%10 == 0 {
					p.Removed(ep, u64s(chain[32:]))
				}
				if i%50 == 0 {
					p.Cleared(ep)
				}
			}
		})
		wg.Go(func() {
			m := make([]int, 4)
			for range 200 {
				p.Match(chain, []string{"e0", "e1", "e2", "e3"}, m)
				p.ExpirePending(time.Now())
			}
		})
	}
	wg.Wait()
}

// BenchmarkPreciseMatch: an 8,192-token prompt (512 blocks) against 16
// endpoints, 4 of which hold its 6,000-token system prompt and one the whole
// prompt.
func BenchmarkPreciseMatch(b *testing.B) {
	p := NewPrecise(nil)
	system := seq(1, 6000)
	prompt := chainOf("m", cat(system, seq(50000, 8192-6000)))
	eps := make([]string, 16)
	for i := range eps {
		eps[i] = fmt.Sprintf("e%d", i)
		// Unrelated blocks fill each endpoint like a busy engine.
		p.Stored(eps[i], u64s(chainOf("m", seq(100000*(i+1), 16*20000))))
	}
	for i := range 4 {
		p.Stored(eps[i], u64s(prompt[:len(system)/16]))
	}
	p.Stored(eps[0], u64s(prompt))
	m := make([]int, len(eps))
	b.ReportAllocs()
	for b.Loop() {
		p.Match(prompt, eps, m)
	}
	if m[0] != len(prompt) || m[1] != 375 || m[5] != 0 {
		b.Fatalf("matched %v", m)
	}
}

// BenchmarkMatchPreciseVsApproximate runs BenchmarkApproximateMatch's
// cases against both indexes holding the same blocks (100 endpoints, 500
// blocks each, a shared 100-block system prompt), side by side.
func BenchmarkMatchPreciseVsApproximate(b *testing.B) {
	a, names, prompts := benchIndex(b, 100, 500, 100)
	p := NewPrecise(nil)
	for e, name := range names {
		p.Stored(name, u64s(chainOf("m", prompts[e])))
	}
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
		for _, idx := range []struct {
			name  string
			match func([]BlockHash, []string, []int)
		}{{"approximate", a.Match}, {"precise", p.Match}} {
			b.Run(c.name+"/"+idx.name, func(b *testing.B) {
				b.ReportAllocs()
				runtime.GC()
				cpu := processCPU()
				for b.Loop() {
					idx.match(c.chain, names, out)
				}
				b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}
