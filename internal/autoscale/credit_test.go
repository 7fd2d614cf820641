package autoscale

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// TestCreditCachedBlocks: a credit is the blocks the engine reported
// cached, the first of the prompt's chain (text or token ids) as the
// hasher cuts it, and only those, sampled one in ChainStride (every one
// with Stride 1); the ids of a long prompt's head count against the tokens
// they cover, a text's head against the whole text.
func TestCreditCachedBlocks(t *testing.T) {
	now := time.Unix(1000, 0)
	text := []byte(strings.Repeat("abcdefgh", 64)) // 8 blocks of 64 bytes
	ids := make([]uint32, 160)                     // 10 blocks of 16 ids, 5 of 32
	for i := range ids {
		ids[i] = uint32(i)
	}
	var h prefixindex.Hasher
	h32 := prefixindex.Hasher{BlockTokens: 32}
	for _, tc := range []struct {
		name   string
		h      prefixindex.Hasher
		req    *framework.Request
		out    framework.Outcome
		chain  []prefixindex.BlockHash
		credit int
	}{
		{"text, half cached", h, &framework.Request{TargetModel: "m", Prompt: framework.Prompt{Text: text}, PromptTokens: 128},
			framework.Outcome{PromptTokens: 128, CachedTokens: 64}, h.AppendChain(nil, "m", text, nil), 4},
		{"ids, 3 blocks cached", h, &framework.Request{TargetModel: "m", Prompt: framework.Prompt{TokenIDs: ids}, PromptTokens: 160},
			framework.Outcome{PromptTokens: 160, CachedTokens: 48}, h.AppendChain(nil, "m", nil, ids), 3},
		{"ids in blocks of 32, 2 blocks cached", h32, &framework.Request{TargetModel: "m", Prompt: framework.Prompt{TokenIDs: ids}, PromptTokens: 160},
			framework.Outcome{PromptTokens: 160, CachedTokens: 64}, h32.AppendChain(nil, "m", nil, ids), 2},
		{"the outcome's prompt tokens unknown: the request's count", h, &framework.Request{TargetModel: "m", Prompt: framework.Prompt{Text: text}, PromptTokens: 128},
			framework.Outcome{CachedTokens: 32}, h.AppendChain(nil, "m", text, nil), 2},
		{"a head's text, half of a 16-block text cached", h, &framework.Request{TargetModel: "m", Prompt: framework.Prompt{Text: text, TextBytes: 1024}, PromptTokens: 256},
			framework.Outcome{PromptTokens: 256, CachedTokens: 128}, h.AppendChain(nil, "m", text, nil), 8},
		{"a head's text, a quarter of a 16-block text cached", h, &framework.Request{TargetModel: "m", Prompt: framework.Prompt{Text: text, TextBytes: 1024}, PromptTokens: 256},
			framework.Outcome{PromptTokens: 256, CachedTokens: 64}, h.AppendChain(nil, "m", text, nil), 4},
		{"a head's ids, its 10 blocks cached of a 10,000-token prompt", h, &framework.Request{TargetModel: "m", Prompt: framework.Prompt{TokenIDs: ids}, PromptTokens: 10000},
			framework.Outcome{PromptTokens: 10000, CachedTokens: 5000}, h.AppendChain(nil, "m", nil, ids), 10},
		{"nothing cached", h, &framework.Request{TargetModel: "m", Prompt: framework.Prompt{Text: text}, PromptTokens: 128},
			framework.Outcome{PromptTokens: 128}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CachedBlocks(tc.h, tc.req, tc.out)
			var want []uint64
			for _, bh := range tc.chain[:tc.credit] {
				want = append(want, uint64(bh))
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("cached blocks (-want +got):\n%s", d)
			}
			for _, stride := range []int{0, 1} {
				l := HitLedger{Stride: stride}
				l.Credit("e0", now, tc.h, tc.req, tc.out)
				credited := want
				if stride != 1 {
					credited = SampleChain(want) // every ChainStride-th
				}
				wantHot := map[uint64]float64{}
				for _, bh := range credited {
					wantHot[bh] = 1
				}
				if len(wantHot) == 0 {
					wantHot = nil
				}
				if d := cmp.Diff(wantHot, l.Hot("e0", now)); d != "" {
					t.Errorf("stride %d: ledger (-want +got):\n%s", stride, d)
				}
			}
		})
	}
}
