package autoscale

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// HitLedger keeps, per engine, how much each cached prefix block was hit
// recently: a hit counts 1 and decays with a half-life, so a block hit often
// and lately is hot. A router feeds it from what it routes (Credit: the
// blocks of a request the engine reported cached); ChooseVictims reads it.
//
// Memory is bounded: an engine keeps at most MaxBlocks blocks, the coldest
// go first.
type HitLedger struct {
	// HalfLife is the decay half-life; default 5m.
	HalfLife time.Duration
	// MaxBlocks bounds the blocks kept per engine; default 65536.
	MaxBlocks int
	// Stride 1 makes Credit credit every block of a chain; any other
	// value samples one in ChainStride (SampleChain), as a router does.
	Stride int

	origin  time.Time
	engines map[string]map[uint64]float64
}

// scale is the factor stored values carry at now (values are stored
// relative to origin so that decay costs nothing per block).
func (l *HitLedger) scale(now time.Time) float64 {
	if l.HalfLife <= 0 {
		l.HalfLife = 5 * time.Minute
	}
	if l.origin.IsZero() {
		l.origin = now
	}
	x := now.Sub(l.origin).Seconds() / l.HalfLife.Seconds()
	if x > 30 { // renormalise before the factors overflow
		f := math.Exp2(-x)
		for _, blocks := range l.engines {
			for h, v := range blocks {
				if v *= f; v < 1e-6 {
					delete(blocks, h)
				} else {
					blocks[h] = v
				}
			}
		}
		l.origin, x = now, 0
	}
	return math.Exp2(x)
}

// Hit credits one hit to each of blocks on engine at now.
func (l *HitLedger) Hit(engine string, now time.Time, blocks []uint64) {
	if len(blocks) == 0 {
		return
	}
	if l.engines == nil {
		l.engines = map[string]map[uint64]float64{}
	}
	if l.MaxBlocks <= 0 {
		l.MaxBlocks = 1 << 16
	}
	f := l.scale(now)
	m := l.engines[engine]
	if m == nil {
		m = map[uint64]float64{}
		l.engines[engine] = m
	}
	for _, h := range blocks {
		m[h] += f
	}
	if len(m) > l.MaxBlocks {
		for _, e := range hottestFirst(m)[max(l.MaxBlocks*3/4, 1):] {
			delete(m, e.h)
		}
	}
}

type blockHits struct {
	h uint64
	v float64
}

// hottestFirst returns m's blocks by decreasing hits, ties by hash (so
// the order does not depend on the map's).
func hottestFirst(m map[uint64]float64) []blockHits {
	all := make([]blockHits, 0, len(m))
	for h, v := range m {
		all = append(all, blockHits{h, v})
	}
	slices.SortFunc(all, func(a, b blockHits) int {
		if c := cmp.Compare(b.v, a.v); c != 0 {
			return c
		}
		return cmp.Compare(a.h, b.h)
	})
	return all
}

// Forget drops an engine's statistics (it was removed).
func (l *HitLedger) Forget(engine string) { delete(l.engines, engine) }

// Hot returns the engine's blocks and their decayed hit counts at now. The
// map is a copy.
func (l *HitLedger) Hot(engine string, now time.Time) map[uint64]float64 {
	m := l.engines[engine]
	if len(m) == 0 {
		return nil
	}
	f := 1 / l.scale(now)
	out := make(map[uint64]float64, len(m))
	for h, v := range m {
		out[h] = v * f
	}
	return out
}

// ChainStride is the sampling of prefix chains in a HitLedger: of a
// prompt's chain of block hashes, only every ChainStride-th block (the
// first, the ChainStride+1-th, ...) is credited. The sample is the same
// on every engine (it depends on the block's place in the chain, not on
// the engine), so whether a block is held by one engine or several is
// judged alike; it lets the HotBlocksReported blocks a router reports
// cover ChainStride times more prompt tokens.
const ChainStride = 8

// SampleChain returns the blocks of chain a ledger credits (ChainStride).
func SampleChain(chain []uint64) []uint64 {
	out := make([]uint64, 0, (len(chain)+ChainStride-1)/ChainStride)
	for i := 0; i < len(chain); i += ChainStride {
		out = append(out, chain[i])
	}
	return out
}

// HotBlocksReported bounds the blocks a router reports per endpoint
// (EndpointLoad.Hot, from Hottest): the hottest.
const HotBlocksReported = 4096

// Hottest is Hot cut to the engine's n hottest blocks (all of them when
// n <= 0 or it holds no more). Ties at the cut are broken by block hash,
// so the answer does not depend on map order.
func (l *HitLedger) Hottest(engine string, now time.Time, n int) map[uint64]float64 {
	m := l.Hot(engine, now)
	if n <= 0 || len(m) <= n {
		return m
	}
	out := make(map[uint64]float64, n)
	for _, e := range hottestFirst(m)[:n] {
		out[e.h] = e.v
	}
	return out
}

// EndpointLoad is what a router reports of one endpoint for scale-down
// (GET /autoscale/endpoints): the group it belongs to, the requests in
// flight on it, whether it drains (takes no new requests), and its hottest
// cached prefix blocks with their decayed hits (HitLedger.Hot).
type EndpointLoad struct {
	Name     string             `json:"name"`
	Group    string             `json:"group"`
	InFlight int64              `json:"inFlight"`
	Draining bool               `json:"draining"`
	Hot      map[uint64]float64 `json:"hot,omitempty"`
}

// GroupEngines names a group and its engines.
type GroupEngines struct {
	Group   string
	Engines []string
}

// Victim is a group chosen for removal and what its removal costs: the
// decayed hits of the blocks no remaining group holds.
type Victim struct {
	Group     string
	UniqueHot float64
}

// ChooseVictims returns n groups to remove, cheapest first: each time the
// group whose engines hold the least unique hot prefix cache (hits on
// blocks no other remaining group holds), recomputed after each removal
// since a block two groups shared becomes unique to the survivor. hot gives
// an engine's blocks and their hit counts. Ties go to the group listed last
// (callers list groups oldest first, so the newest goes).
func ChooseVictims(groups []GroupEngines, hot func(engine string) map[uint64]float64, n int) []Victim {
	n = min(n, len(groups))
	if n <= 0 {
		return nil
	}
	type gc struct {
		name   string
		blocks map[uint64]float64
		alive  bool
	}
	gs := make([]gc, len(groups))
	holders := map[uint64]int{}
	for i, g := range groups {
		blocks := map[uint64]float64{}
		for _, e := range g.Engines {
			for h, v := range hot(e) {
				blocks[h] += v
			}
		}
		for h := range blocks {
			holders[h]++
		}
		gs[i] = gc{g.Group, blocks, true}
	}
	out := make([]Victim, 0, n)
	for range n {
		best, bestCost := -1, math.Inf(1)
		for i := range gs {
			if !gs[i].alive {
				continue
			}
			cost := 0.0
			for h, v := range gs[i].blocks {
				if holders[h] == 1 {
					cost += v
				}
			}
			if cost <= bestCost {
				best, bestCost = i, cost
			}
		}
		gs[best].alive = false
		for h := range gs[best].blocks {
			holders[h]--
		}
		out = append(out, Victim{Group: gs[best].name, UniqueHot: bestCost})
	}
	return out
}
