package scheduling

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

type testEndpoint struct {
	md framework.EndpointMetadata
	m  framework.Metrics
}

func (e *testEndpoint) Metadata() *framework.EndpointMetadata { return &e.md }
func (e *testEndpoint) Metrics() *framework.Metrics           { return &e.m }
func (e *testEndpoint) InFlight() (int64, int64)              { return 0, 0 }

func ep(name string, waiting int) *testEndpoint {
	return &testEndpoint{md: framework.EndpointMetadata{Name: name}, m: framework.Metrics{WaitingRequests: waiting}}
}

// dropFilter removes endpoints whose name is in its params.
type dropFilter struct {
	tn   framework.TypedName
	drop map[string]bool
}

func (f *dropFilter) TypedName() framework.TypedName { return f.tn }
func (f *dropFilter) Filter(_ context.Context, _ *framework.CycleState, _ *framework.Request, eps []framework.Endpoint) []framework.Endpoint {
	out := eps[:0]
	for _, e := range eps {
		if !f.drop[e.Metadata().Name] {
			out = append(out, e)
		}
	}
	return out
}

// constScorer scores by a table of endpoint name to score.
type constScorer struct {
	tn     framework.TypedName
	scores map[string]float64
}

func (s *constScorer) TypedName() framework.TypedName { return s.tn }
func (s *constScorer) Score(_ context.Context, _ *framework.CycleState, _ *framework.Request, eps []framework.Endpoint, out []float64) {
	for i, e := range eps {
		out[i] = s.scores[e.Metadata().Name]
	}
}

type maxPicker struct{ tn framework.TypedName }

func (p *maxPicker) TypedName() framework.TypedName { return p.tn }
func (p *maxPicker) Pick(_ context.Context, _ *framework.CycleState, _ *framework.Request, scored []framework.ScoredEndpoint) []framework.Endpoint {
	best := -1
	for i, s := range scored {
		if best < 0 || s.Score > scored[best].Score {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	return []framework.Endpoint{scored[best].Endpoint}
}

func testRegistry(t *testing.T) *framework.Registry {
	t.Helper()
	reg := &framework.Registry{}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(reg.Register("drop", func(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
		var names []string
		if err := framework.DecodeParams(params, &names); err != nil {
			return nil, err
		}
		f := &dropFilter{tn: framework.TypedName{Type: "drop", Name: name}, drop: map[string]bool{}}
		for _, n := range names {
			f.drop[n] = true
		}
		return f, nil
	}))
	must(reg.Register("const", func(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
		s := &constScorer{tn: framework.TypedName{Type: "const", Name: name}}
		if err := framework.DecodeParams(params, &s.scores); err != nil {
			return nil, err
		}
		return s, nil
	}))
	must(reg.Register(DefaultPicker, func(name string, _ json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
		return &maxPicker{tn: framework.TypedName{Type: DefaultPicker, Name: name}}, nil
	}))
	if err := reg.Register("const", nil); err == nil {
		t.Fatal("registering a nil factory succeeded")
	}
	return reg
}

func weight(w float64) *float64 { return &w }

func TestProfileScheduleWeightsScoresAndExplains(t *testing.T) {
	reg := testRegistry(t)
	spec := config.ProfileSpec{
		Filters: []config.PluginSpec{{Type: "drop", Params: json.RawMessage(`["c"]`)}},
		Scorers: []config.PluginSpec{
			{Type: "const", Name: "affinity", Weight: weight(3), Params: json.RawMessage(`{"a":1,"b":0,"c":1}`)},
			{Type: "const", Name: "load", Weight: weight(1), Params: json.RawMessage(`{"a":0,"b":1.5,"c":1}`)},
		},
	}
	p, err := NewProfile("default", spec, reg, Handle{})
	if err != nil {
		t.Fatal(err)
	}
	cands := []framework.Endpoint{ep("a", 0), ep("b", 0), ep("c", 0)}
	res, err := p.Schedule(context.Background(), framework.NewCycleState(), &framework.Request{}, cands, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Picked[0].Metadata().Name; got != "a" {
		t.Errorf("picked %q, want a (3·1 beats 1·1, the clamped 1.5)", got)
	}
	want := &framework.Explanation{
		Profile: "default",
		Endpoints: []framework.EndpointExplanation{
			{Name: "a", Scores: map[string]float64{"const/affinity": 1, "const/load": 0}, Total: 3},
			{Name: "b", Scores: map[string]float64{"const/affinity": 0, "const/load": 1}, Total: 1},
			{Name: "c", FilteredBy: "drop"},
		},
		Picked: []string{"a"},
	}
	if diff := cmp.Diff(want, res.Explanation); diff != "" {
		t.Errorf("explanation (-want +got):\n%s", diff)
	}
	if names := []string{cands[0].Metadata().Name, cands[1].Metadata().Name, cands[2].Metadata().Name}; !cmp.Equal(names, []string{"a", "b", "c"}) {
		t.Errorf("Schedule modified its candidates: %v", names)
	}
}

func TestProfileScheduleNoEndpoint(t *testing.T) {
	reg := testRegistry(t)
	p, err := NewProfile("x", config.ProfileSpec{Filters: []config.PluginSpec{{Type: "drop", Params: json.RawMessage(`["a"]`)}}}, reg, Handle{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Schedule(context.Background(), framework.NewCycleState(), &framework.Request{}, []framework.Endpoint{ep("a", 0)}, true)
	if !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("err = %v, want ErrNoEndpoint", err)
	}
	if res.Explanation == nil || res.Explanation.Endpoints[0].FilteredBy != "drop" {
		t.Errorf("explanation does not say which filter removed a: %+v", res.Explanation)
	}
}

func TestNewProfileErrorsNameTheField(t *testing.T) {
	reg := testRegistry(t)
	tests := []struct {
		name string
		spec config.ProfileSpec
		want string
	}{
		{"unknown type", config.ProfileSpec{Scorers: []config.PluginSpec{{Type: "nope"}}}, "profiles.p.scorers[0]: unknown plugin type \"nope\""},
		{"filter as scorer", config.ProfileSpec{Scorers: []config.PluginSpec{{Type: "const"}, {Type: "drop"}}}, "profiles.p.scorers[1]: plugin type \"drop\" is not a scorer"},
		{"bad params", config.ProfileSpec{Filters: []config.PluginSpec{{Type: "drop", Params: json.RawMessage(`{"x":1}`)}}}, "profiles.p.filters[0]: params:"},
		{"negative weight", config.ProfileSpec{Scorers: []config.PluginSpec{{Type: "const", Weight: weight(-1)}}}, "profiles.p.scorers[0].weight: must not be negative"},
		{"weight on filter", config.ProfileSpec{Filters: []config.PluginSpec{{Type: "drop", Weight: weight(1)}}}, "profiles.p.filters[0].weight"},
		{"scorer as picker", config.ProfileSpec{Picker: &config.PluginSpec{Type: "const"}}, "profiles.p.picker: plugin type \"const\" is not a picker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewProfile("p", tt.spec, reg, Handle{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// noteScorer adds a note when the cycle explains itself, and counts the
// cycles in which it was asked to build none.
type noteScorer struct {
	tn     framework.TypedName
	silent int
}

func (s *noteScorer) TypedName() framework.TypedName { return s.tn }
func (s *noteScorer) Score(_ context.Context, st *framework.CycleState, _ *framework.Request, eps []framework.Endpoint, _ []float64) {
	if !framework.Explaining(st) {
		s.silent++
		return
	}
	framework.AddNote(st, "noted "+eps[0].Metadata().Name)
}

func TestProfileScheduleCarriesPluginNotes(t *testing.T) {
	reg := testRegistry(t)
	ns := &noteScorer{tn: framework.TypedName{Type: "note", Name: "note"}}
	if err := reg.Register("note", func(string, json.RawMessage, framework.Handle) (framework.Plugin, error) { return ns, nil }); err != nil {
		t.Fatal(err)
	}
	p, err := NewProfile("p", config.ProfileSpec{Scorers: []config.PluginSpec{{Type: "note"}}}, reg, Handle{})
	if err != nil {
		t.Fatal(err)
	}
	cands := []framework.Endpoint{ep("a", 0)}
	res, err := p.Schedule(context.Background(), framework.NewCycleState(), &framework.Request{}, cands, false)
	if err != nil || res.Explanation != nil || ns.silent != 1 {
		t.Fatalf("unexplained cycle: err %v, explanation %v, silent cycles %d; want nil, nil, 1", err, res.Explanation, ns.silent)
	}
	res, err = p.Schedule(context.Background(), nil, &framework.Request{}, cands, true)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"noted a"}, res.Explanation.Notes); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
	// A second cycle on the same state (a retry) explains only itself.
	state := framework.NewCycleState()
	for range 2 {
		if res, err = p.Schedule(context.Background(), state, &framework.Request{}, cands, true); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"noted a"}, res.Explanation.Notes); diff != "" {
		t.Errorf("notes of a retried cycle (-want +got):\n%s", diff)
	}
	if got := len(p.Plugins()); got != 2 {
		t.Errorf("Plugins() has %d entries, want the scorer and the picker", got)
	}
}
