package workload

import (
	"errors"
	"fmt"
	"math/rand/v2"
)

// SharedPrefix is a synthetic workload of Groups groups of UsersPerGroup
// users. The users of a group share one system prompt of SystemTokens tokens
// and each asks questions of QuestionTokens tokens; every answer is
// OutputTokens tokens long. With Turns > 1 each user holds a conversation:
// turn k repeats the earlier questions and (generated, deterministic)
// answers, so each turn extends the previous turn's prefix.
//
// Requests are ordered turn by turn; within a turn the users come in a
// seeded random order.
type SharedPrefix struct {
	Kind           string // Name(); "shared-prefix" when empty
	Groups         int
	UsersPerGroup  int
	SystemTokens   int
	QuestionTokens int
	OutputTokens   int
	Turns          int
	Seed           uint64

	order [][]int // per turn, a permutation of sessions
}

// Validate checks the parameters, naming the field at fault.
func (w *SharedPrefix) Validate() error {
	switch {
	case w.Groups <= 0:
		return fmt.Errorf("groups: must be positive, got %d", w.Groups)
	case w.UsersPerGroup <= 0:
		return fmt.Errorf("users per group: must be positive, got %d", w.UsersPerGroup)
	case w.SystemTokens < 0:
		return fmt.Errorf("system tokens: must not be negative, got %d", w.SystemTokens)
	case w.QuestionTokens <= 0:
		return fmt.Errorf("question tokens: must be positive, got %d", w.QuestionTokens)
	case w.OutputTokens <= 0:
		return fmt.Errorf("output tokens: must be positive, got %d", w.OutputTokens)
	case w.Turns <= 0:
		return fmt.Errorf("turns: must be positive, got %d", w.Turns)
	case w.Groups*w.UsersPerGroup*w.Turns > 10_000_000:
		return errors.New("groups × users × turns: more than 10,000,000 requests")
	}
	return nil
}

// NewSharedPrefix validates w and prepares its order.
func NewSharedPrefix(w SharedPrefix) (*SharedPrefix, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	sessions := w.Groups * w.UsersPerGroup
	w.order = make([][]int, w.Turns)
	for t := range w.Turns {
		r := rand.New(rand.NewPCG(w.Seed, key(0xde, uint64(t))))
		w.order[t] = r.Perm(sessions)
	}
	return &w, nil
}

// NewMultiTurn returns a workload of sessions chat sessions of turns turns
// each; every session has its own system prompt of systemTokens tokens.
func NewMultiTurn(sessions, turns, systemTokens, questionTokens, outputTokens int, seed uint64) (*SharedPrefix, error) {
	return NewSharedPrefix(SharedPrefix{
		Kind: "multi-turn", Groups: sessions, UsersPerGroup: 1, SystemTokens: systemTokens,
		QuestionTokens: questionTokens, OutputTokens: outputTokens, Turns: turns, Seed: seed,
	})
}

// Name implements Workload.
func (w *SharedPrefix) Name() string {
	if w.Kind == "" {
		return "shared-prefix"
	}
	return w.Kind
}

// Len implements Workload.
func (w *SharedPrefix) Len() int { return w.Groups * w.UsersPerGroup * w.Turns }

// Timed implements Workload.
func (w *SharedPrefix) Timed() bool { return false }

func (w *SharedPrefix) locate(i int) (session, turn int) {
	sessions := w.Groups * w.UsersPerGroup
	turn = i / sessions
	return w.order[turn][i%sessions], turn
}

// Shape implements Workload.
func (w *SharedPrefix) Shape(i int) Shape {
	session, turn := w.locate(i)
	sess := session
	if w.Turns == 1 {
		sess = -1
	}
	return Shape{
		PromptTokens: w.SystemTokens + (turn+1)*w.QuestionTokens + turn*w.OutputTokens,
		OutputTokens: w.OutputTokens,
		Session:      sess,
		Turn:         turn,
	}
}

// Request implements Workload.
func (w *SharedPrefix) Request(i int) *Request {
	session, turn := w.locate(i)
	g, u := session/w.UsersPerGroup, session%w.UsersPerGroup
	msgs := make([]Message, 0, 2+2*turn)
	if w.SystemTokens > 0 {
		msgs = append(msgs, Message{Role: "system", Content: text(w.Seed, key(kindSystem, uint64(g)), w.SystemTokens)})
	}
	for k := 0; k <= turn; k++ {
		msgs = append(msgs, Message{Role: "user", Content: text(w.Seed, key(kindQuestion, uint64(g), uint64(u), uint64(k)), w.QuestionTokens)})
		if k < turn {
			msgs = append(msgs, Message{Role: "assistant", Content: text(w.Seed, key(kindAnswer, uint64(g), uint64(u), uint64(k)), w.OutputTokens)})
		}
	}
	return &Request{
		Shape:    w.Shape(i),
		Index:    i,
		ID:       fmt.Sprintf("%s-g%d-u%d-t%d", w.Name(), g, u, turn),
		Messages: msgs,
	}
}

var _ Workload = (*SharedPrefix)(nil)
