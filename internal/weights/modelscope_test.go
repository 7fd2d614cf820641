package weights_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/weights"
	"github.com/halyard-dev/halyard/internal/weights/hubtest"
)

func newModelScope(t *testing.T) *hubtest.ModelScope {
	t.Helper()
	m := hubtest.NewModelScope()
	t.Cleanup(m.Close)
	return m
}

func msOpts(m *hubtest.ModelScope, dir, token string) weights.Options {
	return weights.Options{Into: dir, ModelScopeEndpoint: m.URL, Token: token, RetryBackoff: time.Millisecond}
}

func TestFetchModelScopeLayoutAndAuth(t *testing.T) {
	m := newModelScope(t)
	files := testModel()
	v1 := testModel()
	v1["config.json"] = []byte(`{"num_hidden_layers": 3}`)
	withGit := map[string][]byte{".gitattributes": []byte("*.safetensors filter=lfs\n")}
	for k, v := range files {
		withGit[k] = v
	}
	m.AddRepo("org/tiny", hubtest.ModelScopeRepo{Files: withGit, Revisions: map[string]map[string][]byte{"v1": v1}, Token: "ms-secret"})
	dir := t.TempDir()

	res, err := weights.Fetch(t.Context(), "modelscope://org/tiny", msOpts(m, dir, "ms-secret"))
	if err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(dir, "models--org--tiny")
	if want := filepath.Join(repoDir, "snapshots", res.Commit); res.Path != want || len(res.Commit) != 40 {
		t.Errorf("path = %s (id %q), want %s with a 40-hex id", res.Path, res.Commit, want)
	}
	// The engines ask the HF cache for main; ModelScope's default is master.
	for _, ref := range []string{"master", "main"} {
		if b, err := os.ReadFile(filepath.Join(repoDir, "refs", ref)); err != nil || string(b) != res.Commit {
			t.Errorf("refs/%s = %q, %v; want %s", ref, b, err, res.Commit)
		}
	}
	checkSnapshot(t, res.Path, files)
	if _, err := os.Lstat(filepath.Join(res.Path, ".gitattributes")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".gitattributes fetched (%v); ModelScope's client skips it", err)
	}
	// Large files are blobs named by their sha256, linked from the snapshot.
	const big = "model-00001-of-00002.safetensors"
	if target, err := os.Readlink(filepath.Join(res.Path, big)); err != nil || filepath.Base(target) != hubtest.SHA256(files[big]) {
		t.Errorf("%s links to %q (%v), want the blob named by its sha256", big, target, err)
	}
	if res.Bytes != modelBytes(files) || res.Transferred != modelBytes(files) {
		t.Errorf("bytes %d, transferred %d, want %d", res.Bytes, res.Transferred, modelBytes(files))
	}
	// The token went as the bearer and the session cookie, on every request.
	if n := m.Requests("GET /api/v1/models/org/tiny/"); m.AuthByBearer() != n || m.AuthByCookie() != n {
		t.Errorf("%d requests, %d with the bearer, %d with the cookie; want all with both", n, m.AuthByBearer(), m.AuthByCookie())
	}

	// A second fetch of master transfers nothing.
	before := m.BodyBytes()
	again, err := weights.Fetch(t.Context(), "modelscope://org/tiny", msOpts(m, dir, "ms-secret"))
	if err != nil || again.Path != res.Path || m.BodyBytes() != before {
		t.Errorf("second fetch: %v, path %s, %d bytes served; want the same path and none", err, again.Path, m.BodyBytes()-before)
	}

	// A tag: its own snapshot and ref; only the changed file is new.
	before = m.BodyBytes()
	tag, err := weights.Fetch(t.Context(), "modelscope://org/tiny@v1", msOpts(m, dir, "ms-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if tag.Commit == res.Commit {
		t.Error("tag v1 with other content got master's snapshot id")
	}
	checkSnapshot(t, tag.Path, v1)
	if b, _ := os.ReadFile(filepath.Join(repoDir, "refs", "v1")); string(b) != tag.Commit {
		t.Errorf("refs/v1 = %q, want %s", b, tag.Commit)
	}
	if b, _ := os.ReadFile(filepath.Join(repoDir, "refs", "main")); string(b) != res.Commit {
		t.Errorf("refs/main moved to %q by a tag fetch", b)
	}
	if got := m.BodyBytes() - before; got != int64(len(v1["config.json"])) {
		t.Errorf("tag fetch transferred %d bytes, want only the changed config (%d)", got, len(v1["config.json"]))
	}
}

func TestFetchModelScopeResumeAndVerify(t *testing.T) {
	m := newModelScope(t)
	files := testModel()
	m.AddRepo("org/tiny", hubtest.ModelScopeRepo{Files: files, NoSha256: map[string]bool{"README.md": true}})
	const big = "model-00001-of-00002.safetensors"

	t.Run("cut transfer resumes with a range", func(t *testing.T) {
		m.CutAfter(big, int64(len(files[big]))/2)
		start := m.BodyBytes()
		res, err := weights.Fetch(t.Context(), "modelscope://org/tiny", msOpts(m, t.TempDir(), ""))
		if err != nil {
			t.Fatal(err)
		}
		checkSnapshot(t, res.Path, files)
		if got := m.BodyBytes() - start; got != modelBytes(files) {
			t.Errorf("origin served %d, want one copy (%d)", got, modelBytes(files))
		}
	})
	t.Run("corrupted transfer refetched", func(t *testing.T) {
		m.Corrupt(big, 1)
		start := m.BodyBytes()
		res, err := weights.Fetch(t.Context(), "modelscope://org/tiny", msOpts(m, t.TempDir(), ""))
		if err != nil {
			t.Fatal(err)
		}
		checkSnapshot(t, res.Path, files)
		if got, want := m.BodyBytes()-start, modelBytes(files)+int64(len(files[big])); got != want {
			t.Errorf("origin served %d, want %d (the corrupted file twice)", got, want)
		}
	})
	t.Run("persistent corruption fails naming the file", func(t *testing.T) {
		m.Corrupt(big, 100)
		defer m.Corrupt(big, 0)
		o := msOpts(m, t.TempDir(), "")
		o.Attempts = 2
		_, err := weights.Fetch(t.Context(), "modelscope://org/tiny", o)
		if !errors.Is(err, weights.ErrChecksum) || !strings.Contains(err.Error(), big) {
			t.Fatalf("err = %v, want a checksum mismatch naming %s", err, big)
		}
	})
}

func TestFetchModelScopeErrors(t *testing.T) {
	m := newModelScope(t)
	m.AddRepo("org/private", hubtest.ModelScopeRepo{Files: testModel(), Token: "ms-secret"})
	m.AddRepo("org/tiny", hubtest.ModelScopeRepo{Files: testModel()})
	for _, tc := range []struct {
		name, source, token string
		want                error
		reason              string
	}{
		{"private without token", "modelscope://org/private", "", weights.ErrUnauthorized, weights.ReasonUnauthorized},
		{"private wrong token", "modelscope://org/private", "ms-wrong", weights.ErrForbidden, weights.ReasonForbidden},
		{"missing repo", "modelscope://org/missing", "", weights.ErrNotFound, weights.ReasonSourceNotFound},
		{"missing revision", "modelscope://org/tiny@v9", "", weights.ErrNotFound, weights.ReasonSourceNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := weights.Fetch(t.Context(), tc.source, msOpts(m, dir, tc.token))
			if !errors.Is(err, tc.want) || weights.FailureReason(err) != tc.reason {
				t.Fatalf("err = %v (reason %s), want %v (%s)", err, weights.FailureReason(err), tc.want, tc.reason)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Errorf("error %q holds the token", err)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "models--*", "snapshots", "*", "*")); len(left) > 0 {
				t.Errorf("files left after a failure: %v", left)
			}
		})
	}
}

func TestModelScopeEndpoint(t *testing.T) {
	for _, tc := range []struct{ endpoint, domain, want string }{
		{"", "", weights.DefaultModelScopeEndpoint},
		{"http://127.0.0.1:9/", "", "http://127.0.0.1:9"},
		{"", "www.modelscope.ai", "https://www.modelscope.ai"},
		{"https://a.example", "b.example", "https://a.example"},
	} {
		if got := weights.ModelScopeEndpoint(tc.endpoint, tc.domain); got != tc.want {
			t.Errorf("ModelScopeEndpoint(%q, %q) = %q, want %q", tc.endpoint, tc.domain, got, tc.want)
		}
	}
}
