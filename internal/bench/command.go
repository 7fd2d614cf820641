package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/halyard-dev/halyard/internal/bench/arrival"
	"github.com/halyard-dev/halyard/internal/bench/client"
	"github.com/halyard-dev/halyard/internal/bench/report"
	"github.com/halyard-dev/halyard/internal/bench/stats"
	"github.com/halyard-dev/halyard/internal/bench/virtual"
	"github.com/halyard-dev/halyard/internal/bench/workload"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/predictedlatency"
)

// Command holds the options of `halyard bench` as the CLI parsed them.
type Command struct {
	// Targets are the OpenAI-compatible base URLs to compare (live mode);
	// each runs every arrival step in turn, with the same requests.
	Targets []string
	Model   string
	// API is "chat" or "completions".
	API       string
	APIKey    string
	IgnoreEOS bool
	// Labels name the targets in the report and plots, by position
	// (default the URL).
	Labels []string

	Workload workload.Spec

	// Rate is one Poisson rate in requests/s (0 or +Inf: all at once);
	// Rates a ladder of them; Concurrency a closed loop; TraceArrivals
	// replays the trace's timestamps (the default for trace workloads when
	// no rate or concurrency is given), sped up by TimeScale.
	Rate          float64
	Rates         string
	Concurrency   int
	TraceArrivals bool
	TimeScale     float64

	MaxRequests    int
	Duration       time.Duration
	RequestTimeout time.Duration
	Seed           uint64
	SLO            string
	// SLOHeaders makes every request declare the SLO's TTFT and TPOT
	// objectives in the x-halyard-slo-* headers (in virtual mode, the
	// scenario's sloHeaders).
	SLOHeaders    bool
	EngineMetrics []string
	// ResetPrefixCache are engines' base URLs whose prefix caches are
	// emptied before each step (Options.ResetPrefixCache).
	ResetPrefixCache []string

	// Out is the JSON report path ("" for none); Plots a directory for PNG
	// plots ("" for none).
	Out   string
	Plots string
	// Simulate is a virtual-time scenario file; when set, live flags other
	// than the outputs are ignored.
	Simulate string
	// Policies overrides the scenario's policies (virtual mode).
	Policies []string
	// MaxErrorRate fails the command (after the report is written) when a
	// run's failed fraction exceeds it; a run that sent requests and
	// completed none always fails it. In [0, 1]; the CLI's default is 1,
	// so that only a run where everything failed is fatal.
	MaxErrorRate float64
	// SetFlags are the flags given on the command line, when known: a
	// workload size given explicitly as 0 is an error rather than "the
	// default".
	SetFlags map[string]bool

	// Tenants ("NAME:SHARE[:KEY]") split the requests among callers by
	// share, each sent with its own API key (default APIKey); the report
	// has each tenant's part. Alone names tenants to run once more alone
	// (the others' requests left out), for their TTFT p90 alone.
	Tenants []string
	Alone   []string

	// Progress receives the progress bar (nil: none).
	Progress io.Writer
	Log      *slog.Logger
	// Now gives the report's date; time.Now when nil.
	Now func() time.Time
}

// ParseRates reads a ladder such as "1,2,4,inf".
func ParseRates(s string) ([]float64, error) {
	var out []float64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, err := strconv.ParseFloat(part, 64)
		if err != nil || v <= 0 || math.IsNaN(v) {
			return nil, fmt.Errorf("rates: %q is not a positive number or inf", part)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("rates: empty ladder")
	}
	return out, nil
}

// arrivals turns the arrival flags into one spec per step.
func (c *Command) arrivals(timed bool) ([]arrival.Spec, error) {
	set := 0
	if c.Rate != 0 {
		set++
	}
	if c.Rates != "" {
		set++
	}
	if c.Concurrency != 0 {
		set++
	}
	if c.TraceArrivals {
		set++
	}
	if set > 1 {
		return nil, errors.New("arrivals: give only one of --rate, --rates, --concurrency and --trace-arrivals")
	}
	switch {
	case c.Rates != "":
		rates, err := ParseRates(c.Rates)
		if err != nil {
			return nil, err
		}
		return Rates(rates, c.Seed), nil
	case c.Concurrency != 0:
		s := arrival.Spec{Kind: arrival.Concurrency, Concurrency: c.Concurrency}
		return []arrival.Spec{s}, s.Validate()
	case c.Rate != 0:
		if c.Rate < 0 || math.IsNaN(c.Rate) {
			return nil, fmt.Errorf("rate: must be positive, got %v", c.Rate)
		}
		return Rates([]float64{c.Rate}, c.Seed), nil
	case c.TraceArrivals || timed:
		s := arrival.Spec{Kind: arrival.Trace, TimeScale: c.TimeScale}
		return []arrival.Spec{s}, s.Validate()
	}
	return Rates([]float64{math.Inf(1)}, c.Seed), nil
}

// ErrRunFailed is returned (wrapped) by Command.Run when a run failed
// every request or more than MaxErrorRate of them; the report was written.
var ErrRunFailed = errors.New("too many failed requests")

// validate checks the options that Run would otherwise take silently;
// errors name the flag.
func (c *Command) validate() error {
	for _, f := range []struct {
		flag string
		v    int
	}{
		{"groups", c.Workload.Groups}, {"users-per-group", c.Workload.UsersPerGroup}, {"sessions", c.Workload.Sessions},
		{"system-tokens", c.Workload.SystemTokens}, {"question-tokens", c.Workload.QuestionTokens},
		{"output-tokens", c.Workload.OutputTokens}, {"turns", c.Workload.Turns},
	} {
		if f.v < 0 || (f.v == 0 && c.SetFlags[f.flag]) {
			return fmt.Errorf("--%s: must be at least 1, got %d", f.flag, f.v)
		}
	}
	switch {
	case c.Workload.MaxTokens < 0:
		return fmt.Errorf("--max-tokens-total: must not be negative, got %d", c.Workload.MaxTokens)
	case c.MaxRequests < 0:
		return fmt.Errorf("--max-requests: must not be negative (0 sends the whole workload), got %d", c.MaxRequests)
	case c.Concurrency < 0:
		return fmt.Errorf("--concurrency: must not be negative, got %d", c.Concurrency)
	case c.Duration < 0:
		return fmt.Errorf("--duration: must not be negative, got %v", c.Duration)
	case c.RequestTimeout < 0:
		return fmt.Errorf("--request-timeout: must not be negative, got %v", c.RequestTimeout)
	case !(c.TimeScale > 0) || math.IsInf(c.TimeScale, 0):
		return fmt.Errorf("--time-scale: must be a positive number, got %v", c.TimeScale)
	case !(c.MaxErrorRate >= 0 && c.MaxErrorRate <= 1):
		return fmt.Errorf("--max-error-rate: must be in [0, 1], got %v", c.MaxErrorRate)
	}
	return nil
}

// checkErrors fails a report with a run that completed nothing or failed
// more than MaxErrorRate of its requests.
func (c *Command) checkErrors(rep *report.Report) error {
	var bad []string
	for _, r := range rep.Runs {
		sent := r.Completed + r.Failed
		if sent == 0 {
			continue
		}
		rate := float64(r.Failed) / float64(sent)
		if r.Completed == 0 || rate > c.MaxErrorRate {
			bad = append(bad, fmt.Sprintf("%s (%s): %d of %d failed", r.Label, r.Arrival, r.Failed, sent))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%w (--max-error-rate %g): %s", ErrRunFailed, c.MaxErrorRate, strings.Join(bad, "; "))
}

// Run runs the benchmark, prints the table to stdout, and writes the JSON
// report and plots when asked. It fails with ErrRunFailed, after writing
// them, when a run failed too many requests (see MaxErrorRate).
func (c *Command) Run(ctx context.Context, stdout io.Writer) (*report.Report, error) {
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.Simulate != "" {
		return c.simulate(ctx, stdout, log)
	}
	if len(c.Targets) == 0 {
		return nil, errors.New("target: required (or --simulate FILE)")
	}
	if len(c.Labels) > len(c.Targets) {
		return nil, fmt.Errorf("label: %d labels for %d targets", len(c.Labels), len(c.Targets))
	}
	if c.Model == "" {
		return nil, errors.New("model: required")
	}
	api := client.API(c.API)
	if api == "" {
		api = client.Chat
	}
	if api != client.Chat && api != client.Completions {
		return nil, fmt.Errorf("api: want chat or completions, got %q", c.API)
	}
	slo, err := stats.ParseSLO(c.SLO)
	if err != nil {
		return nil, err
	}
	c.Workload.Default()
	if err := c.Workload.Validate("workload"); err != nil {
		return nil, err
	}
	b := &workload.Builder{Spec: c.Workload, Seed: c.Seed}
	first, err := b.Build(0)
	if err != nil {
		return nil, err
	}
	specs, err := c.arrivals(first.Timed())
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: c.RequestTimeout}
	tenants, err := c.tenants()
	if err != nil {
		return nil, err
	}
	var runs []report.Run
	for i, target := range c.Targets {
		label := target
		if i < len(c.Labels) && c.Labels[i] != "" {
			label = c.Labels[i]
		}
		cl := &client.Client{BaseURL: target, Model: c.Model, API: api, APIKey: c.APIKey, IgnoreEOS: c.IgnoreEOS, HTTP: hc}
		if c.SLOHeaders {
			cl.Headers = predictedlatency.ObjectiveHeaders(slo.TTFT, slo.TPOT)
		}
		opts := Options{
			Client:           cl,
			Label:            label,
			NewWorkload:      b.Build,
			Arrivals:         specs,
			MaxRequests:      c.MaxRequests,
			Duration:         c.Duration,
			SLO:              slo,
			EngineMetrics:    c.EngineMetrics,
			ResetPrefixCache: c.ResetPrefixCache,
			MetricsHTTP:      &http.Client{Timeout: 10 * time.Second},
			Progress:         c.Progress,
			Log:              log,
			Seed:             c.Seed,
		}
		for _, t := range tenants {
			tc := *cl
			if t.key != "" {
				tc.APIKey = t.key
			}
			opts.Tenants = append(opts.Tenants, Tenant{Name: t.name, Share: t.share, Client: &tc})
		}
		tr, err := Run(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", label, err)
		}
		groups := [][]report.Run{tr}
		for _, name := range c.Alone {
			o := opts
			o.Only, o.Label = name, label+" alone:"+name
			ar, err := Run(ctx, o)
			if err != nil {
				return nil, fmt.Errorf("target %s, %s alone: %w", label, name, err)
			}
			groups = append(groups, ar)
		}
		// Step by step: each step's runs, then its tenants' p90 alone.
		for step := range tr {
			var g []report.Run
			for _, rs := range groups {
				if step < len(rs) {
					g = append(g, rs[step])
				}
			}
			report.CompareAlone(g)
			runs = append(runs, g...)
		}
	}
	n := first.Len()
	if c.MaxRequests > 0 && c.MaxRequests < n {
		n = c.MaxRequests
	}
	rep := &report.Report{
		Schema: report.Schema,
		Date:   c.now().UTC().Format(time.RFC3339),
		Mode:   "live",
		Model:  c.Model,
		Workload: report.Workload{
			Name: first.Name(), Requests: n, Params: c.Workload.Params(), Dropped: b.Dropped,
		},
		SLO:  slo.String(),
		Seed: c.Seed,
		Runs: runs,
	}
	if err := c.emit(rep, stdout, log); err != nil {
		return rep, err
	}
	return rep, c.checkErrors(rep)
}

// simulate runs the virtual-time scenario of c.Simulate.
func (c *Command) simulate(ctx context.Context, stdout io.Writer, log *slog.Logger) (*report.Report, error) {
	sc, err := virtual.Load(c.Simulate)
	if err != nil {
		return nil, err
	}
	if c.SLOHeaders {
		sc.SLOHeaders = true
	}
	if len(c.Policies) > 0 || c.MaxRequests > 0 {
		if len(c.Policies) > 0 {
			sc.Policies = c.Policies
		}
		if c.MaxRequests > 0 {
			sc.MaxRequests = c.MaxRequests
		}
		if err := sc.Validate(); err != nil {
			return nil, fmt.Errorf("scenario %s: %w", c.Simulate, err)
		}
	}
	rep, err := virtual.Run(ctx, sc, virtual.Options{Log: log, Now: c.Now})
	if err != nil {
		return nil, err
	}
	if err := c.emit(rep, stdout, log); err != nil {
		return rep, err
	}
	return rep, c.checkErrors(rep)
}

func (c *Command) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

// emit prints the table and writes the JSON report and plots.
func (c *Command) emit(rep *report.Report, stdout io.Writer, log *slog.Logger) error {
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	if c.Out != "" {
		if err := rep.WriteJSONFile(c.Out); err != nil {
			return err
		}
		log.Info("wrote report", "path", c.Out)
	}
	if c.Plots != "" {
		files, err := rep.WritePlots(c.Plots)
		switch {
		case errors.Is(err, report.ErrNothingToPlot):
			log.Warn("no plots written: no run completed a request")
		case err != nil:
			return err
		default:
			log.Info("wrote plots", "files", files)
		}
	}
	return nil
}

// benchTenant is a parsed --tenant.
type benchTenant struct {
	name, key string
	share     float64
}

// tenants parses the --tenant flags ("NAME:SHARE[:KEY]") and checks the
// --alone names.
func (c *Command) tenants() ([]benchTenant, error) {
	var out []benchTenant
	names := map[string]bool{}
	for _, s := range c.Tenants {
		parts := strings.SplitN(s, ":", 3)
		if len(parts) < 2 || parts[0] == "" {
			return nil, fmt.Errorf("tenant %q: want NAME:SHARE[:KEY]", parts[0])
		}
		share, err := strconv.ParseFloat(parts[1], 64)
		if err != nil || !(share > 0) || math.IsInf(share, 0) {
			return nil, fmt.Errorf("tenant %s: share must be a positive number, got %q", parts[0], parts[1])
		}
		t := benchTenant{name: parts[0], share: share}
		if len(parts) == 3 {
			t.key = parts[2]
		}
		if names[t.name] {
			return nil, fmt.Errorf("tenant %s: given twice", t.name)
		}
		names[t.name] = true
		out = append(out, t)
	}
	for _, a := range c.Alone {
		if !names[a] {
			return nil, fmt.Errorf("alone: %q is not a --tenant", a)
		}
	}
	return out, nil
}
