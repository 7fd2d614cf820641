package vllmapi

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var update = flag.Bool("update", false, "rewrite golden files")

type families map[string]*dto.MetricFamily

// scrape fetches /metrics and parses it with Prometheus's own text parser.
func scrape(t *testing.T, inst *Instance) families {
	t.Helper()
	resp, err := http.Get(inst.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metric returns the family's metric whose labels include the given pairs.
func (f families) metric(t *testing.T, name string, labelPairs ...string) *dto.Metric {
	t.Helper()
	fam, ok := f[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range fam.GetMetric() {
		for i := 0; i+1 < len(labelPairs); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labelPairs[i] && l.GetValue() == labelPairs[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no %s with labels %v", name, labelPairs)
	return nil
}

func (f families) value(t *testing.T, name string, labelPairs ...string) float64 {
	t.Helper()
	m := f.metric(t, name, labelPairs...)
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s is neither counter nor gauge", name)
	return 0
}

func (f families) histogramSum(t *testing.T, name string) float64 {
	t.Helper()
	return f.metric(t, name).GetHistogram().GetSampleSum()
}

func (f families) labels(t *testing.T, name string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range f.metric(t, name).GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// TestMetricsExposition checks that /metrics parses with the Prometheus text
// parser and carries every vLLM name Halyard reads, with its type and label
// names, against testdata/metrics.golden.
func TestMetricsExposition(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero", LoRAs: []string{"sql"}})
	c := client(inst)
	if _, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
		Model:     openai.CompletionNewParamsModel("llama-3-8b"),
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String(promptText(64, 1))},
		MaxTokens: openai.Int(3),
	}); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, inst)
	var lines []string
	for name, fam := range fams {
		if !strings.HasPrefix(name, "vllm:") {
			continue
		}
		labelSet := map[string]bool{}
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				labelSet[l.GetName()] = true
			}
			if name == "vllm:lora_requests_info" {
				continue // vLLM gives it no model_name
			}
			if labelSet["model_name"] {
				for _, l := range m.GetLabel() {
					if l.GetName() == "model_name" && l.GetValue() != "llama-3-8b" {
						t.Errorf("%s has model_name %q", name, l.GetValue())
					}
				}
			} else {
				t.Errorf("%s has no model_name label", name)
			}
		}
		labelNames := make([]string, 0, len(labelSet))
		for l := range labelSet {
			labelNames = append(labelNames, l)
		}
		sort.Strings(labelNames)
		lines = append(lines, fmt.Sprintf("%s %s {%s}", name, strings.ToLower(fam.GetType().String()), strings.Join(labelNames, ",")))
	}
	sort.Strings(lines)
	got := strings.Join(lines, "\n") + "\n"
	const golden = "testdata/metrics.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("metric names, types and labels (-golden +got):\n%s", diff)
	}
	// Values that a scrape must show after one 64-token request of 3
	// tokens.
	for _, tc := range []struct {
		name  string
		pairs []string
		want  float64
	}{
		{"vllm:prompt_tokens_total", nil, 64},
		{"vllm:generation_tokens_total", nil, 3},
		{"vllm:prefix_cache_queries_total", nil, 64},
		{"vllm:request_success_total", []string{"finished_reason", "length"}, 1},
		{"vllm:num_requests_running", nil, 0},
		{"vllm:kv_cache_usage_perc", nil, 0},
		{"vllm:cache_config_info", []string{"block_size", "16", "num_gpu_blocks", "27000"}, 1},
	} {
		if got := fams.value(t, tc.name, tc.pairs...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.pairs, got, tc.want)
		}
	}
	if n := fams.metric(t, "vllm:time_to_first_token_seconds").GetHistogram().GetSampleCount(); n != 1 {
		t.Errorf("TTFT histogram count = %d, want 1", n)
	}
	if n := fams.metric(t, "vllm:inter_token_latency_seconds").GetHistogram().GetSampleCount(); n != 2 {
		t.Errorf("ITL histogram count = %d, want 2", n)
	}
	if v := fams.value(t, "vllm:lora_requests_info"); v < 1e9 {
		t.Errorf("lora_requests_info value %v is not a timestamp", v)
	}
}
