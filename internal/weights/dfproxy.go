package weights

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Fetching through the node's Dragonfly peer. dfdaemon serves an HTTP proxy
// (port 4001 by default): a request sent through it with
// X-Dragonfly-Use-P2P: true is downloaded as a P2P task, whose id is
// computed from the URL (minus the filtered query parameters), the tag, the
// application and the piece length, so a preheat with the same values warms
// the same task. An https origin is reached through a CONNECT tunnel, which
// dfdaemon terminates with a certificate issued by its own CA (its
// proxy.server.caCert): the fetch must trust that CA (RootCAs,
// --dragonfly-ca-file) for the requests inside the tunnel, Dragonfly
// headers included, to reach the daemon; a certificate it does not trust is
// a peer failure like any other, and the file comes from the origin. dfdaemon marks its own failures with
// X-Dragonfly-Error-Type: proxy or dfdaemon ("backend" is the origin's
// answer, passed on). When the peer cannot be reached or fails, the file is
// fetched from the origin and the fallback is counted.

// Dragonfly request headers, as the Dragonfly client documents them.
const (
	headerDragonflyUseP2P         = "X-Dragonfly-Use-P2P"
	headerDragonflyTag            = "X-Dragonfly-Tag"
	headerDragonflyApplication    = "X-Dragonfly-Application"
	headerDragonflyFilteredParams = "X-Dragonfly-Filtered-Query-Params"
	headerDragonflyErrorType      = "X-Dragonfly-Error-Type"
)

// DragonflyOptions route file downloads through a dfdaemon proxy.
type DragonflyOptions struct {
	// Proxy is the dfdaemon proxy, e.g. http://10.0.0.5:4001.
	Proxy *url.URL
	// Tag, Application and FilteredQueryParams go into the task id; a
	// preheat must use the same values to warm the tasks this fetch uses.
	Tag, Application, FilteredQueryParams string
	// DialTimeout bounds connecting to the proxy; default 3s.
	DialTimeout time.Duration
	// RootCAs verify the certificates the proxy presents for https
	// origins (dfdaemon's CA, see LoadCAFile); nil: the system pool.
	RootCAs *x509.CertPool
}

// LoadCAFile returns the system's certificate pool with the PEM
// certificates of file added (dfdaemon's proxy CA).
func LoadCAFile(file string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return pool, nil
}

// errPeer marks a failure of the Dragonfly peer (not of the origin).
var errPeer = errors.New("dragonfly peer failed")

// peerTransport adds the Dragonfly headers to requests sent through the
// proxy and turns the peer's own failures into errPeer.
type peerTransport struct {
	base   http.RoundTripper
	header http.Header
}

func (t *peerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	for k, v := range t.header {
		r.Header[k] = v
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", errPeer, err)
	}
	et := strings.ToLower(resp.Header.Get(headerDragonflyErrorType))
	peerFault := et == "proxy" || et == "dfdaemon" ||
		(et == "" && (resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout))
	if peerFault {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("%w: status %d (error type %q)", errPeer, resp.StatusCode, et)
	}
	return resp, nil
}

// client returns the HTTP client that goes through the proxy.
func (d *DragonflyOptions) client() *http.Client {
	dt := d.DialTimeout
	if dt <= 0 {
		dt = 3 * time.Second
	}
	h := http.Header{}
	h.Set(headerDragonflyUseP2P, "true")
	if d.Tag != "" {
		h.Set(headerDragonflyTag, d.Tag)
	}
	if d.Application != "" {
		h.Set(headerDragonflyApplication, d.Application)
	}
	if d.FilteredQueryParams != "" {
		h.Set(headerDragonflyFilteredParams, d.FilteredQueryParams)
	}
	base := &http.Transport{
		Proxy:               http.ProxyURL(d.Proxy),
		DialContext:         (&net.Dialer{Timeout: dt, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		ForceAttemptHTTP2:   false,
		TLSClientConfig:     &tls.Config{RootCAs: d.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
	}
	return &http.Client{Transport: &peerTransport{base: base, header: h}}
}

// fileGetter downloads file bodies: through the Dragonfly peer when one is
// configured, from the origin otherwise or when the peer fails.
type fileGetter struct {
	direct   *http.Client
	peer     *http.Client // nil: no Dragonfly
	progress *Progress
	opts     Options
}

func newFileGetter(opts Options) *fileGetter {
	g := &fileGetter{direct: opts.Client, progress: opts.Progress, opts: opts}
	if opts.Dragonfly != nil && opts.Dragonfly.Proxy != nil {
		g.peer = opts.Dragonfly.client()
	}
	return g
}

// get fetches u from offset on (see get in httpget.go); direct skips the
// peer (after it served a file that failed its checksum: the peer keeps the
// task, so asking it again would give the same bytes).
func (g *fileGetter) get(ctx context.Context, u, token, authHost string, offset int64, direct bool) (*http.Response, error) {
	if g.peer != nil && direct {
		g.progress.addFallback()
	}
	if g.peer != nil && !direct {
		resp, err := get(ctx, g.peer, u, token, authHost, offset, nil)
		if err == nil || !errors.Is(err, errPeer) {
			return resp, err
		}
		g.progress.addFallback()
		g.opts.Logger.Warn("fetch: the Dragonfly peer failed; fetching from the origin",
			"url", redactURL(u), "proxy", g.opts.Dragonfly.Proxy.Redacted(), "err", err)
	}
	return get(ctx, g.direct, u, token, authHost, offset, nil)
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	u.RawQuery = ""
	return u.Redacted()
}
