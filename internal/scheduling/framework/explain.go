package framework

// Explanation records why a scheduling cycle picked what it picked. The
// router serves it at /debug/route and, on request, in a response header.
type Explanation struct {
	// Profile is the name of the profile that ran.
	Profile string `json:"profile"`
	// Endpoints holds one entry per candidate endpoint, in candidate order.
	Endpoints []EndpointExplanation `json:"endpoints"`
	// Picked names the chosen endpoints, best first.
	Picked []string `json:"picked"`
	// Notes are free-form remarks of plugins (e.g. "load overrides affinity").
	Notes []string `json:"notes,omitempty"`
}

// EndpointExplanation is one endpoint's path through a cycle.
type EndpointExplanation struct {
	Name string `json:"name"`
	// FilteredBy names the filter that removed the endpoint, or "" if it
	// survived every filter.
	FilteredBy string `json:"filteredBy,omitempty"`
	// Scores maps a scorer's name to its raw score in [0,1].
	Scores map[string]float64 `json:"scores,omitempty"`
	// Total is the weighted sum of the scores.
	Total float64 `json:"total"`
}
