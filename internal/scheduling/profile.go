package scheduling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// DefaultPicker is the picker type used when a profile names none.
const DefaultPicker = "max-score"

// ErrNoEndpoint is returned when no candidate survives the filters or the
// picker picks nothing.
var ErrNoEndpoint = errors.New("no endpoint can serve the request")

// Profile is a built scheduling profile, safe for concurrent use.
type Profile struct {
	name        string
	filters     []framework.Filter
	scorers     []weightedScorer
	picker      framework.Picker
	preRequest  []framework.PreRequest
	onComplete  []framework.ResponseComplete
	onFirst     []framework.FirstToken
	scratchPool sync.Pool
}

type weightedScorer struct {
	scorer framework.Scorer
	name   string
	weight float64
}

// Result is the outcome of one scheduling cycle.
type Result struct {
	// Picked holds the chosen endpoints, best first; never empty when the
	// error is nil.
	Picked []framework.Endpoint
	// Explanation is set when the cycle was asked to explain itself.
	Explanation *framework.Explanation
}

// NewProfile builds the profile name from spec, creating each plugin through
// reg. Errors name the field path, e.g. "profiles.default.scorers[1]".
func NewProfile(name string, spec config.ProfileSpec, reg *framework.Registry, h framework.Handle) (*Profile, error) {
	p := &Profile{name: name}
	path := "profiles." + name
	seen := map[framework.Plugin]bool{}
	track := func(pl framework.Plugin) {
		if seen[pl] {
			return
		}
		seen[pl] = true
		if pr, ok := pl.(framework.PreRequest); ok {
			p.preRequest = append(p.preRequest, pr)
		}
		if rc, ok := pl.(framework.ResponseComplete); ok {
			p.onComplete = append(p.onComplete, rc)
		}
		if ft, ok := pl.(framework.FirstToken); ok {
			p.onFirst = append(p.onFirst, ft)
		}
	}
	for i, fs := range spec.Filters {
		pl, err := reg.New(fs.Type, fs.Name, fs.Params, h)
		if err != nil {
			return nil, fmt.Errorf("%s.filters[%d]: %w", path, i, err)
		}
		f, ok := pl.(framework.Filter)
		if !ok {
			return nil, fmt.Errorf("%s.filters[%d]: plugin type %q is not a filter", path, i, fs.Type)
		}
		if fs.Weight != nil {
			return nil, fmt.Errorf("%s.filters[%d].weight: only scorers take a weight", path, i)
		}
		p.filters = append(p.filters, f)
		track(pl)
	}
	for i, ss := range spec.Scorers {
		pl, err := reg.New(ss.Type, ss.Name, ss.Params, h)
		if err != nil {
			return nil, fmt.Errorf("%s.scorers[%d]: %w", path, i, err)
		}
		s, ok := pl.(framework.Scorer)
		if !ok {
			return nil, fmt.Errorf("%s.scorers[%d]: plugin type %q is not a scorer", path, i, ss.Type)
		}
		w := 1.0
		if ss.Weight != nil {
			w = *ss.Weight
		}
		if w < 0 {
			return nil, fmt.Errorf("%s.scorers[%d].weight: must not be negative, got %v", path, i, w)
		}
		p.scorers = append(p.scorers, weightedScorer{scorer: s, name: pl.TypedName().String(), weight: w})
		track(pl)
	}
	ps := config.PluginSpec{Type: DefaultPicker}
	if spec.Picker != nil {
		ps = *spec.Picker
	}
	pl, err := reg.New(ps.Type, ps.Name, ps.Params, h)
	if err != nil {
		return nil, fmt.Errorf("%s.picker: %w", path, err)
	}
	picker, ok := pl.(framework.Picker)
	if !ok {
		return nil, fmt.Errorf("%s.picker: plugin type %q is not a picker", path, ps.Type)
	}
	p.picker = picker
	track(pl)
	return p, nil
}

// Name returns the profile's name.
func (p *Profile) Name() string { return p.name }

// Plugins returns the profile's plugin instances: filters, scorers, then the
// picker. Wiring code uses it, for example to register the plugins that are
// Prometheus collectors.
func (p *Profile) Plugins() []framework.Plugin {
	out := make([]framework.Plugin, 0, len(p.filters)+len(p.scorers)+1)
	for _, f := range p.filters {
		out = append(out, f)
	}
	for _, s := range p.scorers {
		out = append(out, s.scorer)
	}
	return append(out, p.picker)
}

type scratch struct {
	endpoints []framework.Endpoint
	total     []float64
	one       []float64
	scored    []framework.ScoredEndpoint
}

// Schedule runs one cycle over candidates, which it does not modify. With
// explain set, the result carries an Explanation, including the notes plugins
// added to state (framework.AddNote). Pass the same state to PreRequest; a
// nil state gets a fresh one.
func (p *Profile) Schedule(ctx context.Context, state *framework.CycleState, req *framework.Request, candidates []framework.Endpoint, explain bool) (res Result, err error) {
	if state == nil {
		state = framework.NewCycleState()
	}
	sc, _ := p.scratchPool.Get().(*scratch)
	if sc == nil {
		sc = &scratch{}
	}
	defer p.scratchPool.Put(sc)

	var ex *framework.Explanation
	var index map[string]int
	if explain {
		framework.SetExplaining(state)
		earlier := len(framework.Notes(state)) // a retry may reuse the state
		defer func() {
			if notes := framework.Notes(state); len(notes) > earlier && res.Explanation != nil {
				res.Explanation.Notes = append(res.Explanation.Notes, notes[earlier:]...)
			}
		}()
		ex = &framework.Explanation{Profile: p.name, Endpoints: make([]framework.EndpointExplanation, len(candidates))}
		index = make(map[string]int, len(candidates))
		for i, e := range candidates {
			n := e.Metadata().Name
			ex.Endpoints[i].Name = n
			index[n] = i
		}
	}

	eps := append(sc.endpoints[:0], candidates...)
	for _, f := range p.filters {
		before := eps
		if explain {
			before = append([]framework.Endpoint(nil), eps...)
		}
		eps = f.Filter(ctx, state, req, eps)
		if explain {
			kept := make(map[string]bool, len(eps))
			for _, e := range eps {
				kept[e.Metadata().Name] = true
			}
			for _, e := range before {
				if n := e.Metadata().Name; !kept[n] {
					ex.Endpoints[index[n]].FilteredBy = f.TypedName().String()
				}
			}
		}
		if len(eps) == 0 {
			break
		}
	}
	sc.endpoints = eps[:0]
	if len(eps) == 0 {
		return Result{Explanation: ex}, ErrNoEndpoint
	}

	n := len(eps)
	sc.total = grow(sc.total, n)
	sc.one = grow(sc.one, n)
	clear(sc.total)
	for _, ws := range p.scorers {
		clear(sc.one)
		ws.scorer.Score(ctx, state, req, eps, sc.one)
		for i, s := range sc.one {
			s = clamp01(s)
			sc.total[i] += ws.weight * s
			if explain {
				ee := &ex.Endpoints[index[eps[i].Metadata().Name]]
				if ee.Scores == nil {
					ee.Scores = make(map[string]float64, len(p.scorers))
				}
				ee.Scores[ws.name] = s
			}
		}
	}
	sc.scored = sc.scored[:0]
	for i, e := range eps {
		sc.scored = append(sc.scored, framework.ScoredEndpoint{Endpoint: e, Score: sc.total[i]})
		if explain {
			ex.Endpoints[index[e.Metadata().Name]].Total = sc.total[i]
		}
	}
	picked := p.picker.Pick(ctx, state, req, sc.scored)
	if len(picked) == 0 {
		return Result{Explanation: ex}, ErrNoEndpoint
	}
	if explain {
		for _, e := range picked {
			ex.Picked = append(ex.Picked, e.Metadata().Name)
		}
	}
	return Result{Picked: picked, Explanation: ex}, nil
}

// PreRequest tells the profile's plugins which endpoint the request is about
// to be sent to.
func (p *Profile) PreRequest(ctx context.Context, state *framework.CycleState, req *framework.Request, picked framework.Endpoint) {
	for _, pr := range p.preRequest {
		pr.PreRequest(ctx, state, req, picked)
	}
}

// FirstToken tells the profile's plugins that the first token of a request
// came back from ep.
func (p *Profile) FirstToken(ctx context.Context, req *framework.Request, ep framework.Endpoint) {
	for _, ft := range p.onFirst {
		ft.FirstToken(ctx, req, ep)
	}
}

// ResponseComplete tells the profile's plugins that a request has finished.
func (p *Profile) ResponseComplete(ctx context.Context, req *framework.Request, ep framework.Endpoint, out framework.Outcome) {
	for _, rc := range p.onComplete {
		rc.ResponseComplete(ctx, req, ep, out)
	}
}

func grow(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	return s[:n]
}

func clamp01(v float64) float64 {
	switch {
	case v != v || v < 0: // NaN or negative
		return 0
	case v > 1:
		return 1
	}
	return v
}

// Handle is a framework.Handle with an injectable clock.
type Handle struct {
	// Clock returns the current time; nil means time.Now.
	Clock func() time.Time
	// Log is the logger; nil means slog.Default().
	Log *slog.Logger
}

// Now returns the handle's current time.
func (h Handle) Now() time.Time {
	if h.Clock == nil {
		return time.Now()
	}
	return h.Clock()
}

// Logger returns the handle's logger.
func (h Handle) Logger() *slog.Logger {
	if h.Log == nil {
		return slog.Default()
	}
	return h.Log
}

var _ framework.Handle = Handle{}
