package prefixtrack

import (
	"sync"

	"github.com/halyard-dev/halyard/internal/prefixindex"
)

// Index is what View needs of the approximate index (and what it offers
// the prefix-cache scorer): prefixcache.Index, declared here by its
// consumer.
type Index interface {
	Match(chain []prefixindex.BlockHash, endpoints []string, matched []int)
	Add(endpoint string, capacity int, chain []prefixindex.BlockHash)
}

// View is the prefix index one prefix-cache scorer reads: the tracker's
// precise index for endpoints in precise mode, the scorer's own approximate
// index for the others. It is safe for concurrent use.
type View struct {
	t       *Tracker
	approx  Index
	scratch sync.Pool // *viewScratch
}

type viewScratch struct {
	pNames, aNames []string
	pIdx, aIdx     []int
	pOut, aOut     []int
}

// View returns a view over approx, the scorer's approximate index.
func (t *Tracker) View(approx Index) *View { return &View{t: t, approx: approx} }

// Match writes into matched[i] the leading blocks of chain endpoints[i]
// holds, according to the endpoint's index.
func (v *View) Match(chain []prefixindex.BlockHash, endpoints []string, matched []int) {
	set := *v.t.preciseSet.Load()
	n := 0
	for _, e := range endpoints {
		if _, ok := set[e]; ok {
			n++
		}
	}
	switch n {
	case 0:
		v.approx.Match(chain, endpoints, matched)
		return
	case len(endpoints):
		v.t.precise.Match(chain, endpoints, matched)
		return
	}
	sc, _ := v.scratch.Get().(*viewScratch)
	if sc == nil {
		sc = &viewScratch{}
	}
	defer v.scratch.Put(sc)
	sc.pNames, sc.aNames, sc.pIdx, sc.aIdx = sc.pNames[:0], sc.aNames[:0], sc.pIdx[:0], sc.aIdx[:0]
	for i, e := range endpoints {
		if _, ok := set[e]; ok {
			sc.pNames, sc.pIdx = append(sc.pNames, e), append(sc.pIdx, i)
		} else {
			sc.aNames, sc.aIdx = append(sc.aNames, e), append(sc.aIdx, i)
		}
	}
	sc.pOut = grow(sc.pOut, len(sc.pNames))
	sc.aOut = grow(sc.aOut, len(sc.aNames))
	v.t.precise.Match(chain, sc.pNames, sc.pOut)
	v.approx.Match(chain, sc.aNames, sc.aOut)
	for k, i := range sc.pIdx {
		matched[i] = sc.pOut[k]
	}
	for k, i := range sc.aIdx {
		matched[i] = sc.aOut[k]
	}
	clear(sc.pNames)
	clear(sc.aNames)
}

func grow(s []int, n int) []int {
	if cap(s) < n {
		return make([]int, n)
	}
	return s[:n]
}

// Add records a request routed to endpoint: in the approximate index,
// which stays warm for a fallback, and, with a pending TTL, as pending
// blocks in the precise index until the engine reports them.
func (v *View) Add(endpoint string, capacity int, chain []prefixindex.BlockHash) {
	if f := v.t.cfg.OnRouted; f != nil {
		var m [1]int
		names := [1]string{endpoint}
		if v.t.IsPrecise(endpoint) {
			v.t.precise.MatchStored(chain, names[:], m[:])
		} else {
			v.approx.Match(chain, names[:], m[:])
		}
		f(endpoint, m[0])
	}
	v.approx.Add(endpoint, capacity, chain)
	if ttl := v.t.cfg.PendingTTL; ttl > 0 && v.t.follows(endpoint) {
		v.t.precise.AddPending(endpoint, chain, v.t.cfg.Clock.Now().Add(ttl))
	}
}

// follows reports whether endpoint may be answered by the precise index.
func (t *Tracker) follows(endpoint string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.eps[endpoint]
	return ok && (e.fed || e.src.Endpoint != "")
}

var _ Index = (*View)(nil)
