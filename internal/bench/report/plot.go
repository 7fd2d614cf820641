package report

import (
	"errors"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"sort"

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

// ErrNothingToPlot is returned when no run has a request rate.
var ErrNothingToPlot = errors.New("no run has a request rate to plot against")

// WritePlots writes PNG plots into dir: for TTFT, TPOT and E2E latency one
// image with three panels (p50, p90, p99 versus request rate), and
// goodput.png (goodput and throughput versus rate). Each policy or target is
// one line. Runs without a request rate are left out. It returns the files
// written.
func (rep *Report) WritePlots(dir string) ([]string, error) {
	series := map[string][]*Run{}
	for i := range rep.Runs {
		r := &rep.Runs[i]
		if r.RequestRate == nil {
			continue
		}
		series[r.Label] = append(series[r.Label], r)
	}
	if len(series) == 0 {
		return nil, ErrNothingToPlot
	}
	labels := make([]string, 0, len(series))
	for l, runs := range series {
		labels = append(labels, l)
		sort.Slice(runs, func(i, j int) bool { return *runs[i].RequestRate < *runs[j].RequestRate })
	}
	sort.Strings(labels)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("plots: %w", err)
	}
	var files []string
	for _, m := range metrics {
		panels := []struct {
			name string
			f    func(*Run) float64
		}{{"p50", m.p50}, {"p90", m.p90}, {"p99", m.p99}}
		row := make([]*plot.Plot, len(panels))
		for i, pn := range panels {
			p, err := linePlot(fmt.Sprintf("%s %s", m.title, pn.name), "request rate (req/s)", m.title, labels, series, pn.f)
			if err != nil {
				return files, err
			}
			row[i] = p
		}
		path := filepath.Join(dir, m.file)
		if err := saveTiles(path, [][]*plot.Plot{row}); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	good, err := linePlot("goodput", "request rate (req/s)", "requests/s meeting the SLO", labels, series, func(r *Run) float64 { return r.RequestGoodput })
	if err != nil {
		return files, err
	}
	thr, err := linePlot("throughput", "request rate (req/s)", "completed requests/s", labels, series, func(r *Run) float64 { return r.RequestThroughput })
	if err != nil {
		return files, err
	}
	path := filepath.Join(dir, "goodput.png")
	if err := saveTiles(path, [][]*plot.Plot{{good, thr}}); err != nil {
		return files, err
	}
	return append(files, path), nil
}

func linePlot(title, x, y string, labels []string, series map[string][]*Run, f func(*Run) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	for i, l := range labels {
		runs := series[l]
		pts := make(plotter.XYs, len(runs))
		for j, r := range runs {
			pts[j] = plotter.XY{X: *r.RequestRate, Y: f(r)}
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
		p.Legend.Add(l, line, points)
	}
	p.Y.Min = 0
	var top float64
	for _, l := range labels {
		for _, r := range series[l] {
			top = max(top, f(r))
		}
	}
	if top > 0 {
		p.Y.Max = top * 1.25 // room for the legend
	}
	return p, nil
}

func saveTiles(path string, plots [][]*plot.Plot) error {
	rows, cols := len(plots), len(plots[0])
	img := vgimg.NewWith(vgimg.UseWH(vg.Length(cols)*4*vg.Inch, vg.Length(rows)*3.5*vg.Inch), vgimg.UseDPI(96))
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Path())
	t := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, t, dc)
	for j := range rows {
		for i := range cols {
			plots[j][i].Draw(canvases[j][i])
		}
	}
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
