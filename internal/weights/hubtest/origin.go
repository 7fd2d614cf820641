package hubtest

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// origin is what the stand-in origins share: they count requests and the
// body bytes of the files they serve, and can cut a transfer short or
// corrupt it.
type origin struct {
	faultMu    sync.Mutex
	cutAfter   map[string]int64 // path → bytes served before the connection drops (once)
	corrupt    map[string]int   // path → number of corrupted answers left
	pauseAfter map[string]pause // path → bytes served before the answer stalls (once)
	ranges     map[string][]string
	bodyBytes  atomic.Int64
	requests   sync.Map // "METHOD path" → *atomic.Int64
}

type pause struct {
	n       int64
	release chan struct{}
}

// PauseAfter makes the next transfer of path stall after n body bytes (sent
// and flushed) until release is called or the client goes away: a transfer
// to kill half way.
func (o *origin) PauseAfter(path string, n int64) (release func()) {
	o.faultMu.Lock()
	defer o.faultMu.Unlock()
	if o.pauseAfter == nil {
		o.pauseAfter = map[string]pause{}
	}
	ch := make(chan struct{})
	o.pauseAfter[path] = pause{n: n, release: ch}
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// Ranges returns the Range headers of the transfers of path, in order ("" for
// a transfer without one).
func (o *origin) Ranges(path string) []string {
	o.faultMu.Lock()
	defer o.faultMu.Unlock()
	return append([]string(nil), o.ranges[path]...)
}

// CutAfter makes the next transfer of path drop its connection after n body
// bytes.
func (o *origin) CutAfter(path string, n int64) {
	o.faultMu.Lock()
	defer o.faultMu.Unlock()
	if o.cutAfter == nil {
		o.cutAfter = map[string]int64{}
	}
	o.cutAfter[path] = n
}

// Corrupt makes the next n transfers of path serve flipped bytes.
func (o *origin) Corrupt(path string, n int) {
	o.faultMu.Lock()
	defer o.faultMu.Unlock()
	if o.corrupt == nil {
		o.corrupt = map[string]int{}
	}
	o.corrupt[path] = n
}

// BodyBytes returns the file body bytes served so far.
func (o *origin) BodyBytes() int64 { return o.bodyBytes.Load() }

// Requests returns how many requests matched "METHOD /path-prefix".
func (o *origin) Requests(prefix string) int64 {
	var n int64
	o.requests.Range(func(k, v any) bool {
		if strings.HasPrefix(k.(string), prefix) {
			n += v.(*atomic.Int64).Load()
		}
		return true
	})
	return n
}

func (o *origin) count(r *http.Request) {
	v, _ := o.requests.LoadOrStore(r.Method+" "+r.URL.Path, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// serveBody serves b with ranges, applying a pending cut or corruption.
func (o *origin) serveBody(w http.ResponseWriter, r *http.Request, file string, b []byte) {
	o.faultMu.Lock()
	cut, hasCut := o.cutAfter[file]
	delete(o.cutAfter, file)
	corrupt := o.corrupt[file] > 0
	if corrupt {
		o.corrupt[file]--
	}
	ps, hasPause := o.pauseAfter[file]
	delete(o.pauseAfter, file)
	if o.ranges == nil {
		o.ranges = map[string][]string{}
	}
	o.ranges[file] = append(o.ranges[file], r.Header.Get("Range"))
	o.faultMu.Unlock()
	if corrupt {
		c := append([]byte(nil), b...)
		for i := range c {
			c[i] ^= 0x5a
		}
		b = c
	}
	cw := &countingWriter{ResponseWriter: w, n: &o.bodyBytes, limit: -1}
	if hasCut {
		cw.limit = cut
	}
	if hasPause {
		cw.limit = ps.n
		cw.stall = func() {
			select {
			case <-ps.release:
			case <-r.Context().Done():
			}
		}
	}
	http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(b))
	if cw.cut {
		// Drop the connection mid-body, as a killed transfer would.
		panic(http.ErrAbortHandler)
	}
}

type countingWriter struct {
	http.ResponseWriter
	n     *atomic.Int64
	limit int64
	sent  int64
	cut   bool
	// stall, when set, is called at the limit instead of cutting; the
	// connection drops when it returns.
	stall func()
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.limit >= 0 && c.sent+int64(len(b)) > c.limit {
		b = b[:c.limit-c.sent]
		c.cut = true
	}
	n, err := c.ResponseWriter.Write(b)
	c.sent += int64(n)
	c.n.Add(int64(n))
	if c.cut {
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		if c.stall != nil {
			c.stall()
		}
		return n, http.ErrAbortHandler
	}
	return n, err
}
