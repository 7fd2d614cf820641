package workload

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Shape is what a request looks like without its text.
type Shape struct {
	// PromptTokens is the number of tokens of the messages' contents.
	PromptTokens int
	// OutputTokens is the number of tokens to generate (sent as max_tokens).
	OutputTokens int
	// At is the request's arrival time from the start of the trace; only
	// meaningful when the workload is Timed.
	At time.Duration
	// Session groups the turns of one conversation; -1 when the request
	// stands alone. Turn numbers a session's requests from 0; turn k is sent
	// only after turn k-1 has finished.
	Session int
	Turn    int
}

// Request is one rendered request.
type Request struct {
	Shape
	// Index is the request's position in the workload.
	Index int
	// ID is unique within the workload.
	ID string
	// Messages is the chat form of the prompt.
	Messages []Message
}

// Prompt returns the prompt for a completions endpoint: the messages'
// contents joined by newlines (which the pseudo-tokenizer drops, so the
// prompt has exactly PromptTokens tokens).
func (r *Request) Prompt() string {
	if len(r.Messages) == 1 {
		return r.Messages[0].Content
	}
	parts := make([]string, len(r.Messages))
	for i, m := range r.Messages {
		parts[i] = m.Content
	}
	return strings.Join(parts, "\n")
}

// Workload is a deterministic, finite sequence of requests. Implementations
// are safe for concurrent use.
type Workload interface {
	// Name is the workload kind, e.g. "shared-prefix".
	Name() string
	// Len is the number of requests.
	Len() int
	// Timed reports whether requests carry their own arrival times.
	Timed() bool
	// Shape returns request i's lengths and timing (0 <= i < Len()).
	Shape(i int) Shape
	// Request renders request i.
	Request(i int) *Request
}

// tokens returns n pseudo-random token ids determined by seed and key.
func tokens(seed, key uint64, n int) []uint32 {
	return appendTokens(make([]uint32, 0, n), seed, key, n)
}

func appendTokens(dst []uint32, seed, key uint64, n int) []uint32 {
	r := rand.New(rand.NewPCG(seed, key))
	for range n {
		dst = append(dst, uint32(r.IntN(tokenizer.DefaultVocabSize)))
	}
	return dst
}

// key mixes parts into one 64-bit stream key (splitmix64 finaliser).
func key(parts ...uint64) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, p := range parts {
		h ^= p + 0x9e3779b97f4a7c15 + (h << 6) + (h >> 2)
		h ^= h >> 30
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 27
		h *= 0x94d049bb133111eb
		h ^= h >> 31
	}
	return h
}

// Stream keys name the kinds of generated text.
const (
	kindSystem uint64 = iota + 1
	kindQuestion
	kindAnswer
	kindMooncakeBlock
	kindAzure
)

func text(seed, k uint64, n int) string {
	return tokenizer.Pseudo{}.Decode(tokens(seed, k, n))
}

// Limit returns w without the requests whose prompt plus output exceeds
// maxTokens, and how many it dropped. Session workloads cannot be limited
// (dropping a turn would break its conversation); Limit returns an error for
// them when it would drop anything.
func Limit(w Workload, maxTokens int) (Workload, int, error) {
	if maxTokens <= 0 {
		return w, 0, nil
	}
	keep := make([]int, 0, w.Len())
	for i := range w.Len() {
		s := w.Shape(i)
		if s.PromptTokens+s.OutputTokens <= maxTokens {
			keep = append(keep, i)
			continue
		}
		if s.Session >= 0 {
			return nil, 0, fmt.Errorf("max input: request %d of a multi-turn session has %d tokens, over %d; lower the lengths instead",
				i, s.PromptTokens+s.OutputTokens, maxTokens)
		}
	}
	dropped := w.Len() - len(keep)
	if dropped == 0 {
		return w, 0, nil
	}
	return &subset{w: w, idx: keep}, dropped, nil
}

// Head returns the first n requests of w (all when n <= 0 or n >= Len).
func Head(w Workload, n int) Workload {
	if n <= 0 || n >= w.Len() {
		return w
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return &subset{w: w, idx: idx}
}

type subset struct {
	w   Workload
	idx []int
}

func (s *subset) Name() string      { return s.w.Name() }
func (s *subset) Len() int          { return len(s.idx) }
func (s *subset) Timed() bool       { return s.w.Timed() }
func (s *subset) Shape(i int) Shape { return s.w.Shape(s.idx[i]) }
func (s *subset) Request(i int) *Request {
	r := s.w.Request(s.idx[i])
	r.Index = i
	return r
}

var _ Workload = (*subset)(nil)

// PreviousTurns returns, for each request of w, the index of the same
// session's previous turn, or -1.
func PreviousTurns(w Workload) []int {
	n := w.Len()
	prev := make([]int, n)
	last := map[int]int{}
	for i := range n {
		prev[i] = -1
		s := w.Shape(i)
		if s.Session < 0 {
			continue
		}
		if p, ok := last[s.Session]; ok {
			prev[i] = p
		}
		last[s.Session] = i
	}
	return prev
}
