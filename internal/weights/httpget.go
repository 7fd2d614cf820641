package weights

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
)

const maxRedirects = 10

// get issues a GET for u, following redirects itself so that the
// Authorization header goes only to authHost (the hub, host:port) and never
// to storage a redirect points at. offset > 0 asks for a range; header, when
// not nil, gets the headers of the first (hub) response, which carry
// X-Repo-Commit and X-Linked-* on a redirect.
func get(ctx context.Context, c *http.Client, u, token, authHost string, offset int64, header *http.Header) (*http.Response, error) {
	cl := *c
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for range maxRedirects {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("User-Agent", userAgent)
		if token != "" && req.URL.Host == authHost {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if offset > 0 {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		}
		resp, err := cl.Do(req)
		if err != nil {
			return nil, err
		}
		if header != nil && *header == nil {
			*header = resp.Header.Clone()
		}
		switch resp.StatusCode {
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			loc, err := resp.Location()
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			if err != nil {
				return nil, fmt.Errorf("redirect from %s: %w", req.URL.Redacted(), err)
			}
			u = loc.String()
			continue
		case http.StatusOK, http.StatusPartialContent:
			return resp, nil
		case http.StatusRequestedRangeNotSatisfiable:
			// The partial file is no prefix of this object: start over.
			_ = resp.Body.Close()
			if offset == 0 {
				return nil, statusError(resp)
			}
			offset = 0
			continue
		default:
			err := statusError(resp)
			_ = resp.Body.Close()
			return nil, err
		}
	}
	return nil, errors.New("too many redirects")
}

// httpOpener opens u with resume by range.
func httpOpener(g *fileGetter, u, token, authHost string, direct *atomic.Bool) opener {
	return func(ctx context.Context, offset int64) (io.ReadCloser, bool, error) {
		resp, err := g.get(ctx, u, token, authHost, offset, direct.Load())
		if err != nil {
			return nil, false, err
		}
		return resp.Body, offset > 0 && resp.StatusCode == http.StatusPartialContent, nil
	}
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

const userAgent = "halyard-fetch/1 (hf-hub compatible)"
