package weights_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/weights"
	"github.com/halyard-dev/halyard/internal/weights/hubtest"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// testModel is a small model repository: two LFS weight files, config and
// tokenizer files, a file in a subdirectory.
func testModel() map[string][]byte {
	return map[string][]byte{
		"config.json":                      []byte(`{"num_hidden_layers": 2}`),
		"tokenizer.json":                   []byte(`{"model": {"type": "BPE"}}`),
		"tokenizer_config.json":            []byte(`{}`),
		"model-00001-of-00002.safetensors": randomBytes(1<<20, 1),
		"model-00002-of-00002.safetensors": randomBytes(700<<10, 2),
		"original/params.json":             []byte(`{"dim": 8}`),
		"README.md":                        []byte("# test\n"),
	}
}

func modelBytes(files map[string][]byte) int64 {
	var n int64
	for _, b := range files {
		n += int64(len(b))
	}
	return n
}

func newHub(t *testing.T) *hubtest.Hub {
	t.Helper()
	h := hubtest.NewHub()
	t.Cleanup(h.Close)
	h.PageSize = 3 // several tree pages, through the Link header
	return h
}

func opts(h *hubtest.Hub, dir string) weights.Options {
	return weights.Options{Into: dir, Endpoint: h.URL, RetryBackoff: time.Millisecond}
}

func TestFetchHubLayoutAndSecondFetch(t *testing.T) {
	h := newHub(t)
	files := testModel()
	h.AddRepo("org/tiny", hubtest.Repo{Files: files})
	dir := t.TempDir()
	res, err := weights.Fetch(t.Context(), "hf://org/tiny", opts(h, dir))
	if err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(dir, "models--org--tiny")
	if want := filepath.Join(repoDir, "snapshots", res.Commit); res.Path != want {
		t.Errorf("path = %s, want %s", res.Path, want)
	}
	ref, err := os.ReadFile(filepath.Join(repoDir, "refs", "main"))
	if err != nil || string(ref) != res.Commit {
		t.Errorf("refs/main = %q (%v), want %s", ref, err, res.Commit)
	}
	for name, want := range files {
		link := filepath.Join(res.Path, name)
		target, err := os.Readlink(link)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if filepath.IsAbs(target) || !strings.Contains(target, "blobs/") {
			t.Errorf("%s links to %s, want a relative link into blobs/", name, target)
		}
		wantBlob := hubtest.GitBlobID(want)
		if strings.HasSuffix(name, ".safetensors") {
			wantBlob = hubtest.SHA256(want)
		}
		if filepath.Base(target) != wantBlob {
			t.Errorf("%s: blob %s, want %s", name, filepath.Base(target), wantBlob)
		}
		got, err := os.ReadFile(link)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: content differs (%v)", name, err)
		}
	}
	if res.Transferred != modelBytes(files) || h.BodyBytes() != modelBytes(files) {
		t.Errorf("transferred %d, origin served %d, want %d", res.Transferred, h.BodyBytes(), modelBytes(files))
	}
	if n := h.AuthOnStorage(); n != 0 {
		t.Errorf("%d storage requests carried Authorization", n)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(repoDir, "blobs", "*.incomplete")); len(leftovers) > 0 {
		t.Errorf("left %v", leftovers)
	}

	// Same revision again: the done-marker answers, nothing is requested.
	before := h.Requests("GET /")
	res2, err := weights.Fetch(t.Context(), "hf://org/tiny", opts(h, dir))
	if err != nil {
		t.Fatal(err)
	}
	if !res2.Cached || res2.Path != res.Path || h.Requests("GET /") != before {
		t.Errorf("second fetch: cached=%v path=%s requests %d→%d", res2.Cached, res2.Path, before, h.Requests("GET /"))
	}
	// Without the marker (another filter set): the API is asked, no body
	// is transferred.
	o := opts(h, dir)
	o.Include = []string{"*"}
	res3, err := weights.Fetch(t.Context(), "hf://org/tiny@main", o)
	if err != nil {
		t.Fatal(err)
	}
	if res3.Cached || res3.Transferred != 0 || h.BodyBytes() != modelBytes(files) {
		t.Errorf("third fetch: cached=%v transferred=%d origin %d", res3.Cached, res3.Transferred, h.BodyBytes())
	}
}

func TestFetchResumesAfterKilledTransfer(t *testing.T) {
	h := newHub(t)
	files := testModel()
	h.AddRepo("org/tiny", hubtest.Repo{Files: files})
	const big = "model-00001-of-00002.safetensors"
	size := int64(len(files[big]))

	t.Run("next run", func(t *testing.T) {
		dir := t.TempDir()
		h.CutAfter(big, size/2)
		o := opts(h, dir)
		o.Attempts = 1
		// One file at a time: a failure cancels transfers in flight, whose
		// bytes the server counts but the client never stores.
		o.Parallel = 1
		start := h.BodyBytes()
		_, err := weights.Fetch(t.Context(), "hf://org/tiny", o)
		var fe *weights.FileError
		if !errors.As(err, &fe) || fe.File != big {
			t.Fatalf("err = %v, want a FileError on %s", err, big)
		}
		blob := filepath.Join(dir, "models--org--tiny", "blobs", hubtest.SHA256(files[big]))
		if _, err := os.Stat(blob); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a half-written blob is in place: %v", err)
		}
		if st, err := os.Stat(blob + ".incomplete"); err != nil || st.Size() != size/2 {
			t.Fatalf("incomplete file: %v, %v", st, err)
		}
		if snaps, _ := filepath.Glob(filepath.Join(dir, "models--org--tiny", "snapshots", "*", big)); len(snaps) > 0 {
			t.Errorf("snapshot links a file not complete: %v", snaps)
		}
		mid := h.BodyBytes()
		if _, err := weights.Fetch(t.Context(), "hf://org/tiny", opts(h, dir)); err != nil {
			t.Fatal(err)
		}
		if got, want := h.BodyBytes()-start, modelBytes(files); got != want {
			t.Errorf("origin served %d bytes over both runs (%d in the second), want %d (one copy)", got, h.BodyBytes()-mid, want)
		}
	})
	t.Run("retry in one run", func(t *testing.T) {
		dir := t.TempDir()
		h.CutAfter(big, size/3)
		start := h.BodyBytes()
		if _, err := weights.Fetch(t.Context(), "hf://org/tiny", opts(h, dir)); err != nil {
			t.Fatal(err)
		}
		if got, want := h.BodyBytes()-start, modelBytes(files); got != want {
			t.Errorf("origin served %d, want %d", got, want)
		}
	})
}

func TestFetchCorruptObject(t *testing.T) {
	h := newHub(t)
	files := testModel()
	h.AddRepo("org/tiny", hubtest.Repo{Files: files})
	const big = "model-00002-of-00002.safetensors"

	t.Run("refetched", func(t *testing.T) {
		h.Corrupt(big, 1)
		dir := t.TempDir()
		start := h.BodyBytes()
		res, err := weights.Fetch(t.Context(), "hf://org/tiny", opts(h, dir))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(res.Path, big))
		if !bytes.Equal(got, files[big]) {
			t.Error("content differs after a corrupted transfer")
		}
		if served := h.BodyBytes() - start; served != modelBytes(files)+int64(len(files[big])) {
			t.Errorf("origin served %d, want one copy plus the corrupted file once", served)
		}
	})
	t.Run("persistent", func(t *testing.T) {
		h.Corrupt(big, 100)
		defer h.Corrupt(big, 0)
		dir := t.TempDir()
		o := opts(h, dir)
		o.Attempts = 2
		_, err := weights.Fetch(t.Context(), "hf://org/tiny", o)
		if !errors.Is(err, weights.ErrChecksum) || !strings.Contains(err.Error(), big) {
			t.Fatalf("err = %v, want a checksum mismatch naming %s", err, big)
		}
		left, _ := filepath.Glob(filepath.Join(dir, "models--org--tiny", "blobs", hubtest.SHA256(files[big])+"*"))
		if len(left) != 0 {
			t.Errorf("corrupted data left: %v", left)
		}
	})
	// A blob overwritten on disk after the fetch. Without --verify the
	// done-marker's stamps (size, mtime, inode, the ends' sha256) show the
	// change and only that blob is rehashed; --verify rehashes every blob.
	// Either way only the wrong one is refetched.
	for _, verify := range []bool{false, true} {
		t.Run(fmt.Sprintf("on disk, verify=%v", verify), func(t *testing.T) {
			dir := t.TempDir()
			res, err := weights.Fetch(t.Context(), "hf://org/tiny", opts(h, dir))
			if err != nil {
				t.Fatal(err)
			}
			blob := filepath.Join(dir, "models--org--tiny", "blobs", hubtest.SHA256(files[big]))
			if err := os.WriteFile(blob, bytes.Repeat([]byte{1}, len(files[big])), 0o644); err != nil {
				t.Fatal(err)
			}
			o := opts(h, dir)
			o.Verify = verify
			start := h.BodyBytes()
			again, err := weights.Fetch(t.Context(), "hf://org/tiny", o)
			if err != nil {
				t.Fatal(err)
			}
			if again.Cached {
				t.Error("a changed blob was trusted (the done-marker answered)")
			}
			got, _ := os.ReadFile(filepath.Join(res.Path, big))
			if !bytes.Equal(got, files[big]) {
				t.Error("corrupted blob not replaced")
			}
			if served := h.BodyBytes() - start; served != int64(len(files[big])) {
				t.Errorf("refetched %d bytes, want only the corrupted file (%d)", served, len(files[big]))
			}
			// Untouched since: the marker answers without a request.
			reqs := h.Requests("GET ")
			if third, err := weights.Fetch(t.Context(), "hf://org/tiny", opts(h, dir)); err != nil || !third.Cached || h.Requests("GET ") != reqs {
				t.Errorf("third fetch: %v, cached %v, %d requests; want the done-marker to answer", err, third != nil && third.Cached, h.Requests("GET ")-reqs)
			}
		})
	}
}

func TestFetchErrors(t *testing.T) {
	h := newHub(t)
	h.AddRepo("org/gated", hubtest.Repo{Files: testModel(), Token: "hf_secret"})
	h.AddRepo("org/tiny", hubtest.Repo{Files: testModel()})
	for _, tc := range []struct {
		name, source, token string
		want                error
	}{
		{"gated without token", "hf://org/gated", "", weights.ErrUnauthorized},
		{"gated wrong token", "hf://org/gated", "hf_wrong", weights.ErrForbidden},
		{"missing repo", "hf://org/missing", "", weights.ErrNotFound},
		{"missing revision", "hf://org/tiny@v9", "", weights.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts(h, t.TempDir())
			o.Token = tc.token
			_, err := weights.Fetch(t.Context(), tc.source, o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), strings.TrimPrefix(strings.Split(tc.source, "@")[0], "hf://")) {
				t.Errorf("error %q does not name the source", err)
			}
		})
	}
	t.Run("gated with token", func(t *testing.T) {
		o := opts(h, t.TempDir())
		o.Token = "hf_secret"
		if _, err := weights.Fetch(t.Context(), "hf://org/gated", o); err != nil {
			t.Fatal(err)
		}
		if n := h.AuthOnStorage(); n != 0 {
			t.Errorf("the token went to the storage host %d times", n)
		}
	})
}

func TestFetchIncludeExclude(t *testing.T) {
	h := newHub(t)
	h.AddRepo("org/tiny", hubtest.Repo{Files: testModel()})
	for _, tc := range []struct {
		name             string
		include, exclude []string
		want             []string
	}{
		{"weights and config", []string{"*.safetensors", "config.json"}, nil,
			[]string{"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}},
		{"tokenizer glob", []string{"tokenizer*"}, nil, []string{"tokenizer.json", "tokenizer_config.json"}},
		{"exclude directory", nil, []string{"original/", "*.safetensors", "README.md"},
			[]string{"config.json", "tokenizer.json", "tokenizer_config.json"}},
		{"star crosses slashes", []string{"*params.json"}, nil, []string{"original/params.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts(h, t.TempDir())
			o.Include, o.Exclude = tc.include, tc.exclude
			res, err := weights.Fetch(t.Context(), "hf://org/tiny", o)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			_ = filepath.WalkDir(res.Path, func(p string, d os.DirEntry, _ error) error {
				if !d.IsDir() {
					rel, _ := filepath.Rel(res.Path, p)
					got = append(got, filepath.ToSlash(rel))
				}
				return nil
			})
			slices.Sort(got)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("files (-want +got):\n%s", d)
			}
		})
	}
}

func TestFetchHTTPListing(t *testing.T) {
	root := t.TempDir()
	files := map[string][]byte{"config.json": []byte(`{}`), "w/model.safetensors": randomBytes(300<<10, 3)}
	for name, b := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(root)))
	defer srv.Close()
	dir := t.TempDir()
	res, err := weights.Fetch(t.Context(), srv.URL+"/", weights.Options{Into: dir})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(res.Path, filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	one, err := weights.Fetch(t.Context(), srv.URL+"/config.json", weights.Options{Into: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(one.Path, "config.json")); err != nil {
		t.Error(err)
	}
	_, err = weights.Fetch(t.Context(), srv.URL+"/missing.bin", weights.Options{Into: dir})
	if !errors.Is(err, weights.ErrNotFound) || !strings.Contains(err.Error(), "missing.bin") {
		t.Errorf("err = %v, want not found naming missing.bin", err)
	}
}

func TestFetchS3(t *testing.T) {
	s3 := hubtest.NewS3("AKIDTEST")
	defer s3.Close()
	s3.MaxKeys = 2
	files := map[string][]byte{"config.json": []byte(`{}`), "model.safetensors": randomBytes(400<<10, 4), "tokenizer.json": []byte(`{}`)}
	for k, b := range files {
		s3.Put("models", "llama/v1/"+k, b)
	}
	s3.Put("models", "other/x", []byte("x"))
	t.Setenv("AWS_ENDPOINT_URL", s3.URL)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_REGION", "us-east-1")
	dir := t.TempDir()
	s3.CutAfter("llama/v1/model.safetensors", 100<<10)
	res, err := weights.Fetch(t.Context(), "s3://models/llama/v1/", weights.Options{Into: dir, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(res.Path, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if got, want := s3.BodyBytes(), modelBytes(files); got != want {
		t.Errorf("store served %d bytes, want %d (resumed, not restarted)", got, want)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDWRONG")
	_, err = weights.Fetch(context.Background(), "s3://models/other/", weights.Options{Into: t.TempDir()})
	if !errors.Is(err, weights.ErrForbidden) {
		t.Errorf("err = %v, want forbidden", err)
	}
}
