package discovery

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"

	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

const doc = `apiVersion: config.halyard.dev/v1alpha1
kind: Config
endpoints:
  - {url: "http://127.0.0.1:8101", model: m, labels: {zone: a}, adapters: [x]}
routes:
  - {model: m, targets: [{pool: m}]}
`

func TestFileReportsAndFollowsChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates := make(chan []datastore.EndpointSpec, 4)
	f := &File{Path: path, Poll: 10 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, func(s []datastore.EndpointSpec) { updates <- s }) }()

	want := []datastore.EndpointSpec{{Pool: "m", Metadata: framework.EndpointMetadata{
		Name: "127.0.0.1:8101", Address: "http://127.0.0.1:8101", Model: "m", Role: framework.RoleBoth,
		Labels: map[string]string{"zone": "a"}, Adapters: []string{"x"},
	}}}
	if diff := cmp.Diff(want, next(t, updates)); diff != "" {
		t.Fatalf("first update (-want +got):\n%s", diff)
	}
	// A broken file is not applied; the next good one is.
	later := time.Now().Add(time.Hour)
	if err := os.WriteFile(path, []byte("apiVersion: nope"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(path, later, later)
	two := `apiVersion: config.halyard.dev/v1alpha1
kind: Config
endpoints:
  - {url: "http://127.0.0.1:8101", model: m}
  - {url: "http://127.0.0.1:8102", model: m}
routes:
  - {model: m, targets: [{pool: m}]}
`
	if err := os.WriteFile(path, []byte(two), 0o644); err != nil {
		t.Fatal(err)
	}
	later = later.Add(time.Hour)
	_ = os.Chtimes(path, later, later)
	got := next(t, updates)
	if len(got) != 2 || got[1].Metadata.Name != "127.0.0.1:8102" {
		t.Fatalf("second update = %+v, want two endpoints", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func next(t *testing.T, ch chan []datastore.EndpointSpec) []datastore.EndpointSpec {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no update within 10s")
		return nil
	}
}

func TestFileMissingIsAnError(t *testing.T) {
	f := &File{Path: filepath.Join(t.TempDir(), "none.yaml")}
	if err := f.Run(context.Background(), func([]datastore.EndpointSpec) {}); err == nil {
		t.Fatal("Run on a missing file succeeded")
	}
}

func TestSpecsTrimTrailingSlash(t *testing.T) {
	got := Specs([]config.EndpointSpec{{Name: "a", URL: "http://h:1/", Model: "m", Pool: "p", Role: "both"}})
	if got[0].Metadata.Address != "http://h:1" || got[0].Pool != "p" {
		t.Errorf("spec = %+v", got[0])
	}
}
