package router

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/halyard-dev/halyard/internal/datastore"
)

// httpProber checks an engine's readiness with GET baseURL+path: 200 is
// ready, anything else (vLLM's and SGLang's 503 while loading or failed) is
// not. One small request per endpoint per scrape interval.
type httpProber struct {
	client *http.Client
	path   string
}

var _ datastore.Prober = httpProber{}

func (p httpProber) Probe(ctx context.Context, baseURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+p.path, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // keep the connection reusable
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s answered %d", p.path, resp.StatusCode)
	}
	return nil
}
