package router

import (
	"bufio"
	"bytes"
	"container/list"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"
)

// errBudget: the buffer budget (router.limits.bufferBytes) cannot hold more
// bytes now.
var errBudget = errors.New("the router's buffer budget is full")

// budgetRetryAfter is the Retry-After (seconds) of a 503 for a full buffer
// budget: buffered bodies are released as their requests end.
const budgetRetryAfter = "1"

// byteBudget bounds the request and response bytes the router buffers at
// once. Requests reserve what they will hold before reading it, so that the
// router refuses a body it cannot hold instead of reading it.
type byteBudget struct {
	limit int64
	used  atomic.Int64
}

// take reserves n bytes; false when they do not fit.
func (b *byteBudget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// give returns n reserved bytes.
func (b *byteBudget) give(n int64) { b.used.Add(-n) }

// hold is one request's share of the budget, returned whole by release.
type hold struct {
	b *byteBudget
	n int64
}

// grow reserves n more bytes for the request.
func (h *hold) grow(n int64) bool {
	if !h.b.take(n) {
		return false
	}
	h.n += n
	return true
}

func (h *hold) release() {
	h.b.give(h.n)
	h.n = 0
}

// Shares of the memory limit the router's defaults take.
const (
	// bufferShare of the memory limit is the default buffer budget.
	bufferShare = 4
	// minBufferBudget is the smallest default buffer budget.
	minBufferBudget = 64 << 20
)

// MemoryLimit is the memory this process may use: the cgroup's limit
// (cgroup v2 memory.max) when it sets one, else the machine's memory
// (MemTotal of /proc/meminfo); 0 when neither is known.
func MemoryLimit() int64 {
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("MemTotal:")); ok {
			v = bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))
			if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				return n << 10
			}
		}
	}
	return 0
}

// DefaultBufferBytes is router.limits.bufferBytes when unset: a quarter of
// MemoryLimit, at least 64 MiB.
func DefaultBufferBytes() int64 {
	return max(MemoryLimit()/bufferShare, minBufferBudget)
}

// idleConns closes the oldest idle keep-alive client connections beyond
// max (router.limits.maxIdleConnections). It follows the server's
// ConnState hook.
type idleConns struct {
	max int

	mu    sync.Mutex
	order *list.List // of net.Conn, oldest idle first
	at    map[net.Conn]*list.Element
}

func newIdleConns(max int) *idleConns {
	return &idleConns{max: max, order: list.New(), at: map[net.Conn]*list.Element{}}
}

func (ic *idleConns) track(c net.Conn, s http.ConnState) {
	var evict net.Conn
	ic.mu.Lock()
	if e, ok := ic.at[c]; ok {
		ic.order.Remove(e)
		delete(ic.at, c)
	}
	if s == http.StateIdle {
		ic.at[c] = ic.order.PushBack(c)
		if ic.order.Len() > ic.max {
			e := ic.order.Front()
			evict = e.Value.(net.Conn)
			ic.order.Remove(e)
			delete(ic.at, evict)
		}
	}
	ic.mu.Unlock()
	if evict != nil {
		_ = evict.Close()
	}
}

// publicServer is the http.Server of the public listener, with the
// router's limits, and the listener capped at router.limits.maxConnections.
func (r *Router) publicServer(ln net.Listener) (*http.Server, net.Listener) {
	lim := r.cfg.Limits
	srv := &http.Server{
		Handler:           r.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       lim.IdleTimeout.Duration,
		MaxHeaderBytes:    1 << 20,
	}
	if lim.MaxIdleConnections > 0 {
		srv.ConnState = newIdleConns(lim.MaxIdleConnections).track
	}
	if lim.MaxConnections > 0 {
		ln = netutil.LimitListener(ln, lim.MaxConnections)
	}
	return srv, ln
}
