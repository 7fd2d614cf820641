package kvevents

import (
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
)

// HashFunc is the router's chain hash (DESIGN.md §5): the hash of a block
// given the hash of the block before it and the block's tokens.
type HashFunc func(parent uint64, tokens []uint32) uint64

// Index receives an endpoint's cached blocks in the router's own chain
// hashes. Stored lists a chain in order, parent first; it may repeat blocks
// the index already holds. Calls for one endpoint come from one goroutine.
type Index interface {
	Stored(endpoint string, hashes []uint64)
	Removed(endpoint string, hashes []uint64)
	Cleared(endpoint string)
}

// ReasonOverflow is given to OnUnreliable when an endpoint's hash mapping
// outgrew RehasherConfig.MaxBlocks and was dropped.
const ReasonOverflow = "mapping-overflow"

// DefaultMaxBlocks bounds the engine-hash mapping of one endpoint: well
// above the 27,000 blocks of a Llama-3-8B engine on an H100.
const DefaultMaxBlocks = 1 << 20

// RehasherConfig configures a Rehasher.
type RehasherConfig struct {
	// Hash is the chain hash; required.
	Hash HashFunc
	// Root gives the hash that precedes the first block of a sequence,
	// from the LoRA adapter the blocks belong to ("" for the base model;
	// "id:N" when the engine sent only a lora_id). Required.
	Root func(lora string) uint64
	// Index receives the rehashed blocks; required.
	Index Index
	// OnUnreliable, if set, is told when an endpoint's events became
	// unreliable (after the endpoint was cleared in Index).
	OnUnreliable func(endpoint, reason string)
	// GroupIdx is the KV-cache group followed on hybrid models; events of
	// other groups are ignored. Events without a group belong to group 0.
	GroupIdx int64
	// Media lists the media whose blocks count; events without a medium
	// always count. Default [GPU].
	Media []string
	// MaxBlocks bounds one endpoint's mapping; default DefaultMaxBlocks.
	MaxBlocks int
	Logger    *slog.Logger
	Metrics   *Metrics
}

// Rehasher is a Consumer that turns the engine's block hashes into the
// router's own: it hashes the token_ids of each BlockStored with Hash,
// chaining from the block its parent_block_hash names, and remembers, per
// endpoint, which engine hash became which of ours so that BlockRemoved,
// which carries only engine hashes, can be applied. The mapping counts
// references, since an engine may store the same block hash twice.
type Rehasher struct {
	cfg RehasherConfig
	log *slog.Logger
	m   *Metrics

	mu  sync.Mutex
	eps map[string]map[BlockHash]mapped
}

type mapped struct {
	ours uint64
	refs int
}

// NewRehasher validates cfg and returns a Rehasher.
func NewRehasher(cfg RehasherConfig) (*Rehasher, error) {
	switch {
	case cfg.Hash == nil:
		return nil, errors.New("rehasher: hash: required")
	case cfg.Root == nil:
		return nil, errors.New("rehasher: root: required")
	case cfg.Index == nil:
		return nil, errors.New("rehasher: index: required")
	}
	if cfg.Media == nil {
		cfg.Media = []string{MediumGPU}
	}
	if cfg.MaxBlocks == 0 {
		cfg.MaxBlocks = DefaultMaxBlocks
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = discardMetrics()
	}
	return &Rehasher{
		cfg: cfg,
		log: cfg.Logger.With("component", "kvevents-rehasher"),
		m:   cfg.Metrics,
		eps: make(map[string]map[BlockHash]mapped),
	}, nil
}

func (r *Rehasher) follows(medium *string, group *int64) bool {
	g := int64(0)
	if group != nil {
		g = *group
	}
	if g != r.cfg.GroupIdx {
		return false
	}
	return medium == nil || slices.Contains(r.cfg.Media, *medium)
}

// Len returns the number of engine blocks mapped for endpoint.
func (r *Rehasher) Len(endpoint string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.eps[endpoint])
}

// BlockStored implements Consumer.
func (r *Rehasher) BlockStored(endpoint string, ev *BlockStored) {
	if !r.follows(ev.Medium, ev.GroupIdx) || len(ev.BlockHashes) == 0 {
		return
	}
	bs := ev.BlockSize
	if bs <= 0 || len(ev.TokenIDs) != bs*len(ev.BlockHashes) {
		r.log.Warn("BlockStored with token count not blocks × block size; skipped",
			"endpoint", endpoint, "blocks", len(ev.BlockHashes), "block_size", bs, "tokens", len(ev.TokenIDs))
		r.m.UnanchoredDrop.WithLabelValues(endpoint).Add(float64(len(ev.BlockHashes)))
		return
	}
	r.mu.Lock()
	m := r.eps[endpoint]
	if m == nil {
		m = make(map[BlockHash]mapped)
		r.eps[endpoint] = m
	}
	var parent uint64
	if ev.ParentBlockHash == nil {
		parent = r.cfg.Root(loraKey(ev))
	} else if p, ok := m[*ev.ParentBlockHash]; ok {
		parent = p.ours
	} else {
		r.mu.Unlock()
		// The parent was stored before we listened, or evicted: the chain
		// cannot be placed.
		r.m.UnanchoredDrop.WithLabelValues(endpoint).Add(float64(len(ev.BlockHashes)))
		return
	}
	ours := make([]uint64, len(ev.BlockHashes))
	for i, eh := range ev.BlockHashes {
		parent = r.cfg.Hash(parent, ev.TokenIDs[i*bs:(i+1)*bs])
		ours[i] = parent
		e := m[eh]
		if e.refs == 0 {
			e.ours = parent
		}
		e.refs++
		m[eh] = e
	}
	overflow := len(m) > r.cfg.MaxBlocks
	if overflow {
		delete(r.eps, endpoint)
	}
	r.mu.Unlock()
	if overflow {
		r.log.Warn("engine-hash mapping outgrew its bound; endpoint dropped", "endpoint", endpoint, "max_blocks", r.cfg.MaxBlocks)
		r.cfg.Index.Cleared(endpoint)
		r.notify(endpoint, ReasonOverflow)
		return
	}
	r.cfg.Index.Stored(endpoint, ours)
}

func loraKey(ev *BlockStored) string {
	switch {
	case ev.LoRAName != nil:
		return *ev.LoRAName
	case ev.LoRAID != nil:
		return "id:" + strconv.FormatInt(*ev.LoRAID, 10)
	}
	return ""
}

// BlockRemoved implements Consumer.
func (r *Rehasher) BlockRemoved(endpoint string, ev *BlockRemoved) {
	if !r.follows(ev.Medium, ev.GroupIdx) {
		return
	}
	var gone []uint64
	r.mu.Lock()
	m := r.eps[endpoint]
	for _, eh := range ev.BlockHashes {
		e, ok := m[eh]
		if !ok {
			continue
		}
		if e.refs--; e.refs == 0 {
			delete(m, eh)
			gone = append(gone, e.ours)
		} else {
			m[eh] = e
		}
	}
	r.mu.Unlock()
	if len(gone) > 0 {
		r.cfg.Index.Removed(endpoint, gone)
	}
}

// AllCleared implements Consumer.
func (r *Rehasher) AllCleared(endpoint string) {
	r.Forget(endpoint)
	r.cfg.Index.Cleared(endpoint)
}

// Unreliable implements Consumer: it clears the endpoint and passes the
// news on.
func (r *Rehasher) Unreliable(endpoint string, reason string) {
	r.AllCleared(endpoint)
	r.notify(endpoint, reason)
}

func (r *Rehasher) notify(endpoint, reason string) {
	if r.cfg.OnUnreliable != nil {
		r.cfg.OnUnreliable(endpoint, reason)
	}
}

// Forget drops an endpoint's mapping (for an endpoint that went away)
// without telling the Index.
func (r *Rehasher) Forget(endpoint string) {
	r.mu.Lock()
	delete(r.eps, endpoint)
	r.mu.Unlock()
}

var _ Consumer = (*Rehasher)(nil)
