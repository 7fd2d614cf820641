package weights

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Options configure a fetch. The zero value is usable apart from Into.
type Options struct {
	// Into is the directory models are fetched into (the node cache; for hf
	// sources, the Hugging Face hub cache: HF_HUB_CACHE). Required.
	Into string
	// Revision overrides the hf source's @revision; empty means the
	// source's, then "main".
	Revision string
	// Include and Exclude are glob patterns on paths in the model (fnmatch
	// style as the hub client: "*" also matches "/"; a pattern ending in "/"
	// matches a directory's contents). A file is fetched when it matches an
	// Include (or Include is empty) and no Exclude.
	Include, Exclude []string
	// Token is the bearer token for the hub (HF_TOKEN) or a gs/http origin.
	Token string
	// Endpoint is the Hugging Face endpoint (HF_ENDPOINT); default
	// https://huggingface.co.
	Endpoint string
	// ModelScopeEndpoint is the ModelScope endpoint for modelscope
	// sources (MODELSCOPE_ENDPOINT; see ModelScopeEndpoint); default
	// https://www.modelscope.cn. Token is then the ModelScope access
	// token (MODELSCOPE_API_TOKEN).
	ModelScopeEndpoint string
	// Parallel is the number of files downloaded at once; default 8.
	Parallel int
	// Attempts is how often a file transfer is tried before failing
	// (resuming each time); default 5.
	Attempts int
	// RetryBackoff is the wait before the second attempt, growing linearly;
	// default 500ms.
	RetryBackoff time.Duration
	// Verify rehashes files already on disk instead of trusting the
	// done-marker and the blobs present.
	Verify bool
	// MaxCacheBytes, when positive, evicts the least recently used models
	// of Into after the fetch until the directory holds at most this many
	// bytes (never the model just fetched, nor a model another fetch holds
	// locked).
	MaxCacheBytes int64
	// Dragonfly, when not nil, sends file downloads of hf and http(s)
	// sources through the node's Dragonfly peer, falling back to the
	// origin when the peer fails.
	Dragonfly *DragonflyOptions
	// Client is the HTTP client; default a client with proxy settings
	// from the environment. Redirects are followed by Fetch itself.
	Client *http.Client
	// Progress, when not nil, is updated as bytes arrive.
	Progress *Progress
	// Logger receives structured progress and warnings; default discards.
	Logger *slog.Logger

	// suspect are blobs that changed on disk since the last complete
	// fetch: rehashed like Verify does, the others trusted.
	suspect map[string]bool
}

// Result describes a finished fetch.
type Result struct {
	// Path is the local directory of the model: the snapshot directory
	// (models--o--r/snapshots/<commit>) for hf, the copied tree otherwise.
	Path string
	// Commit is the hf commit the revision resolved to (for modelscope,
	// the snapshot id: see modelscope.go).
	Commit string
	// Files and Bytes are the model's files and total size.
	Files int
	Bytes int64
	// Transferred is the number of body bytes received from the origin in
	// this run (0 when everything was already on disk).
	Transferred int64
	// Cached reports that the done-marker answered without any request.
	Cached bool
	// Evicted lists the cache keys removed to honour MaxCacheBytes.
	Evicted []string
	// Fallbacks counts downloads that went to the origin because the
	// Dragonfly peer failed.
	Fallbacks int64
}

// plan is what a source's lister returns: the files to bring and how to
// finish the layout once they are all there.
type plan struct {
	path   string
	commit string
	tasks  []fileTask
	files  int
	bytes  int64
	// present is the bytes of files already complete on disk.
	present int64
	// urls are the download URLs of every file of an hf or http(s)
	// source (present or not): what a Dragonfly preheat warms.
	urls []string
	// blobs are the checksummed files (hf and modelscope blobs) the
	// done-marker stamps, so that a later change to one is noticed.
	blobs  []string
	finish func() error
}

// Fetch downloads source into opts.Into and returns where the model is.
func Fetch(ctx context.Context, source string, opts Options) (*Result, error) {
	src, err := ParseSource(source)
	if err != nil {
		return nil, err
	}
	if opts.Into == "" {
		return nil, errors.New("fetch: the target directory (--into) is required")
	}
	opts = opts.withDefaults()
	if err := os.MkdirAll(opts.Into, 0o755); err != nil {
		return nil, fmt.Errorf("fetch: %w", diskError(err))
	}
	key := src.CacheKey()
	unlock, err := lockModel(ctx, opts.Into, key, opts.Logger)
	if err != nil {
		return nil, err
	}
	defer unlock()
	marker := doneMarkerPath(opts.Into, key, src, opts)
	if !opts.Verify {
		if m, ok := readDoneMarker(marker); ok {
			changed := m.changed(opts.Into)
			if len(changed) == 0 {
				touchUsed(opts.Into, key)
				opts.Logger.Info("fetch: already complete", "source", source, "path", m.Path)
				opts.Progress.addTotal(m.Bytes, m.Files)
				opts.Progress.Add(m.Bytes)
				return &Result{Path: m.Path, Commit: m.Commit, Files: m.Files, Bytes: m.Bytes, Cached: true}, nil
			}
			// Written, replaced or truncated since the fetch completed:
			// rehash those, refetch the ones that differ.
			opts.Logger.Warn("fetch: files of the node cache changed since they were fetched; rehashing them",
				"source", source, "files", changed)
			opts.suspect = map[string]bool{}
			for _, f := range changed {
				opts.suspect[filepath.Join(opts.Into, f)] = true
			}
		}
	}
	var p *plan
	switch src.Scheme {
	case "hf":
		p, err = planHub(ctx, src, opts)
	case "modelscope":
		p, err = planModelScope(ctx, src, opts)
	case "http", "https":
		p, err = planHTTP(ctx, src, opts)
	case "s3":
		p, err = planS3(ctx, src, opts)
	case "gs":
		p, err = planGCS(ctx, src, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", source, err)
	}
	fresh := &Progress{}
	opts.Progress.addTotal(p.bytes, p.files)
	opts.Progress.Add(p.present)
	opts.Logger.Info("fetch: start", "source", source, "files", p.files, "bytes", p.bytes,
		"to_download", len(p.tasks), "present_bytes", p.present)
	x := &transferer{attempts: opts.Attempts, backoff: opts.RetryBackoff, progress: opts.Progress, fresh: fresh, log: opts.Logger}
	if err := x.runAll(ctx, p.tasks, opts.Parallel); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", source, err)
	}
	if p.finish != nil {
		if err := p.finish(); err != nil {
			return nil, fmt.Errorf("fetch %s: %w", source, diskError(err))
		}
	}
	res := &Result{Path: p.path, Commit: p.commit, Files: p.files, Bytes: p.bytes, Transferred: fresh.Done(), Fallbacks: opts.Progress.Fallbacks()}
	if err := writeDoneMarker(marker, doneMarker{Source: source, Path: p.path, Commit: p.commit, Files: p.files, Bytes: p.bytes,
		Blobs: stampFiles(opts.Into, p.blobs)}); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", source, diskError(err))
	}
	touchUsed(opts.Into, key)
	if opts.MaxCacheBytes > 0 {
		res.Evicted, err = Evict(opts.Into, opts.MaxCacheBytes, key, opts.Logger)
		if err != nil {
			opts.Logger.Warn("fetch: eviction failed", "err", err)
		}
	}
	opts.Logger.Info("fetch: done", "source", source, "path", p.path, "bytes", p.bytes, "transferred", res.Transferred)
	return res, nil
}

func (o Options) withDefaults() Options {
	if o.Parallel <= 0 {
		o.Parallel = 8
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = 500 * time.Millisecond
	}
	if o.Endpoint == "" {
		o.Endpoint = "https://huggingface.co"
	}
	if o.Client == nil {
		o.Client = &http.Client{Transport: http.DefaultTransport}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
	return o
}

// Listing is what a fetch of a source would download.
type Listing struct {
	// Commit is the hf commit the revision resolves to.
	Commit string
	// URLs are the files' download URLs, exactly as Fetch requests them.
	URLs []string
	// Bytes is the size of the files, when the listing gives it.
	Bytes int64
}

// ListSource asks the origin what a Fetch of source with opts (revision, include,
// exclude, token, endpoint) would download, without downloading anything
// or touching opts.Into. Only hf, modelscope and http(s) sources have
// download URLs.
func ListSource(ctx context.Context, source string, opts Options) (*Listing, error) {
	src, err := ParseSource(source)
	if err != nil {
		return nil, err
	}
	// A directory that does not exist: every file counts as missing, and
	// planning writes nothing.
	opts.Into = filepath.Join(os.TempDir(), "halyard-list-does-not-exist")
	opts.Verify = false
	opts = opts.withDefaults()
	var p *plan
	switch src.Scheme {
	case "hf":
		p, err = planHub(ctx, src, opts)
	case "modelscope":
		p, err = planModelScope(ctx, src, opts)
	case "http", "https":
		p, err = planHTTP(ctx, src, opts)
	default:
		return nil, fmt.Errorf("list %s: %s sources have no plain download URLs", source, src.Scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", source, err)
	}
	return &Listing{Commit: p.commit, URLs: p.urls, Bytes: p.bytes}, nil
}

// within joins rel (a clean relative path from a listing) under dir.
func within(dir, rel string) (string, error) {
	if !safeRelPath(rel) {
		return "", fmt.Errorf("unsafe path %q in the listing", rel)
	}
	return filepath.Join(dir, filepath.FromSlash(rel)), nil
}
