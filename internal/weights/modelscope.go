package weights

import (
	"context"
	"crypto/sha1" //nolint:gosec // a content id for the snapshot directory, not security
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The ModelScope hub protocol, as ModelScope's own clients (the modelscope
// and modelscope_hub Python packages) use it:
//
//	GET {endpoint}/api/v1/models/{owner}/{name}/revisions
//	    → {"Code":200,"Data":{"RevisionMap":{"Branches":[{"Revision":"master",...}],"Tags":[...]}}}
//	GET {endpoint}/api/v1/models/{owner}/{name}/repo/files?Revision={rev}&Recursive=True
//	    → {"Code":200,"Data":{"Files":[{"Name","Path","Type":"blob"|"tree","Size","Sha256","Revision"}...]}}
//	GET {endpoint}/api/v1/models/{owner}/{name}/repo?Revision={rev}&FilePath={path}
//	    → the file's bytes, with Range for resume
//
// The endpoint is MODELSCOPE_ENDPOINT, else the deprecated MODELSCOPE_DOMAIN
// (https:// added to a bare domain), else https://www.modelscope.cn. The
// access token (MODELSCOPE_API_TOKEN) goes to the endpoint's host only, both
// as "Authorization: Bearer" and as the m_session_id cookie, as
// modelscope_hub sends it (the older endpoints read the cookie). The default
// revision is the branch master; a revision must be one of the repository's
// branches or tags, as the client checks, or a 40-hex commit.
//
// ModelScope's own cache (models/{owner}/{name}/...) is not what vLLM or
// SGLang read offline; the files are laid out as the Hugging Face hub cache
// instead, under the same models--{owner}--{name} as an hf source, so the
// engines load them with HF_HUB_CACHE and HF_HUB_OFFLINE=1 unchanged:
// blobs/{sha256} (a file without a Sha256 gets a 40-hex id from its path,
// size and revision, and is checked by size only), snapshots/{id}/{path},
// refs/{revision} holding {id}, and refs/main as well for master (the
// default branch the engines ask for). A branch names no commit in this
// API, so {id} is the revision itself when it is a 40-hex commit, else the
// sha1 of the listing's paths, sizes and hashes: the same files give the same
// snapshot, and a moved branch gives a new one beside the old.

// DefaultModelScopeEndpoint is the public ModelScope hub.
const DefaultModelScopeEndpoint = "https://www.modelscope.cn"

// modelScopeDefaultRevision is the branch ModelScope's client uses when none
// is given.
const modelScopeDefaultRevision = "master"

// ModelScopeEndpoint returns the endpoint ModelScope's client would use,
// from the values of MODELSCOPE_ENDPOINT and MODELSCOPE_DOMAIN.
func ModelScopeEndpoint(endpoint, domain string) string {
	ep := strings.TrimSpace(endpoint)
	if ep == "" {
		ep = strings.TrimSpace(domain)
	}
	if ep == "" {
		return DefaultModelScopeEndpoint
	}
	if !strings.HasPrefix(ep, "http://") && !strings.HasPrefix(ep, "https://") {
		ep = "https://" + ep
	}
	return strings.TrimSuffix(ep, "/")
}

// msEnvelope is ModelScope's answer envelope.
type msEnvelope struct {
	Code    json.RawMessage `json:"Code"`
	Message string          `json:"Message"`
	Success *bool           `json:"Success"`
	Data    json.RawMessage `json:"Data"`
}

// msFile is one entry of the repo/files listing.
type msFile struct {
	Name     string `json:"Name"`
	Path     string `json:"Path"`
	Type     string `json:"Type"`
	Size     int64  `json:"Size"`
	Sha256   string `json:"Sha256"`
	Revision string `json:"Revision"`
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

func planModelScope(ctx context.Context, src Source, opts Options) (*plan, error) {
	ep := ModelScopeEndpoint(opts.ModelScopeEndpoint, "")
	authHost := hostOf(ep)
	rev := opts.Revision
	if rev == "" {
		rev = src.Revision
	}
	if rev == "" {
		rev = modelScopeDefaultRevision
	}
	opts.Client = withSessionCookie(opts.Client, authHost, opts.Token)
	api := ep + "/api/v1/models/" + src.Repo
	if !commitID.MatchString(rev) {
		if err := checkModelScopeRevision(ctx, opts, api, authHost, rev); err != nil {
			return nil, err
		}
	}
	q := url.Values{"Revision": {rev}, "Recursive": {"True"}}
	var listing struct {
		Files []msFile `json:"Files"`
	}
	if err := getModelScope(ctx, opts, api+"/repo/files?"+q.Encode(), authHost, &listing); err != nil {
		return nil, fmt.Errorf("files of %s@%s: %w", src.Repo, rev, err)
	}
	files := listing.Files[:0]
	for _, f := range listing.Files {
		if f.Type == "tree" {
			continue
		}
		if f.Path == "" {
			f.Path = f.Name
		}
		if !safeRelPath(f.Path) {
			return nil, fmt.Errorf("unsafe path %q in the listing", f.Path)
		}
		if f.Size < 0 {
			return nil, fmt.Errorf("%s: negative size in the listing", f.Path)
		}
		f.Sha256 = strings.ToLower(f.Sha256)
		files = append(files, f)
	}
	slices.SortFunc(files, func(a, b msFile) int { return strings.Compare(a.Path, b.Path) })
	snapID := rev
	if !commitID.MatchString(rev) {
		snapID = modelScopeSnapshotID(files)
	}

	getter := newFileGetter(opts)
	if getter.peer != nil {
		getter.peer = withSessionCookie(getter.peer, authHost, opts.Token)
	}
	l := newHubLayout(opts, src, snapID, authHost, getter)
	match := newMatcher(opts.Include, opts.Exclude)
	for _, f := range files {
		if !match.match(f.Path) || f.Path == ".gitattributes" || f.Path == ".gitignore" {
			continue
		}
		fq := url.Values{"Revision": {rev}, "FilePath": {f.Path}}
		t := fileTask{Name: f.Path, Size: f.Size}
		blobID := f.Sha256
		if sha256Hex.MatchString(blobID) {
			t.Digest, t.Want = sha256Digest, blobID
		} else {
			blobID = pseudoBlobID(f)
		}
		if err := l.add(t, blobID, api+"/repo?"+fq.Encode()); err != nil {
			return nil, err
		}
	}
	if rev == modelScopeDefaultRevision {
		// The engines ask the Hugging Face cache for main.
		return l.done(rev, "main")
	}
	return l.done(rev)
}

// checkModelScopeRevision fails with ErrNotFound unless rev is one of the
// repository's branches or tags.
func checkModelScopeRevision(ctx context.Context, opts Options, api, authHost, rev string) error {
	var revs struct {
		RevisionMap struct {
			Branches, Tags []struct {
				Revision string `json:"Revision"`
			}
		} `json:"RevisionMap"`
	}
	if err := getModelScope(ctx, opts, api+"/revisions", authHost, &revs); err != nil {
		return fmt.Errorf("revisions: %w", err)
	}
	var names []string
	for _, r := range append(revs.RevisionMap.Branches, revs.RevisionMap.Tags...) {
		if r.Revision == rev {
			return nil
		}
		names = append(names, r.Revision)
	}
	return fmt.Errorf("revision %s: %w (the repository has %s)", rev, ErrNotFound, strings.Join(names, ", "))
}

// getModelScope GETs u and decodes the envelope's Data into v.
func getModelScope(ctx context.Context, opts Options, u, authHost string, v any) error {
	var env msEnvelope
	if err := getJSON(ctx, opts, u, authHost, &env, nil); err != nil {
		return err
	}
	return env.data(v)
}

// data checks the envelope (a Code other than 200, or Success false, is an
// error, 401/403/404 as the sentinels) and decodes Data into v.
func (env msEnvelope) data(v any) error {
	code := 200
	if len(env.Code) > 0 && string(env.Code) != "null" {
		// Code is a number, or a number in a string.
		s := strings.Trim(string(env.Code), `"`)
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("modelscope answered code %.40q", s)
		}
		code = n
	}
	if code != 200 || (env.Success != nil && !*env.Success) {
		var err error
		switch code {
		case http.StatusUnauthorized:
			err = ErrUnauthorized
		case http.StatusForbidden:
			err = ErrForbidden
		case http.StatusNotFound:
			err = ErrNotFound
		default:
			err = fmt.Errorf("modelscope answered code %d", code)
		}
		if env.Message != "" {
			return fmt.Errorf("%w: %.200s", err, env.Message)
		}
		return err
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return errors.New("modelscope answered no Data")
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		return fmt.Errorf("modelscope Data: %w", err)
	}
	return nil
}

// modelScopeSnapshotID is the sha1 of the listing's paths, sizes, hashes and
// file revisions, sorted by path.
func modelScopeSnapshotID(files []msFile) string {
	h := sha1.New() //nolint:gosec // see import
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00%s\x00%s\n", f.Path, f.Size, f.Sha256, f.Revision)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// pseudoBlobID names the blob of a file the listing gives no Sha256 for.
func pseudoBlobID(f msFile) string {
	h := sha1.New() //nolint:gosec // see import
	fmt.Fprintf(h, "modelscope\x00%s\x00%d\x00%s", f.Path, f.Size, f.Revision)
	return hex.EncodeToString(h.Sum(nil))
}

// withSessionCookie returns c sending the m_session_id cookie with token to
// host (only), or c itself when token is empty.
func withSessionCookie(c *http.Client, host, token string) *http.Client {
	if token == "" || c == nil {
		return c
	}
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cl := *c
	cl.Transport = &sessionCookie{base: base, host: host, cookie: (&http.Cookie{Name: "m_session_id", Value: token}).String()}
	return &cl
}

type sessionCookie struct {
	base   http.RoundTripper
	host   string
	cookie string
}

func (s *sessionCookie) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != s.host {
		return s.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Add("Cookie", s.cookie)
	return s.base.RoundTrip(r)
}
