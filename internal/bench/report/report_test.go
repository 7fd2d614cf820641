package report

import (
	"bytes"
	"errors"
	"flag"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"

	"github.com/halyard-dev/halyard/internal/bench/enginestats"
	"github.com/halyard-dev/halyard/internal/bench/stats"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", name, diff)
	}
}

func sampleReport() *Report {
	ms := time.Millisecond
	recs := []stats.Record{
		{ID: "a", Endpoint: "e0", Start: 0, TTFT: 100 * ms, E2E: 1100 * ms, ITL: []time.Duration{500 * ms, 500 * ms}, PromptTokens: 100, OutputTokens: 3, CachedTokens: 64},
		{ID: "b", Endpoint: "e1", Start: 500 * ms, TTFT: 300 * ms, E2E: 700 * ms, ITL: []time.Duration{400 * ms}, PromptTokens: 50, OutputTokens: 2},
		{ID: "c", Endpoint: "e0", Start: 600 * ms, E2E: 10 * ms, Err: "HTTP 503: overloaded"},
	}
	slo := stats.SLO{TTFT: 200 * ms}
	rep := &Report{
		Schema: Schema, Date: "2026-11-27T10:00:00Z", Mode: "live", Model: "llama-3-8b",
		Workload: Workload{Name: "shared-prefix", Requests: 3, Params: map[string]string{"groups": "1"}},
		SLO:      slo.String(), Seed: 1,
	}
	for i, rate := range []float64{1, 2} {
		r := NewRun("router", stats.Summarize(recs, time.Duration(2-i)*time.Second, slo))
		r.Target = "http://127.0.0.1:8080"
		r.Arrival = "poisson"
		r.SetRate(rate)
		r.WallSeconds = 2
		if i == 0 {
			r.SetEngines(enginestats.Delta([]string{"http://e0/metrics", "http://e1/metrics"},
				[]enginestats.Counters{{}, {}},
				[]enginestats.Counters{
					{enginestats.PrefixCacheQueries: 100, enginestats.PrefixCacheHits: 64, enginestats.RequestSuccess: 1},
					{enginestats.PrefixCacheQueries: 50, enginestats.RequestSuccess: 1},
				}))
		}
		rep.Runs = append(rep.Runs, r)
	}
	r := NewRun("direct", stats.Summarize(recs[:2], time.Second, slo))
	r.Arrival = "concurrency 2"
	r.MaxConcurrency = 2
	rep.Runs = append(rep.Runs, r)
	return rep
}

func TestJSONSchemaGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.golden.json", buf.Bytes())
	back, err := ReadJSON(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sampleReport(), back); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
}

func TestReadJSONStrict(t *testing.T) {
	tests := map[string]string{
		"unknown field": `{"schema":"halyard.dev/bench/v1","runs":[],"surprise":1}`,
		"wrong schema":  `{"schema":"other/v9","runs":[]}`,
		"not json":      `nope`,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ReadJSON(strings.NewReader(in)); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestTableGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	golden(t, "table.golden.txt", buf.Bytes())
}

// TestTableNoCompletedRequests: a run where every request failed shows its
// latencies as "-", not as 0.00 ms.
func TestTableNoCompletedRequests(t *testing.T) {
	rep := &Report{Workload: Workload{Name: "shared-prefix", Requests: 3},
		Runs: []Run{{Label: "down", Arrival: "poisson 1/s", Failed: 3, Errors: map[string]int{"HTTP 503": 3}}}}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(buf.String(), "\n")
	fields := strings.Fields(lines[1])
	want := []string{"down", "poisson", "1/s", "0", "3", "0.00", "-", "0", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"}
	if diff := cmp.Diff(want, fields); diff != "" {
		t.Errorf("row (-want +got):\n%s\n%s", diff, buf.String())
	}
}

// TestITLCoalescedWarning: when most chunks reach the client together, the
// table warns that ITL is not the engine's.
func TestITLCoalescedWarning(t *testing.T) {
	ms := time.Millisecond
	rec := func(gaps ...time.Duration) stats.Record {
		return stats.Record{TTFT: ms, E2E: 10 * ms, ITL: gaps, PromptTokens: 1, OutputTokens: len(gaps) + 1}
	}
	tests := []struct {
		name string
		recs []stats.Record
		warn bool
	}{
		{"coalesced", []stats.Record{rec(0, 0, 0, 5*ms), rec(0, 10*time.Microsecond, 4*ms)}, true},
		{"spaced", []stats.Record{rec(5*ms, 5*ms, 0, 5*ms), rec(4*ms, 4*ms, 4*ms)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRun("router", stats.Summarize(tt.recs, time.Second, stats.SLO{}))
			r.Arrival = "concurrency 128"
			rep := &Report{Runs: []Run{r}}
			var buf bytes.Buffer
			if err := rep.WriteTable(&buf); err != nil {
				t.Fatal(err)
			}
			got := strings.Contains(buf.String(), "warning: router (concurrency 128): ") && strings.Contains(buf.String(), "ITL understates")
			if got != tt.warn {
				t.Errorf("warning shown %v, want %v:\n%s", got, tt.warn, buf.String())
			}
		})
	}
}

func TestPlots(t *testing.T) {
	dir := t.TempDir()
	files, err := sampleReport().WritePlots(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ttft.png", "tpot.png", "e2el.png", "goodput.png", "latency.png"}
	if len(files) != len(want) {
		t.Fatalf("wrote %v, want %v", files, want)
	}
	for i, f := range files {
		if filepath.Base(f) != want[i] {
			t.Errorf("file %d is %s, want %s", i, f, want[i])
		}
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(fh)
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if b := img.Bounds(); b.Dx() < 500 || b.Dy() < 200 {
			t.Errorf("%s is only %v", f, b)
		}
	}
	empty := &Report{Runs: []Run{{Label: "x", Failed: 3}}}
	if _, err := empty.WritePlots(dir); !errors.Is(err, ErrNothingToPlot) {
		t.Errorf("plots without a completed request: %v, want ErrNothingToPlot", err)
	}
	// Trace replays and closed loops have no rate: they get latency bars.
	traceDir := t.TempDir()
	trace := &Report{Runs: []Run{
		{Label: "default", Arrival: "trace ×4", Completed: 5, MedianTTFTMs: 10, P90TTFTMs: 20, P99TTFTMs: 30},
		{Label: "round-robin", Arrival: "trace ×4", Completed: 5, MedianTTFTMs: 15, P90TTFTMs: 25, P99TTFTMs: 35},
	}}
	files, err = trace.WritePlots(traceDir)
	if err != nil || len(files) != 1 || filepath.Base(files[0]) != "latency.png" {
		t.Errorf("trace-arrival plots: %v, %v; want latency.png", files, err)
	}
}

// TestUniformTicks: every labelled tick of an axis has the same number of
// decimals.
func TestUniformTicks(t *testing.T) {
	tests := []struct {
		lo, hi float64
		want   []string
	}{
		{0, 5000, []string{"0", "2500", "5000"}},
		{0, 1.2, []string{"0.0", "0.5", "1.0"}},
		{0, 0.05, []string{"0.000", "0.025", "0.050"}},
		{0, 7500, []string{"0", "2500", "5000", "7500"}},
	}
	for _, tt := range tests {
		var got []string
		for _, tk := range (uniformTicks{}).Ticks(tt.lo, tt.hi) {
			if tk.Label != "" {
				got = append(got, tk.Label)
			}
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ticks of [%v, %v] (-want +got):\n%s", tt.lo, tt.hi, diff)
		}
	}
}

func TestKeepPlotsForInspection(t *testing.T) {
	dir := os.Getenv("HALYARD_PLOT_DIR")
	if dir == "" {
		t.Skip("set HALYARD_PLOT_DIR to keep the sample plots")
	}
	if _, err := sampleReport().WritePlots(dir); err != nil {
		t.Fatal(err)
	}
}

// TestLegendStripFitsLongLabels: the legend strip to the right of the
// panels is wide enough for the longest label (a target URL used to be cut
// at the image's edge), and never narrower than the default strip.
func TestLegendStripFitsLongLabels(t *testing.T) {
	tests := []struct {
		name   string
		labels []string
	}{
		{"short", []string{"default", "oracle"}},
		{"url", []string{"http://127.0.0.1:8080"}},
		{"long url", []string{"default", "http://router.example.internal:8080/v1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			legend := plot.NewLegend()
			var widest vg.Length
			for _, l := range tt.labels {
				legend.Add(l)
				widest = max(widest, legend.ThumbnailWidth+legend.TextStyle.Width(" "+l))
			}
			got := legendStrip(legend)
			if got < legendWidth {
				t.Errorf("strip %v is narrower than the minimum %v", got, legendWidth)
			}
			if got < widest+vg.Millimeter*2 {
				t.Errorf("strip %v does not fit the widest entry %v plus its left margin", got, widest)
			}
		})
	}
}

// TestGoodputPanelWithoutSLO: without --slo no goodput was measured, so the
// goodput panel says so instead of drawing a line at zero.
func TestGoodputPanelWithoutSLO(t *testing.T) {
	r1, r2 := 5.0, 10.0
	series := map[string][]*Run{"x": {
		{Label: "x", RequestRate: &r1, Completed: 5, RequestThroughput: 5},
		{Label: "x", RequestRate: &r2, Completed: 5, RequestThroughput: 9},
	}}
	tests := []struct {
		slo, title string
	}{
		{"ttft=500ms", "goodput"},
		{"", "goodput: not measured (no --slo)"},
	}
	for _, tt := range tests {
		t.Run("slo="+tt.slo, func(t *testing.T) {
			p, err := goodputPanel([]string{"x"}, series, tt.slo)
			if err != nil {
				t.Fatal(err)
			}
			if p.Title.Text != tt.title {
				t.Errorf("title %q, want %q", p.Title.Text, tt.title)
			}
			if p.X.Min != r1 || p.X.Max != r2 {
				t.Errorf("x range [%v, %v], want the rates [%v, %v]", p.X.Min, p.X.Max, r1, r2)
			}
		})
	}
}
