package weights

import (
	"context"
	"crypto/md5" //nolint:gosec // GCS's md5Hash: an integrity check, not security
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
)

// A gs source is every object under bucket/prefix, through the Cloud Storage
// JSON API (GET /storage/v1/b/{bucket}/o?prefix=&pageToken= to list,
// ?alt=media to read, with ranges) at STORAGE_EMULATOR_HOST or
// https://storage.googleapis.com, checked against each object's md5Hash. The
// token is GOOGLE_OAUTH_ACCESS_TOKEN or --token-file; on GKE, a token from the
// metadata server is not fetched by halyard (give one through the file).
func planGCS(ctx context.Context, src Source, opts Options) (*plan, error) {
	ep := "https://storage.googleapis.com"
	if h := os.Getenv("STORAGE_EMULATOR_HOST"); h != "" {
		ep = h
		if !strings.Contains(ep, "://") {
			ep = "http://" + ep
		}
	}
	ep = strings.TrimSuffix(ep, "/")
	if opts.Token == "" {
		opts.Token = os.Getenv("GOOGLE_OAUTH_ACCESS_TOKEN")
	}
	authHost := hostOf(ep)
	dir := filepath.Join(opts.Into, src.CacheKey())
	p := &plan{path: dir}
	match := newMatcher(opts.Include, opts.Exclude)
	token := ""
	for pages := 0; ; pages++ {
		if pages > 100000 {
			return nil, fmt.Errorf("list %s: too many pages", src)
		}
		q := url.Values{"prefix": {src.Prefix}}
		if token != "" {
			q.Set("pageToken", token)
		}
		var page struct {
			Items []struct {
				Name    string `json:"name"`
				Size    string `json:"size"`
				MD5Hash string `json:"md5Hash"`
			} `json:"items"`
			NextPageToken string `json:"nextPageToken"`
		}
		if err := getJSON(ctx, opts, ep+"/storage/v1/b/"+url.PathEscape(src.Bucket)+"/o?"+q.Encode(), authHost, &page, nil); err != nil {
			return nil, fmt.Errorf("list %s: %w", src, err)
		}
		for _, it := range page.Items {
			if strings.HasSuffix(it.Name, "/") {
				continue
			}
			rel := strings.TrimPrefix(strings.TrimPrefix(it.Name, src.Prefix), "/")
			if rel == "" {
				rel = filepath.Base(it.Name)
			}
			if !match.match(rel) {
				continue
			}
			size, err := strconv.ParseInt(it.Size, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("list %s: object %s: size %q", src, it.Name, it.Size)
			}
			dest, err := within(dir, rel)
			if err != nil {
				return nil, err
			}
			p.files++
			p.bytes += size
			if st, err := os.Stat(dest); err == nil && st.Size() == size && !opts.Verify {
				p.present += size
				continue
			}
			t := fileTask{Name: rel, Dest: dest, Size: size,
				Open: httpOpener(&fileGetter{direct: opts.Client}, ep+"/storage/v1/b/"+url.PathEscape(src.Bucket)+"/o/"+url.PathEscape(it.Name)+"?alt=media", opts.Token, authHost, new(atomic.Bool))}
			if sum, err := base64.StdEncoding.DecodeString(it.MD5Hash); err == nil && len(sum) == md5.Size {
				t.Digest, t.Want = func() hash.Hash { return md5.New() }, hex.EncodeToString(sum) //nolint:gosec // see import
			}
			p.tasks = append(p.tasks, t)
		}
		token = page.NextPageToken
		if token == "" {
			break
		}
	}
	if p.files == 0 {
		return nil, fmt.Errorf("no object under %s matches (or the prefix is empty)", src)
	}
	return p, nil
}
