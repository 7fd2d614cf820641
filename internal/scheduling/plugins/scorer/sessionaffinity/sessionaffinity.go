package sessionaffinity

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Type is the registered plugin type.
const Type = "session-affinity"

// Defaults of Params.
const (
	DefaultTTL         = 10 * time.Minute
	DefaultMaxSessions = 100_000
)

// Params configure a Scorer.
type Params struct {
	// TTL is a Go duration: how long a session is remembered after its last
	// request.
	TTL string `json:"ttl"`
	// MaxSessions bounds the sessions remembered.
	MaxSessions int `json:"maxSessions"`
}

// Scorer keeps sessions on the endpoint that served them last. It is safe
// for concurrent use.
type Scorer struct {
	tn  framework.TypedName
	now func() time.Time
	ttl time.Duration
	max int

	sessionsDesc *prometheus.Desc

	mu sync.Mutex
	// sessions are keyed by the 64-bit xxhash of the session key, so that
	// memory does not grow with the keys' length (a session header may be
	// 1 MiB, a body's user field far more). Two keys colliding share an
	// endpoint preference, which is harmless.
	sessions map[uint64]*list.Element // of *session
	lru      list.List                // most recent at the front
}

type session struct {
	key      uint64
	endpoint string
	expires  time.Time
}

// Factory builds a Scorer from JSON params.
func Factory(name string, params json.RawMessage, h framework.Handle) (framework.Plugin, error) {
	p := Params{TTL: DefaultTTL.String(), MaxSessions: DefaultMaxSessions}
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	return New(name, p, h)
}

// New returns a Scorer named name that reads time from h (the wall clock
// when h is nil).
func New(name string, p Params, h framework.Handle) (*Scorer, error) {
	ttl, err := time.ParseDuration(p.TTL)
	if err != nil {
		return nil, fmt.Errorf("params.ttl: %w", err)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("params.ttl: must be positive, got %s", ttl)
	}
	if p.MaxSessions < 1 {
		return nil, fmt.Errorf("params.maxSessions: must be at least 1, got %d", p.MaxSessions)
	}
	now := time.Now
	if h != nil {
		now = h.Now
	}
	return &Scorer{
		tn:       framework.TypedName{Type: Type, Name: name},
		now:      now,
		ttl:      ttl,
		max:      p.MaxSessions,
		sessions: make(map[uint64]*list.Element),
		sessionsDesc: prometheus.NewDesc(MetricSessions, "Sessions the session-affinity scorer remembers.",
			nil, prometheus.Labels{"plugin": name}),
	}, nil
}

// TypedName returns the plugin's type and name.
func (s *Scorer) TypedName() framework.TypedName { return s.tn }

// Score writes 1 for the endpoint that served the request's session last.
func (s *Scorer) Score(_ context.Context, state *framework.CycleState, req *framework.Request, endpoints []framework.Endpoint, scores []float64) {
	if req == nil || req.SessionKey == "" {
		return
	}
	target, ok := s.lookup(req.SessionKey)
	if !ok {
		return
	}
	for i, e := range endpoints {
		if e.Metadata().Name == target {
			scores[i] = 1
			return
		}
	}
	if framework.Explaining(state) {
		framework.AddNote(state, fmt.Sprintf("%s: the session's endpoint %s is not a candidate", s.tn, target))
	}
}

// PreRequest remembers that the request's session goes to picked.
func (s *Scorer) PreRequest(_ context.Context, _ *framework.CycleState, req *framework.Request, picked framework.Endpoint) {
	if req == nil || req.SessionKey == "" || picked == nil {
		return
	}
	now := s.now()
	key := xxhash.Sum64String(req.SessionKey)
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.sessions[key]; ok {
		ss := el.Value.(*session)
		ss.endpoint, ss.expires = picked.Metadata().Name, now.Add(s.ttl)
		s.lru.MoveToFront(el)
		return
	}
	// Forget expired sessions and, past the bound, the least recent.
	for s.lru.Len() > 0 {
		back := s.lru.Back()
		if ss := back.Value.(*session); s.lru.Len() >= s.max || !now.Before(ss.expires) {
			delete(s.sessions, ss.key)
			s.lru.Remove(back)
			continue
		}
		break
	}
	s.sessions[key] = s.lru.PushFront(&session{key: key, endpoint: picked.Metadata().Name, expires: now.Add(s.ttl)})
}

// Len returns how many sessions are remembered (expired ones included until
// they are dropped).
func (s *Scorer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

func (s *Scorer) lookup(sessionKey string) (string, bool) {
	now := s.now()
	key := xxhash.Sum64String(sessionKey)
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.sessions[key]
	if !ok {
		return "", false
	}
	ss := el.Value.(*session)
	if !now.Before(ss.expires) {
		delete(s.sessions, key)
		s.lru.Remove(el)
		return "", false
	}
	return ss.endpoint, true
}

var (
	_ framework.Scorer     = (*Scorer)(nil)
	_ framework.PreRequest = (*Scorer)(nil)
)
