package prefixcache

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Type is the registered plugin type.
const Type = "prefix-cache"

// Defaults of Params.
const (
	// DefaultCapacityTokens is an endpoint's KV capacity before its first
	// scrape: Llama-3-8B on an 80 GB H100 (DESIGN.md §7).
	DefaultCapacityTokens = 440_000
	// DefaultMaxPromptBlocks caps the blocks hashed per request: 2,048
	// blocks of 16 tokens, 32k tokens. Longer prompts are scored on their
	// first 32k tokens, which keeps a cycle's cost bounded.
	DefaultMaxPromptBlocks = 2048
	// DefaultQueueGap and DefaultKVUsageGap are the load-over-affinity
	// thresholds; docs/scheduling.md gives the figures that chose them.
	DefaultQueueGap   = 16
	DefaultKVUsageGap = 0.4
)

// bytesPerToken converts a KV capacity in tokens to byte chunks when the
// prompt is hashed as text: English averages about four bytes per token.
const bytesPerToken = 4

// Params configure a Scorer.
type Params struct {
	// BlockSize is the number of token ids per block. Default 16.
	BlockSize int `json:"blockSize"`
	// ChunkBytes is the number of prompt bytes per block when the request
	// has no token ids. Default 64.
	ChunkBytes int `json:"chunkBytes"`
	// DefaultCapacityTokens is an endpoint's KV capacity in tokens until its
	// metrics report one. Default 440,000.
	DefaultCapacityTokens int `json:"defaultCapacityTokens"`
	// MaxIndexBlocks bounds the index's (endpoint, block) entries, about 68
	// bytes each. Default 2^20.
	MaxIndexBlocks int `json:"maxIndexBlocks"`
	// MaxPromptBlocks caps the blocks hashed per request. Default 2,048.
	MaxPromptBlocks int `json:"maxPromptBlocks"`
	// LoadOverride sets when load wins over affinity.
	LoadOverride LoadOverride `json:"loadOverride"`
}

// LoadOverride holds the load-over-affinity thresholds, each relative to the
// least-loaded candidate; 0 turns a check off.
type LoadOverride struct {
	// QueueGap is in requests (engine waiting plus router in-flight).
	// Default 16.
	QueueGap int `json:"queueGap"`
	// KVUsageGap is a fraction of the KV cache, in [0,1]. Default 0.4.
	KVUsageGap float64 `json:"kvUsageGap"`
}

// DefaultParams returns the defaults.
func DefaultParams() Params {
	return Params{
		BlockSize:             prefixindex.DefaultBlockTokens,
		ChunkBytes:            prefixindex.DefaultChunkBytes,
		DefaultCapacityTokens: DefaultCapacityTokens,
		MaxIndexBlocks:        prefixindex.DefaultMaxBlocks,
		MaxPromptBlocks:       DefaultMaxPromptBlocks,
		LoadOverride:          LoadOverride{QueueGap: DefaultQueueGap, KVUsageGap: DefaultKVUsageGap},
	}
}

// Validate reports the first invalid field, named by its path.
func (p Params) Validate() error {
	positive := []struct {
		path string
		v    int
	}{
		{"blockSize", p.BlockSize},
		{"chunkBytes", p.ChunkBytes},
		{"defaultCapacityTokens", p.DefaultCapacityTokens},
		{"maxIndexBlocks", p.MaxIndexBlocks},
		{"maxPromptBlocks", p.MaxPromptBlocks},
	}
	for _, f := range positive {
		if f.v <= 0 {
			return fmt.Errorf("params.%s: must be positive, got %d", f.path, f.v)
		}
	}
	if g := p.LoadOverride.QueueGap; g < 0 {
		return fmt.Errorf("params.loadOverride.queueGap: must not be negative, got %d", g)
	}
	if g := p.LoadOverride.KVUsageGap; !(g >= 0 && g <= 1) {
		return fmt.Errorf("params.loadOverride.kvUsageGap: must be in [0,1], got %v", g)
	}
	return nil
}

// Index is what the scorer needs of a prefix index. prefixindex.Approximate
// implements it; an index fed by engines' KV events can replace it.
type Index interface {
	// Match writes into matched[i] how many leading blocks of chain
	// endpoints[i] holds.
	Match(chain []prefixindex.BlockHash, endpoints []string, matched []int)
	// Add records chain as cached on endpoint, whose capacity in blocks is
	// capacity.
	Add(endpoint string, capacity int, chain []prefixindex.BlockHash)
}

// PredictedHitKey is the CycleState key of the PredictedHit that PreRequest
// leaves for the picked endpoint.
const PredictedHitKey framework.StateKey = "prefix-cache/predicted-hit"

// PredictedHit is what the index predicted for the endpoint a request was
// sent to, before recording the request there.
type PredictedHit struct {
	Endpoint      string
	MatchedBlocks int
	PromptBlocks  int
	// Ratio is MatchedBlocks / PromptBlocks, 0 for a prompt without a full
	// block.
	Ratio float64
	// MatchedTokens is MatchedBlocks in tokens: blocks × blockSize, or,
	// for a prompt hashed as text, chunks × chunkBytes / 4 (an estimate).
	MatchedTokens int
}

// MatchedKey is the CycleState key of the Matched that Score leaves for
// scorers that run after it (predicted-latency reads it to count the
// uncached tokens on each endpoint).
const MatchedKey framework.StateKey = "prefix-cache/matched"

// Matched is, per endpoint of the cycle's Score call (same order), how many
// leading prompt tokens the index predicts cached there: blocks × blockSize,
// or for a prompt hashed as text its matched share of the prompt's bytes
// times the request's PromptTokens.
type Matched struct {
	Tokens []int
	// Ratios is the matched share of the prompt's blocks (chunks for a
	// prompt hashed as text), in [0,1]: the scorer's raw score before the
	// load override.
	Ratios []float64
	// Overridden marks the endpoints whose affinity the load override
	// zeroed (nil when none was): the prefix is cached there, but the
	// endpoint is too far above the least loaded to be chosen for it.
	Overridden []bool
}

// Scorer scores endpoints by predicted prefix-cache hits. It is safe for
// concurrent use.
type Scorer struct {
	tn         framework.TypedName
	stateKey   framework.StateKey
	hasher     prefixindex.Hasher
	index      Index
	approx     *prefixindex.Approximate // nil when another index was given
	params     Params
	log        *slog.Logger
	overrides  atomic.Uint64
	descs      descs
	scratch    sync.Pool // *scratch
	nameBuffer sync.Pool // *[1]string, for PreRequest's one-endpoint match
}

var (
	_ framework.Scorer     = (*Scorer)(nil)
	_ framework.PreRequest = (*Scorer)(nil)
)

type scratch struct {
	names   []string
	matched []int
	depth   []int64
	usage   []float64
}

// cycle is what Score leaves in the cycle state for PreRequest.
type cycle struct {
	chain []prefixindex.BlockHash
	text  bool // hashed as byte chunks
}

// SharedIndexKey is the key under which a host's handle
// (framework.SharedHandle) offers a SharedIndex.
const SharedIndexKey = "prefix-cache/index"

// SharedIndex is an index a host shares between its prefix-cache scorers:
// the router's and the virtual fleet's KV-event tracker, whose views answer
// from the precise index the engines' events keep.
type SharedIndex struct {
	// BlockSize is the shared index's block size in tokens; a scorer's
	// params.blockSize must be the same.
	BlockSize int
	// BlockSizeFrom names the setting BlockSize comes from, for errors
	// ("router.prefixIndex.blockSize"); "" for "the shared index".
	BlockSizeFrom string
	// Wrap builds the index a scorer reads from its own approximate index.
	Wrap WrapIndex
}

// Factory builds a Scorer from JSON params. It reads the handle's
// SharedIndex when the handle offers one (a framework.SharedHandle with
// SharedIndexKey), else gives the scorer its own approximate index.
func Factory(name string, params json.RawMessage, h framework.Handle) (framework.Plugin, error) {
	p := DefaultParams()
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	if sh, ok := h.(framework.SharedHandle); ok {
		if v, ok := sh.Shared(SharedIndexKey); ok {
			si, ok := v.(SharedIndex)
			if !ok {
				return nil, fmt.Errorf("prefix-cache %q: the handle's %s is a %T, not a SharedIndex", name, SharedIndexKey, v)
			}
			if p.BlockSize != si.BlockSize {
				from := si.BlockSizeFrom
				if from == "" {
					from = "the shared index's block size"
				}
				return nil, fmt.Errorf("params.blockSize: %d differs from %s %d, the block size of the KV-event index", p.BlockSize, from, si.BlockSize)
			}
			return NewWrapped(name, p, h, si.Wrap)
		}
	}
	return New(name, p, h)
}

// New returns a Scorer named name with its own approximate index.
func New(name string, p Params, h framework.Handle) (*Scorer, error) {
	return NewWrapped(name, p, h, nil)
}

// WrapIndex builds the index a scorer reads from the scorer's own
// approximate index: for example a view that answers some endpoints from a
// precise index fed by KV events and the others from approx.
type WrapIndex func(approx *prefixindex.Approximate) Index

// NewWrapped returns a Scorer named name with its own approximate index
// (sized by p, reported by Stats), reading wrap(that index); nil wrap reads
// the approximate index itself.
func NewWrapped(name string, p Params, h framework.Handle, wrap WrapIndex) (*Scorer, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	approx, err := prefixindex.NewApproximate(prefixindex.ApproximateConfig{
		EndpointCapacity: max(1, p.DefaultCapacityTokens/p.BlockSize),
		MaxBlocks:        p.MaxIndexBlocks,
	})
	if err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	var idx Index = approx
	if wrap != nil {
		if idx = wrap(approx); idx == nil {
			return nil, fmt.Errorf("prefix-cache %q: the index wrapper returned nil", name)
		}
	}
	s, err := NewWithIndex(name, p, h, idx)
	if err != nil {
		return nil, err
	}
	s.approx = approx
	return s, nil
}

// NewWithIndex returns a Scorer named name over idx, for example a precise
// index fed by KV events. p.MaxIndexBlocks is then unused.
func NewWithIndex(name string, p Params, h framework.Handle, idx Index) (*Scorer, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if idx == nil {
		return nil, fmt.Errorf("prefix-cache %q: nil index", name)
	}
	log := slog.Default()
	if h != nil {
		log = h.Logger()
	}
	return &Scorer{
		tn:       framework.TypedName{Type: Type, Name: name},
		stateKey: framework.StateKey(Type + "/" + name + "/cycle"),
		hasher:   prefixindex.Hasher{BlockTokens: p.BlockSize, ChunkBytes: p.ChunkBytes},
		index:    idx,
		params:   p,
		log:      log,
		descs:    newDescs(name),
	}, nil
}

// TypedName returns the plugin's type and name.
func (s *Scorer) TypedName() framework.TypedName { return s.tn }

// Score writes, per endpoint, the share of the prompt's blocks it holds as a
// prefix, or 0 where load overrides affinity.
func (s *Scorer) Score(ctx context.Context, state *framework.CycleState, req *framework.Request, endpoints []framework.Endpoint, scores []float64) {
	if req == nil || len(endpoints) == 0 {
		return
	}
	c := s.cycle(state, req)
	n := len(c.chain)
	if n == 0 {
		return
	}
	sc, _ := s.scratch.Get().(*scratch)
	if sc == nil {
		sc = &scratch{}
	}
	defer s.scratch.Put(sc)
	sc.names = sc.names[:0]
	for _, e := range endpoints {
		sc.names = append(sc.names, e.Metadata().Name)
	}
	if cap(sc.matched) < len(endpoints) {
		sc.matched = make([]int, len(endpoints))
	}
	matched := sc.matched[:len(endpoints)]
	s.index.Match(c.chain, sc.names, matched)

	anyMatch := false
	for i, m := range matched {
		scores[i] = float64(m) / float64(n)
		anyMatch = anyMatch || m > 0
	}
	var over []bool // the endpoints the load override zeroed
	if anyMatch {
		over = s.overrideByLoad(ctx, state, endpoints, matched, scores, sc)
	}
	if state != nil {
		tokens := make([]int, len(matched))
		ratios := make([]float64, len(matched))
		for i, m := range matched {
			ratios[i] = float64(m) / float64(n)
			tokens[i] = s.matchedTokens(m, c.text)
			if c.text && len(req.Prompt.Text) > 0 && req.PromptTokens > 0 {
				// The prompt's own bytes per token, not the average.
				tokens[i] = min(req.PromptTokens, int(float64(m*s.params.ChunkBytes)/float64(req.Prompt.TextLen())*float64(req.PromptTokens)))
			}
		}
		state.Write(MatchedKey, Matched{Tokens: tokens, Ratios: ratios, Overridden: over})
	}
}

// overrideByLoad zeroes the scores of matching endpoints that are far more
// loaded than the least-loaded candidate, and with a cycle state returns
// which (nil when none).
func (s *Scorer) overrideByLoad(ctx context.Context, state *framework.CycleState, endpoints []framework.Endpoint, matched []int, scores []float64, sc *scratch) []bool {
	qGap, kvGap := int64(s.params.LoadOverride.QueueGap), s.params.LoadOverride.KVUsageGap
	if qGap <= 0 && kvGap <= 0 {
		return nil
	}
	var over []bool
	sc.depth = sc.depth[:0]
	sc.usage = sc.usage[:0]
	minQ, minU := int64(-1), 2.0
	for _, e := range endpoints {
		m := e.Metrics()
		inflight, _ := e.InFlight()
		q := int64(m.WaitingRequests) + inflight // as the queue-depth scorer counts
		sc.depth = append(sc.depth, q)
		sc.usage = append(sc.usage, m.KVCacheUsage)
		if minQ < 0 || q < minQ {
			minQ = q
		}
		minU = min(minU, m.KVCacheUsage)
	}
	explain := framework.Explaining(state)
	debug := s.log.Enabled(ctx, slog.LevelDebug)
	for i, e := range endpoints {
		if matched[i] == 0 {
			continue
		}
		q, u := sc.depth[i], sc.usage[i]
		byQueue := qGap > 0 && q-minQ > qGap
		if !byQueue && !(kvGap > 0 && u-minU > kvGap) {
			continue
		}
		scores[i] = 0
		s.overrides.Add(1)
		if state != nil {
			if over == nil {
				over = make([]bool, len(endpoints))
			}
			over[i] = true
		}
		if !explain && !debug {
			continue
		}
		why := fmt.Sprintf("KV usage %.2f vs least %.2f, gap above %.2f", u, minU, kvGap)
		if byQueue {
			why = fmt.Sprintf("queue %d vs least %d, gap above %d", q, minQ, qGap)
		}
		name := e.Metadata().Name
		s.log.DebugContext(ctx, "load overrides prefix affinity", "plugin", s.tn.String(), "endpoint", name, "matchedBlocks", matched[i], "reason", why)
		if explain {
			framework.AddNote(state, fmt.Sprintf("%s: load overrides affinity on %s (%d blocks cached): %s", s.tn, name, matched[i], why))
		}
	}
	return over
}

// PreRequest leaves the PredictedHit for picked in the state and records the
// request's blocks as cached on picked.
func (s *Scorer) PreRequest(_ context.Context, state *framework.CycleState, req *framework.Request, picked framework.Endpoint) {
	if req == nil || picked == nil {
		return
	}
	c := s.cycle(state, req)
	if len(c.chain) == 0 {
		return
	}
	name := picked.Metadata().Name
	if state != nil {
		buf, _ := s.nameBuffer.Get().(*[1]string)
		if buf == nil {
			buf = new([1]string)
		}
		buf[0] = name
		var m [1]int
		s.index.Match(c.chain, buf[:], m[:])
		buf[0] = ""
		s.nameBuffer.Put(buf)
		tokens := s.matchedTokens(m[0], c.text)
		state.Write(PredictedHitKey, PredictedHit{
			Endpoint:      name,
			MatchedBlocks: m[0],
			PromptBlocks:  len(c.chain),
			Ratio:         float64(m[0]) / float64(len(c.chain)),
			MatchedTokens: tokens,
		})
	}
	s.index.Add(name, s.capacityBlocks(picked, c.text), c.chain)
}

// matchedTokens converts matched blocks into tokens.
func (s *Scorer) matchedTokens(blocks int, text bool) int {
	if text {
		return blocks * s.params.ChunkBytes / bytesPerToken
	}
	return blocks * s.params.BlockSize
}

// capacityBlocks converts an endpoint's KV capacity into blocks of the kind
// the request was hashed in.
func (s *Scorer) capacityBlocks(e framework.Endpoint, text bool) int {
	tokens := s.params.DefaultCapacityTokens
	if m := e.Metrics(); m.NumBlocks > 0 && m.BlockSize > 0 {
		tokens = m.NumBlocks * m.BlockSize
	}
	if text {
		return max(1, tokens*bytesPerToken/s.params.ChunkBytes)
	}
	return max(1, tokens/s.params.BlockSize)
}

// cycle returns the request's block chain, computed once per cycle and kept
// in the state.
func (s *Scorer) cycle(state *framework.CycleState, req *framework.Request) *cycle {
	if state != nil {
		if c, ok := framework.ReadAs[*cycle](state, s.stateKey); ok {
			return c
		}
	}
	model := req.TargetModel
	if model == "" {
		model = req.Model
	}
	ids, text := req.Prompt.TokenIDs, req.Prompt.Text
	c := &cycle{text: len(ids) == 0}
	if c.text {
		if limit := s.params.MaxPromptBlocks * s.params.ChunkBytes; len(text) > limit {
			text = text[:limit]
		}
	} else if limit := s.params.MaxPromptBlocks * s.params.BlockSize; len(ids) > limit {
		ids = ids[:limit]
	}
	if n := s.hasher.Blocks(text, ids); n > 0 {
		c.chain = s.hasher.AppendChain(make([]prefixindex.BlockHash, 0, n), model, text, ids)
	}
	if state != nil {
		state.Write(s.stateKey, c)
	}
	return c
}

// Stats describes a Scorer's index and decisions.
type Stats struct {
	// Index is the approximate index's size; zero with another index.
	Index prefixindex.Stats
	// LoadOverrides counts endpoints whose affinity load overrode.
	LoadOverrides uint64
}

// Stats returns the scorer's counters.
func (s *Scorer) Stats() Stats {
	st := Stats{LoadOverrides: s.overrides.Load()}
	if s.approx != nil {
		st.Index = s.approx.Stats()
	}
	return st
}
