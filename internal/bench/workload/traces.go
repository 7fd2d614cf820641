package workload

import (
	"fmt"
	"time"

	"github.com/halyard-dev/halyard/internal/bench/trace"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// Mooncake replays the Mooncake conversation trace. Each hash id becomes a
// fixed run of 512 pseudo-random token ids (seeded by the hash id and Seed),
// a prompt is its blocks' runs in order, cut to input_length, so requests
// that share leading hash ids share a token prefix.
type Mooncake struct {
	Entries []trace.MooncakeEntry
	Seed    uint64
}

// Name implements Workload.
func (w *Mooncake) Name() string { return "mooncake" }

// Len implements Workload.
func (w *Mooncake) Len() int { return len(w.Entries) }

// Timed implements Workload.
func (w *Mooncake) Timed() bool { return true }

// Shape implements Workload.
func (w *Mooncake) Shape(i int) Shape {
	e := &w.Entries[i]
	return Shape{
		PromptTokens: e.InputLength,
		OutputTokens: max(e.OutputLength, 1),
		At:           time.Duration(e.Timestamp) * time.Millisecond,
		Session:      -1,
	}
}

// TokenIDs returns request i's prompt as token ids.
func (w *Mooncake) TokenIDs(i int) []uint32 {
	e := &w.Entries[i]
	ids := make([]uint32, 0, len(e.HashIDs)*trace.MooncakeBlockTokens)
	for _, h := range e.HashIDs {
		if len(ids) >= e.InputLength {
			break
		}
		ids = appendTokens(ids, w.Seed, key(kindMooncakeBlock, uint64(h)), trace.MooncakeBlockTokens)
	}
	return ids[:e.InputLength]
}

// Request implements Workload.
func (w *Mooncake) Request(i int) *Request {
	return &Request{
		Shape:    w.Shape(i),
		Index:    i,
		ID:       fmt.Sprintf("mooncake-%d", i),
		Messages: []Message{{Role: "user", Content: tokenizer.Pseudo{}.Decode(w.TokenIDs(i))}},
	}
}

// Azure replays an Azure LLM inference trace: its prompt and output lengths
// and arrival times. The trace has no content, so each prompt is seeded
// random text that shares nothing with the others.
type Azure struct {
	Kind    string // "azure-code" or "azure-conv"; Name() is "azure" when empty
	Entries []trace.AzureEntry
	Seed    uint64
}

// Name implements Workload.
func (w *Azure) Name() string {
	if w.Kind == "" {
		return "azure"
	}
	return w.Kind
}

// Len implements Workload.
func (w *Azure) Len() int { return len(w.Entries) }

// Timed implements Workload.
func (w *Azure) Timed() bool { return true }

// Shape implements Workload. A request the trace says generated no tokens
// asks for one, since max_tokens must be positive.
func (w *Azure) Shape(i int) Shape {
	e := &w.Entries[i]
	return Shape{PromptTokens: e.ContextTokens, OutputTokens: max(e.GeneratedTokens, 1), At: e.At, Session: -1}
}

// Request implements Workload.
func (w *Azure) Request(i int) *Request {
	e := &w.Entries[i]
	return &Request{
		Shape:    w.Shape(i),
		Index:    i,
		ID:       fmt.Sprintf("%s-%d", w.Name(), i),
		Messages: []Message{{Role: "user", Content: text(w.Seed, key(kindAzure, uint64(i)), e.ContextTokens)}},
	}
}

var (
	_ Workload = (*Mooncake)(nil)
	_ Workload = (*Azure)(nil)
)
