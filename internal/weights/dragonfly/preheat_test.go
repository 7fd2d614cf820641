package dragonfly_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/weights/dragonfly"
	"github.com/halyard-dev/halyard/internal/weights/hubtest"
)

func TestPreheat(t *testing.T) {
	m := hubtest.NewManager("pat")
	defer m.Close()
	m.SetPolls(2)
	mgr := dragonfly.Manager{URL: m.URL, Token: "pat"}
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
	want := map[string]any{
		"type": "file", "scope": "all_seed_peers", "tag": "halyard", "application": "ms-a",
		"filteredQueryParams": "X-Amz-Signature",
		"urls":                []any{"http://hub:8080/org/tiny/resolve/c0ffee/config.json", "http://hub:8080/org/tiny/resolve/c0ffee/sub%20dir/model.safetensors"},
	}
	if d := cmp.Diff(want, m.Jobs()[0].Args); d != "" {
		t.Errorf("job body (-want +got):\n%s", d)
	}

	m.SetFail(true)
	job, err = mgr.Preheat(t.Context(), dragonfly.PreheatArgs{URLs: urls})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.Wait(t.Context(), job.ID, time.Millisecond, nil); !errors.Is(err, dragonfly.ErrPreheatFailed) {
		t.Errorf("err = %v, want ErrPreheatFailed", err)
	}
	if _, err := (dragonfly.Manager{URL: m.URL, Token: "wrong"}).Preheat(t.Context(), dragonfly.PreheatArgs{URLs: urls}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("err = %v, want a 401", err)
	}
}
