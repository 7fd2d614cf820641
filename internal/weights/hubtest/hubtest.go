// Package hubtest runs local stand-ins for the origins `halyard fetch`
// talks to, for tests and benchmarks: a Hugging Face Hub (the revision and
// tree APIs, resolve URLs with ETag/X-Repo-Commit/X-Linked-* headers and
// redirects of LFS files to a separate storage host, ranges, gated
// repositories) and an S3-compatible object store (ListObjectsV2 and
// GetObject). Both count the body bytes they serve and can cut a transfer
// short or corrupt it, to test resume and verification.
//
// They implement only what halyard uses of those protocols; they are not
// models of the services' full behaviour.
package hubtest

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // git blob ids are sha1
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// LFSThreshold: files at least this large (or named *.safetensors, *.bin)
// are stored as LFS objects and redirected to the storage host.
const LFSThreshold = 64 << 10

// Repo is one model repository.
type Repo struct {
	// Commit is the 40-hex commit "main" points at.
	Commit string
	// Files maps paths to contents.
	Files map[string][]byte
	// Token, when set, makes the repository gated: requests need
	// "Authorization: Bearer <Token>".
	Token string
	// Synthetic maps paths to files generated on demand (always LFS
	// objects), for models too large to hold in memory.
	Synthetic map[string]*Synthetic
}

// content is a file of a repository: a byte slice (bytes.Reader) or a
// Synthetic.
type content interface {
	io.ReaderAt
	Size() int64
}

// paths lists the repository's files, sorted.
func (r *Repo) paths() []string {
	out := sortedKeys(r.Files)
	for p := range r.Synthetic {
		if _, ok := r.Files[p]; !ok {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// Hub is a running stand-in: the hub on URL, LFS storage on a second server.
type Hub struct {
	// URL is the hub's endpoint (HF_ENDPOINT).
	URL string
	// StorageURL is the LFS storage host's base URL.
	StorageURL string
	// PageSize is the number of tree entries per page (Link pagination).
	PageSize int

	// origin counts the body bytes of files served (hub and storage)
	// and requests, and applies cuts and corruption.
	origin

	hub, storage *httptest.Server
	mu           sync.Mutex
	repos        map[string]*Repo
	objects      map[string][]byte     // sha256 → content
	synthetic    map[string]*Synthetic // sha256 → generated content
	gate         chan struct{}         // when not nil, storage answers wait for it to close

	// AuthOnStorage counts storage requests that carried an Authorization
	// header (must stay 0: the token never leaves the hub).
	authOnStorage atomic.Int64
	// ids memoizes the sha256 and git blob ids of file contents (keyed by
	// the slice), so that serving a tree or a resolve does not rehash
	// whole files on every request: the stand-in's CPU would otherwise
	// weigh on what a benchmark measures of the client.
	ids sync.Map // contentKey → string
}

type contentKey struct {
	p    *byte
	n    int
	kind byte
}

func (h *Hub) memo(b []byte, kind byte, f func([]byte) string) string {
	if len(b) == 0 {
		return f(b)
	}
	k := contentKey{p: &b[0], n: len(b), kind: kind}
	if v, ok := h.ids.Load(k); ok {
		return v.(string)
	}
	v := f(b)
	h.ids.Store(k, v)
	return v
}

func (h *Hub) sha256(b []byte) string    { return h.memo(b, 's', SHA256) }
func (h *Hub) gitBlobID(b []byte) string { return h.memo(b, 'g', GitBlobID) }

// NewHub starts a hub stand-in; Close stops it.
func NewHub() *Hub {
	h := &Hub{PageSize: 50, repos: map[string]*Repo{}, objects: map[string][]byte{}, synthetic: map[string]*Synthetic{}}
	h.storage = httptest.NewServer(http.HandlerFunc(h.serveStorage))
	h.hub = httptest.NewServer(http.HandlerFunc(h.serveHub))
	h.URL, h.StorageURL = h.hub.URL, h.storage.URL
	return h
}

// Close stops both servers.
func (h *Hub) Close() {
	h.hub.Close()
	h.storage.Close()
}

// AddRepo adds or replaces repository name (owner/repo). The sha256 of its
// Synthetic files is computed here, once.
func (h *Hub) AddRepo(name string, r Repo) {
	for _, s := range r.Synthetic {
		s.SHA256()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Commit == "" {
		sum := sha1.Sum([]byte(name + fmt.Sprint(len(r.Files)+len(r.Synthetic)))) //nolint:gosec // a made-up commit id
		r.Commit = hex.EncodeToString(sum[:])
	}
	for _, s := range r.Synthetic {
		h.synthetic[s.SHA256()] = s
	}
	for p, b := range r.Files {
		if isLFS(p, b) {
			sum := sha256.Sum256(b)
			h.objects[hex.EncodeToString(sum[:])] = b
		}
	}
	h.repos[name] = &r
}

// Hold makes storage requests wait until Release.
func (h *Hub) Hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gate = make(chan struct{})
}

// Release lets held storage requests go on.
func (h *Hub) Release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate != nil {
		close(h.gate)
		h.gate = nil
	}
}

// AuthOnStorage returns how many storage requests carried Authorization.
func (h *Hub) AuthOnStorage() int64 { return h.authOnStorage.Load() }

func isLFS(path string, b []byte) bool {
	return len(b) >= LFSThreshold || strings.HasSuffix(path, ".safetensors") || strings.HasSuffix(path, ".bin")
}

// GitBlobID is the git object id of content b.
func GitBlobID(b []byte) string {
	h := sha1.New() //nolint:gosec // git's id
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// SHA256 is the hex sha256 of b (an LFS object's id).
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type treeEntry struct {
	Type string    `json:"type"`
	Path string    `json:"path"`
	Size int64     `json:"size"`
	OID  string    `json:"oid"`
	LFS  *lfsEntry `json:"lfs,omitempty"`
}

type lfsEntry struct {
	OID         string `json:"oid"`
	Size        int64  `json:"size"`
	PointerSize int    `json:"pointerSize"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Error-Message", msg)
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// repo finds the repository of owner/name and checks the token.
func (h *Hub) repo(w http.ResponseWriter, r *http.Request, name string) *Repo {
	h.mu.Lock()
	repo := h.repos[name]
	h.mu.Unlock()
	if repo == nil {
		w.Header().Set("X-Error-Code", "RepoNotFound")
		writeError(w, http.StatusNotFound, "Repository not found")
		return nil
	}
	if repo.Token != "" {
		auth := r.Header.Get("Authorization")
		if auth == "" {
			w.Header().Set("X-Error-Code", "GatedRepo")
			writeError(w, http.StatusUnauthorized, "Access to model "+name+" is restricted. You must have access to it and be authenticated to access it.")
			return nil
		}
		if auth != "Bearer "+repo.Token {
			writeError(w, http.StatusForbidden, "Access to model "+name+" is restricted and you are not in the authorized list.")
			return nil
		}
	}
	return repo
}

func (h *Hub) serveHub(w http.ResponseWriter, r *http.Request) {
	h.count(r)
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/api/models/"):
		rest := strings.TrimPrefix(p, "/api/models/")
		parts := strings.SplitN(rest, "/", 4) // owner, repo, revision|tree, rev...
		if len(parts) < 4 {
			writeError(w, http.StatusNotFound, "not found")
			return
		}
		repo := h.repo(w, r, parts[0]+"/"+parts[1])
		if repo == nil {
			return
		}
		rev, _ := url.PathUnescape(parts[3])
		if rev != "main" && rev != repo.Commit {
			w.Header().Set("X-Error-Code", "RevisionNotFound")
			writeError(w, http.StatusNotFound, "Invalid rev id: "+rev)
			return
		}
		switch parts[2] {
		case "revision":
			sib := []map[string]string{}
			for _, f := range repo.paths() {
				sib = append(sib, map[string]string{"rfilename": f})
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"id": parts[0] + "/" + parts[1], "sha": repo.Commit, "siblings": sib})
		case "tree":
			h.serveTree(w, r, repo)
		default:
			writeError(w, http.StatusNotFound, "not found")
		}
	default:
		// /{owner}/{repo}/resolve/{rev}/{path}
		parts := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 5)
		if len(parts) < 5 || parts[2] != "resolve" {
			writeError(w, http.StatusNotFound, "not found")
			return
		}
		repo := h.repo(w, r, parts[0]+"/"+parts[1])
		if repo == nil {
			return
		}
		if parts[3] != "main" && parts[3] != repo.Commit {
			w.Header().Set("X-Error-Code", "RevisionNotFound")
			writeError(w, http.StatusNotFound, "Invalid rev id")
			return
		}
		file := parts[4]
		if s, ok := repo.Synthetic[file]; ok {
			h.redirectLFS(w, repo, file, s.SHA256(), s.Size())
			return
		}
		b, ok := repo.Files[file]
		if !ok {
			w.Header().Set("X-Error-Code", "EntryNotFound")
			writeError(w, http.StatusNotFound, "Entry not found")
			return
		}
		w.Header().Set("X-Repo-Commit", repo.Commit)
		if isLFS(file, b) {
			h.redirectLFS(w, repo, file, h.sha256(b), int64(len(b)))
			return
		}
		w.Header().Set("ETag", `"`+h.gitBlobID(b)+`"`)
		h.serveBody(w, r, file, bytes.NewReader(b))
	}
}

// redirectLFS answers a resolve of an LFS file: its headers and a redirect
// to the storage host.
func (h *Hub) redirectLFS(w http.ResponseWriter, repo *Repo, file, sum string, size int64) {
	w.Header().Set("X-Repo-Commit", repo.Commit)
	w.Header().Set("X-Linked-Etag", `"`+sum+`"`)
	w.Header().Set("X-Linked-Size", strconv.FormatInt(size, 10))
	w.Header().Set("ETag", `"`+sum+`"`)
	w.Header().Set("Location", h.StorageURL+"/objects/"+sum+"?file="+url.QueryEscape(file)+"&X-Amz-Signature=stand-in")
	w.WriteHeader(http.StatusFound)
}

func (h *Hub) serveTree(w http.ResponseWriter, r *http.Request, repo *Repo) {
	var entries []treeEntry
	for _, f := range repo.paths() {
		if s, ok := repo.Synthetic[f]; ok {
			sum := s.SHA256()
			entries = append(entries, treeEntry{Type: "file", Path: f, Size: s.Size(), OID: GitBlobID([]byte("pointer " + sum)),
				LFS: &lfsEntry{OID: sum, Size: s.Size(), PointerSize: 134}})
			continue
		}
		b := repo.Files[f]
		e := treeEntry{Type: "file", Path: f, Size: int64(len(b)), OID: h.gitBlobID(b)}
		if isLFS(f, b) {
			e.LFS = &lfsEntry{OID: h.sha256(b), Size: int64(len(b)), PointerSize: 134}
			e.Size = int64(len(b))
			e.OID = GitBlobID([]byte("pointer " + h.sha256(b)))
		}
		entries = append(entries, e)
	}
	start, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	end := min(start+h.PageSize, len(entries))
	if start > len(entries) {
		start = len(entries)
	}
	if end < len(entries) {
		q := r.URL.Query()
		q.Set("cursor", strconv.Itoa(end))
		w.Header().Set("Link", `<`+h.URL+r.URL.Path+"?"+q.Encode()+`>; rel="next"`)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(entries[start:end])
}

func (h *Hub) serveStorage(w http.ResponseWriter, r *http.Request) {
	h.count(r)
	if r.Header.Get("Authorization") != "" {
		// As S3 does for a presigned URL given a second credential.
		h.authOnStorage.Add(1)
		writeError(w, http.StatusBadRequest, "Only one auth mechanism allowed")
		return
	}
	sum := strings.TrimPrefix(r.URL.Path, "/objects/")
	h.mu.Lock()
	var c content
	if b, ok := h.objects[sum]; ok {
		c = bytes.NewReader(b)
	} else if s, ok := h.synthetic[sum]; ok {
		c = s
	}
	gate := h.gate
	h.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if c == nil {
		writeError(w, http.StatusNotFound, "NoSuchKey")
		return
	}
	h.serveBody(w, r, r.URL.Query().Get("file"), c)
}
