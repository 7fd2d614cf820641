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

	l := newHubLayout(opts, src, commit, authHost, newFileGetter(opts))
	match := newMatcher(opts.Include, opts.Exclude)
	for _, e := range entries {
		if e.Type != "file" || !match.match(e.Path) {
			continue
		}
		fileURL := ep + "/" + src.Repo + "/resolve/" + commit + "/" + escapePath(e.Path)
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
		if err := l.add(t, etag, fileURL); err != nil {
			return nil, err
		}
	}
	return l.done(rev)
}

// hubLayout builds the plan of a model laid out as the Hugging Face hub
// cache: DIR/models--o--r/blobs/<id>, snapshots/<commit>/<path> linking
// to them, refs/<revision> holding the commit.
type hubLayout struct {
	p             *plan
	src           Source
	repoDir, snap string
	opts          Options
	getter        *fileGetter
	authHost      string
	links         []struct{ file, blob string }
}

func newHubLayout(opts Options, src Source, commit, authHost string, getter *fileGetter) *hubLayout {
	repoDir := filepath.Join(opts.Into, src.CacheKey())
	snap := filepath.Join(repoDir, "snapshots", commit)
	return &hubLayout{p: &plan{path: snap, commit: commit}, src: src, repoDir: repoDir, snap: snap,
		opts: opts, getter: getter, authHost: authHost}
}

// add plans file t (t.Name its path in the model, t.Size, t.Digest and
// t.Want set) as blob id, downloaded from fileURL unless the blob is there.
func (l *hubLayout) add(t fileTask, id, fileURL string) error {
	dest, err := within(l.snap, t.Name)
	if err != nil {
		return err
	}
	p := l.p
	p.urls = append(p.urls, fileURL)
	blob := filepath.Join(l.repoDir, "blobs", id)
	l.links = append(l.links, struct{ file, blob string }{dest, blob})
	p.files++
	p.bytes += t.Size
	p.blobs = append(p.blobs, blob)
	if have, err := haveBlob(blob, t.Size, l.opts); err != nil || have {
		if have {
			p.present += t.Size
		}
		return err
	}
	t.Dest = blob
	t.direct = new(atomic.Bool)
	t.Open = httpOpener(l.getter, fileURL, l.opts.Token, l.authHost, t.direct)
	p.tasks = append(p.tasks, t)
	return nil
}

// done returns the plan; its finish links the snapshot and writes
// refs/<ref> for every ref that is not the commit itself.
func (l *hubLayout) done(rev string, refs ...string) (*plan, error) {
	p := l.p
	if p.files == 0 {
		return nil, fmt.Errorf("no file of %s@%s matches the include/exclude patterns", l.src.Repo, rev)
	}
	refs = append([]string{rev}, refs...)
	p.finish = func() error {
		for _, k := range l.links {
			if err := symlinkAtomic(k.blob, k.file); err != nil {
				return err
			}
		}
		for _, r := range refs {
			if r == p.commit {
				continue
			}
			if err := writeFileAtomic(filepath.Join(l.repoDir, "refs", filepath.FromSlash(r)), []byte(p.commit)); err != nil {
				return err
			}
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
