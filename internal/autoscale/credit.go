package autoscale

import (
	"time"

	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Credit credits to engine at now the blocks of req's prompt that the
// engine reported cached in out (CachedBlocks), sampled as SampleChain
// does (every block when the ledger's Stride is 1). h is the prefix hasher
// the router's prefix path is configured with. It is the one way a hit
// reaches a ledger: the router calls it for every attempt an engine
// answered, and the bench's virtual fleet for every request its engines
// finished, so that the same request and outcome credit the same blocks.
func (l *HitLedger) Credit(engine string, now time.Time, h prefixindex.Hasher, req *framework.Request, out framework.Outcome) {
	chain := CachedBlocks(h, req, out)
	if l.Stride != 1 {
		chain = SampleChain(chain)
	}
	l.Hit(engine, now, chain)
}

// CachedBlocks returns the block hashes of the share of req's prompt the
// engine reported cached: out.CachedTokens of its prompt tokens, which are
// a prefix, so the first cached/prompt of the prompt's chain as h hashes
// it (token ids when the request has them, else text chunks). Text may be
// the head of a longer prompt (Prompt.TextBytes) and ids the ids of a long
// prompt's head: only what the request holds can be hashed, and of a head
// the cached share is taken of the whole prompt. Only the cached blocks are
// hashed (a 1M-token prompt's whole chain is 65,536 blocks of text).
func CachedBlocks(h prefixindex.Hasher, req *framework.Request, out framework.Outcome) []uint64 {
	text, ids := req.Prompt.Text, req.Prompt.TokenIDs
	blockTokens, chunkBytes := h.Sizes()
	held := h.Blocks(text, ids) // the blocks the request holds
	total := held
	if len(ids) == 0 {
		total = req.Prompt.TextLen() / chunkBytes // Text may be the head
	}
	prompt := out.PromptTokens
	if prompt <= 0 {
		prompt = req.PromptTokens
	}
	if total == 0 || prompt <= 0 || out.CachedTokens <= 0 {
		return nil
	}
	if len(ids) > 0 && len(ids) < prompt {
		// The ids of a long prompt's head: the chain covers them only,
		// and the cached tokens are a prefix.
		prompt = len(ids)
	}
	n := min(total*out.CachedTokens/prompt, total, held)
	if n <= 0 {
		return nil
	}
	if len(ids) > 0 {
		ids = ids[:n*blockTokens]
	} else {
		text = text[:n*chunkBytes]
	}
	chain := h.AppendChain(make([]prefixindex.BlockHash, 0, n), req.TargetModel, text, ids)
	blocks := make([]uint64, n)
	for i := range n {
		blocks[i] = uint64(chain[i])
	}
	return blocks
}
