package role

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Type is the registered plugin type.
const Type = "role"

// Params configure a Filter.
type Params struct {
	// Role is the role endpoints must be able to play.
	Role framework.Role `json:"role"`
}

// Filter keeps endpoints that can play a role.
type Filter struct {
	tn   framework.TypedName
	role framework.Role
}

// Factory builds a Filter from JSON params.
func Factory(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
	var p Params
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	return New(name, p)
}

// New returns a Filter named name.
func New(name string, p Params) (*Filter, error) {
	switch p.Role {
	case framework.RolePrefill, framework.RoleDecode, framework.RoleBoth:
	default:
		return nil, fmt.Errorf("params.role: must be prefill, decode or both, got %q", p.Role)
	}
	return &Filter{tn: framework.TypedName{Type: Type, Name: name}, role: p.Role}, nil
}

// TypedName returns the plugin's type and name.
func (f *Filter) TypedName() framework.TypedName { return f.tn }

// Filter keeps endpoints whose role is the filter's or both.
func (f *Filter) Filter(_ context.Context, _ *framework.CycleState, _ *framework.Request, endpoints []framework.Endpoint) []framework.Endpoint {
	out := endpoints[:0]
	for _, e := range endpoints {
		if f.Reason(nil, e) == "" {
			out = append(out, e)
		}
	}
	return out
}

// Reason says why the filter leaves e out ("role decode"), or "".
func (f *Filter) Reason(_ *framework.Request, e framework.Endpoint) string {
	r := e.Metadata().Role
	if r == "" {
		r = framework.RoleBoth
	}
	if r == f.role || r == framework.RoleBoth {
		return ""
	}
	return "role " + string(r)
}

var _ framework.Filter = (*Filter)(nil)
