package report

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// metric is one latency figure plotted against rate.
type metric struct {
	file, title string
	p50, p90    func(*Run) float64
	p99         func(*Run) float64
}

var metrics = []metric{
	{"ttft.png", "TTFT (ms)", func(r *Run) float64 { return r.MedianTTFTMs }, func(r *Run) float64 { return r.P90TTFTMs }, func(r *Run) float64 { return r.P99TTFTMs }},
	{"tpot.png", "TPOT (ms)", func(r *Run) float64 { return r.MedianTPOTMs }, func(r *Run) float64 { return r.P90TPOTMs }, func(r *Run) float64 { return r.P99TPOTMs }},
	{"e2el.png", "E2E latency (ms)", func(r *Run) float64 { return r.MedianE2ELMs }, func(r *Run) float64 { return r.P90E2ELMs }, func(r *Run) float64 { return r.P99E2ELMs }},
}

// ErrNothingToPlot is returned when the report has no run with a completed
// request.
var ErrNothingToPlot = errors.New("no run with a completed request to plot")

// WritePlots writes PNG plots into dir and returns the files written.
//
// Runs at a Poisson rate (a ladder) give, for TTFT, TPOT and E2E latency,
// one image with three panels (p50, p90, p99 versus request rate), and
// goodput.png (goodput and throughput versus rate); each policy or target is
// one line. Runs without a rate (trace replay, closed loop, all at once)
// give latency.png: p50, p90 and p99 bars of TTFT, TPOT and E2E latency per
// run, side by side. The legend sits to the right of the panels.
func (rep *Report) WritePlots(dir string) ([]string, error) {
	series := map[string][]*Run{}
	var unrated []*Run
	for i := range rep.Runs {
		r := &rep.Runs[i]
		if r.Completed == 0 {
			continue
		}
		if r.RequestRate == nil {
			unrated = append(unrated, r)
			continue
		}
		series[r.Label] = append(series[r.Label], r)
	}
	if len(series) == 0 && len(unrated) == 0 {
		return nil, ErrNothingToPlot
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("plots: %w", err)
	}
	var files []string
	if len(series) > 0 {
		f, err := writeRatePlots(dir, series, rep.SLO)
		files = append(files, f...)
		if err != nil {
			return files, err
		}
	}
	if len(unrated) > 0 {
		path := filepath.Join(dir, "latency.png")
		if err := writeBarPlots(path, unrated); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	return files, nil
}

func writeRatePlots(dir string, series map[string][]*Run, slo string) ([]string, error) {
	labels := make([]string, 0, len(series))
	for l, runs := range series {
		labels = append(labels, l)
		sort.Slice(runs, func(i, j int) bool { return *runs[i].RequestRate < *runs[j].RequestRate })
	}
	sort.Strings(labels)
	legend := plot.NewLegend()
	fill := &legend
	var files []string
	for _, m := range metrics {
		panels := []struct {
			name string
			f    func(*Run) float64
		}{{"p50", m.p50}, {"p90", m.p90}, {"p99", m.p99}}
		row := make([]*plot.Plot, len(panels))
		for i, pn := range panels {
			p, err := linePlot(fmt.Sprintf("%s %s", m.title, pn.name), "request rate (req/s)", m.title, labels, series, pn.f, fill)
			if err != nil {
				return files, err
			}
			row[i], fill = p, nil
		}
		path := filepath.Join(dir, m.file)
		if err := saveTiles(path, [][]*plot.Plot{row}, legend); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	good, err := goodputPanel(labels, series, slo)
	if err != nil {
		return files, err
	}
	thr, err := linePlot("throughput", "request rate (req/s)", "completed requests/s", labels, series, func(r *Run) float64 { return r.RequestThroughput }, nil)
	if err != nil {
		return files, err
	}
	path := filepath.Join(dir, "goodput.png")
	if err := saveTiles(path, [][]*plot.Plot{{good, thr}}, legend); err != nil {
		return files, err
	}
	return append(files, path), nil
}

// linePlot draws one line per label; when legend is not nil it adds the
// lines' entries to it.
// goodputPanel plots goodput versus rate; without an SLO (slo "") nothing
// was measured, so the panel says so and draws no line rather than a
// misleading zero.
func goodputPanel(labels []string, series map[string][]*Run, slo string) (*plot.Plot, error) {
	const x, y = "request rate (req/s)", "requests/s meeting the SLO"
	if slo == "" {
		p := newPlot("goodput: not measured (no --slo)", x, y)
		p.X.Min, p.X.Max = math.Inf(1), math.Inf(-1)
		for _, l := range labels {
			for _, r := range series[l] {
				p.X.Min, p.X.Max = min(p.X.Min, *r.RequestRate), max(p.X.Max, *r.RequestRate)
			}
		}
		p.Y.Min, p.Y.Max = 0, 1
		return p, nil
	}
	return linePlot("goodput", x, y, labels, series, func(r *Run) float64 { return r.RequestGoodput }, nil)
}

func linePlot(title, x, y string, labels []string, series map[string][]*Run, f func(*Run) float64, legend *plot.Legend) (*plot.Plot, error) {
	p := newPlot(title, x, y)
	fill := legend != nil
	var top float64
	for i, l := range labels {
		runs := series[l]
		pts := make(plotter.XYs, len(runs))
		for j, r := range runs {
			pts[j] = plotter.XY{X: *r.RequestRate, Y: f(r)}
			top = max(top, f(r))
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, fmt.Errorf("plot %s: %w", title, err)
		}
		c := plotutil.Color(i)
		line.Color = c
		line.Dashes = plotutil.Dashes(i / 7)
		line.Width = vg.Points(1.5)
		points.Color = c
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		if fill {
			legend.Add(l, line, points)
		}
	}
	p.Y.Min = 0
	if top > 0 {
		p.Y.Max = top * 1.05
	}
	return p, nil
}

// writeBarPlots draws, for runs without a rate, one panel per latency
// (TTFT, TPOT, E2E) with a group of p50/p90/p99 bars per run.
func writeBarPlots(path string, runs []*Run) error {
	names := make([]string, len(runs))
	for i, r := range runs {
		names[i] = r.Label + "\n" + r.Arrival
	}
	pcts := []string{"p50", "p90", "p99"}
	legend := plot.NewLegend()
	row := make([]*plot.Plot, len(metrics))
	width := vg.Points(min(60/float64(len(runs)), 14))
	for mi, m := range metrics {
		p := newPlot(m.title, "", m.title)
		fs := []func(*Run) float64{m.p50, m.p90, m.p99}
		var top float64
		for pi, f := range fs {
			vals := make(plotter.Values, len(runs))
			for i, r := range runs {
				vals[i] = f(r)
				top = max(top, vals[i])
			}
			bars, err := plotter.NewBarChart(vals, width)
			if err != nil {
				return fmt.Errorf("plot %s: %w", path, err)
			}
			bars.Color = plotutil.Color(pi)
			bars.LineStyle.Width = 0
			bars.Offset = vg.Length(pi-1) * width
			p.Add(bars)
			if mi == 0 {
				legend.Add(pcts[pi], bars)
			}
		}
		p.NominalX(names...)
		p.X.Tick.Label.Rotation = 0
		p.Y.Min = 0
		if top > 0 {
			p.Y.Max = top * 1.05
		}
		row[mi] = p
	}
	return saveTiles(path, [][]*plot.Plot{row}, legend)
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.X.Tick.Marker = uniformTicks{}
	p.Y.Tick.Marker = uniformTicks{}
	p.Add(plotter.NewGrid())
	return p
}

// uniformTicks are gonum's default tick positions with every major label
// written with the same number of decimals (0, 2500, 5000 or 0.0, 0.5, 1.0;
// never 5000.00 next to 0).
type uniformTicks struct{}

func (uniformTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	var majors []float64
	for _, t := range ticks {
		if t.Label != "" {
			majors = append(majors, t.Value)
		}
	}
	// The fewest decimals that write every major tick exactly.
	decimals := 0
	for ; decimals < 6; decimals++ {
		exact := true
		scale := math.Pow(10, float64(decimals))
		for _, v := range majors {
			if math.Abs(math.Round(v*scale)-v*scale) > 1e-6 {
				exact = false
				break
			}
		}
		if exact {
			break
		}
	}
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', decimals, 64)
		}
	}
	return ticks
}

var _ plot.Ticker = uniformTicks{}

// legendWidth is the narrowest strip to the right of the panels that holds
// the legend; legendStrip widens it to fit the longest label.
const legendWidth = 1.6 * vg.Inch

// legendStrip is the width of the strip that holds legend: its entries'
// extent plus a margin each side, and at least legendWidth, so that long
// labels (target URLs) are not cut at the image's edge.
func legendStrip(legend plot.Legend) vg.Length {
	r := legend.Rectangle(draw.Canvas{})
	return max(legendWidth, r.Max.X-r.Min.X+vg.Millimeter*4)
}

func saveTiles(path string, plots [][]*plot.Plot, legend plot.Legend) error {
	rows, cols := len(plots), len(plots[0])
	legendWidth := legendStrip(legend)
	img := vgimg.NewWith(vgimg.UseWH(vg.Length(cols)*4*vg.Inch+legendWidth, vg.Length(rows)*3.5*vg.Inch), vgimg.UseDPI(96))
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Path())
	panels := draw.Crop(dc, 0, -legendWidth, 0, 0)
	t := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, t, panels)
	for j := range rows {
		for i := range cols {
			plots[j][i].Draw(canvases[j][i])
		}
	}
	legend.Top, legend.Left = true, true
	legend.Padding = vg.Millimeter
	legend.Draw(draw.Crop(dc, dc.Max.X-legendWidth+vg.Millimeter*2, 0, 0, -vg.Millimeter*8))
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}
