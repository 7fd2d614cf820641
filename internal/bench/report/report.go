package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/halyard-dev/halyard/internal/bench/enginestats"
	"github.com/halyard-dev/halyard/internal/bench/stats"
)

// Schema identifies the JSON layout.
const Schema = "halyard.dev/bench/v1"

// Report is the result of one `halyard bench` invocation.
type Report struct {
	Schema string `json:"schema"`
	// Date is when the bench ran (RFC 3339).
	Date string `json:"date"`
	// Mode is "live" (HTTP) or "virtual" (simulated fleet in virtual time).
	Mode string `json:"mode"`
	// Model is the model name sent in requests.
	Model string `json:"model"`
	// Workload describes what was sent.
	Workload Workload `json:"workload"`
	// SLO is the objectives goodput was measured against ("" if none).
	SLO string `json:"slo,omitempty"`
	// Seed is the workload and arrival seed.
	Seed uint64 `json:"seed"`
	// Runs holds one entry per target or policy and rate.
	Runs []Run `json:"runs"`
}

// Workload describes the requests of a report.
type Workload struct {
	// Name is the workload kind (shared-prefix, multi-turn, mooncake, ...).
	Name string `json:"name"`
	// Requests is the number of requests each run had to send.
	Requests int `json:"requests"`
	// Params are the generator's parameters as given.
	Params map[string]string `json:"params,omitempty"`
	// Dropped counts requests left out by a length filter.
	Dropped int `json:"dropped,omitempty"`
}

// Run is the result of one run: one target or policy at one arrival setting.
// Latencies are in milliseconds, throughputs per second of the run.
type Run struct {
	// Label names the line this run belongs to in plots: the policy in
	// virtual mode, else the target (or --label).
	Label  string `json:"label"`
	Target string `json:"target,omitempty"`
	Policy string `json:"policy,omitempty"`
	// Arrival describes the arrival process ("poisson 4/s", "trace ×2", ...).
	Arrival string `json:"arrival"`
	// RequestRate is the Poisson rate asked for; absent for all-at-once,
	// trace and closed-loop runs.
	RequestRate *float64 `json:"request_rate,omitempty"`
	// MaxConcurrency is the closed-loop concurrency, if any.
	MaxConcurrency int `json:"max_concurrency,omitempty"`

	Duration          float64 `json:"duration"`
	Completed         int     `json:"completed"`
	Failed            int     `json:"failed"`
	TotalInputTokens  int     `json:"total_input_tokens"`
	TotalOutputTokens int     `json:"total_output_tokens"`
	TotalCachedTokens int     `json:"total_cached_tokens"`
	RequestThroughput float64 `json:"request_throughput"`
	RequestGoodput    float64 `json:"request_goodput"`
	// GoodShare is the share of the requests sent (completed or failed,
	// refusals included) that met the SLO: whether a policy meets its SLO
	// is judged on it, not on a share of the completed. Absent without
	// an SLO.
	GoodShare             *float64 `json:"good_share,omitempty"`
	OutputThroughput      float64  `json:"output_throughput"`
	TotalTokenThroughput  float64  `json:"total_token_throughput"`
	MaxConcurrentRequests int      `json:"max_concurrent_requests"`

	MeanTTFTMs   float64 `json:"mean_ttft_ms"`
	MedianTTFTMs float64 `json:"median_ttft_ms"`
	StdTTFTMs    float64 `json:"std_ttft_ms"`
	P90TTFTMs    float64 `json:"p90_ttft_ms"`
	P99TTFTMs    float64 `json:"p99_ttft_ms"`

	MeanTPOTMs   float64 `json:"mean_tpot_ms"`
	MedianTPOTMs float64 `json:"median_tpot_ms"`
	StdTPOTMs    float64 `json:"std_tpot_ms"`
	P90TPOTMs    float64 `json:"p90_tpot_ms"`
	P99TPOTMs    float64 `json:"p99_tpot_ms"`

	MeanITLMs   float64 `json:"mean_itl_ms"`
	MedianITLMs float64 `json:"median_itl_ms"`
	StdITLMs    float64 `json:"std_itl_ms"`
	P90ITLMs    float64 `json:"p90_itl_ms"`
	P99ITLMs    float64 `json:"p99_itl_ms"`

	MeanE2ELMs   float64 `json:"mean_e2el_ms"`
	MedianE2ELMs float64 `json:"median_e2el_ms"`
	StdE2ELMs    float64 `json:"std_e2el_ms"`
	P90E2ELMs    float64 `json:"p90_e2el_ms"`
	P99E2ELMs    float64 `json:"p99_e2el_ms"`

	// Autoscaling (virtual mode with an autoscaling block): the fleet
	// policy, the engine-hours it used (cold starts included), the most
	// engines alive at once, the scale decisions that changed the fleet,
	// the requests that met the SLO, and, for the drain-* policies, the
	// prefix hit rate (cached / prompt tokens) of requests sent in the
	// window after the scale-down.
	Fleet                 string   `json:"fleet,omitempty"`
	EngineHours           float64  `json:"engine_hours,omitempty"`
	MaxEngines            int      `json:"max_engines,omitempty"`
	ScaleEvents           int      `json:"scale_events,omitempty"`
	GoodRequests          int      `json:"good_requests,omitempty"`
	HitRateAfterScaleDown *float64 `json:"hit_rate_after_scale_down,omitempty"`
	// P90TTFTAfterScaleDownMs is the TTFT p90 of the same requests, and
	// ScaleDowns the figures of each scale-down's window (the drain-*
	// policies).
	P90TTFTAfterScaleDownMs float64           `json:"p90_ttft_after_scale_down_ms,omitempty"`
	ScaleDowns              []ScaleDownWindow `json:"scale_downs,omitempty"`
	// ScaleDecisions are the autoscaler's decisions that changed the
	// fleet, in time order.
	ScaleDecisions []ScaleDecision `json:"scale_decisions,omitempty"`

	// RequestsPerEndpoint counts completed requests by serving engine, when
	// the target said which (virtual mode, or the router's response header).
	RequestsPerEndpoint map[string]int `json:"requests_per_endpoint,omitempty"`
	// LoadImbalance is max/mean of RequestsPerEndpoint (1 is perfect).
	LoadImbalance float64 `json:"load_imbalance,omitempty"`
	// PrefixCacheHitRate is the engines' own hit rate over the run (token
	// counters), when their counters were read.
	PrefixCacheHitRate *float64 `json:"prefix_cache_hit_rate,omitempty"`
	// EngineMetrics holds the engines' counter deltas, when read.
	EngineMetrics *enginestats.Result `json:"engine_metrics,omitempty"`
	// CoalescedITLFraction is the fraction of inter-token gaps under
	// 0.1 ms (chunks that reached the client together); above
	// CoalescedWarn the table warns that ITL understates the engine's.
	CoalescedITLFraction float64 `json:"coalesced_itl_fraction,omitempty"`
	// Errors counts failed requests by reason.
	Errors map[string]int `json:"errors,omitempty"`
	// WallSeconds is how long the run took to compute (virtual mode) or to
	// run (live mode).
	WallSeconds float64 `json:"wall_seconds"`

	// Admission says how the run was admitted when the scenario has
	// tenants: "on", "off" (no admission stage), or "alone:<tenant>" (that
	// tenant's requests only, with admission).
	Admission string `json:"admission,omitempty"`
	// Tenants is each tenant's share of the run.
	Tenants []TenantRun `json:"tenants,omitempty"`
}

// TenantRun is one tenant's part of a run.
type TenantRun struct {
	Name      string  `json:"name"`
	Sent      int     `json:"sent"`
	Completed int     `json:"completed"`
	Refused   int     `json:"refused"`
	P50TTFTMs float64 `json:"p50_ttft_ms"`
	P90TTFTMs float64 `json:"p90_ttft_ms"`
	P99TTFTMs float64 `json:"p99_ttft_ms"`
	// GoodputShare is the share of the tenant's requests (sent) that
	// completed within the SLO: its goodput over its demand.
	GoodputShare float64 `json:"goodput_share"`
	// P99RefusalMs is the p99 time from sending to a refusal.
	P99RefusalMs float64 `json:"p99_time_to_refusal_ms,omitempty"`
	// AloneP90TTFTMs is the tenant's TTFT p90 when it ran alone (same
	// arrivals, the other tenants' requests left out), and P90TTFTVsAlone
	// this run's p90 over it.
	AloneP90TTFTMs float64 `json:"alone_p90_ttft_ms,omitempty"`
	P90TTFTVsAlone float64 `json:"p90_ttft_vs_alone,omitempty"`
}

// TenantRuns splits records by tenant (in order of first appearance) and
// summarises each.
func TenantRuns(records []stats.Record, slo stats.SLO) []TenantRun {
	var order []string
	by := map[string][]*stats.Record{}
	for i := range records {
		r := &records[i]
		if _, ok := by[r.Tenant]; !ok {
			order = append(order, r.Tenant)
		}
		by[r.Tenant] = append(by[r.Tenant], r)
	}
	out := make([]TenantRun, 0, len(order))
	for _, name := range order {
		tr := TenantRun{Name: name}
		var ttft, refusal []float64
		good := 0
		for _, r := range by[name] {
			tr.Sent++
			switch {
			case r.Refused:
				tr.Refused++
				refusal = append(refusal, float64(r.E2E)/float64(time.Millisecond))
			case r.OK():
				tr.Completed++
				ttft = append(ttft, float64(r.TTFT)/float64(time.Millisecond))
				if slo.IsZero() || slo.Met(r) {
					good++
				}
			}
		}
		d := stats.Distribution(ttft)
		tr.P50TTFTMs, tr.P90TTFTMs, tr.P99TTFTMs = d.Median, d.P90, d.P99
		tr.P99RefusalMs = stats.Distribution(refusal).P99
		if tr.Sent > 0 {
			tr.GoodputShare = float64(good) / float64(tr.Sent)
		}
		out = append(out, tr)
	}
	return out
}

// ScaleDecision is one autoscaling decision of a virtual run: at Time
// seconds, from From groups to To, and why.
type ScaleDecision struct {
	Time   float64 `json:"time"`
	From   int     `json:"from"`
	To     int     `json:"to"`
	Ready  int     `json:"ready"`
	Reason string  `json:"reason"`
}

// ScaleDownWindow is one forced scale-down of a virtual run: at At
// seconds the engines Removed were drained; the figures are those of the
// Requests sent in the window after it: prefix hit rate (cached over
// prompt tokens of those that completed), TTFT p90 and how many met the
// SLO.
type ScaleDownWindow struct {
	At        float64  `json:"at"`
	Removed   []string `json:"removed"`
	Requests  int      `json:"requests"`
	Good      int      `json:"good"`
	HitRate   float64  `json:"hit_rate"`
	P90TTFTMs float64  `json:"p90_ttft_ms"`
}

// NewRun fills a Run from a summary.
func NewRun(label string, s stats.Summary) Run {
	r := Run{
		Label:                 label,
		Duration:              s.Duration.Seconds(),
		Completed:             s.Completed,
		Failed:                s.Failed,
		TotalInputTokens:      s.TotalInput,
		TotalOutputTokens:     s.TotalOutput,
		TotalCachedTokens:     s.CachedTokens,
		RequestThroughput:     s.RequestThroughput,
		RequestGoodput:        s.RequestGoodput,
		GoodShare:             s.GoodShare,
		OutputThroughput:      s.OutputThroughput,
		TotalTokenThroughput:  s.TotalTokenThroughput,
		MaxConcurrentRequests: s.MaxConcurrent,
		MeanTTFTMs:            s.TTFT.Mean, MedianTTFTMs: s.TTFT.Median, StdTTFTMs: s.TTFT.Std, P90TTFTMs: s.TTFT.P90, P99TTFTMs: s.TTFT.P99,
		MeanTPOTMs: s.TPOT.Mean, MedianTPOTMs: s.TPOT.Median, StdTPOTMs: s.TPOT.Std, P90TPOTMs: s.TPOT.P90, P99TPOTMs: s.TPOT.P99,
		MeanITLMs: s.ITL.Mean, MedianITLMs: s.ITL.Median, StdITLMs: s.ITL.Std, P90ITLMs: s.ITL.P90, P99ITLMs: s.ITL.P99,
		MeanE2ELMs: s.E2E.Mean, MedianE2ELMs: s.E2E.Median, StdE2ELMs: s.E2E.Std, P90E2ELMs: s.E2E.P90, P99E2ELMs: s.E2E.P99,
		RequestsPerEndpoint:  s.PerEndpoint,
		Errors:               s.Errors,
		CoalescedITLFraction: s.CoalescedITL,
	}
	if len(s.PerEndpoint) > 0 {
		counts := make([]float64, 0, len(s.PerEndpoint))
		for _, c := range s.PerEndpoint {
			counts = append(counts, float64(c))
		}
		r.LoadImbalance = stats.Imbalance(counts)
	}
	return r
}

// SetRate records the Poisson rate (nothing for an infinite rate).
func (r *Run) SetRate(rate float64) {
	if rate > 0 && !math.IsInf(rate, 0) && !math.IsNaN(rate) {
		r.RequestRate = &rate
	}
}

// SetEngines records the engines' counter deltas.
func (r *Run) SetEngines(e enginestats.Result) {
	r.EngineMetrics = &e
	var queries float64
	for _, en := range e.Engines {
		queries += en.PrefixCacheQueries
	}
	if queries > 0 {
		h := e.PrefixCacheHitRate
		r.PrefixCacheHitRate = &h
	}
	if r.LoadImbalance == 0 {
		r.LoadImbalance = e.RequestImbalance
	}
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// WriteJSONFile writes the report to path.
func (rep *Report) WriteJSONFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// ReadJSON reads a report, strictly.
func ReadJSON(r io.Reader) (*Report, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var rep Report
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	if rep.Schema != Schema {
		return nil, fmt.Errorf("read report: schema %q, want %q", rep.Schema, Schema)
	}
	return &rep, nil
}

// WriteTable writes one line per run: throughput, goodput, latency
// percentiles and, when known, the engines' prefix-cache hit rate and the
// load imbalance.
func (rep *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"run", "arrival", "ok", "fail", "req/s", "good/s", "out tok/s",
		"TTFT p50", "p90", "p99", "TPOT mean", "p99", "ITL p50", "E2E p50", "p99", "hit rate", "imbalance"}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, r := range rep.Runs {
		hit, imb := "-", "-"
		if r.PrefixCacheHitRate != nil {
			hit = fmt.Sprintf("%.1f%%", 100**r.PrefixCacheHitRate)
		}
		if r.LoadImbalance > 0 {
			imb = fmt.Sprintf("%.2f", r.LoadImbalance)
		}
		good := "-"
		if rep.SLO != "" {
			good = fmt.Sprintf("%.2f", r.RequestGoodput)
			if r.GoodShare != nil {
				good += fmt.Sprintf(" (%.1f%%)", 100**r.GoodShare)
			}
		}
		// Latencies of a run with no completed request are unknown, not 0.
		lat := func(v float64) string {
			if r.Completed == 0 {
				return "-"
			}
			return msCell(v)
		}
		cells := []string{
			r.Label, r.Arrival, fmt.Sprint(r.Completed), fmt.Sprint(r.Failed),
			fmt.Sprintf("%.2f", r.RequestThroughput), good, fmt.Sprintf("%.0f", r.OutputThroughput),
			lat(r.MedianTTFTMs), lat(r.P90TTFTMs), lat(r.P99TTFTMs),
			lat(r.MeanTPOTMs), lat(r.P99TPOTMs), lat(r.MedianITLMs),
			lat(r.MedianE2ELMs), lat(r.P99E2ELMs), hit, imb,
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := rep.writeTenantTable(w); err != nil {
		return err
	}
	if err := rep.writeFleetTable(w); err != nil {
		return err
	}
	var notes []string
	for _, r := range rep.Runs {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			notes = append(notes, fmt.Sprintf("%s (%s): %d× %s", r.Label, r.Arrival, r.Errors[k], k))
		}
	}
	if len(notes) > 0 {
		if _, err := fmt.Fprintf(w, "errors:\n  %s\n", strings.Join(notes, "\n  ")); err != nil {
			return err
		}
	}
	for _, r := range rep.Runs {
		if msg := r.ITLWarning(); msg != "" {
			if _, err := fmt.Fprintf(w, "warning: %s (%s): %s\n", r.Label, r.Arrival, msg); err != nil {
				return err
			}
		}
	}
	_, err := fmt.Fprintf(w, "latencies in ms; workload %s, %d requests per run; SLO %s\n", rep.Workload.Name, rep.Workload.Requests, orDash(rep.SLO))
	return err
}

// CoalescedWarn is the fraction of coalesced inter-token gaps above which
// a run's ITL is flagged.
const CoalescedWarn = 0.2

// ITLWarning says, when more than CoalescedWarn of the run's inter-token
// gaps were under 0.1 ms, that its ITL figures understate the engine's;
// "" otherwise.
func (r *Run) ITLWarning() string {
	if r.CoalescedITLFraction <= CoalescedWarn {
		return ""
	}
	return fmt.Sprintf("%.0f%% of inter-token gaps were under 0.1 ms: chunks reached the client coalesced "+
		"(saturated CPUs or a buffering proxy), so ITL understates the engine's; trust TPOT instead", 100*r.CoalescedITLFraction)
}

func msCell(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func orDash(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// writeFleetTable writes, for runs with a fleet policy (autoscaling
// scenarios), one line per run: engine-hours, the most engines at once,
// scale changes, requests meeting the SLO and, after forced scale-downs,
// the prefix hit rate and TTFT p90 of the requests sent in the windows.
func (rep *Report) writeFleetTable(w io.Writer) error {
	if !slices.ContainsFunc(rep.Runs, func(r Run) bool { return r.Fleet != "" }) {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tfleet\tengine-h\tmost engines\tscale changes\tmet SLO\thit after scale-down\tTTFT p90 after\t")
	for _, r := range rep.Runs {
		if r.Fleet == "" {
			continue
		}
		hit, p90 := "-", "-"
		if r.HitRateAfterScaleDown != nil {
			hit, p90 = fmt.Sprintf("%.2f%%", 100**r.HitRateAfterScaleDown), msCell(r.P90TTFTAfterScaleDownMs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.3f\t%d\t%d\t%d\t%s\t%s\t\n", r.Label, r.Fleet, r.EngineHours, r.MaxEngines, r.ScaleEvents, r.GoodRequests, hit, p90)
	}
	return tw.Flush()
}

// writeTenantTable writes, for runs with tenants, one line per run and
// tenant: its TTFT p90 against its p90 alone, its goodput over its demand
// and its refusals.
func (rep *Report) writeTenantTable(w io.Writer) error {
	any := false
	for _, r := range rep.Runs {
		any = any || len(r.Tenants) > 0
	}
	if !any {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tarrival\tadmission\ttenant\tsent\tok\trefused\tTTFT p90\talone p90\tratio\tgoodput/demand\t429 p99\t")
	for _, r := range rep.Runs {
		adm := r.Admission
		if adm == "" {
			adm = "-"
		}
		for _, t := range r.Tenants {
			alone, ratio := "-", "-"
			if t.AloneP90TTFTMs > 0 {
				alone, ratio = msCell(t.AloneP90TTFTMs), fmt.Sprintf("%.2f", t.P90TTFTVsAlone)
			}
			ref := "-"
			if t.Refused > 0 {
				ref = msCell(t.P99RefusalMs)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%.1f%%\t%s\t\n", r.Label, r.Arrival, adm, t.Name,
				t.Sent, t.Completed, t.Refused, msCell(t.P90TTFTMs), alone, ratio, 100*t.GoodputShare, ref)
		}
	}
	return tw.Flush()
}

// CompareAlone fills, in runs of one policy or target and step, each
// tenant's TTFT p90 alone (from the run whose Admission is
// "alone:<tenant>") and the ratio to it.
func CompareAlone(runs []Run) {
	alone := map[string]float64{}
	for _, r := range runs {
		if name, ok := strings.CutPrefix(r.Admission, "alone:"); ok {
			for _, t := range r.Tenants {
				if t.Name == name {
					alone[name] = t.P90TTFTMs
				}
			}
		}
	}
	for i := range runs {
		for j := range runs[i].Tenants {
			t := &runs[i].Tenants[j]
			if a, ok := alone[t.Name]; ok && a > 0 {
				t.AloneP90TTFTMs, t.P90TTFTVsAlone = a, t.P90TTFTMs/a
			}
		}
	}
}
