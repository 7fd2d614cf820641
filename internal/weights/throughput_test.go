package weights_test

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/weights"
	"github.com/halyard-dev/halyard/internal/weights/hubtest"
)

// TestFetchThroughputVsCurl is an opt-in measurement
// (HALYARD_FETCH_BENCH=1, size HALYARD_FETCH_BENCH_MIB, default 256; 2048
// for the 2 GiB case; HALYARD_FETCH_BENCH_PODS=0 skips the 8-pod part): a
// model of four LFS files over loopback, fetched by
// halyard and by four parallel curl processes from the same storage URLs;
// then origin bytes for 8 pods on 2 nodes, each pod with its own directory
// (direct) versus one node cache per node versus one node cache per node
// through the dfdaemon proxy stand-in.
func TestFetchThroughputVsCurl(t *testing.T) {
	if os.Getenv("HALYARD_FETCH_BENCH") != "1" {
		t.Skip("opt-in: HALYARD_FETCH_BENCH=1")
	}
	mib := 256
	if v := os.Getenv("HALYARD_FETCH_BENCH_MIB"); v != "" {
		mib, _ = strconv.Atoi(v)
	}
	h := newHub(t)
	files := map[string][]byte{}
	var names []string
	for i := range 4 {
		name := fmt.Sprintf("model-%05d-of-00004.safetensors", i+1)
		files[name] = randomBytes(mib<<20/4, uint64(100+i))
		names = append(names, name)
	}
	files["config.json"] = []byte(`{}`)
	h.AddRepo("org/bench", hubtest.Repo{Files: files})
	total := float64(modelBytes(files))

	dir := t.TempDir()
	start := time.Now()
	if _, err := weights.Fetch(t.Context(), "hf://org/bench", opts(h, dir)); err != nil {
		t.Fatal(err)
	}
	halyard := time.Since(start)

	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not found")
	}
	cdir := t.TempDir()
	start = time.Now()
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := h.StorageURL + "/objects/" + hubtest.SHA256(files[name])
			if out, err := exec.Command(curl, "-sSf", "-o", filepath.Join(cdir, name), u).CombinedOutput(); err != nil {
				t.Errorf("curl: %v %s", err, out)
			}
		}()
	}
	wg.Wait()
	curlTime := time.Since(start)
	t.Logf("model %d MiB: halyard fetch %.2f GB/s (%v, sha256-verified, fsynced), curl ×4 %.2f GB/s (%v), ratio %.2f",
		mib, total/halyard.Seconds()/1e9, halyard.Round(time.Millisecond), total/curlTime.Seconds()/1e9, curlTime.Round(time.Millisecond), curlTime.Seconds()/halyard.Seconds())

	// 8 pods on 2 nodes (8 copies on disk for direct: skipped with
	// HALYARD_FETCH_BENCH_PODS=0, e.g. for the 2 GiB model on a small disk).
	if os.Getenv("HALYARD_FETCH_BENCH_PODS") == "0" {
		return
	}
	df := hubtest.NewDfdaemon()
	defer df.Close()
	dfURL, err := url.Parse(df.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"direct", "node cache", "dragonfly"} {
		before := h.BodyBytes()
		nodes := []string{t.TempDir(), t.TempDir()}
		var wg sync.WaitGroup
		for pod := range 8 {
			into := nodes[pod%2]
			if mode == "direct" {
				into = filepath.Join(into, "pod-"+strconv.Itoa(pod))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := opts(h, into)
				if mode == "dragonfly" {
					o.Dragonfly = &weights.DragonflyOptions{Proxy: dfURL}
				}
				if _, err := weights.Fetch(t.Context(), "hf://org/bench", o); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		t.Logf("8 pods on 2 nodes, %s: origin served %.2f model copies", mode, float64(h.BodyBytes()-before)/total)
	}
}
