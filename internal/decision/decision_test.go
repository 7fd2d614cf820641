package decision_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
)

// ep is a test endpoint with a health and an ejection state, and the
// outstanding prefill the decision counts (decision.Prefilling).
type ep struct {
	*plugintest.Endpoint
	sick, ejected            bool
	prefillReqs, prefillToks int64
}

func (e *ep) PrefillBegin(tokens int64) { e.prefillReqs++; e.prefillToks += tokens }
func (e *ep) PrefillEnd(tokens int64)   { e.prefillReqs--; e.prefillToks -= tokens }
func (e *ep) Prefilling() (int64, int64) {
	return e.prefillReqs, e.prefillToks
}

func (e *ep) Healthy() bool          { return !e.sick }
func (e *ep) Ejected(time.Time) bool { return e.ejected }
func (e *ep) Begin(int64)            {}
func (e *ep) End(int64)              {}
func mk(name string, role framework.Role, mod func(*ep)) *ep {
	e := &ep{Endpoint: plugintest.NewEndpoint(name)}
	e.Metadata().Role = role
	if mod != nil {
		mod(e)
	}
	return e
}

func director(t *testing.T, pool []*ep) *decision.Director {
	t.Helper()
	eps := make([]framework.Endpoint, len(pool))
	for i, e := range pool {
		eps[i] = e
	}
	return directorOf(t, func(string) []framework.Endpoint { return slices.Clone(eps) })
}

// directorOf is a director over pools, with the built-in plugins and
// presets.
func directorOf(t *testing.T, pools decision.PoolsFunc) *decision.Director {
	t.Helper()
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	d, err := decision.New(decision.Options{
		Pools:    pools,
		Profiles: decision.NewProfiles(nil, presets.Specs(), reg, plugintest.NewHandle()),
		Handle:   plugintest.NewHandle(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestCandidatesAreTheFilters(t *testing.T) {
	sick := func(e *ep) { e.sick = true }
	ejected := func(e *ep) { e.ejected = true }
	waiting := func(e *ep) { e.SetMetrics(framework.Metrics{WaitingAdapters: []string{"sql"}}) }
	listed := func(e *ep) { e.Metadata().Adapters = []string{"sql"} }
	tests := []struct {
		name     string
		pool     []*ep
		adapter  string
		want     []string
		excluded []decision.Exclusion
	}{
		{"healthy both", []*ep{mk("a", framework.RoleBoth, nil), mk("b", "", nil)}, "", []string{"a", "b"}, nil},
		{"unhealthy and role", []*ep{mk("a", framework.RoleBoth, sick), mk("b", framework.RolePrefill, nil), mk("c", framework.RoleBoth, nil)}, "",
			[]string{"c"}, []decision.Exclusion{{"a", "unhealthy"}, {"b", "role prefill"}}},
		{"adapter listed or waiting", []*ep{mk("a", framework.RoleBoth, listed), mk("b", framework.RoleBoth, waiting), mk("c", framework.RoleBoth, nil)}, "sql",
			[]string{"a", "b"}, []decision.Exclusion{{"c", "adapter sql not listed"}}},
		{"ejected left out", []*ep{mk("a", framework.RoleBoth, ejected), mk("b", framework.RoleBoth, nil)}, "",
			[]string{"b"}, []decision.Exclusion{{"a", "ejected after consecutive 5xx"}}},
		{"all ejected kept", []*ep{mk("a", framework.RoleBoth, ejected), mk("b", framework.RoleBoth, ejected)}, "", []string{"a", "b"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := director(t, tt.pool)
			got, excluded := d.Candidates(context.Background(), &framework.Request{Adapter: tt.adapter}, "p", true)
			var names []string
			for _, e := range got {
				names = append(names, e.Metadata().Name)
			}
			if diff := cmp.Diff(tt.want, names); diff != "" {
				t.Errorf("candidates (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.excluded, excluded); diff != "" {
				t.Errorf("exclusions (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPDCandidatesSplitByRole(t *testing.T) {
	ejected := func(e *ep) { e.ejected = true }
	d := director(t, []*ep{mk("p0", framework.RolePrefill, ejected), mk("p1", framework.RolePrefill, nil), mk("d0", framework.RoleDecode, ejected), mk("b", framework.RoleBoth, nil)})
	prefill, decode, excluded := d.PDCandidates(context.Background(), &framework.Request{}, "p", true)
	names := func(eps []framework.Endpoint) (out []string) {
		for _, e := range eps {
			out = append(out, e.Metadata().Name)
		}
		return out
	}
	if diff := cmp.Diff([]string{"p1", "b"}, names(prefill)); diff != "" {
		t.Errorf("prefill (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"b"}, names(decode)); diff != "" {
		t.Errorf("decode (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]decision.Exclusion{{"p0", "ejected after consecutive 5xx"}, {"d0", "ejected after consecutive 5xx"}}, excluded); diff != "" {
		t.Errorf("exclusions (-want +got):\n%s", diff)
	}
}

func TestDecideRetriesElsewhere(t *testing.T) {
	a, b := mk("a", framework.RoleBoth, nil), mk("b", framework.RoleBoth, nil)
	d := director(t, []*ep{a, b})
	prof, err := d.Profiles().Get(presets.RoundRobin)
	if err != nil {
		t.Fatal(err)
	}
	c := &decision.Call{Req: &framework.Request{Model: "m"}, Profile: prof}
	for _, tried := range [][]framework.Endpoint{{a}, {b}, {a, b}} {
		dec, ok := d.Decide(context.Background(), c, []decision.Target{{Pool: "p"}}, tried)
		if !ok || dec.Endpoint == tried[len(tried)-1] {
			t.Errorf("tried %v: picked %v (ok %v), want another than the last tried", tried, dec.Endpoint, ok)
		}
	}
}

func TestProfilesResolveOnce(t *testing.T) {
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	own := presets.Specs()[presets.LeastRequest]
	p := decision.NewProfiles(map[string]config.ProfileSpec{"default": own}, presets.Specs(), reg, plugintest.NewHandle())
	first, err := p.Get("default")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := p.Get("default")
	if first != again {
		t.Error("a profile was built twice")
	}
	if spec, _ := p.Spec("default"); !cmp.Equal(spec, own) {
		t.Error("the configured profile did not win over the preset")
	}
	if _, err := p.Get("fancy"); !errors.Is(err, decision.ErrUnknownProfile) {
		t.Errorf("unknown profile: err = %v", err)
	}
}

// TestDecideHandsBackUnmeetable: with Call.ShedUnmeetable, a target whose
// candidates the default profile's predicted-latency scorer predicts to
// miss the request's TTFT objective is passed over for a fallback that
// meets it; with no such fallback Decide returns no pick and the
// objective in Decision.Unmeetable. Without ShedUnmeetable, or on a retry,
// the pick stands.
func TestDecideHandsBackUnmeetable(t *testing.T) {
	ctx := context.Background()
	a, b := mk("a", framework.RoleBoth, nil), mk("b", framework.RoleBoth, nil)
	pools := map[string][]framework.Endpoint{"busy": {a}, "idle": {b}}
	d := directorOf(t, func(name string) []framework.Endpoint { return slices.Clone(pools[name]) })
	prof, err := d.Profiles().Get(presets.Default)
	if err != nil {
		t.Fatal(err)
	}
	// a prefills 64k tokens this director sent (about 1.5 s on the H100
	// prior); b is idle.
	big := &decision.Call{Req: &framework.Request{ID: "big", Model: "m", PromptTokens: 64000}, Profile: prof}
	dec, ok := d.Decide(ctx, big, []decision.Target{{Pool: "busy"}}, nil)
	if !ok {
		t.Fatal("no pick for the long prompt")
	}
	d.Sent(ctx, big, &dec)
	call := func(shed bool) *decision.Call {
		req := &framework.Request{ID: "r", Model: "m", PromptTokens: 1000, Headers: map[string]string{"x-halyard-slo-ttft-ms": "500"}}
		return &decision.Call{Req: req, Profile: prof, ShedUnmeetable: shed}
	}
	busy, both := []decision.Target{{Pool: "busy"}}, []decision.Target{{Pool: "busy"}, {Pool: "idle"}}

	if dec, ok := d.Decide(ctx, call(true), both, nil); !ok || dec.Endpoint != framework.Endpoint(b) || !dec.Fallback || dec.Unmeetable != nil {
		t.Errorf("busy then idle: picked %v (ok %v, fallback %v, unmeetable %v), want b, the fallback that meets the objective", dec.Endpoint, ok, dec.Fallback, dec.Unmeetable)
	}
	dec, ok = d.Decide(ctx, call(true), busy, nil)
	if ok || dec.Unmeetable == nil {
		t.Fatalf("busy alone: picked %v (ok %v), want no pick and Unmeetable", dec.Endpoint, ok)
	}
	if dec.Unmeetable.TTFTObjectiveMs != 500 || dec.Unmeetable.LeastTTFTMs <= 500 {
		t.Errorf("Unmeetable = %+v, want the 500 ms objective and a least predicted TTFT above it", *dec.Unmeetable)
	}
	if dec, ok := d.Decide(ctx, call(false), busy, nil); !ok || dec.Endpoint != framework.Endpoint(a) {
		t.Errorf("without ShedUnmeetable: picked %v (ok %v), want a", dec.Endpoint, ok)
	}
	if dec, ok := d.Decide(ctx, call(true), []decision.Target{{Pool: "busy"}, {Pool: "idle"}}, []framework.Endpoint{b}); !ok || dec.Endpoint != framework.Endpoint(a) {
		t.Errorf("a retry (b tried): picked %v (ok %v), want a: a retry is not handed back", dec.Endpoint, ok)
	}
}
