package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// server is an httptest server that counts the connections it accepted.
type server struct {
	*httptest.Server
	conns atomic.Int32
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func post(t *testing.T, ctx context.Context, c *Client, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return c.RoundTrip(req)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		status  int
		body    string
		header  string // a header the response must carry
	}{
		{"content-length", func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Got", r.Header.Get("Content-Type")+" "+r.URL.Path)
			w.Write(append([]byte("echo:"), b...))
		}, 200, `echo:{"a":1}`, "application/json /v1/x"},
		{"chunked stream", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("X-Got", "sse")
			for _, s := range []string{"data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n"} {
				_, _ = io.WriteString(w, s)
				w.(http.Flusher).Flush()
			}
		}, 200, "data: 1\n\ndata: 2\n\ndata: [DONE]\n\n", "sse"},
		{"no content", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Got", "none")
			w.WriteHeader(http.StatusNoContent)
		}, 204, "", "none"},
		{"error status", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Got", "err")
			http.Error(w, "boom", http.StatusServiceUnavailable)
		}, 503, "boom\n", "err"},
		{"interim 103 then the answer", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Link", "</x>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Set("X-Got", "final")
			_, _ = io.WriteString(w, "ok")
		}, 200, "ok", "final"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.handler)
			c := &Client{}
			defer c.CloseIdleConnections()
			for i := range 3 { // the second and third reuse the connection
				resp, err := post(t, context.Background(), c, s.URL+"/v1/x", `{"a":1}`)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got := []any{resp.StatusCode, readAll(t, resp), resp.Header.Get("X-Got")}
				if diff := cmp.Diff([]any{tc.status, tc.body, tc.header}, got); diff != "" {
					t.Fatalf("request %d (-want +got):\n%s", i, diff)
				}
			}
			if n := s.conns.Load(); n != 1 {
				t.Errorf("%d connections for 3 sequential requests, want 1", n)
			}
		})
	}
}

// TestServerClosedIdle: connections the server closed while they were idle
// are not used: the next request succeeds on a new one.
func TestServerClosedIdle(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	c := &Client{}
	defer c.CloseIdleConnections()
	for i := range 3 {
		resp, err := post(t, context.Background(), c, s.URL, "x")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := readAll(t, resp); got != "ok" {
			t.Fatalf("request %d: body %q", i, got)
		}
		s.CloseClientConnections()
		// Wait until the close reached the client's side of the pool.
		waitFor(t, func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			list := c.idle[s.Listener.Addr().String()]
			return len(list) == 0 || !list[len(list)-1].alive()
		})
	}
	if n := s.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (one per request, each closed by the server)", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestEarlyClose: a body closed before its end closes its connection; the
// next request gets a new one and a whole answer.
func TestEarlyClose(t *testing.T) {
	big := strings.Repeat("x", 256<<10)
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, big) })
	c := &Client{}
	defer c.CloseIdleConnections()
	resp, err := post(t, context.Background(), c, s.URL, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = post(t, context.Background(), c, s.URL, "x")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != big {
		t.Fatalf("second answer: %d bytes, want %d", len(got), len(big))
	}
	if n := s.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestCancel: cancelling the context interrupts waiting for the header and
// reading the body, with the context's error; the connection is not reused.
func TestCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	arrived := make(chan struct{}, 1)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		if r.URL.Path == "/body" {
			_, _ = io.WriteString(w, "data: 1\n\n")
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	c := &Client{}
	defer c.CloseIdleConnections()

	t.Run("header", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := post(t, ctx, c, s.URL+"/header", "x")
			errc <- err
		}()
		<-arrived // the client now waits for the header
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error %v, want context.Canceled", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("RoundTrip did not return after the cancel")
		}
	})
	t.Run("body", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := post(t, ctx, c, s.URL+"/body", "x")
		if err != nil {
			t.Fatal(err)
		}
		<-arrived
		defer resp.Body.Close()
		buf := make([]byte, 64)
		if n, err := resp.Body.Read(buf); err != nil || string(buf[:n]) != "data: 1\n\n" {
			t.Fatalf("first read %q, %v", buf[:n], err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := resp.Body.Read(buf)
			errc <- err
		}()
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error %v, want context.Canceled", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Read did not return after the cancel")
		}
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.idle[s.Listener.Addr().String()]); n != 0 {
		t.Errorf("%d interrupted connections pooled, want 0", n)
	}
}

// rawServer answers every connection with canned bytes after reading the
// request's header.
func rawServer(t *testing.T, answer string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				br := bufio.NewReader(nc)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(nc, answer)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestBadAnswers(t *testing.T) {
	tests := []struct {
		name, answer string
		want         error // nil: any error
	}{
		{"header too large", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 2048) + "\r\n\r\n", ErrHeaderTooLarge},
		{"switching protocols", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", errUpgrade},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", nil},
		{"closed before an answer", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{MaxResponseHeaderBytes: 1024}
			defer c.CloseIdleConnections()
			resp, err := post(t, context.Background(), c, rawServer(t, tc.answer), "x")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("status %d, want an error", resp.StatusCode)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// TestUnknownLength: a body that ends with the connection is read whole
// and its connection is not reused.
func TestUnknownLength(t *testing.T) {
	c := &Client{}
	defer c.CloseIdleConnections()
	url := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
	resp, err := post(t, context.Background(), c, url, "x")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "until the end" {
		t.Errorf("body %q", got)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.idle); n != 0 {
		t.Errorf("%d hosts with pooled connections, want 0", n)
	}
}

func TestDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := &Client{}
	_, err = post(t, context.Background(), c, "http://"+addr, "x")
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Errorf("error %v, want a dial *net.OpError", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestFallback(t *testing.T) {
	var got string
	c := &Client{Fallback: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = r.URL.String()
		return &http.Response{StatusCode: 200, Body: io.NopCloser(bytes.NewReader(nil))}, nil
	})}
	resp, err := post(t, context.Background(), c, "https://engine.example:8443/v1/x", "x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got != "https://engine.example:8443/v1/x" {
		t.Errorf("fallback got %q", got)
	}
}

// TestIdleTimeout: connections idle for longer than IdleTimeout are not
// reused.
func TestIdleTimeout(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	now := time.Unix(1000, 0)
	c := &Client{IdleTimeout: time.Minute, Now: func() time.Time { return now }}
	defer c.CloseIdleConnections()
	for i, step := range []time.Duration{0, 30 * time.Second, 2 * time.Minute} {
		now = now.Add(step)
		resp, err := post(t, context.Background(), c, s.URL, "x")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		readAll(t, resp)
	}
	if n := s.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (reused after 30s, not after 2m)", n)
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}`)
	}))
	defer s.Close()
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"Say hello."}],"max_tokens":1}`)
	for _, bc := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"h1", &Client{}},
		{"transport", &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/chat/completions", bytes.NewReader(body))
				resp, err := bc.rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// TestEarlyAnswer: a server that answers without reading a large request
// body and closes: the client returns its answer, not the write error.
func TestEarlyAnswer(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})
	c := &Client{}
	defer c.CloseIdleConnections()
	resp, err := post(t, context.Background(), c, s.URL, strings.Repeat("x", 8<<20))
	if err != nil {
		t.Fatalf("error %v, want the server's 413", err)
	}
	if got := readAll(t, resp); resp.StatusCode != http.StatusRequestEntityTooLarge || got != "too large\n" {
		t.Errorf("status %d body %q", resp.StatusCode, got)
	}
}

// TestLongBodies: a request body of an in-memory reader past
// directBodyBytes (written to the connection in one write, bodyWriter) and
// one of another reader (through the buffer) arrive whole with their
// headers, and the connection carries the next request.
func TestLongBodies(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Got", r.Header.Get("Content-Type"))
		_, _ = io.WriteString(w, fmt.Sprintf("%d %x", len(b), sha256.Sum256(b)))
	})
	var writes atomic.Int32
	var d net.Dialer
	c := &Client{WriteBufferSize: 32 << 10, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := d.DialContext(ctx, network, addr)
		return countingConn{nc, &writes}, err
	}}
	defer c.CloseIdleConnections()
	body := bytes.Repeat([]byte("0123456789abcdefghij"), (directBodyBytes*3)/20+7)
	want := fmt.Sprintf("%d %x", len(body), sha256.Sum256(body))
	readers := map[string]func() io.Reader{
		"bytes.Reader":   func() io.Reader { return bytes.NewReader(body) },
		"strings.Reader": func() io.Reader { return strings.NewReader(string(body)) },
		"short bytes":    func() io.Reader { return bytes.NewReader(body[:directBodyBytes-1]) },
	}
	for name, rd := range readers {
		for i := range 2 {
			req, err := http.NewRequest(http.MethodPost, s.URL+"/v1/x", rd())
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			writes.Store(0)
			resp, err := c.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s, request %d: %v", name, i, err)
			}
			// The head and the body in one write each, or the body in
			// 32 KiB pieces through the buffer.
			if n := writes.Load(); (name == "bytes.Reader") != (n <= 2) {
				t.Errorf("%s, request %d: %d writes", name, i, n)
			}
			got := readAll(t, resp)
			w := want
			if name == "short bytes" {
				w = fmt.Sprintf("%d %x", directBodyBytes-1, sha256.Sum256(body[:directBodyBytes-1]))
			}
			if got != w || resp.Header.Get("X-Got") != "application/json" {
				t.Errorf("%s, request %d: %q (%q), want %q", name, i, got, resp.Header.Get("X-Got"), w)
			}
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections for sequential requests, want 1", n)
	}
}

// countingConn counts the writes to a connection.
type countingConn struct {
	net.Conn
	writes *atomic.Int32
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}
