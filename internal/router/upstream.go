package router

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"sync"
)

// upstream sends requests to engines. It calls the transport's RoundTrip
// directly, as httputil.ReverseProxy does: an http.Client would copy the
// headers and the URL of every request in case of a redirect, and the
// router passes an engine's answer on as it is (a 3xx included) instead of
// following it. Engines' base URLs are parsed once.
type upstream struct {
	rt http.RoundTripper

	mu    sync.RWMutex
	bases map[string]*url.URL // engine address -> parsed base URL
}

// maxUpstreamBases bounds the parsed base URLs kept; past it the cache
// starts over (endpoints come and go under Kubernetes discovery).
const maxUpstreamBases = 4096

func newUpstream(rt http.RoundTripper) *upstream {
	return &upstream{rt: rt, bases: map[string]*url.URL{}}
}

// base returns address parsed, or nil when address is not a plain base URL
// (a query or fragment, an escaped path) that path can simply extend.
func (u *upstream) base(address string) *url.URL {
	u.mu.RLock()
	b, ok := u.bases[address]
	u.mu.RUnlock()
	if ok {
		return b
	}
	p, err := url.Parse(address)
	if err == nil && p.Opaque == "" && p.RawQuery == "" && !p.ForceQuery && p.Fragment == "" && p.RawPath == "" && p.Host != "" {
		b = p
	}
	u.mu.Lock()
	if len(u.bases) >= maxUpstreamBases {
		clear(u.bases)
	}
	u.bases[address] = b
	u.mu.Unlock()
	return b
}

// newRequest builds a POST of body to address+path with ctx. It is what
// http.NewRequestWithContext(ctx, "POST", address+path, bytes.NewReader(body))
// builds, without parsing the URL each time.
func (u *upstream) newRequest(ctx context.Context, address, path string, body []byte, headers int) (*http.Request, error) {
	b := u.base(address)
	if b == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, address+path, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		return req, nil
	}
	target := *b
	target.Path = b.Path + path
	req := &http.Request{
		Method:        http.MethodPost,
		URL:           &target,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        make(http.Header, headers),
		Body:          io.NopCloser(bytes.NewReader(body)),
		GetBody:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
		ContentLength: int64(len(body)),
		Host:          target.Host,
	}
	if len(body) == 0 {
		req.Body, req.GetBody = http.NoBody, func() (io.ReadCloser, error) { return http.NoBody, nil }
	}
	return req.WithContext(ctx), nil
}

// do sends req. Its errors read as http.Client's do: "Post "URL": cause".
func (u *upstream) do(req *http.Request) (*http.Response, error) {
	resp, err := u.rt.RoundTrip(req)
	if err != nil {
		return nil, &url.Error{Op: "Post", URL: req.URL.String(), Err: err}
	}
	return resp, nil
}
