package v1alpha1

import (
	"fmt"
	"net/url"
	"regexp"

	configv1alpha1 "github.com/halyard-dev/halyard/api/config/v1alpha1"
)

// CheckRoute validates what the CRD schema cannot express (a header regular
// expression that does not compile, an endpoint URL that is not http or
// https) and repeats the schema's required fields for objects that did not
// pass through it; the error names the field path. The controller reports
// it in the Accepted condition and the router skips a ModelRoute that fails
// it.
func CheckRoute(s *ModelRouteSpec) error {
	if s.Model == "" {
		return fmt.Errorf("spec.model: required")
	}
	if len(s.Targets) == 0 {
		return fmt.Errorf("spec.targets: at least one target is required")
	}
	for i, e := range s.Endpoints {
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("spec.endpoints[%d].url: must be an http or https URL, got %q", i, e.URL)
		}
		if e.Model == "" {
			return fmt.Errorf("spec.endpoints[%d].model: required", i)
		}
		switch e.Role {
		case "", configv1alpha1.RoleBoth, configv1alpha1.RolePrefill, configv1alpha1.RoleDecode:
		default:
			return fmt.Errorf("spec.endpoints[%d].role: must be both, prefill or decode, got %q", i, e.Role)
		}
	}
	for i, rule := range s.Rules {
		for j, h := range rule.Headers {
			if h.Type != "RegularExpression" {
				continue
			}
			if _, err := regexp.Compile(h.Value); err != nil {
				return fmt.Errorf("spec.rules[%d].headers[%d].value: invalid regular expression: %w", i, j, err)
			}
		}
	}
	return nil
}

// RoutePrecedes reports whether a takes precedence over b when both route
// the same public model: the older (creationTimestamp) wins, then the
// lesser namespace/name. The router routes the model by the first valid
// ModelRoute in this order; the controller marks the others Accepted=False.
func RoutePrecedes(a, b *ModelRoute) bool {
	ta, tb := a.CreationTimestamp, b.CreationTimestamp
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}
