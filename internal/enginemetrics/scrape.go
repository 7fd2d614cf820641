package enginemetrics

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Scraper fetches an engine's /metrics and parses it. Its zero value uses
// http.DefaultClient.
type Scraper struct {
	// Client is the HTTP client; nil means http.DefaultClient.
	Client *http.Client
	// Now stamps snapshots; nil means time.Now.
	Now func() time.Time
}

// Scrape fetches baseURL + "/metrics" and returns a new snapshot.
func (s *Scraper) Scrape(ctx context.Context, baseURL string) (*framework.Metrics, error) {
	c := s.Client
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(baseURL, "/")+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", baseURL, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", baseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("scrape %s: status %s", baseURL, resp.Status)
	}
	m := &framework.Metrics{}
	if err := Parse(resp.Body, m); err != nil {
		return nil, fmt.Errorf("scrape %s: %w", baseURL, err)
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	m.UpdateTime = now()
	return m, nil
}
