package weights

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Source is a parsed model source.
type Source struct {
	// Scheme is hf, modelscope, http, https, s3 or gs.
	Scheme string
	// Repo is owner/name for hf and modelscope.
	Repo string
	// Revision is the hf or modelscope revision (branch, tag or commit);
	// empty means the hub's default branch (main on the Hugging Face Hub,
	// master on ModelScope).
	Revision string
	// Bucket and Prefix are the object store location for s3 and gs.
	Bucket, Prefix string
	// URL is the full URL for http and https.
	URL *url.URL
	raw string
}

func (s Source) String() string { return s.raw }

var repoPart = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ParseSource parses hf://owner/repo[@revision],
// modelscope://owner/repo[@revision], http(s)://..., s3://bucket/prefix and
// gs://bucket/prefix.
func ParseSource(s string) (Source, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Source{}, fmt.Errorf("source %q: want scheme://..., one of hf, modelscope, http, https, s3, gs", s)
	}
	src := Source{Scheme: scheme, raw: s}
	switch scheme {
	case "hf", "modelscope":
		repo, rev, _ := strings.Cut(rest, "@")
		parts := strings.Split(repo, "/")
		if len(parts) != 2 || !repoPart.MatchString(parts[0]) || !repoPart.MatchString(parts[1]) || strings.Contains(repo, "..") {
			return Source{}, fmt.Errorf("source %q: want %s://owner/repo[@revision]", s, scheme)
		}
		if strings.ContainsAny(rev, " \t\n") || strings.Contains(rev, "..") {
			return Source{}, fmt.Errorf("source %q: bad revision %q", s, rev)
		}
		src.Repo, src.Revision = repo, rev
	case "http", "https":
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return Source{}, fmt.Errorf("source %q: not a URL", s)
		}
		src.URL = u
	case "s3", "gs":
		bucket, prefix, _ := strings.Cut(rest, "/")
		if bucket == "" {
			return Source{}, fmt.Errorf("source %q: want %s://bucket/prefix", s, scheme)
		}
		src.Bucket, src.Prefix = bucket, prefix
	default:
		return Source{}, fmt.Errorf("source %q: scheme %q: %w", s, scheme, errUnsupportedScheme)
	}
	return src, nil
}

var errUnsupportedScheme = errors.New("not supported by halyard fetch (hf, modelscope, http, https, s3, gs are)")

// CacheKey is the directory name the source gets in the fetch directory:
// models--owner--repo for hf and modelscope (the Hugging Face Hub cache's
// name, which the engines look up), and a flattened scheme--host--path for
// the others.
func (s Source) CacheKey() string {
	switch s.Scheme {
	case "hf", "modelscope":
		return "models--" + strings.ReplaceAll(s.Repo, "/", "--")
	case "http", "https":
		return flatten(s.Scheme + "/" + s.URL.Host + "/" + strings.TrimSuffix(s.URL.Path, "/"))
	default:
		return flatten(s.Scheme + "/" + s.Bucket + "/" + strings.TrimSuffix(s.Prefix, "/"))
	}
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func flatten(p string) string {
	parts := strings.Split(p, "/")
	out := parts[:0]
	for _, part := range parts {
		part = unsafeName.ReplaceAllString(part, "_")
		if part != "" && part != "." && part != ".." {
			out = append(out, part)
		}
	}
	return strings.Join(out, "--")
}

// safeRelPath reports whether p (a path inside a model, from a listing) is a
// clean relative path that stays inside the model directory.
func safeRelPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") {
		return false
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}
