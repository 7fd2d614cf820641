package weights_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/weights"
	"github.com/halyard-dev/halyard/internal/weights/hubtest"
)

// TestEvictLeastRecentlyUsed fetches three models into one cache bounded to
// about two of them: the least recently used goes, a model used again stays.
func TestEvictLeastRecentlyUsed(t *testing.T) {
	h := newHub(t)
	for i, name := range []string{"org/a", "org/b", "org/c"} {
		h.AddRepo(name, hubtest.Repo{Files: map[string][]byte{"model.safetensors": randomBytes(200<<10, uint64(i+10))}})
	}
	dir := t.TempDir()
	fetch := func(name string, max int64) *weights.Result {
		t.Helper()
		o := opts(h, dir)
		o.MaxCacheBytes = max
		res, err := weights.Fetch(t.Context(), "hf://"+name, o)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	fetch("org/a", 0)
	fetch("org/b", 0)
	fetch("org/a", 0) // a used again: b is now the least recent
	res := fetch("org/c", 450<<10)
	if d := cmp.Diff([]string{"models--org--b"}, res.Evicted); d != "" {
		t.Errorf("evicted (-want +got):\n%s", d)
	}
	for name, want := range map[string]bool{"models--org--a": true, "models--org--b": false, "models--org--c": true} {
		_, err := os.Stat(filepath.Join(dir, name))
		if (err == nil) != want {
			t.Errorf("%s present = %v, want %v", name, err == nil, want)
		}
	}
	// An evicted model is fetched again (its done-marker went with it).
	before := h.BodyBytes()
	if r := fetch("org/b", 0); r.Cached || h.BodyBytes()-before != 200<<10 {
		t.Errorf("refetch of evicted model: cached=%v, %d bytes", r.Cached, h.BodyBytes()-before)
	}
}
