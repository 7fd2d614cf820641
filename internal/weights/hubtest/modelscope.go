package hubtest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
)

// ModelScope is a stand-in for the ModelScope hub's model file API, as
// ModelScope's own clients use it: GET /api/v1/models/{owner}/{name}/revisions
// (the branches and tags), GET .../repo/files?Revision=&Recursive= (the
// listing, with Type, Path, Size and Sha256 per file) and GET
// .../repo?Revision=&FilePath= (the file, with ranges). Answers are
// wrapped in ModelScope's envelope {"Code","Message","Success","Data"}. A
// private repository takes the access token as "Authorization: Bearer" or
// as the m_session_id cookie.
type ModelScope struct {
	// origin counts requests and file body bytes and applies cuts and
	// corruption (keyed by file path).
	origin

	// URL is the endpoint (MODELSCOPE_ENDPOINT).
	URL string

	srv   *httptest.Server
	mu    sync.Mutex
	repos map[string]*ModelScopeRepo
	// byCookie and byBearer count authorised requests by the way the
	// token came.
	byCookie, byBearer atomic.Int64
}

// ModelScopeRepo is one model repository.
type ModelScopeRepo struct {
	// Files are the files of the branch master.
	Files map[string][]byte
	// Revisions are further branches or tags and their files.
	Revisions map[string]map[string][]byte
	// Token, when set, makes the repository private.
	Token string
	// NoSha256 lists files the listing gives no Sha256 for.
	NoSha256 map[string]bool
}

// NewModelScope starts a ModelScope stand-in; Close stops it.
func NewModelScope() *ModelScope {
	m := &ModelScope{repos: map[string]*ModelScopeRepo{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	m.URL = m.srv.URL
	return m
}

// Close stops the server.
func (m *ModelScope) Close() { m.srv.Close() }

// AddRepo adds or replaces repository name (owner/name).
func (m *ModelScope) AddRepo(name string, r ModelScopeRepo) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.repos[name] = &r
}

// AuthByCookie and AuthByBearer count authorised requests to private
// repositories by how the token came.
func (m *ModelScope) AuthByCookie() int64 { return m.byCookie.Load() }

// AuthByBearer: see AuthByCookie.
func (m *ModelScope) AuthByBearer() int64 { return m.byBearer.Load() }

func msAnswer(w http.ResponseWriter, code int, msg string, data any) {
	w.Header().Set("Content-Type", "application/json")
	if code != http.StatusOK {
		w.WriteHeader(code)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"Code": code, "Message": msg, "Success": code == http.StatusOK, "Data": data,
		"RequestId": "stand-in",
	})
}

type msFileEntry struct {
	Name     string `json:"Name"`
	Path     string `json:"Path"`
	Type     string `json:"Type"`
	Size     int64  `json:"Size"`
	Sha256   string `json:"Sha256,omitempty"`
	Revision string `json:"Revision"`
	IsLFS    bool   `json:"IsLFS"`
}

type msRevision struct {
	Revision  string `json:"Revision"`
	CreatedAt int64  `json:"CreatedAt"`
}

func (m *ModelScope) serve(w http.ResponseWriter, r *http.Request) {
	m.count(r)
	rest, ok := strings.CutPrefix(r.URL.Path, "/api/v1/models/")
	if !ok {
		msAnswer(w, http.StatusNotFound, "not found", nil)
		return
	}
	parts := strings.SplitN(rest, "/", 3) // owner, name, what
	if len(parts) < 3 {
		msAnswer(w, http.StatusNotFound, "not found", nil)
		return
	}
	m.mu.Lock()
	repo := m.repos[parts[0]+"/"+parts[1]]
	m.mu.Unlock()
	if repo == nil {
		msAnswer(w, http.StatusNotFound, "model "+parts[0]+"/"+parts[1]+" does not exist", nil)
		return
	}
	if repo.Token != "" && !m.authorised(w, r, repo.Token) {
		return
	}
	q := r.URL.Query()
	files := func() (map[string][]byte, bool) {
		rev := q.Get("Revision")
		if rev == "" || rev == "master" {
			return repo.Files, true
		}
		f, ok := repo.Revisions[rev]
		return f, ok
	}
	switch parts[2] {
	case "revisions":
		data := map[string]any{"RevisionMap": map[string]any{
			"Branches": []msRevision{{Revision: "master", CreatedAt: 1700000000}},
			"Tags":     m.tags(repo),
		}}
		msAnswer(w, http.StatusOK, "", data)
	case "repo/files":
		fs, ok := files()
		if !ok {
			msAnswer(w, http.StatusNotFound, "revision "+q.Get("Revision")+" does not exist", nil)
			return
		}
		var out []msFileEntry
		dirs := map[string]bool{}
		for _, p := range sortedKeys(fs) {
			b := fs[p]
			e := msFileEntry{Name: p[strings.LastIndex(p, "/")+1:], Path: p, Type: "blob", Size: int64(len(b)),
				Revision: GitBlobID([]byte(q.Get("Revision"))), IsLFS: isLFS(p, b)}
			if !repo.NoSha256[p] {
				e.Sha256 = SHA256(b)
			}
			if i := strings.LastIndex(p, "/"); i > 0 && !dirs[p[:i]] {
				dirs[p[:i]] = true
				out = append(out, msFileEntry{Name: p[:i], Path: p[:i], Type: "tree"})
			}
			out = append(out, e)
		}
		msAnswer(w, http.StatusOK, "", map[string]any{"Files": out})
	case "repo":
		fs, ok := files()
		if !ok {
			msAnswer(w, http.StatusNotFound, "revision does not exist", nil)
			return
		}
		p := q.Get("FilePath")
		b, ok := fs[p]
		if !ok {
			msAnswer(w, http.StatusNotFound, "file "+p+" does not exist", nil)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		m.serveBody(w, r, p, bytes.NewReader(b))
	default:
		msAnswer(w, http.StatusNotFound, "not found", nil)
	}
}

func (m *ModelScope) tags(repo *ModelScopeRepo) []msRevision {
	out := []msRevision{}
	for _, name := range sortedKeys(repo.Revisions) {
		out = append(out, msRevision{Revision: name, CreatedAt: 1700000001})
	}
	return out
}

// authorised checks the token (bearer or cookie) and answers 401/403 when
// it is missing or wrong.
func (m *ModelScope) authorised(w http.ResponseWriter, r *http.Request, token string) bool {
	bearer, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	c, err := r.Cookie("m_session_id")
	switch {
	case hasBearer && bearer == token:
		m.byBearer.Add(1)
		if err == nil && c.Value == token {
			m.byCookie.Add(1)
		}
		return true
	case err == nil && c.Value == token:
		m.byCookie.Add(1)
		return true
	case !hasBearer && err != nil:
		msAnswer(w, http.StatusUnauthorized, "please log in: this model is private", nil)
	default:
		msAnswer(w, http.StatusForbidden, "no access to this model", nil)
	}
	return false
}
