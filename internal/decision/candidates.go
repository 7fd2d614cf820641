package decision

import (
	"context"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/ejection"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/health"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/loracapable"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/role"
)

// Pools gives the endpoints of a pool in a stable order, in a slice of its
// own that the decision may reorder (the filters work in place). The
// router's datastore and the virtual fleet implement it.
type Pools interface {
	Pool(name string) []framework.Endpoint
}

// PoolsFunc adapts a function to Pools.
type PoolsFunc func(name string) []framework.Endpoint

// Pool calls f.
func (f PoolsFunc) Pool(name string) []framework.Endpoint { return f(name) }

// Exclusion says why an endpoint of a target's pool was not a candidate.
type Exclusion struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// reasoner is what a candidate filter offers to explain itself: why it
// leaves an endpoint out, or "".
type reasoner interface {
	Reason(req *framework.Request, e framework.Endpoint) string
}

// candidateFilters say who may serve a request, in order. Each exclusion
// is one filter plugin; there is no other rule beside them.
type candidateFilters struct {
	// common: health (the endpoint's own health, not metric staleness)
	// and the LoRA adapter.
	health, adapter framework.Filter
	// roleBoth keeps endpoints of role both (pools without a pd block);
	// rolePrefill and roleDecode split a disaggregated pool.
	roleBoth, rolePrefill, roleDecode framework.Filter
	// ejection leaves out ejected endpoints while others remain.
	ejection framework.Filter
}

func newCandidateFilters(h framework.Handle) (*candidateFilters, error) {
	hf, err := health.New(health.Type, health.Params{MaxMetricsAge: "0"}, h)
	if err != nil {
		return nil, err
	}
	roleFilter := func(r framework.Role) framework.Filter {
		f, _ := role.New(role.Type, role.Params{Role: r}) // valid roles never fail
		return f
	}
	return &candidateFilters{
		health:      hf,
		adapter:     loracapable.New(loracapable.Type),
		roleBoth:    roleFilter(framework.RoleBoth),
		rolePrefill: roleFilter(framework.RolePrefill),
		roleDecode:  roleFilter(framework.RoleDecode),
		ejection:    ejection.New(ejection.Type, h),
	}, nil
}

// run applies filters to eps (which it may reorder in place) and, when
// explaining, appends each left-out endpoint with the first filter's
// reason to excluded.
func run(ctx context.Context, req *framework.Request, eps []framework.Endpoint, explain bool, excluded *[]Exclusion, filters ...framework.Filter) []framework.Endpoint {
	for _, f := range filters {
		if len(eps) == 0 {
			return eps
		}
		var before []framework.Endpoint
		if explain {
			before = append(before, eps...)
		}
		eps = f.Filter(ctx, nil, req, eps)
		if explain && len(eps) < len(before) {
			kept := make(map[framework.Endpoint]bool, len(eps))
			for _, e := range eps {
				kept[e] = true
			}
			for _, e := range before {
				if kept[e] {
					continue
				}
				reason := f.TypedName().String()
				if r, ok := f.(reasoner); ok {
					if why := r.Reason(req, e); why != "" {
						reason = why
					}
				}
				*excluded = append(*excluded, Exclusion{Name: e.Metadata().Name, Reason: reason})
			}
		}
	}
	return eps
}

// Candidates returns the endpoints of pool that may serve req in a pool
// without a pd block: healthy, of role both, serving the request's
// adapter, not ejected (unless all are). With explain, the others come
// with their reason.
func (d *Director) Candidates(ctx context.Context, req *framework.Request, pool string, explain bool) ([]framework.Endpoint, []Exclusion) {
	eps := d.pools.Pool(pool)
	var excluded []Exclusion
	f := d.filters
	eps = run(ctx, req, eps, explain, &excluded, f.health, f.roleBoth, f.adapter, f.ejection)
	return eps, excluded
}

// PDCandidates splits the endpoints of a disaggregated pool that may serve
// req into prefill candidates (roles prefill and both) and decode
// candidates (decode and both): healthy, serving the adapter, and not
// ejected while the role keeps another.
func (d *Director) PDCandidates(ctx context.Context, req *framework.Request, pool string, explain bool) (prefill, decode []framework.Endpoint, excluded []Exclusion) {
	eps := d.pools.Pool(pool)
	f := d.filters
	eps = run(ctx, req, eps, explain, &excluded, f.health, f.adapter)
	var ejected []Exclusion
	prefill = run(ctx, req, append([]framework.Endpoint(nil), eps...), false, nil, f.rolePrefill)
	prefill = run(ctx, req, prefill, explain, &ejected, f.ejection)
	decode = run(ctx, req, eps, false, nil, f.roleDecode)
	decode = run(ctx, req, decode, explain, &ejected, f.ejection)
	// The role split is not an exclusion; an ejected endpoint left out of
	// a role is, once.
	seen := map[string]bool{}
	for _, x := range ejected {
		if !seen[x.Name] {
			seen[x.Name] = true
			excluded = append(excluded, x)
		}
	}
	return prefill, decode, excluded
}

// notTried returns the candidates not yet tried when any remain; else
// those other than the last tried, when any; else all of them.
func notTried(cands, tried []framework.Endpoint) []framework.Endpoint {
	if len(tried) == 0 || len(cands) == 0 {
		return cands
	}
	fresh := make([]framework.Endpoint, 0, len(cands))
	for _, e := range cands {
		if !contains(tried, e) {
			fresh = append(fresh, e)
		}
	}
	if len(fresh) > 0 {
		return fresh
	}
	last := tried[len(tried)-1]
	for _, e := range cands {
		if e != last {
			fresh = append(fresh, e)
		}
	}
	if len(fresh) > 0 {
		return fresh
	}
	return cands
}

func contains(list []framework.Endpoint, e framework.Endpoint) bool {
	for _, x := range list {
		if x == e {
			return true
		}
	}
	return false
}
