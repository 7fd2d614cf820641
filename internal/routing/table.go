package routing

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
)

// Target is one destination of a route.
type Target struct {
	// Pool names the endpoints' pool.
	Pool string
	// Model is the model name to send to the engine, or "" to send the
	// endpoint's own model name.
	Model string
	// Weight is the target's share within its split.
	Weight int32
}

// Table maps public model names to routes. It is built once from config and
// is safe for concurrent use.
type Table struct {
	routes map[string]*Route
	models []string
}

// Route is one public model's routing.
type Route struct {
	// Model is the public model name.
	Model string
	// Adapter is the LoRA adapter this route asks for, or "".
	Adapter string
	// Profile names the scheduling profile.
	Profile  string
	rules    []rule
	split    *split
	fallback []Target
}

type rule struct {
	headers []headerMatch
	split   *split
}

type headerMatch struct {
	name  string // canonical header key
	value string
	re    *regexp.Regexp
}

// New builds a table from defaulted, validated routes.
func New(routes []config.RouteSpec) (*Table, error) {
	t := &Table{routes: make(map[string]*Route, len(routes))}
	for i, rs := range routes {
		path := fmt.Sprintf("routes[%d]", i)
		if _, dup := t.routes[rs.Model]; dup {
			return nil, fmt.Errorf("%s.model: duplicate %q", path, rs.Model)
		}
		r := &Route{Model: rs.Model, Adapter: rs.Adapter, Profile: rs.Profile}
		if r.Profile == "" {
			r.Profile = config.DefaultProfile
		}
		var err error
		if r.split, err = newSplit(rs.Targets, rs.Adapter); err != nil {
			return nil, fmt.Errorf("%s.targets: %w", path, err)
		}
		r.fallback = targets(rs.Fallback, rs.Adapter)
		for j, rr := range rs.Rules {
			ru := rule{}
			for k, h := range rr.Headers {
				m := headerMatch{name: http.CanonicalHeaderKey(h.Name), value: h.Value}
				if h.Type == config.MatchRegularExpression {
					if m.re, err = regexp.Compile("^(?:" + h.Value + ")$"); err != nil {
						return nil, fmt.Errorf("%s.rules[%d].headers[%d].value: %w", path, j, k, err)
					}
				}
				ru.headers = append(ru.headers, m)
			}
			if ru.split, err = newSplit(rr.Targets, rs.Adapter); err != nil {
				return nil, fmt.Errorf("%s.rules[%d].targets: %w", path, j, err)
			}
			r.rules = append(r.rules, ru)
		}
		r.split.setFallbacks(r.fallback)
		for _, ru := range r.rules {
			ru.split.setFallbacks(r.fallback)
		}
		t.routes[rs.Model] = r
		t.models = append(t.models, rs.Model)
	}
	sort.Strings(t.models)
	return t, nil
}

// Lookup returns the route for a public model name.
func (t *Table) Lookup(model string) (*Route, bool) {
	r, ok := t.routes[model]
	return r, ok
}

// Models returns the public model names, sorted.
func (t *Table) Models() []string { return t.models }

// Pick chooses the target for a request with headers h: the first rule whose
// header matches all hold decides the split, else the route's own split; the
// split's weights decide the target. The targets to try when it has no
// available endpoint follow: the route's fallbacks in order, then the split's
// other targets of non-zero weight, heaviest first, so that a split whose
// pool is down sends its share to the pools that are up. The fallback slice
// is shared: callers must not modify it.
func (r *Route) Pick(h http.Header) (primary Target, fallback []Target) {
	s := r.split
	for _, ru := range r.rules {
		if ru.matches(h) {
			s = ru.split
			break
		}
	}
	i := s.next()
	return s.targets[i], s.fallbacks[i]
}

// setFallbacks precomputes, for each target of s, the targets to try after
// it: the route's fallbacks, then the split's other targets heaviest first.
func (s *split) setFallbacks(routeFallback []Target) {
	s.fallbacks = make([][]Target, len(s.targets))
	for i, primary := range s.targets {
		fb := append([]Target(nil), routeFallback...)
		for _, t := range s.byWeight {
			if t != primary {
				fb = append(fb, t)
			}
		}
		if len(fb) > 0 {
			s.fallbacks[i] = fb
		}
	}
}

// Targets returns every target the route may use, for readiness checks:
// the split's, the rules', then the fallback's.
func (r *Route) Targets() []Target {
	out := append([]Target(nil), r.split.targets...)
	for _, ru := range r.rules {
		out = append(out, ru.split.targets...)
	}
	return append(out, r.fallback...)
}

func (ru *rule) matches(h http.Header) bool {
	for _, m := range ru.headers {
		vals := h.Values(m.name)
		ok := false
		for _, v := range vals {
			if m.re != nil && m.re.MatchString(v) || m.re == nil && v == m.value {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func targets(ts []config.TargetSpec, adapter string) []Target {
	out := make([]Target, 0, len(ts))
	for _, t := range ts {
		w := int32(1)
		if t.Weight != nil {
			w = *t.Weight
		}
		m := t.Model
		if m == "" {
			m = adapter
		}
		out = append(out, Target{Pool: t.Pool, Model: m, Weight: w})
	}
	return out
}

// split is a smooth weighted round robin over targets: over any window of
// sum(weights) picks each target is chosen exactly weight times, spread out
// rather than in runs.
type split struct {
	targets   []Target
	byWeight  []Target   // targets of non-zero weight, heaviest first
	fallbacks [][]Target // per target, what to try after it (read-only)
	mu        sync.Mutex
	current   []int64
	total     int64
}

func newSplit(ts []config.TargetSpec, adapter string) (*split, error) {
	s := &split{targets: targets(ts, adapter)}
	if len(s.targets) == 0 {
		return nil, fmt.Errorf("no targets")
	}
	for _, t := range s.targets {
		if t.Weight < 0 {
			return nil, fmt.Errorf("negative weight %d", t.Weight)
		}
		s.total += int64(t.Weight)
	}
	if s.total == 0 {
		return nil, fmt.Errorf("weights are all zero")
	}
	s.current = make([]int64, len(s.targets))
	for _, t := range s.targets {
		if t.Weight > 0 {
			s.byWeight = append(s.byWeight, t)
		}
	}
	sort.SliceStable(s.byWeight, func(i, j int) bool { return s.byWeight[i].Weight > s.byWeight[j].Weight })
	return s, nil
}

func (s *split) next() int {
	if len(s.targets) == 1 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	best := 0
	for i, t := range s.targets {
		s.current[i] += int64(t.Weight)
		if s.current[i] > s.current[best] {
			best = i
		}
	}
	s.current[best] -= s.total
	return best
}

// String describes a target for logs and explanations.
func (t Target) String() string {
	var b strings.Builder
	b.WriteString(t.Pool)
	if t.Model != "" {
		b.WriteString("(model=")
		b.WriteString(t.Model)
		b.WriteByte(')')
	}
	return b.String()
}

// Split returns the targets of the route's own split, with their weights
// (read-only).
func (r *Route) Split() []Target { return r.split.targets }

// RuleSplits returns the targets of each header rule's split, in order
// (read-only).
func (r *Route) RuleSplits() [][]Target {
	out := make([][]Target, len(r.rules))
	for i, ru := range r.rules {
		out[i] = ru.split.targets
	}
	return out
}

// Fallback returns the route's fallback targets (read-only).
func (r *Route) Fallback() []Target { return r.fallback }
