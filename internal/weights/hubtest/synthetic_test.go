package hubtest_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/weights/hubtest"
)

// A synthetic file reads the same bytes at any offset and in any split,
// depends on its seed, and its sha256 is that of its bytes.
func TestSyntheticReadAt(t *testing.T) {
	const size = 1<<20 + 37
	s := hubtest.NewSynthetic(7, size)
	whole := s.Bytes()
	if !bytes.Equal(whole, hubtest.NewSynthetic(7, size).Bytes()) {
		t.Fatal("two files of one seed differ")
	}
	if bytes.Equal(whole[:4096], hubtest.NewSynthetic(8, size).Bytes()[:4096]) {
		t.Fatal("files of two seeds start alike")
	}
	for _, tc := range []struct{ off, n int64 }{{0, 1}, {1, 15}, {15, 2}, {16, 16}, {17, 100_001}, {size - 3, 3}, {size - 3, 10}, {size, 1}} {
		t.Run(fmt.Sprintf("%d+%d", tc.off, tc.n), func(t *testing.T) {
			p := make([]byte, tc.n)
			n, err := s.ReadAt(p, tc.off)
			want := whole[min(tc.off, size):min(tc.off+tc.n, size)]
			if n != len(want) || !bytes.Equal(p[:n], want) {
				t.Errorf("read %d bytes, want %d equal to the whole file's", n, len(want))
			}
			if short := int64(len(want)) < tc.n; short != errors.Is(err, io.EOF) {
				t.Errorf("err = %v for a read of %d of %d bytes", err, n, tc.n)
			}
		})
	}
	if got := s.SHA256(); got != hubtest.SHA256(whole) {
		t.Errorf("SHA256() = %s, want %s", got, hubtest.SHA256(whole))
	}
}

// The hub serves a synthetic file as an LFS object: its size and sha256 in
// the headers, its bytes with ranges, counted per file; a stall holds
// transfers at an offset until released.
func TestHubServesSynthetic(t *testing.T) {
	h := hubtest.NewHub()
	t.Cleanup(h.Close)
	s := hubtest.NewSynthetic(3, 3<<20)
	h.AddRepo("org/big", hubtest.Repo{Files: map[string][]byte{"config.json": []byte(`{}`)}, Synthetic: map[string]*hubtest.Synthetic{"model.safetensors": s}})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(h.URL + "/org/big/resolve/main/model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("X-Linked-Size") != "3145728" || resp.Header.Get("X-Linked-Etag") != `"`+s.SHA256()+`"` {
		t.Fatalf("resolve: %d %v", resp.StatusCode, resp.Header)
	}
	loc := resp.Header.Get("Location")

	release := h.Stall("model.safetensors", 1<<20)
	got := make(chan []byte, 1)
	go func() {
		r, err := http.Get(loc)
		if err != nil {
			got <- nil
			return
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		got <- b
	}()
	// Held: exactly the first MiB is served until the release.
	deadline := time.Now().Add(time.Minute)
	for h.FileBytes("model.safetensors") < 1<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes served after a minute, want the transfer held at 1 MiB", h.FileBytes("model.safetensors"))
		}
		select {
		case b := <-got:
			t.Fatalf("the transfer ended (%d bytes) before the release", len(b))
		default:
		}
		resp, err := http.Get(h.URL + "/api/models/org/big/revision/main") // a request in between, to yield
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := h.FileBytes("model.safetensors"); n != 1<<20 {
		t.Fatalf("%d bytes served at the stall, want %d", n, 1<<20)
	}
	release()
	if b := <-got; !bytes.Equal(b, s.Bytes()) {
		t.Fatalf("served %d bytes unlike the file", len(b))
	}

	req, _ := http.NewRequest(http.MethodGet, loc, nil)
	req.Header.Set("Range", "bytes=1000-")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusPartialContent || !bytes.Equal(b, s.Bytes()[1000:]) {
		t.Errorf("range answer %d with %d bytes, want 206 with the file from byte 1000", r.StatusCode, len(b))
	}
	if n := h.FileBytes("model.safetensors"); n != 2*(3<<20)-1000 {
		t.Errorf("FileBytes = %d, want %d", n, 2*(3<<20)-1000)
	}
}

// The generator and the sha256 against which the 2 GiB end-to-end test's
// origin is served: each must be far faster than a fetch writes to disk.
func BenchmarkSynthetic(b *testing.B) {
	s := hubtest.NewSynthetic(1, 1<<40)
	p := make([]byte, 32<<10)
	b.Run("ReadAt32KiB", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for i := range b.N {
			_, _ = s.ReadAt(p, int64(i)*int64(len(p))+5)
		}
	})
	b.Run("SHA256-64MiB", func(b *testing.B) {
		b.SetBytes(64 << 20)
		for range b.N {
			hubtest.NewSynthetic(2, 64<<20).SHA256()
		}
	})
}
