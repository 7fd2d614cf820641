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

// State keys the scheduler owns.
const (
	explainingKey StateKey = "framework/explaining"
	notesKey      StateKey = "framework/notes"
)

// SetExplaining marks s as the state of a cycle that records an explanation.
// The scheduler calls it; plugins ask Explaining.
func SetExplaining(s *CycleState) {
	if s != nil {
		s.Write(explainingKey, true)
	}
}

// Explaining reports whether the cycle of s records an explanation, so that
// plugins build notes only when someone will read them.
func Explaining(s *CycleState) bool {
	if s == nil {
		return false
	}
	v, _ := ReadAs[bool](s, explainingKey)
	return v
}

// AddNote appends a remark (e.g. "load overrides affinity") to the cycle's
// explanation. A nil state drops it.
func AddNote(s *CycleState, note string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.values == nil {
		s.values = make(map[StateKey]any, 4)
	}
	notes, _ := s.values[notesKey].([]string)
	s.values[notesKey] = append(notes, note)
}

// Notes returns a copy of the remarks recorded in s, in order.
func Notes(s *CycleState) []string {
	if s == nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	notes, _ := s.values[notesKey].([]string)
	return append([]string(nil), notes...)
}
