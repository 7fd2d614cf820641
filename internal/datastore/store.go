package datastore

import (
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// Store is the set of endpoints, by name and by pool. Reads are lock-free
// snapshots; Sync replaces the set. The zero value is empty and ready.
type Store struct {
	mu    sync.Mutex
	state stateHolder
}

type snapshot struct {
	byName map[string]*Endpoint
	pools  map[string][]*Endpoint
	all    []*Endpoint
}

type stateHolder struct{ p atomic.Pointer[snapshot] }

var emptySnapshot = &snapshot{}

func (h *stateHolder) load() *snapshot {
	if s := h.p.Load(); s != nil {
		return s
	}
	return emptySnapshot
}

func (h *stateHolder) store(s *snapshot) { h.p.Store(s) }

// Sync makes the store hold exactly specs. An endpoint whose spec is
// unchanged keeps its state (metrics, health, in-flight counts), even when
// only Draining changed; a changed spec is a new endpoint. It returns the endpoints added and removed.
func (s *Store) Sync(specs []EndpointSpec) (added, removed []*Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.state.load()
	next := &snapshot{byName: make(map[string]*Endpoint, len(specs)), pools: map[string][]*Endpoint{}}
	for _, spec := range specs {
		e, ok := old.byName[spec.Metadata.Name]
		if !ok || !sameSpec(e, spec) {
			e = NewEndpoint(spec)
			added = append(added, e)
		} else {
			e.draining.Store(spec.Draining)
		}
		next.byName[spec.Metadata.Name] = e
	}
	for name, e := range old.byName {
		if next.byName[name] != e {
			removed = append(removed, e)
		}
	}
	names := slices.Sorted(maps.Keys(next.byName))
	for _, n := range names {
		e := next.byName[n]
		next.all = append(next.all, e)
		next.pools[e.pool] = append(next.pools[e.pool], e)
	}
	s.state.store(next)
	return added, removed
}

func sameSpec(e *Endpoint, spec EndpointSpec) bool {
	a, b := e.md, spec.Metadata
	return e.pool == spec.Pool && a.Name == b.Name && a.Address == b.Address && a.Model == b.Model &&
		a.Role == b.Role && maps.Equal(a.Labels, b.Labels) && slices.Equal(a.Adapters, b.Adapters)
}

// Pool returns the endpoints of pool, sorted by name. The slice is shared:
// callers must not modify it.
func (s *Store) Pool(pool string) []*Endpoint { return s.state.load().pools[pool] }

// Get returns the endpoint named name, or nil.
func (s *Store) Get(name string) *Endpoint { return s.state.load().byName[name] }

// All returns every endpoint, sorted by name. The slice is shared: callers
// must not modify it.
func (s *Store) All() []*Endpoint { return s.state.load().all }

// Pools returns the names of the pools, sorted.
func (s *Store) Pools() []string {
	p := s.state.load().pools
	out := make([]string, 0, len(p))
	for k := range p {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
