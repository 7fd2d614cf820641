package framework

import "sync"

// StateKey names a value in a CycleState. Plugins declare their keys as
// package constants, conventionally prefixed with their type.
type StateKey string

// CycleState carries values between the plugins of one scheduling cycle (and
// its PreRequest hooks), for example block hashes a scorer computed once.
// It is safe for concurrent use.
type CycleState struct {
	mu     sync.RWMutex
	values map[StateKey]any
}

// NewCycleState returns an empty state.
func NewCycleState() *CycleState { return &CycleState{} }

// Read returns the value stored under key, if any.
func (s *CycleState) Read(key StateKey) (any, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.values[key]
	return v, ok
}

// Write stores v under key.
func (s *CycleState) Write(key StateKey, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.values == nil {
		s.values = make(map[StateKey]any, 4)
	}
	s.values[key] = v
}

// ReadAs returns the value under key if it has type T.
func ReadAs[T any](s *CycleState, key StateKey) (T, bool) {
	v, ok := s.Read(key)
	if !ok {
		var zero T
		return zero, false
	}
	t, ok := v.(T)
	return t, ok
}
