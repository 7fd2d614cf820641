package router

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// TestBodyPool: a buffer given back serves the next body of about its
// length (not a much smaller one), the pool keeps at most its limit (the
// oldest dropped), and small bodies are not pooled.
func TestBodyPool(t *testing.T) {
	p := &bodyPool{limit: defaultBodyPoolBytes}
	if p.get(bodyPoolMin) != nil {
		t.Fatal("an empty pool gave a buffer")
	}
	a := make([]byte, 10, poolCap(4<<20))
	p.put(a)
	if b := p.get(1 << 20); b != nil {
		t.Errorf("a 1 MiB body took a %d-byte buffer", cap(b))
	}
	b := p.get(4<<20 - 100)
	if b == nil || len(b) != 0 || &b[:1][0] != &a[:1][0] {
		t.Fatalf("got %d/%d, want the buffer given back, emptied", len(b), cap(b))
	}
	if p.get(4<<20-100) != nil || p.bytes != 0 {
		t.Fatal("one buffer served twice")
	}
	p.put(make([]byte, 0, 1024)) // too small to pool
	if len(p.free) != 0 {
		t.Error("a 1 KiB buffer was pooled")
	}
	p = &bodyPool{limit: 3 * poolCap(bodyPoolMin)}
	olds := [][]byte{make([]byte, 0, poolCap(bodyPoolMin)), make([]byte, 0, poolCap(bodyPoolMin)), make([]byte, 0, poolCap(bodyPoolMin))}
	for _, o := range olds {
		p.put(o)
	}
	newest := make([]byte, 0, poolCap(bodyPoolMin))
	p.put(newest)
	if len(p.free) != 3 || p.bytes != p.limit || &p.free[2][:1][0] != &newest[:1][0] || &p.free[0][:1][0] != &olds[1][:1][0] {
		t.Errorf("pool holds %d buffers, %d bytes (limit %d), want the three newest", len(p.free), p.bytes, p.limit)
	}
}

// TestReadGrowingPooled: a declared body of bodyPoolMin or more is read
// into a pooled buffer when one fits, else into a new one of a poolable
// capacity; the bytes are the body's either way, none past its length.
func TestReadGrowingPooled(t *testing.T) {
	p := &bodyPool{limit: defaultBodyPoolBytes}
	body := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+5)
	got, err := readGrowing(bytes.NewReader(body), int64(len(body)), 16<<20, nil, p)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("first read: %v, %d bytes equal %v", err, len(got), bytes.Equal(got, body))
	}
	if int64(cap(got)) != poolCap(int64(len(body))) {
		t.Errorf("capacity %d, want %d (poolable)", cap(got), poolCap(int64(len(body))))
	}
	p.put(got)
	other := bytes.Repeat([]byte("zyxw"), len(body)/4-7)
	again, err := readGrowing(bytes.NewReader(other), int64(len(other)), 16<<20, nil, p)
	if err != nil || !bytes.Equal(again, other) || len(again) != len(other) {
		t.Fatalf("second read: %v, %d bytes, equal %v", err, len(again), bytes.Equal(again, other))
	}
	if &again[0] != &got[0] {
		t.Error("the second body did not reuse the first one's buffer")
	}
	small, err := readGrowing(strings.NewReader("{}"), 2, 16<<20, nil, p)
	if err != nil || string(small) != "{}" {
		t.Fatalf("small body: %q, %v", small, err)
	}
}

// TestRouterReusesLongBodies: through the router over sockets, a long
// body's buffer goes back to the pool when its request is done, and the
// next long request is read into that buffer and reaches the engine byte
// for byte. The requests share one connection, so each is read after the
// handler of the one before returned (and gave its buffer back).
func TestRouterReusesLongBodies(t *testing.T) {
	h := newHarness(t, strings.Replace(oneModel, "maxBodyBytes: 4096", "maxBodyBytes: 16777216", 1), twoEngines())
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	send := func(body string) {
		t.Helper()
		resp, err := client.Post(h.url("/v1/completions"), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%d %s %v", resp.StatusCode, out, err)
		}
	}
	pooled := func() []byte {
		h.r.bodies.mu.Lock()
		defer h.r.bodies.mu.Unlock()
		if len(h.r.bodies.free) != 1 {
			t.Fatalf("the pool holds %d buffers, want 1", len(h.r.bodies.free))
		}
		return h.r.bodies.free[0][:1]
	}
	short := `{"model":"llama","max_tokens":1,"prompt":"hi"}`
	long := []string{
		`{"model":"llama","max_tokens":1,"prompt":"` + strings.Repeat("first ", (2<<20)/6) + `"}`,
		`{"model":"llama","max_tokens":1,"prompt":"` + strings.Repeat("two ", (2<<20)/4) + `end"}`,
	}
	send(long[0])
	send(short) // read once long[0]'s handler returned
	first := pooled()
	send(long[1])
	send(short)
	if &pooled()[0] != &first[0] {
		t.Error("the second long body was not read into the first one's buffer")
	}
	var got []string
	for _, e := range h.engines {
		bs, _ := e.received()
		for _, b := range bs {
			got = append(got, string(b))
		}
	}
	for _, want := range long {
		if !slices.Contains(got, want) {
			t.Errorf("no engine got the body of %d bytes starting %.20q", len(want), want)
		}
	}
}

// TestLongBodyValidated: long bodies (read into a prefaulted or pooled
// buffer) get json.Valid's answers over real sockets: valid ones are served,
// and a raw control byte, a bad escape or a missing quote late in the
// prompt is refused as invalid JSON, as json.Valid refuses it.
func TestLongBodyValidated(t *testing.T) {
	h := newHarness(t, strings.Replace(oneModel, "maxBodyBytes: 4096", "maxBodyBytes: 4194304", 1), twoEngines())
	text := strings.Repeat("the quick brown fox ", (bodyPoolMin+100)/20)
	for _, tc := range []struct {
		name, prompt string
		ok           bool
	}{
		{"plain", text, true},
		{"escapes", text + `\n\"x\u00e9\\`, true},
		{"control byte late", text + "\x01", false},
		{"bad escape late", text + `\x`, false},
		{"cut unicode escape", text + `\u12`, false},
	} {
		body := `{"model":"llama","prompt":"` + tc.prompt + `","max_tokens":2}`
		if tc.name == "cut unicode escape" {
			body = `{"model":"llama","prompt":"` + tc.prompt // the body ends in the escape
		}
		if valid := json.Valid([]byte(body)); valid != tc.ok {
			t.Fatalf("%s: json.Valid = %v, the case says %v", tc.name, valid, tc.ok)
		}
		resp, b := h.post("/v1/completions", body)
		if tc.ok && resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d (%s), want 200", tc.name, resp.StatusCode, b)
		}
		if !tc.ok && (resp.StatusCode != http.StatusBadRequest || !strings.Contains(decodeError(t, b).Error.Message, "JSON")) {
			t.Errorf("%s: status %d (%s), want 400 invalid JSON", tc.name, resp.StatusCode, b)
		}
	}
}

// TestReadGrowingLongFresh: a long declared body read into fresh memory
// (no pool; its pages prefaulted a step ahead and each read stopped at
// the mapping) arrives whole and exact, however its reads are cut.
func TestReadGrowingLongFresh(t *testing.T) {
	body := make([]byte, 3<<20+12345)
	for i := range body {
		body[i] = byte(i*7 + i>>12)
	}
	for _, rd := range []io.Reader{bytes.NewReader(body), iotest.HalfReader(bytes.NewReader(body)), io.MultiReader(bytes.NewReader(body[:100]), bytes.NewReader(body[100:]))} {
		got, err := readGrowing(rd, int64(len(body)), 16<<20, nil, nil)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("read %d bytes (%v), want the %d sent", len(got), err, len(body))
		}
	}
	// Declared longer than sent: the short body is an error, not a hang.
	if _, err := readGrowing(bytes.NewReader(body[:2<<20]), int64(len(body)), 16<<20, nil, nil); err == nil {
		t.Fatal("a body shorter than declared was accepted")
	}
}
