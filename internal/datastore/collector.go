package datastore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/simclock"
)

// Scraper fetches one engine's metrics. enginemetrics.Scraper implements it.
type Scraper interface {
	Scrape(ctx context.Context, baseURL string) (*framework.Metrics, error)
}

// Prober checks that an engine is ready to serve: vLLM and SGLang answer
// GET /health with 200 once ready and 503 before (or when failed), while
// their /metrics already answers.
type Prober interface {
	Probe(ctx context.Context, baseURL string) error
}

// Collector scrapes every endpoint of a Store on an interval, publishes the
// snapshots and tracks health. A slow endpoint delays only its own scrapes.
type Collector struct {
	Store   *Store
	Scraper Scraper
	// Prober, if set, is asked before every scrape; an endpoint that fails
	// it is not scraped and the check counts as failed.
	Prober Prober
	// Interval between scrapes of one endpoint.
	Interval time.Duration
	// Timeout bounds one scrape.
	Timeout time.Duration
	Health  HealthPolicy
	// Clock times the loop; nil means the real clock.
	Clock simclock.Clock
	Log   *slog.Logger
	// OnHealthChange, if set, is called when an endpoint goes in or out.
	OnHealthChange func(e *Endpoint, healthy bool)

	mu       sync.Mutex
	inFlight map[*Endpoint]bool
}

// Run scrapes until ctx is done. It scrapes once at once, so endpoints
// become healthy without waiting a whole interval.
func (c *Collector) Run(ctx context.Context) error {
	clock := c.Clock
	if clock == nil {
		clock = simclock.Real{}
	}
	tick := make(chan struct{}, 1)
	for {
		c.scrapeAll(ctx, false)
		t := clock.AfterFunc(c.Interval, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-tick:
		}
	}
}

// ScrapeOnce scrapes every endpoint and waits for the results.
func (c *Collector) ScrapeOnce(ctx context.Context) { c.scrapeAll(ctx, true) }

func (c *Collector) scrapeAll(ctx context.Context, wait bool) {
	var wg sync.WaitGroup
	for _, e := range c.Store.All() {
		c.mu.Lock()
		if c.inFlight == nil {
			c.inFlight = map[*Endpoint]bool{}
		}
		busy := c.inFlight[e]
		c.inFlight[e] = true
		c.mu.Unlock()
		if busy {
			continue
		}
		wg.Go(func() {
			c.scrape(ctx, e)
			c.mu.Lock()
			delete(c.inFlight, e)
			c.mu.Unlock()
		})
	}
	if wait {
		wg.Wait()
	}
}

func (c *Collector) scrape(ctx context.Context, e *Endpoint) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	if c.Prober != nil {
		pctx, pcancel := context.WithTimeout(ctx, timeout)
		err := c.Prober.Probe(pctx, e.md.Address)
		pcancel()
		if ctx.Err() != nil {
			return // shutting down: not the endpoint's fault
		}
		if err != nil {
			c.ReportFailure(e, fmt.Errorf("health probe: %w", err))
			return
		}
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := c.Scraper.Scrape(sctx, e.md.Address)
	if ctx.Err() != nil {
		return // shutting down: not the endpoint's fault
	}
	if err != nil {
		c.ReportFailure(e, err)
		return
	}
	e.SetMetrics(m)
	if e.ObserveSuccess(c.Health) {
		c.logger().Info("endpoint healthy", "endpoint", e.md.Name)
		c.changed(e, true)
	}
}

// ReportFailure records a connection error seen while proxying, so that a
// dead endpoint leaves rotation without waiting for scrapes.
func (c *Collector) ReportFailure(e *Endpoint, err error) {
	if e.ObserveFailure(c.Health, err) {
		c.logger().Warn("endpoint unhealthy", "endpoint", e.md.Name, "error", err)
		c.changed(e, false)
	}
}

func (c *Collector) changed(e *Endpoint, healthy bool) {
	if c.OnHealthChange != nil {
		c.OnHealthChange(e, healthy)
	}
}

func (c *Collector) logger() *slog.Logger {
	if c.Log == nil {
		return slog.Default()
	}
	return c.Log
}
