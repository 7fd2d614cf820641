package prefixindex

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestTouchEqualsUnlinkThenPushFront holds the fused touch equal, in every
// link of both LRU lists, to unlinkLRU followed by pushFront, on random
// indexes and random nodes (the list heads and tails included).
func TestTouchEqualsUnlinkThenPushFront(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 6))
	for round := range 40 {
		a := newIndex(t, ApproximateConfig{EndpointCapacity: 1 + rng.IntN(60), MaxBlocks: 1 + rng.IntN(400)})
		for range 1 + rng.IntN(30) {
			ids := make([]uint32, 16*(1+rng.IntN(20)))
			for i := range ids {
				ids[i] = uint32(rng.IntN(3)) // few values: chains share prefixes
			}
			a.Add(fmt.Sprintf("ep-%d", rng.IntN(6)), rng.IntN(80), chainOf("m", ids))
		}
		var live []int32
		for x, n := range a.nodes {
			if n.slot != none && a.find(n.hash, n.slot) != none {
				live = append(live, int32(x))
			}
		}
		if len(live) == 0 {
			continue
		}
		for range 50 {
			x := live[rng.IntN(len(live))]
			ref := &Approximate{nodes: slices.Clone(a.nodes), slots: slices.Clone(a.slots), ghead: a.ghead, gtail: a.gtail}
			ref.unlinkLRU(x)
			ref.pushFront(x)
			a.touch(x)
			if !slices.Equal(a.nodes, ref.nodes) || !slices.Equal(a.slots, ref.slots) || a.ghead != ref.ghead || a.gtail != ref.gtail {
				t.Fatalf("round %d: touch(%d) differs from unlinkLRU+pushFront", round, x)
			}
		}
	}
}
