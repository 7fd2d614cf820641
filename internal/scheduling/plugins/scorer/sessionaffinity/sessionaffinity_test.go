package sessionaffinity_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/sessionaffinity"
)

func TestScoreAfterPreRequest(t *testing.T) {
	eps := plugintest.Endpoints(plugintest.NewEndpoint("a"), plugintest.NewEndpoint("b"), plugintest.NewEndpoint("c"))
	type step struct {
		advance time.Duration
		served  map[string]string // session → endpoint, recorded before scoring
		session string
		cands   []framework.Endpoint
		want    []float64
		note    bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"no session key", []step{{served: map[string]string{"": "a"}, session: "", cands: eps, want: []float64{0, 0, 0}}}},
		{"unknown session", []step{{session: "s1", cands: eps, want: []float64{0, 0, 0}}}},
		{"sticks to the last endpoint", []step{
			{served: map[string]string{"s1": "b", "s2": "c"}, session: "s1", cands: eps, want: []float64{0, 1, 0}},
			{served: map[string]string{"s1": "a"}, session: "s1", cands: eps, want: []float64{1, 0, 0}},
			{session: "s2", cands: eps, want: []float64{0, 0, 1}},
		}},
		{"endpoint gone", []step{{served: map[string]string{"s1": "c"}, session: "s1", cands: eps[:2], want: []float64{0, 0}, note: true}}},
		{"expires after the ttl on the handle clock", []step{
			{served: map[string]string{"s1": "b"}, session: "s1", cands: eps, want: []float64{0, 1, 0}},
			{advance: 59 * time.Second, session: "s1", cands: eps, want: []float64{0, 1, 0}},
			{advance: time.Second, session: "s1", cands: eps, want: []float64{0, 0, 0}},
		}},
		{"a request renews the ttl", []step{
			{served: map[string]string{"s1": "b"}, session: "s1", cands: eps, want: []float64{0, 1, 0}},
			{advance: 50 * time.Second, served: map[string]string{"s1": "b"}, session: "s1", cands: eps, want: []float64{0, 1, 0}},
			{advance: 50 * time.Second, session: "s1", cands: eps, want: []float64{0, 1, 0}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := plugintest.NewHandle()
			s := plugintest.Build[*sessionaffinity.Scorer](t, sessionaffinity.Factory, `{"ttl":"1m"}`, h)
			byName := map[string]framework.Endpoint{}
			for _, e := range eps {
				byName[e.Metadata().Name] = e
			}
			for i, st := range tt.steps {
				h.Clock.Advance(st.advance)
				for key, ep := range st.served {
					s.PreRequest(t.Context(), nil, &framework.Request{SessionKey: key}, byName[ep])
				}
				state := framework.NewCycleState()
				framework.SetExplaining(state)
				got := plugintest.Score(s, state, &framework.Request{SessionKey: st.session}, st.cands)
				if diff := cmp.Diff(st.want, got); diff != "" {
					t.Errorf("step %d: scores (-want +got):\n%s", i, diff)
				}
				if notes := framework.Notes(state); (len(notes) > 0) != st.note {
					t.Errorf("step %d: notes %q, want a note: %v", i, notes, st.note)
				}
			}
		})
	}
}

func TestMemoryIsBounded(t *testing.T) {
	h := plugintest.NewHandle()
	s := plugintest.Build[*sessionaffinity.Scorer](t, sessionaffinity.Factory, `{"maxSessions":100,"ttl":"1h"}`, h)
	a := plugintest.NewEndpoint("a")
	for i := 0; i < 1000; i++ {
		s.PreRequest(t.Context(), nil, &framework.Request{SessionKey: fmt.Sprint("s", i)}, a)
	}
	if n := s.Len(); n != 100 {
		t.Fatalf("%d sessions remembered, want the bound 100", n)
	}
	// The most recent are kept, the oldest forgotten.
	eps := plugintest.Endpoints(a)
	if got := plugintest.Score(s, nil, &framework.Request{SessionKey: "s999"}, eps); got[0] != 1 {
		t.Error("most recent session forgotten")
	}
	if got := plugintest.Score(s, nil, &framework.Request{SessionKey: "s0"}, eps); got[0] != 0 {
		t.Error("oldest session still remembered past the bound")
	}
	// Expired sessions are dropped as new ones arrive.
	h.Clock.Advance(2 * time.Hour)
	s.PreRequest(t.Context(), nil, &framework.Request{SessionKey: "fresh"}, a)
	if n := s.Len(); n != 1 {
		t.Errorf("%d sessions remembered after all expired and one arrived, want 1", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := plugintest.Build[*sessionaffinity.Scorer](t, sessionaffinity.Factory, `{"maxSessions":50}`, plugintest.NewHandle())
	eps := plugintest.Endpoints(plugintest.NewEndpoint("a"), plugintest.NewEndpoint("b"))
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				req := &framework.Request{SessionKey: fmt.Sprint("s", (g*7+i)%80)}
				plugintest.Score(s, nil, req, eps)
				s.PreRequest(t.Context(), nil, req, eps[i%2])
			}
		}()
	}
	wg.Wait()
	if n := s.Len(); n > 50 {
		t.Errorf("%d sessions remembered, above the bound 50", n)
	}
}

func TestFactoryValidates(t *testing.T) {
	for _, params := range []string{`{"ttl":"0s"}`, `{"ttl":"x"}`, `{"maxSessions":0}`, `{"header":"x"}`} {
		if _, err := sessionaffinity.Factory("s", []byte(params), plugintest.NewHandle()); err == nil {
			t.Errorf("params %s accepted", params)
		}
	}
}

// TestLongKeysAreNotKept: the scorer remembers sessions by a hash, so its
// memory does not grow with the length of the keys (QA: 30 requests with a
// 10 MB user value kept 436 MB).
func TestLongKeysAreNotKept(t *testing.T) {
	s := plugintest.Build[*sessionaffinity.Scorer](t, sessionaffinity.Factory, `{}`, plugintest.NewHandle())
	a := plugintest.NewEndpoint("a")
	const n, size = 30, 1 << 20
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range n {
		key := strings.Repeat(string(rune('a'+i%26)), size) + fmt.Sprint(i)
		s.PreRequest(t.Context(), nil, &framework.Request{SessionKey: key}, a)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > n*size/4 {
		t.Errorf("heap grew %d MiB for %d sessions of 1 MiB keys", grown>>20, n)
	}
	key := strings.Repeat("b", size) + "1"
	if got := plugintest.Score(s, nil, &framework.Request{SessionKey: key}, plugintest.Endpoints(a)); got[0] != 1 {
		t.Error("a long session key was not remembered")
	}
}
