package hubtest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Dfdaemon is a stand-in for the HTTP proxy of Dragonfly's dfdaemon, as the
// Dragonfly client documents it: a forward proxy (absolute-form request
// URLs); a request with X-Dragonfly-Use-P2P: true is a P2P task whose id is
// the URL without the filtered query parameters
// (X-Dragonfly-Filtered-Query-Params, default the S3 signature
// parameters), the tag (X-Dragonfly-Tag) and the application
// (X-Dragonfly-Application). The first request of a task downloads it
// from the origin (following redirects, as a seed peer's back-to-source
// does); later requests and preheated tasks are served from the stand-in's
// store, which stands for the pieces peers share. Other requests are
// forwarded. With Fail set it answers 500 with X-Dragonfly-Error-Type:
// dfdaemon, as the daemon does for its own failures.
//
// It is one process for the whole "cluster": the P2P exchange between
// peers is not modelled, only what reaches the origin.
type Dfdaemon struct {
	// URL is the proxy's address, for --dragonfly-proxy.
	URL string
	// Fail makes every P2P request fail with a dfdaemon error.
	Fail atomic.Bool
	// Origin is the client the stand-in reaches origins with (default
	// http.DefaultClient); a test with a TLS origin gives the one that
	// trusts it.
	Origin *http.Client
	// CAPEM is the CA (PEM) of the certificates the proxy presents inside
	// CONNECT tunnels, for --dragonfly-ca-file.
	CAPEM []byte

	ca *mitmCA

	srv         *httptest.Server
	mu          sync.Mutex
	tasks       map[string][]byte
	originBytes atomic.Int64
	p2p         atomic.Int64
	headers     []http.Header
}

// NewDfdaemon starts a dfdaemon proxy stand-in.
func NewDfdaemon() *Dfdaemon {
	d := &Dfdaemon{tasks: map[string][]byte{}}
	ca, err := newMITMCA()
	if err != nil {
		panic("dfdaemon stand-in CA: " + err.Error())
	}
	d.ca, d.CAPEM = ca, ca.pem
	d.srv = httptest.NewServer(http.HandlerFunc(d.serve))
	d.URL = d.srv.URL
	return d
}

// Close stops it.
func (d *Dfdaemon) Close() { d.srv.Close() }

// OriginBytes is the body bytes the stand-in pulled from origins.
func (d *Dfdaemon) OriginBytes() int64 { return d.originBytes.Load() }

// P2PRequests counts requests served as P2P tasks.
func (d *Dfdaemon) P2PRequests() int64 { return d.p2p.Load() }

// Headers returns the Dragonfly headers of the P2P requests seen.
func (d *Dfdaemon) Headers() []http.Header {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]http.Header(nil), d.headers...)
}

var defaultFiltered = []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
	"X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-User-Agent"}

// TaskKey is the stand-in's task id: the URL without the filtered query
// parameters, the tag and the application.
func TaskKey(raw, tag, application string, filtered []string) string {
	if filtered == nil {
		filtered = defaultFiltered
	}
	u, err := url.Parse(raw)
	if err != nil {
		return raw + "|" + tag + "|" + application
	}
	q := u.Query()
	for _, f := range filtered {
		q.Del(f)
	}
	u.RawQuery = q.Encode()
	return u.String() + "|" + tag + "|" + application
}

func (d *Dfdaemon) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		// https: TLS terminated with the stand-in's CA, the requests in
		// the tunnel handled as plain proxy requests.
		d.ca.connect(w, r, d.serve)
		return
	}
	if !r.URL.IsAbs() {
		http.Error(w, "not a proxy request", http.StatusBadRequest)
		return
	}
	if !strings.EqualFold(r.Header.Get("X-Dragonfly-Use-P2P"), "true") {
		d.forward(w, r)
		return
	}
	d.p2p.Add(1)
	d.mu.Lock()
	d.headers = append(d.headers, r.Header.Clone())
	d.mu.Unlock()
	if d.Fail.Load() {
		w.Header().Set("X-Dragonfly-Error-Type", "dfdaemon")
		http.Error(w, "stand-in dfdaemon failure", http.StatusInternalServerError)
		return
	}
	var filtered []string
	if v := r.Header.Get("X-Dragonfly-Filtered-Query-Params"); v != "" {
		for _, f := range strings.Split(v, ",") {
			filtered = append(filtered, strings.TrimSpace(f))
		}
	}
	key := TaskKey(r.URL.String(), r.Header.Get("X-Dragonfly-Tag"), r.Header.Get("X-Dragonfly-Application"), filtered)
	b, status, err := d.task(key, r.URL.String(), r.Header)
	if err != nil {
		w.Header().Set("X-Dragonfly-Error-Type", "backend")
		http.Error(w, err.Error(), status)
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

// task returns key's content, downloading it from the origin the first
// time (concurrent first requests of one task download once).
func (d *Dfdaemon) task(key, u string, h http.Header) ([]byte, int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if b, ok := d.tasks[key]; ok {
		return b, http.StatusOK, nil
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	if a := h.Get("Authorization"); a != "" {
		req.Header.Set("Authorization", a)
	}
	resp, err := d.client().Do(req)
	if err != nil {
		return nil, http.StatusBadGateway, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, http.StatusBadGateway, err
	}
	d.originBytes.Add(int64(len(b)))
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, &originError{status: resp.StatusCode}
	}
	d.tasks[key] = b
	return b, http.StatusOK, nil
}

func (d *Dfdaemon) client() *http.Client {
	if d.Origin != nil && d.Origin.Transport != nil {
		return d.Origin
	}
	return &http.Client{Transport: http.DefaultTransport}
}

type originError struct{ status int }

func (e *originError) Error() string { return "origin answered " + strconv.Itoa(e.status) }

// Preheat downloads urls as tasks with tag and application, as a seed
// peer does for a preheat job.
func (d *Dfdaemon) Preheat(urls []string, tag, application string) error {
	for _, u := range urls {
		if _, _, err := d.task(TaskKey(u, tag, application, nil), u, nil); err != nil {
			return err
		}
	}
	return nil
}

func (d *Dfdaemon) forward(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, r.URL.String(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := d.client().Transport.RoundTrip(req)
	if err != nil {
		w.Header().Set("X-Dragonfly-Error-Type", "proxy")
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	n, _ := io.Copy(w, resp.Body)
	d.originBytes.Add(n)
}

// Manager is a stand-in for the Dragonfly manager's Open API job endpoints
// (POST /oapi/v1/jobs with type preheat, GET /oapi/v1/jobs/{id}) with a
// personal access token. A job answers PENDING for a number of reads
// (SetPolls), then runs the preheat on a seed (SetSeed, when set) and
// answers SUCCESS, or FAILURE when that fails or SetFail(true) was called.
type Manager struct {
	URL   string
	Token string

	srv   *httptest.Server
	mu    sync.Mutex
	jobs  []ManagerJob
	polls int
	fail  bool
	seed  *Dfdaemon
	onEnd func(ManagerJob)
}

// SetPolls sets how many reads a job answers PENDING.
func (m *Manager) SetPolls(n int) { m.mu.Lock(); m.polls = n; m.mu.Unlock() }

// SetFail makes jobs that end from now on fail.
func (m *Manager) SetFail(fail bool) { m.mu.Lock(); m.fail = fail; m.mu.Unlock() }

// SetSeed makes ending jobs preheat their URLs into d.
func (m *Manager) SetSeed(d *Dfdaemon) { m.mu.Lock(); m.seed = d; m.mu.Unlock() }

// SetOnEnd makes f run when a job ends (its preheat done), before any
// client is told so: what f observes happened before anyone could act on
// the job's end. f runs with the manager locked; it must not call it.
func (m *Manager) SetOnEnd(f func(ManagerJob)) { m.mu.Lock(); m.onEnd = f; m.mu.Unlock() }

// ManagerJob is a created job.
type ManagerJob struct {
	ID   int64
	Args map[string]any
	// Created and Ended are when the job was created and when it ended
	// (zero while it runs).
	Created, Ended time.Time
	// State is PENDING, SUCCESS or FAILURE.
	State string
	reads int
	done  string
}

// NewManager starts a manager stand-in.
func NewManager(token string) *Manager {
	m := &Manager{Token: token}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	m.URL = m.srv.URL
	return m
}

// Close stops it.
func (m *Manager) Close() { m.srv.Close() }

// Jobs returns the jobs created so far.
func (m *Manager) Jobs() []ManagerJob {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]ManagerJob(nil), m.jobs...)
}

// URLs returns a job's args.urls, sorted.
func (j ManagerJob) URLs() []string {
	raw, _ := j.Args["urls"].([]any)
	out := make([]string, 0, len(raw))
	for _, u := range raw {
		if s, ok := u.(string); ok {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func (m *Manager) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+m.Token {
		http.Error(w, `{"message":"unauthorized"}`, http.StatusUnauthorized)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/oapi/v1/jobs":
		var body struct {
			Type string         `json:"type"`
			Args map[string]any `json:"args"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Type != "preheat" {
			http.Error(w, `{"message":"bad request"}`, http.StatusBadRequest)
			return
		}
		j := ManagerJob{ID: int64(len(m.jobs) + 1), Args: body.Args, Created: time.Now(), State: "PENDING"}
		m.jobs = append(m.jobs, j)
		_ = json.NewEncoder(w).Encode(map[string]any{"id": j.ID, "type": "preheat", "state": "PENDING"})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/oapi/v1/jobs/"):
		id, _ := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/oapi/v1/jobs/"), 10, 64)
		if id < 1 || int(id) > len(m.jobs) {
			http.NotFound(w, r)
			return
		}
		j := &m.jobs[id-1]
		j.reads++
		state := "PENDING"
		if j.reads > m.polls {
			if j.done == "" {
				j.done = "SUCCESS"
				if m.fail {
					j.done = "FAILURE"
				} else if m.seed != nil {
					tag, _ := j.Args["tag"].(string)
					app, _ := j.Args["application"].(string)
					if err := m.seed.Preheat(j.URLs(), tag, app); err != nil {
						j.done = "FAILURE"
					}
				}
				j.State, j.Ended = j.done, time.Now()
				if m.onEnd != nil {
					m.onEnd(*j)
				}
			}
			state = j.done
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "type": "preheat", "state": state})
	default:
		http.NotFound(w, r)
	}
}
