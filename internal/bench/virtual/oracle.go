package virtual

import (
	"context"
	"encoding/json"
	"math"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/kvcache"
)

// OracleType is the plugin type of the oracle picker.
const OracleType = "oracle"

// oracleState is the oracle's global, exact view of a fleet: each engine's
// prefix cache (asked directly), the requests routed to it whose prefill has
// not finished (their blocks are about to be cached, and their uncached
// tokens are queued prefill work), and the context its running requests
// hold. It is only kept when the policy is the oracle.
type oracleState struct {
	enabled bool
	// prompt holds the token ids of the request being scheduled (the
	// scheduler's request carries text, as the router's does).
	prompt  []uint32
	cfg     simulator.Config
	engines []oracleEngine
	reqs    map[int]*oracleReq
}

type oracleEngine struct {
	pendingBlocks  map[uint64]int // chain hashes of blocks being prefilled, refcounted
	pendingPrefill int            // uncached prompt tokens still to prefill
	context        int            // prompt + half the output of requests in flight
}

type oracleReq struct {
	ep       *endpoint
	hashes   []uint64
	uncached int
	context  int
	prefill  bool // still prefilling
}

func newOracleState(enabled bool, cfg simulator.Config, engines int) *oracleState {
	o := &oracleState{enabled: enabled, cfg: cfg, reqs: map[int]*oracleReq{}}
	o.engines = make([]oracleEngine, engines)
	for i := range o.engines {
		o.engines[i].pendingBlocks = map[uint64]int{}
	}
	return o
}

// chain returns the chain hashes of ids' full blocks, as the engine computes
// them.
func (o *oracleState) chain(ids []uint32) []uint64 {
	bs := o.cfg.Capacity.BlockSize
	out := make([]uint64, 0, len(ids)/bs)
	parent := kvcache.RootHash("")
	for i := 0; i+bs <= len(ids); i += bs {
		parent = kvcache.HashBlock(parent, ids[i:i+bs])
		out = append(out, uint64(parent))
	}
	return out
}

// cachedTokens returns how many leading prompt tokens engine ep holds or is
// about to hold (blocks of requests it is prefilling).
func (o *oracleState) cachedTokens(ep *endpoint, ids []uint32, hashes []uint64) int {
	have := ep.eng.CachedPrefixTokens(ids, "")
	pend := o.engines[ep.idx].pendingBlocks
	n := 0
	for _, h := range hashes {
		if pend[h] == 0 {
			break
		}
		n += o.cfg.Capacity.BlockSize
	}
	return max(have, n)
}

// estimateTTFT is the oracle's estimate, in milliseconds, of the time to the
// first token of a prompt on ep: the queued prefill work plus the prompt's
// own uncached tokens, processed in chunks of the batch token budget, with
// every step paying the base time and the running sequences' decode and
// context cost (the simulator's step-time model).
func (o *oracleState) estimateTTFT(ep *endpoint, ids []uint32, hashes []uint64) float64 {
	st := o.cfg.StepTime
	capa := o.cfg.Capacity
	snap := ep.eng.Snapshot()
	e := &o.engines[ep.idx]
	uncached := len(ids) - o.cachedTokens(ep, ids, hashes)
	work := e.pendingPrefill + uncached
	running := snap.Running
	budget := max(capa.MaxNumBatchedTokens-running, capa.BlockSize)
	steps := math.Ceil(float64(max(work, 1)) / float64(budget))
	perStep := st.BaseMs + st.DecodeSeqMs*float64(running) + st.ContextTokenMs*float64(e.context+len(ids))
	ms := steps*perStep + st.PrefillTokenMs*float64(work)
	// A full batch or a full cache makes the request wait for a slot.
	if snap.Running+snap.Waiting >= capa.MaxNumSeqs {
		ms += perStep * float64(snap.Running+snap.Waiting-capa.MaxNumSeqs+1)
	}
	return ms
}

// cost is what the oracle minimises: the request's estimated TTFT plus the
// prefill work it leaves for the requests behind it (its uncached tokens
// once more). The second term makes the oracle weigh the future: it keeps a
// prefix where it is cached unless waiting there costs more than computing
// it again elsewhere costs everyone.
func (o *oracleState) cost(ep *endpoint, ids []uint32, hashes []uint64) float64 {
	uncached := len(ids) - o.cachedTokens(ep, ids, hashes)
	return o.estimateTTFT(ep, ids, hashes) + o.cfg.StepTime.PrefillTokenMs*float64(uncached)
}

// routed records that request i went to ep.
func (o *oracleState) routed(i int, ep *endpoint, ids []uint32, output int) {
	if !o.enabled {
		return
	}
	hashes := o.chain(ids)
	r := &oracleReq{ep: ep, hashes: hashes, context: len(ids) + output/2, prefill: true}
	r.uncached = len(ids) - o.cachedTokens(ep, ids, hashes)
	e := &o.engines[ep.idx]
	for _, h := range hashes {
		e.pendingBlocks[h]++
	}
	e.pendingPrefill += r.uncached
	e.context += r.context
	o.reqs[i] = r
}

// firstToken records that request i's prefill is over.
func (o *oracleState) firstToken(i int) {
	r, ok := o.reqs[i]
	if !ok || !r.prefill {
		return
	}
	r.prefill = false
	e := &o.engines[r.ep.idx]
	for _, h := range r.hashes {
		if e.pendingBlocks[h]--; e.pendingBlocks[h] <= 0 {
			delete(e.pendingBlocks, h)
		}
	}
	e.pendingPrefill -= r.uncached
	r.hashes = nil
}

// done records that request i ended.
func (o *oracleState) done(i int) {
	r, ok := o.reqs[i]
	if !ok {
		return
	}
	o.firstToken(i)
	o.engines[r.ep.idx].context -= r.context
	delete(o.reqs, i)
}

func (o *oracleState) factory(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
	var p struct{}
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	return &oraclePicker{tn: framework.TypedName{Type: OracleType, Name: name}, o: o}, nil
}

// oraclePicker picks the endpoint of least cost (estimated TTFT plus the
// prefill work left to others); ties go to
// the endpoint with fewer requests in flight, then to the first.
type oraclePicker struct {
	tn framework.TypedName
	o  *oracleState
}

func (p *oraclePicker) TypedName() framework.TypedName { return p.tn }

func (p *oraclePicker) Pick(_ context.Context, _ *framework.CycleState, req *framework.Request, scored []framework.ScoredEndpoint) []framework.Endpoint {
	var best framework.Endpoint
	bestMs, bestLoad := math.Inf(1), int64(math.MaxInt64)
	ids := p.o.prompt
	hashes := p.o.chain(ids)
	for _, s := range scored {
		ep, ok := s.Endpoint.(*endpoint)
		if !ok {
			continue
		}
		ms := p.o.cost(ep, ids, hashes)
		load, _ := ep.InFlight()
		if ms < bestMs-1e-9 || (math.Abs(ms-bestMs) <= 1e-9 && load < bestLoad) {
			best, bestMs, bestLoad = ep, ms, load
		}
	}
	if best == nil {
		return nil
	}
	return []framework.Endpoint{best}
}

var _ framework.Picker = (*oraclePicker)(nil)
