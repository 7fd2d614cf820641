package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Defaults of Client's zero fields.
const (
	DefaultMaxIdlePerHost         = 256
	DefaultIdleTimeout            = 90 * time.Second
	DefaultBufferSize             = 32 << 10
	DefaultMaxResponseHeaderBytes = 1 << 20
)

// ErrHeaderTooLarge is returned when a response's header exceeds
// MaxResponseHeaderBytes.
var ErrHeaderTooLarge = errors.New("h1: response headers exceed the limit")

// errUpgrade is returned for a 101 answer: Client does not switch protocols.
var errUpgrade = errors.New("h1: the server switched protocols (101), which the client does not support")

// Client is an http.RoundTripper for "http" URLs; see the package comment.
// Its zero value works (with net.Dialer and the defaults above); it must not
// be copied after first use.
type Client struct {
	// DialContext opens connections; nil means a net.Dialer's.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxIdlePerHost bounds the idle connections kept per host.
	MaxIdlePerHost int
	// IdleTimeout closes connections idle for longer.
	IdleTimeout time.Duration
	// ReadBufferSize and WriteBufferSize size each connection's buffers.
	ReadBufferSize, WriteBufferSize int
	// MaxResponseHeaderBytes bounds a response's status line and header.
	MaxResponseHeaderBytes int64
	// Fallback sends requests whose scheme is not "http"; nil means
	// http.DefaultTransport.
	Fallback http.RoundTripper
	// Now is the clock of the idle bookkeeping; nil means time.Now.
	Now func() time.Time

	mu        sync.Mutex
	idle      map[string][]*conn // by host, most recently used last
	lastSweep time.Time
}

// conn is one pooled connection.
type conn struct {
	c        net.Conn
	raw      syscall.RawConn // for the liveness peek; nil if unavailable
	lr       headerLimiter
	br       *bufio.Reader
	bw       *bufio.Writer
	host     string
	idleFrom time.Time
}

// headerLimiter sits under a connection's bufio.Reader and fails reads once
// n bytes were read while armed (n >= 0); n < 0 is unlimited.
type headerLimiter struct {
	c net.Conn
	n int64
}

func (l *headerLimiter) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.c.Read(p)
	}
	if l.n == 0 {
		return 0, ErrHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.c.Read(p)
	l.n -= int64(n)
	return n, err
}

// aLongTimeAgo is a deadline in the past: setting it interrupts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// RoundTrip sends req and returns its response. The body of the response
// streams from the connection; reading it to the end (or its Close) gives
// the connection back. Cancelling req's context interrupts the exchange,
// the body's reads included.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || req.URL.Scheme != "http" {
		fb := c.Fallback
		if fb == nil {
			fb = http.DefaultTransport
		}
		return fb.RoundTrip(req)
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeBody(req)
		return nil, err
	}
	pc, err := c.getConn(ctx, canonicalAddr(req))
	if err != nil {
		closeBody(req)
		return nil, err
	}
	// Cancelling ctx interrupts whatever I/O the exchange is blocked in.
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { _ = pc.c.SetDeadline(aLongTimeAgo) })
	}
	fail := func(err error) (*http.Response, error) {
		stop()
		pc.c.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	werr := req.Write(bodyWriter{pc.bw, pc.c})
	if werr == nil {
		werr = pc.bw.Flush()
	}
	resp, err := c.readResponse(pc, req)
	if err != nil {
		if werr != nil {
			return fail(fmt.Errorf("h1: write request: %w", werr))
		}
		return fail(err)
	}
	// A server may answer before reading the whole request (a 413, say) and
	// close: its answer is returned, as the Transport does, and the
	// connection is not reused.
	b := &body{client: c, pc: pc, rc: resp.Body, stop: stop, ctx: ctx, reuse: werr == nil && !resp.Close && !req.Close}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// readResponse reads the status line and header (within the size bound),
// skipping interim 1xx answers.
func (c *Client) readResponse(pc *conn, req *http.Request) (*http.Response, error) {
	for {
		pc.lr.n = c.maxHeader()
		resp, err := http.ReadResponse(pc.br, req)
		pc.lr.n = -1
		if err != nil {
			if errors.Is(err, ErrHeaderTooLarge) {
				return nil, fmt.Errorf("%w (%d bytes)", ErrHeaderTooLarge, c.maxHeader())
			}
			return nil, fmt.Errorf("h1: read response: %w", err)
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errUpgrade
		case resp.StatusCode >= 100 && resp.StatusCode < 200:
			continue // 100 Continue, 103 Early Hints: the answer follows
		}
		return resp, nil
	}
}

func (c *Client) maxHeader() int64 {
	if c.MaxResponseHeaderBytes > 0 {
		return c.MaxResponseHeaderBytes
	}
	return DefaultMaxResponseHeaderBytes
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// canonicalAddr is req's host with the port, as a pool key and dial address.
func canonicalAddr(req *http.Request) string {
	host := req.URL.Host
	if req.URL.Port() == "" {
		return net.JoinHostPort(req.URL.Hostname(), "80")
	}
	return host
}

// getConn returns an idle connection to host that is still open, or dials
// one.
func (c *Client) getConn(ctx context.Context, host string) (*conn, error) {
	now := c.now()
	idleTimeout := c.idleTimeout()
	for {
		c.mu.Lock()
		list := c.idle[host]
		if len(list) == 0 {
			c.mu.Unlock()
			break
		}
		pc := list[len(list)-1]
		list[len(list)-1] = nil
		c.idle[host] = list[:len(list)-1]
		c.mu.Unlock()
		if now.Sub(pc.idleFrom) < idleTimeout && pc.alive() {
			return pc, nil
		}
		pc.c.Close()
	}
	dial := c.DialContext
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	pc := &conn{c: nc, host: host}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			pc.raw = raw
		}
	}
	pc.lr = headerLimiter{c: nc, n: -1}
	pc.br = bufio.NewReaderSize(&pc.lr, sizeOr(c.ReadBufferSize))
	pc.bw = bufio.NewWriterSize(nc, sizeOr(c.WriteBufferSize))
	return pc, nil
}

func sizeOr(n int) int {
	if n > 0 {
		return n
	}
	return DefaultBufferSize
}

func (c *Client) idleTimeout() time.Duration {
	if c.IdleTimeout > 0 {
		return c.IdleTimeout
	}
	return DefaultIdleTimeout
}

// putIdle pools pc, or closes it when the host's pool is full. Every
// IdleTimeout it also closes the connections idle for longer, so that
// hosts no longer used do not keep theirs.
func (c *Client) putIdle(pc *conn) {
	now := c.now()
	pc.idleFrom = now
	maxIdle := c.MaxIdlePerHost
	if maxIdle <= 0 {
		maxIdle = DefaultMaxIdlePerHost
	}
	var stale []*conn
	c.mu.Lock()
	if c.idle == nil {
		c.idle = map[string][]*conn{}
		c.lastSweep = now
	}
	full := len(c.idle[pc.host]) >= maxIdle
	if !full {
		c.idle[pc.host] = append(c.idle[pc.host], pc)
	}
	if timeout := c.idleTimeout(); now.Sub(c.lastSweep) >= timeout {
		c.lastSweep = now
		for host, list := range c.idle {
			keep := list[:0]
			for _, p := range list {
				if now.Sub(p.idleFrom) >= timeout {
					stale = append(stale, p)
				} else {
					keep = append(keep, p)
				}
			}
			clear(list[len(keep):])
			if len(keep) == 0 {
				delete(c.idle, host)
			} else {
				c.idle[host] = keep
			}
		}
	}
	c.mu.Unlock()
	if full {
		pc.c.Close()
	}
	for _, p := range stale {
		p.c.Close()
	}
}

// CloseIdleConnections closes the pooled connections.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			pc.c.Close()
		}
	}
	if ci, ok := c.Fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// body is a response body that gives its connection back at the end.
type body struct {
	client *Client
	pc     *conn
	rc     io.ReadCloser
	stop   func() bool
	ctx    context.Context
	reuse  bool

	mu   sync.Mutex
	done bool
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == nil {
		return n, nil
	}
	if errors.Is(err, io.EOF) {
		b.finish(true)
		return n, err
	}
	b.finish(false)
	if cerr := b.ctx.Err(); cerr != nil {
		return n, cerr
	}
	return n, err
}

// Close ends the exchange. Before the end of the body the connection is
// closed, not drained: the answer may be a long stream.
func (b *body) Close() error {
	b.finish(false)
	return nil
}

// finish releases the connection once: to the pool when the body was read
// to its end, the connection allows it, nothing more was received and the
// context did not interrupt it; else it is closed.
func (b *body) finish(eof bool) {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return
	}
	b.done = true
	b.mu.Unlock()
	stopped := b.stop()
	if eof && b.reuse && stopped && b.pc.br.Buffered() == 0 {
		b.client.putIdle(b.pc)
		return
	}
	b.pc.c.Close()
}

var (
	_ http.RoundTripper = (*Client)(nil)
	_ io.ReadCloser     = (*body)(nil)
)

// directBodyBytes is the body length from which a request's body is
// written to the connection in one write rather than through the
// connection's buffer.
const directBodyBytes = 256 << 10

// bodyWriter is a connection's buffered writer for http.Request.Write that
// writes a long in-memory body straight to the connection: net/http copies
// a body through the buffer in 32 KiB pieces (a 4 MiB prompt: 128 writes
// and a copy of the body), while the body the router forwards is already
// in memory. net/http hands the body over as an io.LimitedReader of the
// request's *bytes.Reader (unwrapped from its NopCloser); anything else
// takes the buffered path.
type bodyWriter struct {
	*bufio.Writer
	c net.Conn
}

// ReadFrom writes r to the connection after what is buffered (the
// request's head).
func (w bodyWriter) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok {
		if br, ok := lr.R.(*bytes.Reader); ok && br.Len() >= directBodyBytes && int64(br.Len()) <= lr.N {
			if err := w.Flush(); err != nil {
				return 0, err
			}
			n, err := br.WriteTo(w.c)
			lr.N -= n
			return n, err
		}
	}
	return w.Writer.ReadFrom(r)
}
