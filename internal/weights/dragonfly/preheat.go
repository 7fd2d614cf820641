package dragonfly

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Manager is a Dragonfly manager's Open API.
type Manager struct {
	// URL is the manager's base URL, e.g. http://dragonfly-manager:8080.
	URL string
	// Token is a personal access token with the "job" scope.
	Token string
	// Client is the HTTP client; default http.DefaultClient.
	Client *http.Client
}

// PreheatArgs are the "args" of a preheat job of type "file".
type PreheatArgs struct {
	// URLs are the files to preheat.
	URLs []string `json:"urls"`
	// Scope is single_seed_peer, all_seed_peers (default) or all_peers.
	Scope string `json:"scope,omitempty"`
	// Tag, Application and FilteredQueryParams must equal the fetch's, or
	// the task IDs differ.
	Tag                 string            `json:"tag,omitempty"`
	Application         string            `json:"application,omitempty"`
	FilteredQueryParams string            `json:"filteredQueryParams,omitempty"`
	Headers             map[string]string `json:"headers,omitempty"`
	PieceLength         int64             `json:"piece_length,omitempty"`
}

// Job is a manager job as the API returns it.
type Job struct {
	ID     int64           `json:"id"`
	TaskID string          `json:"task_id"`
	Type   string          `json:"type"`
	State  string          `json:"state"`
	Status string          `json:"status"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Job states.
const (
	StatusPending = "PENDING"
	StatusSuccess = "SUCCESS"
	StatusFailure = "FAILURE"
)

// ErrPreheatFailed: the manager reports the job failed.
var ErrPreheatFailed = errors.New("dragonfly preheat failed")

func (j *Job) status() string {
	if j.Status != "" {
		return strings.ToUpper(j.Status)
	}
	return strings.ToUpper(j.State)
}

// Done reports that the job ended, successfully or not.
func (j *Job) Done() bool { s := j.status(); return s == StatusSuccess || s == StatusFailure }

// Succeeded reports a successful end.
func (j *Job) Succeeded() bool { return j.status() == StatusSuccess }

// Preheat creates a preheat job for args on the given scheduler clusters
// (all when empty).
func (m Manager) Preheat(ctx context.Context, args PreheatArgs, schedulerClusterIDs ...int64) (*Job, error) {
	if len(args.URLs) == 0 {
		return nil, errors.New("preheat: no URL")
	}
	if args.Scope == "" {
		args.Scope = "all_seed_peers"
	}
	body := map[string]any{"type": "preheat", "args": map[string]any{}}
	a, _ := json.Marshal(args)
	var am map[string]any
	_ = json.Unmarshal(a, &am)
	am["type"] = "file"
	body["args"] = am
	if len(schedulerClusterIDs) > 0 {
		body["scheduler_cluster_ids"] = schedulerClusterIDs
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	var j Job
	if err := m.do(ctx, http.MethodPost, "/oapi/v1/jobs", b, &j); err != nil {
		return nil, fmt.Errorf("preheat: %w", err)
	}
	return &j, nil
}

// Job returns job id.
func (m Manager) Job(ctx context.Context, id int64) (*Job, error) {
	var j Job
	if err := m.do(ctx, http.MethodGet, "/oapi/v1/jobs/"+strconv.FormatInt(id, 10), nil, &j); err != nil {
		return nil, fmt.Errorf("preheat job %d: %w", id, err)
	}
	return &j, nil
}

// Wait polls job id every interval until it ends or ctx does; progress,
// when not nil, sees each answer.
func (m Manager) Wait(ctx context.Context, id int64, interval time.Duration, progress func(*Job)) (*Job, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		j, err := m.Job(ctx, id)
		if err != nil {
			return nil, err
		}
		if progress != nil {
			progress(j)
		}
		if j.Done() {
			if !j.Succeeded() {
				return j, fmt.Errorf("%w: job %d: %s", ErrPreheatFailed, id, j.Result)
			}
			return j, nil
		}
		select {
		case <-ctx.Done():
			return j, fmt.Errorf("preheat job %d: %w", id, ctx.Err())
		case <-t.C:
		}
	}
}

func (m Manager) do(ctx context.Context, method, path string, body []byte, out any) error {
	c := m.Client
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(m.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if m.Token != "" {
		req.Header.Set("Authorization", "Bearer "+m.Token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

// HubURLs are the resolve URLs halyard fetch requests for files of repo at
// commit from endpoint: the URLs to preheat for a fetch through Dragonfly.
func HubURLs(endpoint, repo, commit string, files []string) []string {
	out := make([]string, 0, len(files))
	for _, f := range files {
		parts := strings.Split(f, "/")
		for i, p := range parts {
			parts[i] = url.PathEscape(p)
		}
		out = append(out, strings.TrimSuffix(endpoint, "/")+"/"+repo+"/resolve/"+commit+"/"+strings.Join(parts, "/"))
	}
	return out
}
