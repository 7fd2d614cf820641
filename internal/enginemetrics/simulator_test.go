package enginemetrics

import (
	"context"
	"net/http"
	"testing"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

// TestParsesTheSimulatorsLoRAInfo scrapes a real simulator over HTTP: with
// LoRA enabled its vllm:lora_requests_info (vLLM's three labels) gives
// MaxLoRA; without LoRA the series is absent and the page still parses.
func TestParsesTheSimulatorsLoRAInfo(t *testing.T) {
	tests := []struct {
		name    string
		spec    vllmapi.Spec
		maxLoRA int
	}{
		{"with --lora", vllmapi.Spec{LoRAs: []string{"sql"}, MaxLoras: 2}, 2},
		{"without LoRA", vllmapi.Spec{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp := tt.spec
			sp.Model, sp.Profile, sp.Listen = "llama-3-8b", "zero", "127.0.0.1:0"
			inst, err := vllmapi.Start(context.Background(), sp, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = inst.Close() })
			resp, err := http.Get(inst.URL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var m framework.Metrics
			if err := Parse(resp.Body, &m); err != nil {
				t.Fatal(err)
			}
			if m.MaxLoRA != tt.maxLoRA {
				t.Errorf("MaxLoRA %d, want %d", m.MaxLoRA, tt.maxLoRA)
			}
		})
	}
}
