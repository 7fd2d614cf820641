package v1alpha1

import (
	"fmt"
	"regexp"
)

// CheckRoute validates what the CRD schema cannot express (a header regular
// expression that does not compile); the error names the field path. The
// controller reports it in the Accepted condition and the router skips a
// ModelRoute that fails it.
func CheckRoute(s *ModelRouteSpec) error {
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
