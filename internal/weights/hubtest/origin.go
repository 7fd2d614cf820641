package hubtest

import (
	"io"
	"net/http"
	"strconv"
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
	stalls     map[string]pause // path → offset at which every transfer waits (until released)
	ranges     map[string][]string
	bodyBytes  atomic.Int64
	fileBytes  sync.Map // path → *atomic.Int64
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

// Stall makes every transfer of path that reaches byte offset n of the file
// wait there (its first n bytes sent and flushed) until release is called;
// then it goes on, on the same connection. Transfers that start after the
// release do not wait. It holds fetches mid-way, so that a test can look at
// what they report meanwhile.
func (o *origin) Stall(path string, n int64) (release func()) {
	o.faultMu.Lock()
	defer o.faultMu.Unlock()
	if o.stalls == nil {
		o.stalls = map[string]pause{}
	}
	ch := make(chan struct{})
	o.stalls[path] = pause{n: n, release: ch}
	var once sync.Once
	return func() {
		once.Do(func() {
			o.faultMu.Lock()
			delete(o.stalls, path)
			o.faultMu.Unlock()
			close(ch)
		})
	}
}

// FileBytes returns the body bytes served of path (the repository path of
// a file; the same path in two repositories counts together).
func (o *origin) FileBytes(path string) int64 {
	if v, ok := o.fileBytes.Load(path); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
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

// serveBody serves c with ranges, applying a pending cut, stall or
// corruption.
func (o *origin) serveBody(w http.ResponseWriter, r *http.Request, file string, c content) {
	o.faultMu.Lock()
	cut, hasCut := o.cutAfter[file]
	delete(o.cutAfter, file)
	corrupt := o.corrupt[file] > 0
	if corrupt {
		o.corrupt[file]--
	}
	ps, hasPause := o.pauseAfter[file]
	delete(o.pauseAfter, file)
	stall, hasStall := o.stalls[file]
	if o.ranges == nil {
		o.ranges = map[string][]string{}
	}
	o.ranges[file] = append(o.ranges[file], r.Header.Get("Range"))
	o.faultMu.Unlock()
	if corrupt {
		c = flipped{c}
	}
	perFile, _ := o.fileBytes.LoadOrStore(file, new(atomic.Int64))
	cw := &countingWriter{ResponseWriter: w, n: &o.bodyBytes, file: perFile.(*atomic.Int64), limit: -1, holdAt: -1}
	if hasStall {
		// The offset in the file, less where this (range) answer starts.
		start, _ := rangeStart(r.Header.Get("Range"))
		if stall.n > start {
			cw.holdAt = stall.n - start
			cw.hold = func() {
				select {
				case <-stall.release:
				case <-r.Context().Done():
				}
			}
		}
	}
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
	http.ServeContent(cw, r, "", time.Time{}, io.NewSectionReader(c, 0, c.Size()))
	if cw.cut {
		// Drop the connection mid-body, as a killed transfer would.
		panic(http.ErrAbortHandler)
	}
}

// flipped is content with every byte flipped (a corrupted transfer).
type flipped struct{ content }

func (f flipped) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.content.ReadAt(p, off)
	for i := range p[:n] {
		p[i] ^= 0x5a
	}
	return n, err
}

// rangeStart is the first byte of a "bytes=N-..." range (0 without one).
func rangeStart(h string) (int64, bool) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return 0, false
	}
	first, _, _ := strings.Cut(spec, "-")
	n, err := strconv.ParseInt(first, 10, 64)
	return n, err == nil
}

type countingWriter struct {
	http.ResponseWriter
	n, file *atomic.Int64
	limit   int64
	sent    int64
	cut     bool
	// stall, when set, is called at the limit instead of cutting; the
	// connection drops when it returns.
	stall func()
	// hold, when set, is called once holdAt bytes are sent and flushed;
	// the answer goes on when it returns.
	holdAt int64
	hold   func()
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.hold != nil && c.sent+int64(len(b)) > c.holdAt {
		head := b[:c.holdAt-c.sent]
		n, err := c.write(head)
		if err != nil {
			return n, err
		}
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		hold := c.hold
		c.hold = nil
		hold()
		m, err := c.write(b[len(head):])
		return n + m, err
	}
	return c.write(b)
}

func (c *countingWriter) write(b []byte) (int, error) {
	if c.limit >= 0 && c.sent+int64(len(b)) > c.limit {
		b = b[:c.limit-c.sent]
		c.cut = true
	}
	n, err := c.ResponseWriter.Write(b)
	c.sent += int64(n)
	c.n.Add(int64(n))
	if c.file != nil {
		c.file.Add(int64(n))
	}
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
