package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/halyard-dev/halyard/internal/bench/arrival"
	"github.com/halyard-dev/halyard/internal/bench/client"
	"github.com/halyard-dev/halyard/internal/bench/enginestats"
	"github.com/halyard-dev/halyard/internal/bench/report"
	"github.com/halyard-dev/halyard/internal/bench/stats"
	"github.com/halyard-dev/halyard/internal/bench/workload"
)

// Options configure a live benchmark.
type Options struct {
	// Client sends the requests; its BaseURL is the target.
	Client *client.Client
	// Label names the target in the report; the target URL when empty.
	Label string
	// NewWorkload builds the workload for step i of the run (one step per
	// arrival spec). Steps get different workloads (for example seed+i) so
	// that each starts with cold caches.
	NewWorkload func(step int) (workload.Workload, error)
	// Arrivals holds one spec per step, e.g. a ladder of Poisson rates.
	Arrivals []arrival.Spec
	// MaxRequests caps the requests of each step; 0 sends the whole workload.
	MaxRequests int
	// Duration stops sending new requests this long into each step; requests
	// in flight finish. 0 means no limit.
	Duration time.Duration
	// SLO is what goodput counts against.
	SLO stats.SLO
	// EngineMetrics are the engines' /metrics URLs, scraped before and after
	// each step.
	EngineMetrics []string
	// MetricsHTTP scrapes the engines; http.DefaultClient when nil.
	MetricsHTTP *http.Client
	// ResetPrefixCache are engines' base URLs whose prefix caches are
	// emptied (POST /reset_prefix_cache, as vLLM and halyard sim serve it)
	// before each step, so that every step, and a tenant's run alone after
	// the shared run, starts cold rather than on the prompts the step
	// before sent. A failed reset fails the run: its figures would not be
	// comparable.
	ResetPrefixCache []string
	// Progress receives a progress bar; nil for none.
	Progress io.Writer
	// Log receives structured logs; slog.Default() when nil.
	Log *slog.Logger
	// Tenants split the requests among callers, each request sent with
	// its tenant's client (its API key), drawn by share with Seed; the
	// report then has each tenant's part. Only, when set, sends only that
	// tenant's requests (a run alone, Admission "alone:<name>").
	Tenants []Tenant
	Only    string
	Seed    uint64

	step int // the arrival step running
}

// Tenant is a caller of a live run.
type Tenant struct {
	Name   string
	Share  float64
	Client *client.Client
}

func (o *Options) validate() error {
	switch {
	case o.Client == nil || o.Client.BaseURL == "":
		return errors.New("target: required")
	case o.Client.Model == "":
		return errors.New("model: required")
	case o.NewWorkload == nil:
		return errors.New("workload: required")
	case len(o.Arrivals) == 0:
		return errors.New("arrivals: at least one step required")
	case o.MaxRequests < 0:
		return fmt.Errorf("max requests: must not be negative, got %d", o.MaxRequests)
	case o.Duration < 0:
		return fmt.Errorf("duration: must not be negative, got %v", o.Duration)
	}
	for i, a := range o.Arrivals {
		if err := a.Validate(); err != nil {
			return fmt.Errorf("arrivals[%d]: %w", i, err)
		}
	}
	return nil
}

// Run runs every step against the target and returns one report.Run per
// step. A step's requests that fail are counted, not fatal; Run returns an
// error only when it cannot run at all or ctx ends.
func Run(ctx context.Context, o Options) ([]report.Run, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	label := o.Label
	if label == "" {
		label = o.Client.BaseURL
	}
	var runs []report.Run
	for step, spec := range o.Arrivals {
		w, err := o.NewWorkload(step)
		if err != nil {
			return runs, fmt.Errorf("step %d: workload: %w", step, err)
		}
		w = workload.Head(w, o.MaxRequests)
		if err := resetPrefixCaches(ctx, o.MetricsHTTP, o.ResetPrefixCache); err != nil {
			return runs, fmt.Errorf("step %d: %w", step, err)
		}
		log.Info("bench step starting", "step", step, "arrival", spec.String(), "requests", w.Len(), "target", o.Client.BaseURL)
		o.step = step
		r, err := runStep(ctx, o, w, spec, label)
		if err != nil {
			return runs, fmt.Errorf("step %d (%s): %w", step, spec, err)
		}
		log.Info("bench step done", "step", step, "completed", r.Completed, "failed", r.Failed,
			"request_throughput", r.RequestThroughput, "median_ttft_ms", r.MedianTTFTMs)
		runs = append(runs, r)
	}
	return runs, nil
}

func runStep(ctx context.Context, o Options, w workload.Workload, spec arrival.Spec, label string) (report.Run, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	sched, err := arrival.Schedule(spec, w)
	if err != nil {
		return report.Run{}, err
	}
	var before []enginestats.Counters
	if len(o.EngineMetrics) > 0 {
		before, err = enginestats.ScrapeAll(ctx, o.MetricsHTTP, o.EngineMetrics)
		if err != nil {
			log.Warn("engine metrics before the run; engines not read are reported unknown and left out of the imbalance", "err", err)
		}
	}

	n := w.Len()
	prev := workload.PreviousTurns(w)
	done := make([]chan struct{}, n)
	for i := range done {
		done[i] = make(chan struct{})
	}
	records := make([]stats.Record, n)
	sent := make([]bool, n)
	shares := make([]float64, len(o.Tenants))
	for i, t := range o.Tenants {
		shares[i] = t.Share
	}
	tenantOf := workload.AssignTenants(shares, o.Seed, o.step, n)
	bar := newBar(o.Progress, n, label, spec)
	var outTokens atomic.Int64

	start := time.Now()
	var deadline time.Time
	if o.Duration > 0 {
		deadline = start.Add(o.Duration)
	}
	expired := func() bool { return !deadline.IsZero() && time.Now().After(deadline) }

	send := func(i int) {
		defer close(done[i])
		if p := prev[i]; p >= 0 {
			select {
			case <-done[p]:
			case <-ctx.Done():
				return
			}
			if !sent[p] || !records[p].OK() {
				return // the conversation broke off
			}
		}
		if ctx.Err() != nil || expired() {
			return
		}
		req := w.Request(i)
		cl, tenant := o.Client, ""
		if tenantOf != nil {
			t := o.Tenants[tenantOf[i]]
			if o.Only != "" && t.Name != o.Only {
				return
			}
			cl, tenant = t.Client, t.Name
		}
		at := time.Since(start)
		rec := cl.Do(ctx, req)
		rec.Start = at
		rec.Tenant = tenant
		records[i] = rec
		sent[i] = true
		outTokens.Add(int64(rec.OutputTokens))
		if bar != nil {
			el := time.Since(start).Seconds()
			bar.Describe(fmt.Sprintf("%s %s  %.0f tok/s", label, spec, float64(outTokens.Load())/max(el, 1e-3)))
			_ = bar.Add(1)
		}
	}

	var wg sync.WaitGroup
	if sched == nil { // closed loop
		var next atomic.Int64
		for range spec.Concurrency {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= n {
						return
					}
					send(i)
				}
			})
		}
	} else {
		timer := time.NewTimer(0)
		<-timer.C
	dispatch:
		for i := range n {
			if wait := time.Until(start.Add(sched[i])); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					timer.Stop()
					// Requests not dispatched yet are left unsent.
					for j := i; j < n; j++ {
						close(done[j])
					}
					break dispatch
				}
			}
			if expired() {
				for j := i; j < n; j++ {
					close(done[j])
				}
				break
			}
			wg.Go(func() { send(i) })
		}
	}
	dispatchEnd := time.Since(start)
	if o.Duration > 0 && dispatchEnd > o.Duration {
		dispatchEnd = o.Duration
	}
	wg.Wait()
	if bar != nil {
		_ = bar.Finish()
	}
	if err := ctx.Err(); err != nil {
		return report.Run{}, err
	}

	var recs []stats.Record
	end := dispatchEnd // an open-loop run lasts at least until its last arrival
	if sched == nil {
		end = 0
	}
	for i := range records {
		if !sent[i] {
			continue
		}
		recs = append(recs, records[i])
		end = max(end, records[i].Start+records[i].E2E)
	}
	if unsent := n - len(recs); unsent > 0 {
		log.Info("requests not sent", "count", unsent, "reason", "duration limit or broken conversation")
	}
	sum := stats.Summarize(recs, end, o.SLO)
	r := report.NewRun(label, sum)
	r.Target = o.Client.BaseURL
	if tenantOf != nil {
		r.Tenants = report.TenantRuns(recs, o.SLO)
		if o.Only != "" {
			r.Admission = "alone:" + o.Only
		}
	}
	r.Arrival = spec.String()
	if spec.Kind == arrival.Poisson {
		r.SetRate(spec.Rate)
	}
	if spec.Kind == arrival.Concurrency {
		r.MaxConcurrency = spec.Concurrency
	}
	r.WallSeconds = time.Since(start).Seconds()
	if msg := r.ITLWarning(); msg != "" {
		log.Warn("inter-token latency not observable", "run", label, "arrival", spec.String(), "detail", msg)
	}
	if len(o.EngineMetrics) > 0 {
		after, err := enginestats.ScrapeAll(ctx, o.MetricsHTTP, o.EngineMetrics)
		if err != nil {
			log.Warn("engine metrics after the run; engines not read are reported unknown and left out of the imbalance", "err", err)
		}
		r.SetEngines(enginestats.Delta(o.EngineMetrics, before, after))
	}
	return r, nil
}

func newBar(w io.Writer, n int, label string, spec arrival.Spec) *progressbar.ProgressBar {
	if w == nil {
		return nil
	}
	return progressbar.NewOptions(n,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(fmt.Sprintf("%s %s", label, spec)),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("req"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionClearOnFinish(),
	)
}

// Rates returns one Poisson spec per rate of a ladder, each with its own
// seed; a non-positive rate means all at once.
func Rates(list []float64, seed uint64) []arrival.Spec {
	out := make([]arrival.Spec, len(list))
	for i, r := range list {
		if r <= 0 || math.IsNaN(r) {
			r = math.Inf(1)
		}
		out[i] = arrival.Spec{Kind: arrival.Poisson, Rate: r, Seed: seed + uint64(i)}
	}
	return out
}

// resetPrefixCaches empties each engine's prefix cache (POST
// /reset_prefix_cache on its base URL).
func resetPrefixCaches(ctx context.Context, hc *http.Client, engines []string) error {
	if hc == nil {
		hc = http.DefaultClient
	}
	for _, base := range engines {
		url := strings.TrimSuffix(base, "/") + "/reset_prefix_cache"
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		if err != nil {
			return fmt.Errorf("reset prefix cache: %w", err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("reset prefix cache: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("reset prefix cache: POST %s: %s", url, resp.Status)
		}
	}
	return nil
}
