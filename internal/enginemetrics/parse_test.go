package enginemetrics

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestParseGolden parses every testdata/*.txt exposition and compares the
// snapshot (or error) with testdata/*.golden.json.
func TestParseGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var m framework.Metrics
			perr := Parse(bytes.NewReader(in), &m)
			var got []byte
			if perr != nil {
				got = []byte(fmt.Sprintf("{\"error\": %q}\n", perr.Error()))
			} else {
				got, _ = json.MarshalIndent(m, "", "  ")
				got = append(got, '\n')
			}
			golden := strings.TrimSuffix(f, ".txt") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseEdgeCases(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want framework.Metrics
		err  error
	}{
		{"empty", "", framework.Metrics{}, ErrNoEngineMetrics},
		{"no trailing newline", "vllm:num_requests_waiting 3", framework.Metrics{WaitingRequests: 3}, nil},
		{"crlf", "vllm:num_requests_waiting 3\r\n", framework.Metrics{WaitingRequests: 3}, nil},
		{"NaN skipped", "vllm:num_requests_waiting NaN\nvllm:num_requests_running 1\n", framework.Metrics{RunningRequests: 1}, nil},
		{"garbage value skipped", "vllm:num_requests_waiting abc\nvllm:num_requests_running 1\n", framework.Metrics{RunningRequests: 1}, nil},
		{"unterminated labels skipped", "vllm:num_requests_waiting{a=\"} 3\nvllm:num_requests_running 1\n", framework.Metrics{RunningRequests: 1}, nil},
		{"brace in label value", "vllm:num_requests_waiting{a=\"}x\"} 3\n", framework.Metrics{WaitingRequests: 3}, nil},
		{"percent kv usage", "vllm:kv_cache_usage_perc 42\n", framework.Metrics{KVCacheUsage: 0.42}, nil},
		{"long line", "vllm:num_requests_waiting{a=\"" + strings.Repeat("x", 100_000) + "\"} 3\nvllm:num_requests_running 2\n", framework.Metrics{RunningRequests: 2}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m framework.Metrics
			err := Parse(strings.NewReader(tt.in), &m)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, m); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParse checks that no exposition makes Parse panic or return values
// outside their ranges.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.txt")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, metric := range []string{"vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "vllm:cache_config_info", "sglang:token_usage"} {
		for _, l := range fuzzseed.PrometheusText(metric) {
			f.Add(l)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var m framework.Metrics
		_ = Parse(bytes.NewReader(in), &m)
		if m.KVCacheUsage != m.KVCacheUsage {
			t.Fatal("NaN KV usage")
		}
	})
}

// bigExposition is a vLLM-sized /metrics page: the gauges the router reads
// among many histogram series it does not.
func bigExposition() []byte {
	in, err := os.ReadFile("testdata/vllm.txt")
	if err != nil {
		panic(err)
	}
	var b bytes.Buffer
	b.Write(in)
	for _, h := range []string{"time_per_output_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds", "request_queue_time_seconds", "request_prefill_time_seconds", "request_decode_time_seconds", "request_prompt_tokens", "request_generation_tokens"} {
		fmt.Fprintf(&b, "# HELP vllm:%s A histogram.\n# TYPE vllm:%s histogram\n", h, h)
		for _, engine := range []string{"0", "1"} {
			for i := range 30 {
				fmt.Fprintf(&b, "vllm:%s_bucket{engine=%q,le=\"%g\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} %d.0\n", h, engine, 0.001*float64(int(1)<<(i%20)), i*7)
			}
			fmt.Fprintf(&b, "vllm:%s_sum{engine=%q,model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 123.4\n", h, engine)
			fmt.Fprintf(&b, "vllm:%s_count{engine=%q,model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 210.0\n", h, engine)
		}
	}
	return b.Bytes()
}

// BenchmarkParse compares the hand parser with prometheus/common's
// expfmt.TextParser (decoding every family) on a vLLM-sized page.
func BenchmarkParse(b *testing.B) {
	page := bigExposition()
	b.Run("halyard", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(page)))
		var m framework.Metrics
		for b.Loop() {
			if err := Parse(bytes.NewReader(page), &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("expfmt", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(page)))
		for b.Loop() {
			p := expfmt.NewTextParser(model.LegacyValidation)
			if _, err := p.TextToMetricFamilies(bytes.NewReader(page)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
