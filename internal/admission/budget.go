package admission

import (
	"context"
	"math"
	"sync"
	"time"
)

// window is the period of the per-minute limits. Budgets are token buckets
// of capacity limit that refill at limit per window, so a tenant can burst
// up to a minute's budget and then goes at the limit's pace.
const window = time.Minute

// Scope is one set of budgets a request is charged against: its tenant's,
// or its tenant's for its model.
type Scope struct {
	// Key names the budgets in a store: "t:<tenant>" or "m:<tenant>:<model>".
	Key string
	// Name says which budget in explanations: "tenant" or "model".
	Name   string
	Limits Limits
}

// Reservation is what a request took from its budgets at admission.
type Reservation struct {
	ID     string
	Scopes []Scope
	// Tokens reserved: prompt tokens plus max_tokens (or the default).
	Tokens int64
	// local is set when the reservation went to the per-router fallback.
	local bool
}

// Dimension of a budget.
type Dimension string

// Dimensions of a budget, as in explanations.
const (
	DimRequests    Dimension = "requestsPerMinute"
	DimTokens      Dimension = "tokensPerMinute"
	DimConcurrency Dimension = "concurrency"
)

// Verdict is a store's answer to a reservation.
type Verdict struct {
	OK bool
	// Denied names the budget that refused: Scopes[DeniedScope], Dim.
	DeniedScope int
	Dim         Dimension
	// RetryAfter is when the refused budget has room again.
	RetryAfter time.Duration
	Rate       RateInfo
}

// RateInfo is what OpenAI's x-ratelimit-* headers say: the tightest
// request and token budgets after this request.
type RateInfo struct {
	LimitRequests, RemainingRequests int64
	ResetRequests                    time.Duration
	LimitTokens, RemainingTokens     int64
	ResetTokens                      time.Duration
}

// Store keeps budgets. LocalStore keeps them in the router; RedisStore
// shares them among routers.
type Store interface {
	// Reserve takes one request, r.Tokens tokens and one concurrency slot
	// from every scope of r, or nothing when one of them lacks room.
	Reserve(ctx context.Context, now time.Time, r *Reservation) (Verdict, error)
	// Settle gives back a reservation's concurrency slot and corrects its
	// tokens to used (a refund when used < r.Tokens).
	Settle(ctx context.Context, now time.Time, r *Reservation, used int64) error
}

// bucket is a token bucket: level is what is available at time at.
type bucket struct {
	level float64
	at    time.Time
}

// refill brings b to now for a budget of limit per window.
func (b *bucket) refill(now time.Time, limit int64) {
	if b.at.IsZero() {
		b.level, b.at = float64(limit), now
		return
	}
	if dt := now.Sub(b.at); dt > 0 {
		b.level = math.Min(float64(limit), b.level+float64(limit)*dt.Seconds()/window.Seconds())
		b.at = now
	}
}

// wait is how long until b holds need for a budget of limit per window.
func (b *bucket) wait(need float64, limit int64) time.Duration {
	if b.level >= need {
		return 0
	}
	return time.Duration(math.Ceil((need - b.level) / float64(limit) * float64(window)))
}

// untilFull is how long until b is full again (OpenAI's x-ratelimit-reset).
func (b *bucket) untilFull(limit int64) time.Duration {
	return b.wait(float64(limit), limit)
}

// scopeState is the budgets of one scope in a LocalStore.
type scopeState struct {
	requests, tokens bucket
	inflight         int64
}

// LocalStore keeps budgets in this process. Fraction (0,1] scales every
// limit (the per-router share while a shared store is down); 0 means 1.
type LocalStore struct {
	Fraction float64
	mu       sync.Mutex
	scopes   map[string]*scopeState
}

var _ Store = (*LocalStore)(nil)

func (s *LocalStore) scale(l Limits) Limits {
	f := s.Fraction
	if f <= 0 || f >= 1 {
		return l
	}
	sc := func(v int64) int64 {
		if v <= 0 {
			return 0
		}
		return max(int64(math.Floor(float64(v)*f)), 1)
	}
	return Limits{RequestsPerMinute: sc(l.RequestsPerMinute), TokensPerMinute: sc(l.TokensPerMinute), Concurrency: sc(l.Concurrency)}
}

// Reserve implements Store.
func (s *LocalStore) Reserve(_ context.Context, now time.Time, r *Reservation) (Verdict, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.scopes == nil {
		s.scopes = map[string]*scopeState{}
	}
	var states [4]*scopeState
	st := states[:0]
	v := Verdict{OK: true}
	for i, sc := range r.Scopes {
		l := s.scale(sc.Limits)
		ss := s.scopes[sc.Key]
		if ss == nil {
			ss = &scopeState{}
			s.scopes[sc.Key] = ss
		}
		st = append(st, ss)
		if !v.OK {
			continue
		}
		if l.Concurrency > 0 && ss.inflight >= l.Concurrency {
			v = Verdict{DeniedScope: i, Dim: DimConcurrency, RetryAfter: time.Second}
			continue
		}
		if l.RequestsPerMinute > 0 {
			ss.requests.refill(now, l.RequestsPerMinute)
			if w := ss.requests.wait(1, l.RequestsPerMinute); w > 0 {
				v = Verdict{DeniedScope: i, Dim: DimRequests, RetryAfter: w}
				continue
			}
		}
		if l.TokensPerMinute > 0 {
			ss.tokens.refill(now, l.TokensPerMinute)
			// A request larger than a whole minute's budget waits for a
			// full bucket rather than never passing.
			need := math.Min(float64(r.Tokens), float64(l.TokensPerMinute))
			if w := ss.tokens.wait(need, l.TokensPerMinute); w > 0 {
				v = Verdict{DeniedScope: i, Dim: DimTokens, RetryAfter: w}
				continue
			}
		}
	}
	if v.OK {
		for i, sc := range r.Scopes {
			l := s.scale(sc.Limits)
			ss := st[i]
			if l.Concurrency > 0 {
				ss.inflight++
			}
			if l.RequestsPerMinute > 0 {
				ss.requests.level--
			}
			if l.TokensPerMinute > 0 {
				ss.tokens.level -= float64(r.Tokens)
			}
		}
	}
	v.Rate = s.rate(r, st)
	return v, nil
}

// rate reports the tightest request and token budgets of r's scopes.
func (s *LocalStore) rate(r *Reservation, st []*scopeState) RateInfo {
	var ri RateInfo
	first := [2]bool{true, true}
	for i, sc := range r.Scopes {
		l := s.scale(sc.Limits)
		if l.RequestsPerMinute > 0 {
			rem := int64(math.Max(0, math.Floor(st[i].requests.level)))
			if first[0] || rem < ri.RemainingRequests {
				ri.LimitRequests, ri.RemainingRequests, ri.ResetRequests = l.RequestsPerMinute, rem, st[i].requests.untilFull(l.RequestsPerMinute)
				first[0] = false
			}
		}
		if l.TokensPerMinute > 0 {
			rem := int64(math.Max(0, math.Floor(st[i].tokens.level)))
			if first[1] || rem < ri.RemainingTokens {
				ri.LimitTokens, ri.RemainingTokens, ri.ResetTokens = l.TokensPerMinute, rem, st[i].tokens.untilFull(l.TokensPerMinute)
				first[1] = false
			}
		}
	}
	return ri
}

// Settle implements Store.
func (s *LocalStore) Settle(_ context.Context, now time.Time, r *Reservation, used int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sc := range r.Scopes {
		ss := s.scopes[sc.Key]
		if ss == nil {
			continue
		}
		l := s.scale(sc.Limits)
		if l.Concurrency > 0 && ss.inflight > 0 {
			ss.inflight--
		}
		if l.TokensPerMinute > 0 {
			ss.tokens.refill(now, l.TokensPerMinute)
			ss.tokens.level = math.Min(float64(l.TokensPerMinute), ss.tokens.level+float64(r.Tokens-used))
		}
	}
	return nil
}
