package autoscale

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestChooseVictims(t *testing.T) {
	// Blocks 1-3 are a shared system prompt on a and b; 10-12 hot only on
	// c; 20 lukewarm only on d.
	hot := map[string]map[uint64]float64{
		"a-0": {1: 50, 2: 50, 3: 50},
		"b-0": {1: 40, 2: 40, 3: 40},
		"c-0": {10: 100, 11: 100, 12: 100},
		"d-0": {20: 5},
	}
	groups := []GroupEngines{{"a", []string{"a-0"}}, {"b", []string{"b-0"}}, {"c", []string{"c-0"}}, {"d", []string{"d-0"}}}
	get := func(e string) map[uint64]float64 { return hot[e] }
	for _, tc := range []struct {
		name string
		n    int
		want []Victim
	}{
		{"one: the shared copy costs nothing", 1, []Victim{{"b", 0}}},
		// After b goes, a's blocks are unique (150) and d's 5 is cheapest.
		{"two: recomputed after the first", 2, []Victim{{"b", 0}, {"d", 5}}},
		{"more than there are", 9, []Victim{{"b", 0}, {"d", 5}, {"a", 150}, {"c", 300}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ChooseVictims(groups, get, tc.n)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("victims (-want +got):\n%s", d)
			}
		})
	}
	t.Run("ties go to the newest", func(t *testing.T) {
		got := ChooseVictims([]GroupEngines{{"old", nil}, {"new", nil}}, get, 1)
		if got[0].Group != "new" {
			t.Errorf("victim %s, want new", got[0].Group)
		}
	})
}

func TestHitLedgerDecays(t *testing.T) {
	l := &HitLedger{HalfLife: time.Minute, MaxBlocks: 4}
	l.Hit("e", t0, []uint64{1, 2})
	l.Hit("e", t0.Add(time.Minute), []uint64{2})
	h := l.Hot("e", t0.Add(time.Minute))
	if math.Abs(h[1]-0.5) > 1e-9 || math.Abs(h[2]-1.5) > 1e-9 {
		t.Errorf("hot = %v, want 1:0.5 2:1.5", h)
	}
	// Far in the future (past the renormalisation) values keep decaying.
	l.Hit("e", t0.Add(40*time.Minute), []uint64{3})
	if h := l.Hot("e", t0.Add(40*time.Minute)); h[3] != 1 || h[2] > 1e-6 {
		t.Errorf("after 40 half-lives hot = %v, want 3:1 and 2 gone", h)
	}
	// The bound keeps the hottest.
	l.Hit("e", t0.Add(40*time.Minute), []uint64{3, 4, 5, 6, 7})
	if h := l.Hot("e", t0.Add(40*time.Minute)); len(h) > 4 || h[3] != 2 {
		t.Errorf("bounded hot = %v, want at most 4 blocks keeping 3:2", h)
	}
	l.Forget("e")
	if l.Hot("e", t0) != nil {
		t.Error("Forget kept the engine")
	}
}

func TestHitLedgerHottest(t *testing.T) {
	l := &HitLedger{HalfLife: time.Minute}
	l.Hit("e", t0, []uint64{1, 2, 3, 4})
	l.Hit("e", t0, []uint64{3, 4})
	l.Hit("e", t0, []uint64{4})
	for _, tc := range []struct {
		n    int
		want map[uint64]float64
	}{
		{1, map[uint64]float64{4: 3}},
		{2, map[uint64]float64{4: 3, 3: 2}},
		// 1 and 2 tie at the cut: the lower hash stays.
		{3, map[uint64]float64{4: 3, 3: 2, 1: 1}},
		{0, map[uint64]float64{4: 3, 3: 2, 2: 1, 1: 1}},
		{9, map[uint64]float64{4: 3, 3: 2, 2: 1, 1: 1}},
	} {
		if d := cmp.Diff(tc.want, l.Hottest("e", t0, tc.n)); d != "" {
			t.Errorf("Hottest(%d) (-want +got):\n%s", tc.n, d)
		}
	}
}

func TestSampleChain(t *testing.T) {
	chain := []uint64{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}
	if d := cmp.Diff([]uint64{10, 18}, SampleChain(chain)); d != "" {
		t.Errorf("SampleChain (-want +got):\n%s", d)
	}
	// Two prompts sharing a prefix get the same sample of it, whichever
	// engine credits them.
	a, b := SampleChain(chain[:9]), SampleChain(append(chain[:9:9], 99, 98))
	if d := cmp.Diff(a, b); d != "" {
		t.Errorf("shared prefix sampled differently (-a +b):\n%s", d)
	}
	if len(SampleChain(nil)) != 0 {
		t.Error("empty chain sampled to something")
	}
}
