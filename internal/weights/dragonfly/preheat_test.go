package dragonfly_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/weights/dragonfly"
)

// manager is a stand-in for the Dragonfly manager's job API: a job
// succeeds (or fails) after polls answers PENDING.
type manager struct {
	mu      sync.Mutex
	token   string
	polls   int
	fail    bool
	created []map[string]any
	seen    map[int64]int
}

func (m *manager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+m.token {
		http.Error(w, `{"message":"unauthorized"}`, http.StatusUnauthorized)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/oapi/v1/jobs":
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body["type"] != "preheat" {
			http.Error(w, `{"message":"bad request"}`, http.StatusBadRequest)
			return
		}
		m.created = append(m.created, body)
		_ = json.NewEncoder(w).Encode(map[string]any{"id": len(m.created), "task_id": "group_x", "type": "preheat", "status": "PENDING"})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/oapi/v1/jobs/"):
		id, _ := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/oapi/v1/jobs/"), 10, 64)
		m.seen[id]++
		status := "PENDING"
		if m.seen[id] > m.polls {
			status = "SUCCESS"
			if m.fail {
				status = "FAILURE"
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "type": "preheat", "status": status})
	default:
		http.NotFound(w, r)
	}
}

func TestPreheat(t *testing.T) {
	m := &manager{token: "pat", polls: 2, seen: map[int64]int{}}
	srv := httptest.NewServer(m)
	defer srv.Close()
	mgr := dragonfly.Manager{URL: srv.URL, Token: "pat"}
	urls := dragonfly.HubURLs("http://hub:8080", "org/tiny", "c0ffee", []string{"config.json", "sub dir/model.safetensors"})
	job, err := mgr.Preheat(t.Context(), dragonfly.PreheatArgs{URLs: urls, Tag: "halyard", Application: "ms-a", FilteredQueryParams: "X-Amz-Signature"})
	if err != nil {
		t.Fatal(err)
	}
	var polls int
	done, err := mgr.Wait(t.Context(), job.ID, time.Millisecond, func(*dragonfly.Job) { polls++ })
	if err != nil || !done.Succeeded() || polls != 3 {
		t.Fatalf("wait: %v, %+v after %d polls", err, done, polls)
	}
	want := map[string]any{"type": "preheat", "args": map[string]any{
		"type": "file", "scope": "all_seed_peers", "tag": "halyard", "application": "ms-a",
		"filteredQueryParams": "X-Amz-Signature",
		"urls":                []any{"http://hub:8080/org/tiny/resolve/c0ffee/config.json", "http://hub:8080/org/tiny/resolve/c0ffee/sub%20dir/model.safetensors"},
	}}
	if d := cmp.Diff(want, m.created[0]); d != "" {
		t.Errorf("job body (-want +got):\n%s", d)
	}

	m.fail = true
	job, err = mgr.Preheat(t.Context(), dragonfly.PreheatArgs{URLs: urls})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.Wait(t.Context(), job.ID, time.Millisecond, nil); !errors.Is(err, dragonfly.ErrPreheatFailed) {
		t.Errorf("err = %v, want ErrPreheatFailed", err)
	}
	if _, err := (dragonfly.Manager{URL: srv.URL, Token: "wrong"}).Preheat(t.Context(), dragonfly.PreheatArgs{URLs: urls}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("err = %v, want a 401", err)
	}
}
