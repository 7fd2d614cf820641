package weights

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
)

// An http(s) source is one file, or, when the URL ends in "/", a directory
// listing (the HTML index a web server such as nginx's autoindex or Python's
// http.server writes): every relative link is a file, every relative link
// ending in "/" a subdirectory.

// maxListingDepth bounds the recursion into listed subdirectories.
const maxListingDepth = 8

var hrefAttr = regexp.MustCompile(`(?i)href\s*=\s*"([^"]*)"`)

func planHTTP(ctx context.Context, src Source, opts Options) (*plan, error) {
	dir := filepath.Join(opts.Into, src.CacheKey())
	p := &plan{path: dir}
	authHost := src.URL.Host
	match := newMatcher(opts.Include, opts.Exclude)
	var files []string
	getter := newFileGetter(opts)
	if strings.HasSuffix(src.URL.Path, "/") {
		var err error
		files, err = listHTTP(ctx, opts, src.URL, "", authHost, 0)
		if err != nil {
			return nil, err
		}
	} else {
		files = []string{""}
	}
	for _, rel := range files {
		u := *src.URL
		name := path.Base(src.URL.Path)
		if rel != "" {
			ref, err := url.Parse(escapePath(rel))
			if err != nil {
				return nil, err
			}
			u = *src.URL.ResolveReference(ref)
			name = rel
		}
		if !match.match(name) {
			continue
		}
		dest, err := within(dir, name)
		if err != nil {
			return nil, err
		}
		p.files++
		p.urls = append(p.urls, u.String())
		if st, err := os.Stat(dest); err == nil && !opts.Verify {
			p.bytes += st.Size()
			p.present += st.Size()
			continue
		}
		// The size is learnt from the answer; the transfer checks the body
		// against Content-Length.
		direct := new(atomic.Bool)
		p.tasks = append(p.tasks, fileTask{Name: name, Dest: dest, Size: -1, Open: sizedHTTPOpener(getter, u.String(), opts.Token, authHost, opts.Progress, direct), direct: direct})
	}
	if p.files == 0 {
		return nil, fmt.Errorf("no file at %s matches the include/exclude patterns", src)
	}
	p.finish = func() error {
		p.bytes = dirBytes(dir)
		return nil
	}
	return p, nil
}

// sizedHTTPOpener is httpOpener that also adds the size it learns from
// Content-Length to the progress total and checks the body's length.
func sizedHTTPOpener(g *fileGetter, u, token, authHost string, pr *Progress, direct *atomic.Bool) opener {
	counted := false
	return func(ctx context.Context, offset int64) (io.ReadCloser, bool, error) {
		resp, err := g.get(ctx, u, token, authHost, offset, direct.Load())
		if err != nil {
			return nil, false, err
		}
		resumed := offset > 0 && resp.StatusCode == http.StatusPartialContent
		if !counted && resp.ContentLength >= 0 {
			total := resp.ContentLength
			if resumed {
				total += offset
			}
			pr.addTotal(total, 0)
			counted = true
		}
		return resp.Body, resumed, nil
	}
}

// listHTTP returns the relative paths of the files an index page lists.
func listHTTP(ctx context.Context, opts Options, base *url.URL, prefix, authHost string, depth int) ([]string, error) {
	if depth > maxListingDepth {
		return nil, fmt.Errorf("listing %s: deeper than %d directories", base.Redacted(), maxListingDepth)
	}
	resp, err := get(ctx, opts.Client, base.String(), opts.Token, authHost, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", base.Redacted(), err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJSON))
	_ = resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", base.Redacted(), err)
	}
	var out []string
	seen := map[string]bool{}
	for _, m := range hrefAttr.FindAllSubmatch(body, -1) {
		href, err := url.PathUnescape(string(m[1]))
		if err != nil || href == "" || seen[href] || strings.ContainsAny(href, "?#:") || strings.HasPrefix(href, "/") || strings.HasPrefix(href, ".") {
			continue
		}
		seen[href] = true
		if strings.HasSuffix(href, "/") {
			sub, err := url.Parse(escapePath(strings.TrimSuffix(href, "/")) + "/")
			if err != nil {
				continue
			}
			more, err := listHTTP(ctx, opts, base.ResolveReference(sub), prefix+href, authHost, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
			continue
		}
		if safeRelPath(prefix + href) {
			out = append(out, prefix+href)
		}
	}
	return out, nil
}
