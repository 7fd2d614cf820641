package pd

import (
	"context"
	"errors"
	"fmt"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Reasons a plan serves a request on the decode endpoint alone, without a
// remote prefill. They are the values of the reason label of
// halyard_router_pd_decode_first_total.
const (
	// SkipPrefixHeld: the decode endpoint holds at least MinHeldShare of the
	// prompt's blocks.
	SkipPrefixHeld = "prefix_held"
	// SkipShortPrompt: the prompt is shorter than MinPrefillTokens.
	SkipShortPrompt = "short_prompt"
)

// Topology of a pair, as in the topology label of
// halyard_router_pd_pairs_total.
const (
	// TopologySame: prefill and decode share the TopologyKey label's value.
	TopologySame = "same"
	// TopologyCross: they do not.
	TopologyCross = "cross"
	// TopologyNone: no TopologyKey, or the decode endpoint lacks the label.
	TopologyNone = "none"
)

// Defaults of Config.
const (
	// DefaultMaxPromptBlocks caps the blocks hashed per request for the
	// decode-first check, as the prefix-cache scorer does.
	DefaultMaxPromptBlocks = 2048
	// DefaultCapacityTokens is a decode endpoint's KV capacity before its
	// first scrape (Llama-3-8B on an 80 GB H100).
	DefaultCapacityTokens = 440_000
	// bytesPerToken converts token capacity to byte chunks for text
	// prompts, as the prefix-cache scorer does.
	bytesPerToken = 4
)

// Errors of Plan.
var (
	// ErrNoDecode: no decode endpoint survived the decode profile.
	ErrNoDecode = errors.New("no decode endpoint can serve the request")
	// ErrNoPrefill: no prefill endpoint is left to try.
	ErrNoPrefill = errors.New("no prefill endpoint can serve the request")
)

// Config tunes a Planner. Build it from a pool's pd block with FromSpec.
type Config struct {
	// TopologyKey is the endpoint label whose value a prefill endpoint
	// should share with the decode endpoint; "" for no preference.
	TopologyKey string
	// DecodeFirst enables skipping the remote prefill when the decode
	// endpoint holds at least MinHeldShare of the prompt's blocks.
	DecodeFirst  bool
	MinHeldShare float64
	// MinPrefillTokens: prompts shorter than this are served by the decode
	// endpoint alone; 0 disaggregates every request.
	MinPrefillTokens int
	// Hasher cuts prompts into blocks for the decode-first index (zero
	// value: 16 tokens or 64 bytes per block, as the prefix-cache scorer).
	Hasher prefixindex.Hasher
	// MaxPromptBlocks caps the blocks hashed per request; default
	// DefaultMaxPromptBlocks.
	MaxPromptBlocks int
	// DefaultCapacityTokens is a decode endpoint's KV capacity until its
	// metrics report one; default DefaultCapacityTokens.
	DefaultCapacityTokens int
}

// FromSpec returns the Config of a defaulted, validated pd block.
func FromSpec(s *config.PDSpec) Config {
	return Config{
		TopologyKey:      s.TopologyKey,
		DecodeFirst:      s.DecodeFirst.On(),
		MinHeldShare:     s.DecodeFirst.MinHeldShare,
		MinPrefillTokens: s.MinPrefillTokens,
	}
}

// Scheduler is what a Planner needs of a scheduling profile;
// *scheduling.Profile implements it.
type Scheduler interface {
	Name() string
	Schedule(ctx context.Context, state *framework.CycleState, req *framework.Request, candidates []framework.Endpoint, explain bool) (scheduling.Result, error)
	PreRequest(ctx context.Context, state *framework.CycleState, req *framework.Request, picked framework.Endpoint)
	ResponseComplete(ctx context.Context, req *framework.Request, ep framework.Endpoint, out framework.Outcome)
}

// Index is what a Planner needs of a prefix index: which prompts the decode
// endpoints hold. prefixindex.Approximate implements it; so does any index
// behind the prefix-cache scorer's Index interface (the same two methods),
// such as one fed by engines' KV events.
type Index interface {
	// Match writes into matched[i] how many leading blocks of chain
	// endpoints[i] holds.
	Match(chain []prefixindex.BlockHash, endpoints []string, matched []int)
	// Add records chain as cached on endpoint, whose capacity in blocks is
	// capacity.
	Add(endpoint string, capacity int, chain []prefixindex.BlockHash)
}

// Planner chooses (prefill, decode) pairs. It is safe for concurrent use.
type Planner struct {
	cfg     Config
	prefill Scheduler
	decode  Scheduler
	index   Index
}

// New returns a Planner that picks prefill endpoints with prefill, decode
// endpoints with decode, and reads and records decode endpoints' prompts in
// index.
func New(cfg Config, prefill, decode Scheduler, index Index) (*Planner, error) {
	if prefill == nil || decode == nil || index == nil {
		return nil, errors.New("pd: prefill and decode profiles and an index are required")
	}
	if cfg.DecodeFirst && !(cfg.MinHeldShare > 0 && cfg.MinHeldShare <= 1) {
		return nil, fmt.Errorf("pd: minHeldShare: must be in (0,1], got %v", cfg.MinHeldShare)
	}
	if cfg.MinPrefillTokens < 0 {
		return nil, fmt.Errorf("pd: minPrefillTokens: must not be negative, got %d", cfg.MinPrefillTokens)
	}
	if err := cfg.Hasher.Validate(); err != nil {
		return nil, fmt.Errorf("pd: %w", err)
	}
	if cfg.MaxPromptBlocks <= 0 {
		cfg.MaxPromptBlocks = DefaultMaxPromptBlocks
	}
	if cfg.DefaultCapacityTokens <= 0 {
		cfg.DefaultCapacityTokens = DefaultCapacityTokens
	}
	return &Planner{cfg: cfg, prefill: prefill, decode: decode, index: index}, nil
}

// NewApproximateIndex returns the default decode-first index: an
// approximate prefix index of the prompts sent to each decode endpoint.
func NewApproximateIndex() Index {
	idx, _ := prefixindex.NewApproximate(prefixindex.ApproximateConfig{}) // defaults never fail
	return idx
}

// Config returns the planner's configuration with defaults applied.
func (p *Planner) Config() Config { return p.cfg }

// Plan is the decision for one request.
type Plan struct {
	// Decode is the endpoint that serves the response.
	Decode      framework.Endpoint
	DecodeState *framework.CycleState
	// Prefill is the endpoint that computes the prompt's KV remotely, or
	// nil when Skip is set or no prefill endpoint could be picked (then
	// PrefillErr says why).
	Prefill      framework.Endpoint
	PrefillState *framework.CycleState
	PrefillErr   error
	// Skip is why the remote prefill is skipped (SkipPrefixHeld,
	// SkipShortPrompt), or "".
	Skip string
	// HeldBlocks of PromptBlocks is what the decode-first index says the
	// decode endpoint holds of the prompt.
	HeldBlocks, PromptBlocks int
	// Topology says whether the pair shares the topology label
	// (TopologySame, TopologyCross, TopologyNone); "" without a prefill.
	Topology string
	// Explanations of the two profiles' cycles, when asked for.
	DecodeExplanation, PrefillExplanation *framework.Explanation
	// Tried lists the prefill endpoints picked so far, the current one
	// last.
	Tried []framework.Endpoint

	chain []prefixindex.BlockHash
	text  bool
}

// HeldShare is HeldBlocks / PromptBlocks, 0 for a prompt without a full
// block.
func (p *Plan) HeldShare() float64 {
	if p.PromptBlocks == 0 {
		return 0
	}
	return float64(p.HeldBlocks) / float64(p.PromptBlocks)
}

// Plan picks the decode endpoint among decode, decides decode-first, and
// unless the prefill is skipped picks a prefill endpoint among prefill. It
// fails only when no decode endpoint can be picked (ErrNoDecode); a missing
// prefill endpoint leaves Prefill nil and PrefillErr set, for the caller to
// fall back or fail.
func (p *Planner) Plan(ctx context.Context, req *framework.Request, prefill, decode []framework.Endpoint, explain bool) (*Plan, error) {
	pl := &Plan{DecodeState: framework.NewCycleState()}
	res, err := p.decode.Schedule(ctx, pl.DecodeState, req, decode, explain)
	pl.DecodeExplanation = res.Explanation
	if err != nil || len(res.Picked) == 0 {
		return pl, fmt.Errorf("%w: %s profile: %w", ErrNoDecode, p.decode.Name(), errOr(err, scheduling.ErrNoEndpoint))
	}
	pl.Decode = res.Picked[0]
	p.hash(req, pl)
	if len(pl.chain) > 0 {
		var m [1]int
		p.index.Match(pl.chain, []string{pl.Decode.Metadata().Name}, m[:])
		pl.HeldBlocks = m[0]
	}
	switch {
	case p.cfg.MinPrefillTokens > 0 && req.PromptTokens < p.cfg.MinPrefillTokens:
		pl.Skip = SkipShortPrompt
		return pl, nil
	case p.cfg.DecodeFirst && pl.PromptBlocks > 0 && pl.HeldShare() >= p.cfg.MinHeldShare:
		pl.Skip = SkipPrefixHeld
		return pl, nil
	}
	pl.PrefillErr = p.pickPrefill(ctx, req, pl, prefill, explain)
	return pl, nil
}

// NextPrefill picks another prefill endpoint for pl after the current one
// failed, leaving out every endpoint tried. It returns ErrNoPrefill (and
// leaves Prefill nil) when none is left.
func (p *Planner) NextPrefill(ctx context.Context, req *framework.Request, pl *Plan, prefill []framework.Endpoint, explain bool) error {
	fresh := make([]framework.Endpoint, 0, len(prefill))
	for _, e := range prefill {
		if !containsEndpoint(pl.Tried, e) {
			fresh = append(fresh, e)
		}
	}
	pl.Prefill, pl.PrefillState, pl.Topology = nil, nil, ""
	pl.PrefillErr = p.pickPrefill(ctx, req, pl, fresh, explain)
	return pl.PrefillErr
}

// NextDecode picks another decode endpoint for pl after the current one
// failed, leaving out those in tried. The decode-first decision and the
// prefill endpoint stay as they were. It returns ErrNoDecode (and leaves pl
// unchanged) when none is left.
func (p *Planner) NextDecode(ctx context.Context, req *framework.Request, pl *Plan, decode, tried []framework.Endpoint, explain bool) error {
	fresh := make([]framework.Endpoint, 0, len(decode))
	for _, e := range decode {
		if !containsEndpoint(tried, e) {
			fresh = append(fresh, e)
		}
	}
	if len(fresh) == 0 {
		return ErrNoDecode
	}
	state := framework.NewCycleState()
	res, err := p.decode.Schedule(ctx, state, req, fresh, explain)
	if err != nil || len(res.Picked) == 0 {
		return fmt.Errorf("%w: %s profile: %w", ErrNoDecode, p.decode.Name(), errOr(err, scheduling.ErrNoEndpoint))
	}
	pl.Decode, pl.DecodeState, pl.DecodeExplanation = res.Picked[0], state, res.Explanation
	if len(pl.chain) > 0 {
		var m [1]int
		p.index.Match(pl.chain, []string{pl.Decode.Metadata().Name}, m[:])
		pl.HeldBlocks = m[0]
	}
	return nil
}

// pickPrefill schedules the prefill profile over the candidates in the
// decode endpoint's topology domain, or over all when none is there.
func (p *Planner) pickPrefill(ctx context.Context, req *framework.Request, pl *Plan, prefill []framework.Endpoint, explain bool) error {
	cands := make([]framework.Endpoint, 0, len(prefill))
	decode := pl.Decode.Metadata().Name
	for _, e := range prefill {
		if e.Metadata().Name != decode {
			cands = append(cands, e)
		}
	}
	if len(cands) == 0 {
		return ErrNoPrefill
	}
	zone, hasZone := p.zone(pl.Decode)
	if hasZone {
		same := make([]framework.Endpoint, 0, len(cands))
		for _, e := range cands {
			if z, ok := p.zone(e); ok && z == zone {
				same = append(same, e)
			}
		}
		if len(same) > 0 {
			cands = same
		}
	}
	state := framework.NewCycleState()
	res, err := p.prefill.Schedule(ctx, state, req, cands, explain)
	pl.PrefillExplanation = res.Explanation
	if err != nil || len(res.Picked) == 0 {
		return fmt.Errorf("%w: %s profile: %w", ErrNoPrefill, p.prefill.Name(), errOr(err, scheduling.ErrNoEndpoint))
	}
	pl.Prefill, pl.PrefillState = res.Picked[0], state
	pl.Tried = append(pl.Tried, pl.Prefill)
	pl.Topology = TopologyNone
	if hasZone {
		pl.Topology = TopologyCross
		if z, ok := p.zone(pl.Prefill); ok && z == zone {
			pl.Topology = TopologySame
		}
	}
	return nil
}

func (p *Planner) zone(e framework.Endpoint) (string, bool) {
	if p.cfg.TopologyKey == "" {
		return "", false
	}
	z, ok := e.Metadata().Labels[p.cfg.TopologyKey]
	return z, ok
}

// hash computes the prompt's block chain for the decode-first index.
func (p *Planner) hash(req *framework.Request, pl *Plan) {
	model := req.TargetModel
	if model == "" {
		model = req.Model
	}
	ids, text := req.Prompt.TokenIDs, req.Prompt.Text
	h := p.cfg.Hasher
	bt, cb := h.BlockTokens, h.ChunkBytes
	if bt <= 0 {
		bt = prefixindex.DefaultBlockTokens
	}
	if cb <= 0 {
		cb = prefixindex.DefaultChunkBytes
	}
	pl.text = len(ids) == 0
	if pl.text {
		text = text[:min(len(text), p.cfg.MaxPromptBlocks*cb)]
	} else {
		ids = ids[:min(len(ids), p.cfg.MaxPromptBlocks*bt)]
	}
	if n := h.Blocks(text, ids); n > 0 {
		pl.chain = h.AppendChain(make([]prefixindex.BlockHash, 0, n), model, text, ids)
	}
	pl.PromptBlocks = len(pl.chain)
}

// PrefillSent runs the prefill profile's PreRequest hooks for the current
// prefill endpoint; call it when the prefill request is sent.
func (p *Planner) PrefillSent(ctx context.Context, req *framework.Request, pl *Plan) {
	if pl.Prefill != nil {
		p.prefill.PreRequest(ctx, pl.PrefillState, req, pl.Prefill)
	}
}

// DecodeSent runs the decode profile's PreRequest hooks and records the
// prompt as held by the decode endpoint; call it when the decode request is
// sent.
func (p *Planner) DecodeSent(ctx context.Context, req *framework.Request, pl *Plan) {
	p.decode.PreRequest(ctx, pl.DecodeState, req, pl.Decode)
	if len(pl.chain) > 0 {
		p.index.Add(pl.Decode.Metadata().Name, p.capacityBlocks(pl.Decode, pl.text), pl.chain)
	}
}

// PrefillDone runs the prefill profile's ResponseComplete hooks.
func (p *Planner) PrefillDone(ctx context.Context, req *framework.Request, ep framework.Endpoint, out framework.Outcome) {
	p.prefill.ResponseComplete(ctx, req, ep, out)
}

// DecodeDone runs the decode profile's ResponseComplete hooks.
func (p *Planner) DecodeDone(ctx context.Context, req *framework.Request, ep framework.Endpoint, out framework.Outcome) {
	p.decode.ResponseComplete(ctx, req, ep, out)
}

// capacityBlocks converts an endpoint's KV capacity into blocks of the kind
// the prompt was hashed in.
func (p *Planner) capacityBlocks(e framework.Endpoint, text bool) int {
	tokens := p.cfg.DefaultCapacityTokens
	if m := e.Metrics(); m.NumBlocks > 0 && m.BlockSize > 0 {
		tokens = m.NumBlocks * m.BlockSize
	}
	if text {
		cb := p.cfg.Hasher.ChunkBytes
		if cb <= 0 {
			cb = prefixindex.DefaultChunkBytes
		}
		return max(1, tokens*bytesPerToken/cb)
	}
	bt := p.cfg.Hasher.BlockTokens
	if bt <= 0 {
		bt = prefixindex.DefaultBlockTokens
	}
	return max(1, tokens/bt)
}

func containsEndpoint(list []framework.Endpoint, e framework.Endpoint) bool {
	name := e.Metadata().Name
	for _, x := range list {
		if x.Metadata().Name == name {
			return true
		}
	}
	return false
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

var (
	_ Scheduler = (*scheduling.Profile)(nil)
	_ Index     = (*prefixindex.Approximate)(nil)
)
