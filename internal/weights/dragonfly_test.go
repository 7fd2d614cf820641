package weights_test

import (
	"bytes"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/weights"
	"github.com/halyard-dev/halyard/internal/weights/hubtest"
)

// p2pFixture is a hub with the test model as org/tiny and a dfdaemon
// proxy stand-in.
func p2pFixture(t *testing.T) (*hubtest.Hub, map[string][]byte, *hubtest.Dfdaemon) {
	t.Helper()
	h := newHub(t)
	files := testModel()
	h.AddRepo("org/tiny", hubtest.Repo{Files: files})
	df := hubtest.NewDfdaemon()
	t.Cleanup(df.Close)
	return h, files, df
}

func dfOptions(t *testing.T, proxy string) *weights.DragonflyOptions {
	t.Helper()
	u, err := url.Parse(proxy)
	if err != nil {
		t.Fatal(err)
	}
	return &weights.DragonflyOptions{Proxy: u, Tag: "halyard", Application: "models"}
}

// Through the dfdaemon proxy stand-in, three nodes fetching one model pull
// it from the origin once; every file request carries the Dragonfly headers;
// the files are verified as from the origin.
func TestFetchThroughDragonflyPullsOnce(t *testing.T) {
	h, files, df := p2pFixture(t)
	for node := range 3 {
		o := opts(h, t.TempDir())
		o.Dragonfly = dfOptions(t, df.URL)
		res, err := weights.Fetch(t.Context(), "hf://org/tiny", o)
		if err != nil {
			t.Fatalf("node %d: %v", node, err)
		}
		if res.Fallbacks != 0 {
			t.Errorf("node %d: %d fallbacks, want 0", node, res.Fallbacks)
		}
		checkSnapshot(t, res.Path, files)
	}
	if got, want := h.BodyBytes(), modelBytes(files); got != want {
		t.Errorf("origin served %d body bytes to 3 nodes, want one copy (%d)", got, want)
	}
	if got, want := df.P2PRequests(), int64(3*len(files)); got != want {
		t.Errorf("P2P requests = %d, want %d (every file of every node)", got, want)
	}
	for _, hd := range df.Headers() {
		if hd.Get("X-Dragonfly-Tag") != "halyard" || hd.Get("X-Dragonfly-Application") != "models" {
			t.Fatalf("request headers %v: want the tag and application", hd)
		}
	}
}

// A failing daemon (500 with X-Dragonfly-Error-Type: dfdaemon) and an
// unreachable one both fall back to the origin, file by file, and say so.
func TestFetchFallsBackToOriginWhenThePeerFails(t *testing.T) {
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		return "http://" + addr
	}
	for _, tc := range []struct {
		name  string
		proxy func(*hubtest.Dfdaemon) string
	}{
		{"daemon error", func(d *hubtest.Dfdaemon) string { d.Fail.Store(true); return d.URL }},
		{"unreachable", func(*hubtest.Dfdaemon) string { return closed() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, files, df := p2pFixture(t)
			o := opts(h, t.TempDir())
			o.Dragonfly = dfOptions(t, tc.proxy(df))
			res, err := weights.Fetch(t.Context(), "hf://org/tiny", o)
			if err != nil {
				t.Fatal(err)
			}
			checkSnapshot(t, res.Path, files)
			if res.Fallbacks != int64(len(files)) {
				t.Errorf("fallbacks = %d, want %d (one per file)", res.Fallbacks, len(files))
			}
			if got, want := h.BodyBytes(), modelBytes(files); got != want {
				t.Errorf("origin served %d bytes, want %d", got, want)
			}
			if df.OriginBytes() != 0 {
				t.Errorf("the failed daemon pulled %d bytes", df.OriginBytes())
			}
		})
	}
}

// A file the peer serves corrupted (the daemon keeps the task, so asking
// it again would give the same bytes) is fetched again from the origin.
func TestFetchThroughDragonflyRefetchesACorruptTaskFromTheOrigin(t *testing.T) {
	h, files, df := p2pFixture(t)
	o := opts(h, t.TempDir())
	o.Dragonfly = dfOptions(t, df.URL)
	h.Corrupt("model-00001-of-00002.safetensors", 1)
	res, err := weights.Fetch(t.Context(), "hf://org/tiny", o)
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, res.Path, files)
	if res.Fallbacks != 1 {
		t.Errorf("fallbacks = %d, want 1 (the corrupted file, from the origin)", res.Fallbacks)
	}
}

func checkSnapshot(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: content differs from the origin's", name)
		}
	}
}

// An https origin through the proxy: the fetch opens a CONNECT tunnel,
// which the dfdaemon stand-in terminates with a certificate from its CA, as
// dfdaemon does. With that CA trusted (--dragonfly-ca-file) the requests in
// the tunnel carry the Dragonfly headers and two nodes pull one copy from
// the origin; without it the tunnel's certificate is refused and every file
// falls back to the origin, verified all the same.
func TestFetchHTTPSOriginThroughDragonfly(t *testing.T) {
	files := map[string][]byte{"model.safetensors": randomBytes(600<<10, 9), "config.json": []byte(`{"num_hidden_layers": 2}`)}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "m"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(root, "m", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var served atomic.Int64
	fs := http.FileServer(http.Dir(root))
	origin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			fs.ServeHTTP(w, r)
			return
		}
		fs.ServeHTTP(&bodyCounter{ResponseWriter: w, n: &served}, r)
	}))
	defer origin.Close()
	df := hubtest.NewDfdaemon()
	defer df.Close()
	df.Origin = origin.Client()
	caFile := filepath.Join(t.TempDir(), "dfdaemon-ca.pem")
	if err := os.WriteFile(caFile, df.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	pool, err := weights.LoadCAFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	source := origin.URL + "/m/"
	fetch := func(roots *x509.CertPool) *weights.Result {
		t.Helper()
		o := weights.Options{Into: t.TempDir(), Client: origin.Client(), RetryBackoff: time.Millisecond}
		o.Dragonfly = dfOptions(t, df.URL)
		o.Dragonfly.RootCAs = roots
		res, err := weights.Fetch(t.Context(), source, o)
		if err != nil {
			t.Fatal(err)
		}
		checkSnapshot(t, res.Path, files)
		return res
	}

	for node := range 2 {
		if res := fetch(pool); res.Fallbacks != 0 {
			t.Errorf("node %d: %d fallbacks through a trusted proxy, want 0", node, res.Fallbacks)
		}
	}
	if got := served.Load(); got != modelBytes(files) {
		t.Errorf("origin served %d bytes to 2 nodes through the proxy, want one copy (%d)", got, modelBytes(files))
	}
	if got, want := df.P2PRequests(), int64(2*len(files)); got != want {
		t.Errorf("P2P requests inside the tunnel = %d, want %d", got, want)
	}
	for _, hd := range df.Headers() {
		if hd.Get("X-Dragonfly-Tag") != "halyard" {
			t.Fatalf("headers inside the tunnel %v: want the tag", hd)
		}
	}

	before, p2p := served.Load(), df.P2PRequests()
	if res := fetch(nil); res.Fallbacks != int64(len(files)) {
		t.Errorf("untrusted proxy CA: %d fallbacks, want %d (every file)", res.Fallbacks, len(files))
	}
	if got := served.Load() - before; got != modelBytes(files) {
		t.Errorf("fallback fetch took %d bytes from the origin, want %d", got, modelBytes(files))
	}
	if df.P2PRequests() != p2p {
		t.Error("a request reached the daemon through a tunnel whose certificate was refused")
	}
}

type bodyCounter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (b *bodyCounter) Write(p []byte) (int, error) {
	n, err := b.ResponseWriter.Write(p)
	b.n.Add(int64(n))
	return n, err
}
