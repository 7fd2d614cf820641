package weights

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
)

// The Hugging Face Hub protocol, as huggingface_hub uses it:
//
//	GET {endpoint}/api/models/{repo}/revision/{rev}           → {"sha": commit, ...}
//	GET {endpoint}/api/models/{repo}/tree/{commit}?recursive=true
//	    → [{"type":"file","path","size","oid","lfs":{"oid","size"}}...],
//	      more pages through the Link header (rel="next")
//	GET {endpoint}/{repo}/resolve/{commit}/{path}
//	    → the file, or for LFS files a redirect to storage; X-Repo-Commit,
//	      ETag (the git blob id, or the sha256 of an LFS object),
//	      X-Linked-Etag and X-Linked-Size on the redirect.
//
// The cache layout is the hub client's: models--{owner}--{repo}/blobs/{etag},
// snapshots/{commit}/{path} as relative links to the blobs, refs/{revision}
// holding the commit.

// hubEntry is one entry of the tree listing.
type hubEntry struct {
	Type string `json:"type"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	OID  string `json:"oid"`
	LFS  *struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs"`
}

var (
	hexID    = regexp.MustCompile(`^[0-9a-f]{40}$|^[0-9a-f]{64}$`)
	commitID = regexp.MustCompile(`^[0-9a-f]{40}$`)
	linkNext = regexp.MustCompile(`<([^>]+)>\s*;\s*rel="?next"?`)
)

func planHub(ctx context.Context, src Source, opts Options) (*plan, error) {
	ep := strings.TrimSuffix(opts.Endpoint, "/")
	authHost := hostOf(ep)
	rev := opts.Revision
	if rev == "" {
		rev = src.Revision
	}
	if rev == "" {
		rev = "main"
	}
	var info struct {
		SHA string `json:"sha"`
	}
	revURL := ep + "/api/models/" + src.Repo + "/revision/" + url.PathEscape(rev)
	if err := getJSON(ctx, opts, revURL, authHost, &info, nil); err != nil {
		return nil, fmt.Errorf("revision %s: %w", rev, err)
	}
	if !commitID.MatchString(info.SHA) {
		return nil, fmt.Errorf("revision %s: the hub answered no commit (sha %q)", rev, info.SHA)
	}
	commit := info.SHA

	var entries []hubEntry
	next := ep + "/api/models/" + src.Repo + "/tree/" + commit + "?recursive=true&expand=false"
	for pages := 0; next != ""; pages++ {
		if pages > 10000 {
			return nil, fmt.Errorf("tree of %s: too many pages", commit)
		}
		var page []hubEntry
		var hdr http.Header
		if err := getJSON(ctx, opts, next, authHost, &page, &hdr); err != nil {
			return nil, fmt.Errorf("tree of %s: %w", commit, err)
		}
		entries = append(entries, page...)
		next = ""
		if m := linkNext.FindStringSubmatch(hdr.Get("Link")); m != nil {
			nu, err := url.Parse(m[1])
			if err != nil {
				return nil, fmt.Errorf("tree of %s: bad Link header: %w", commit, err)
			}
			base, _ := url.Parse(ep)
			next = base.ResolveReference(nu).String()
		}
	}

	repoDir := filepath.Join(opts.Into, src.CacheKey())
	snap := filepath.Join(repoDir, "snapshots", commit)
	p := &plan{path: snap, commit: commit}
	type link struct{ file, blob string }
	var links []link
	match := newMatcher(opts.Include, opts.Exclude)
	files := newFileGetter(opts)
	for _, e := range entries {
		if e.Type != "file" || !match.match(e.Path) {
			continue
		}
		dest, err := within(snap, e.Path)
		if err != nil {
			return nil, err
		}
		fileURL := ep + "/" + src.Repo + "/resolve/" + commit + "/" + escapePath(e.Path)
		p.urls = append(p.urls, fileURL)
		etag, size := e.OID, e.Size
		t := fileTask{Name: e.Path, Size: size}
		if e.LFS != nil {
			etag, size = e.LFS.OID, e.LFS.Size
			t.Size, t.Digest, t.Want = size, sha256Digest, etag
		} else {
			t.Digest, t.Want = gitBlobDigest(size), etag
		}
		if !hexID.MatchString(etag) {
			return nil, fmt.Errorf("%s: the tree gives no usable blob id (%q)", e.Path, etag)
		}
		blob := filepath.Join(repoDir, "blobs", etag)
		links = append(links, link{file: dest, blob: blob})
		p.files++
		p.bytes += size
		p.blobs = append(p.blobs, blob)
		if have, err := haveBlob(blob, size, opts); err != nil {
			return nil, err
		} else if have {
			p.present += size
			continue
		}
		t.Dest = blob
		t.direct = new(atomic.Bool)
		t.Open = httpOpener(files, fileURL, opts.Token, authHost, t.direct)
		p.tasks = append(p.tasks, t)
	}
	if p.files == 0 {
		return nil, fmt.Errorf("no file of %s@%s matches the include/exclude patterns", src.Repo, rev)
	}
	p.finish = func() error {
		for _, l := range links {
			if err := symlinkAtomic(l.blob, l.file); err != nil {
				return err
			}
		}
		if rev != commit {
			return writeFileAtomic(filepath.Join(repoDir, "refs", filepath.FromSlash(rev)), []byte(commit))
		}
		return nil
	}
	return p, nil
}

// haveBlob reports whether blob is on disk with its size and trusted. With
// opts.Verify, or when the blob changed since the last complete fetch
// (opts.suspect), it moves the blob back to ".incomplete" instead, so that
// the transfer rehashes it and refetches it only if it is wrong.
func haveBlob(blob string, size int64, opts Options) (bool, error) {
	st, err := os.Stat(blob)
	if err != nil {
		return false, nil
	}
	if opts.Verify || opts.suspect[blob] {
		return false, os.Rename(blob, blob+incompleteSuffix)
	}
	return st.Size() == size, nil
}

// symlinkAtomic makes link point at target with a relative path, replacing
// what was there.
func symlinkAtomic(target, link string) error {
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(link), target)
	if err != nil {
		return err
	}
	if cur, err := os.Readlink(link); err == nil && cur == rel {
		return nil
	}
	tmp := link + ".tmp-link"
	_ = os.Remove(tmp)
	if err := os.Symlink(rel, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, link)
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// maxJSON bounds an API answer.
const maxJSON = 256 << 20

func getJSON(ctx context.Context, opts Options, u, authHost string, v any, hdr *http.Header) error {
	resp, err := get(ctx, opts.Client, u, opts.Token, authHost, 0, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSON)).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", resp.Request.URL.Redacted(), err)
	}
	return nil
}
