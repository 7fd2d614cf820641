package prefixtrack

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/kvevents"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/simclock"
)

func ids(from, n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(from + i)
	}
	return out
}

func chain(m string, tokens []uint32) []prefixindex.BlockHash {
	return prefixindex.Hasher{}.AppendChain(nil, m, nil, tokens)
}

// stored is the event an engine publishes for the full blocks of tokens,
// with engine hashes base, base+1, ...
func stored(base uint64, tokens []uint32, lora string) *kvevents.BlockStored {
	n := len(tokens) / 16
	hs := make([]uint64, n)
	for i := range hs {
		hs[i] = base + uint64(i)
	}
	ev := kvevents.NewBlockStored(hs, nil, tokens[:16*n], 16)
	if lora != "" {
		ev.LoRAName = &lora
	}
	return ev
}

func newFedTracker(t *testing.T, clock simclock.Clock, ttl time.Duration, names ...string) *Tracker {
	t.Helper()
	tr, err := New(Config{Clock: clock, PendingTTL: ttl, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		tr.Feed(n, model)
	}
	return tr
}

// TestViewAnswersEachEndpointFromItsIndex: precise endpoints from their
// engines' events, the others from the approximate index, in one Match.
func TestViewAnswersEachEndpointFromItsIndex(t *testing.T) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	tr := newFedTracker(t, clock, 0, "p0", "p1")
	approx, err := prefixindex.NewApproximate(prefixindex.ApproximateConfig{})
	if err != nil {
		t.Fatal(err)
	}
	v := tr.View(approx)
	system := ids(1, 160) // 10 blocks
	prompt := append(append([]uint32(nil), system...), ids(5000, 64)...)
	c := tr.Consumer()
	c.BlockStored("p0", stored(100, prompt, ""))
	c.BlockStored("p1", stored(200, system, ""))
	// Routed to a0 and p1: the approximate index believes both hold it.
	v.Add("a0", 0, chain(model, prompt))
	v.Add("p1", 0, chain(model, prompt))

	eps := []string{"a0", "p0", "a1", "p1"}
	got := make([]int, len(eps))
	v.Match(chain(model, prompt), eps, got)
	// p1's engine holds only the system prompt, whatever was routed there.
	if diff := cmp.Diff([]int{14, 14, 0, 10}, got); diff != "" {
		t.Errorf("matched (-want +got):\n%s", diff)
	}
	// The adapter's blocks are rooted at its name, as the scorer seeds them.
	c.BlockStored("p0", stored(300, system, "sql-lora"))
	v.Match(chain("sql-lora", system), eps, got)
	if diff := cmp.Diff([]int{0, 10, 0, 0}, got); diff != "" {
		t.Errorf("adapter matched (-want +got):\n%s", diff)
	}
	// The engine evicts the first block: nothing of the prompt matches.
	c.BlockRemoved("p0", kvevents.NewBlockRemoved([]uint64{100}))
	v.Match(chain(model, prompt), eps, got)
	if diff := cmp.Diff([]int{14, 0, 0, 10}, got); diff != "" {
		t.Errorf("after eviction (-want +got):\n%s", diff)
	}
	// AllBlocksCleared.
	c.AllCleared("p1")
	v.Match(chain(model, prompt), eps, got)
	if diff := cmp.Diff([]int{14, 0, 0, 0}, got); diff != "" {
		t.Errorf("after clear (-want +got):\n%s", diff)
	}
}

// TestViewPendingClaims: with a pending TTL, a request just routed to a
// precise endpoint counts there until the engine reports its blocks or the
// TTL passes; without, it does not.
func TestViewPendingClaims(t *testing.T) {
	for _, ttl := range []time.Duration{0, 2 * time.Second} {
		t.Run(fmt.Sprint("ttl=", ttl), func(t *testing.T) {
			clock := simclock.NewVirtual(time.Unix(0, 0))
			tr := newFedTracker(t, clock, ttl, "p0", "p1")
			approx, _ := prefixindex.NewApproximate(prefixindex.ApproximateConfig{})
			v := tr.View(approx)
			prompt := ids(1, 320)
			v.Add("p0", 0, chain(model, prompt))
			got := make([]int, 2)
			v.Match(chain(model, prompt), []string{"p0", "p1"}, got)
			want := 0
			if ttl > 0 {
				want = 20
			}
			if diff := cmp.Diff([]int{want, 0}, got); diff != "" {
				t.Errorf("just routed (-want +got):\n%s", diff)
			}
			// The engine has cached half of it when the TTL passes.
			tr.Consumer().BlockStored("p0", stored(1, prompt[:160], ""))
			clock.Advance(3 * time.Second)
			v.Match(chain(model, prompt), []string{"p0", "p1"}, got)
			if diff := cmp.Diff([]int{10, 0}, got); diff != "" {
				t.Errorf("after the TTL (-want +got):\n%s", diff)
			}
		})
	}
}

// BenchmarkViewMatch: an 8,192-token prompt against 16 endpoints, half
// precise, half approximate, each holding its 6,000-token system prompt.
func BenchmarkViewMatch(b *testing.B) {
	tr, err := New(Config{Clock: simclock.Real{}})
	if err != nil {
		b.Fatal(err)
	}
	approx, _ := prefixindex.NewApproximate(prefixindex.ApproximateConfig{})
	v := tr.View(approx)
	system := ids(1, 6000)
	prompt := append(append([]uint32(nil), system...), ids(50000, 8192-6000)...)
	eps := make([]string, 16)
	for i := range eps {
		eps[i] = fmt.Sprintf("e%d", i)
		if i%2 == 0 {
			tr.Feed(eps[i], model)
			tr.Consumer().BlockStored(eps[i], stored(uint64(i)<<32, system, ""))
		} else {
			approx.Add(eps[i], 0, chain(model, system))
		}
	}
	c := chain(model, prompt)
	m := make([]int, len(eps))
	b.ReportAllocs()
	for b.Loop() {
		v.Match(c, eps, m)
	}
	if m[0] != 375 || m[1] != 375 {
		b.Fatalf("matched %v", m)
	}
}
