package rng

import (
	"math/rand/v2"
	"sync"
)

// Source draws random integers. The zero value uses the runtime's generator.
// It is safe for concurrent use.
type Source struct {
	mu     sync.Mutex
	seeded *rand.Rand
}

// New returns a source seeded with seed, or the runtime's generator when
// seed is 0.
func New(seed uint64) *Source {
	if seed == 0 {
		return &Source{}
	}
	return &Source{seeded: rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))}
}

// IntN returns a uniform integer in [0, n); n must be positive.
func (s *Source) IntN(n int) int {
	if s.seeded == nil {
		return rand.IntN(n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seeded.IntN(n)
}

// Shuffle permutes n elements with swap.
func (s *Source) Shuffle(n int, swap func(i, j int)) {
	if s.seeded == nil {
		rand.Shuffle(n, swap)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seeded.Shuffle(n, swap)
}
