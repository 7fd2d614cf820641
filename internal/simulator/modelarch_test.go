package simulator_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/halyard-dev/halyard/internal/simulator"
)

func TestModelArchKVBlocks(t *testing.T) {
	for _, tc := range []struct {
		name, config    string
		weights         int64
		gib             float64
		perToken        int64
		blocks          int
		wantErrContains string
	}{
		// Llama 3 8B: 32 layers, 8 KV heads, 128 head dim, bf16 → 128 KiB
		// per token; (80 GiB × 0.9 − 16 GB of weights) / (16 × 128 KiB).
		{"llama-3-8b", `{"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"hidden_size":4096,"torch_dtype":"bfloat16"}`,
			16_060_522_496, 80, 131072, 29205, ""},
		{"explicit head_dim, float32", `{"num_hidden_layers":2,"num_attention_heads":4,"head_dim":64,"hidden_size":100,"torch_dtype":"float32"}`,
			0, 1, 2 * 2 * 4 * 64 * 4, 14745, ""},
		{"multimodal text_config", `{"torch_dtype":"float16","text_config":{"num_hidden_layers":4,"num_attention_heads":8,"num_key_value_heads":2,"hidden_size":512}}`,
			0, 1, 2 * 4 * 2 * 64 * 2, 29491, ""},
		{"no layers", `{"num_attention_heads":8,"hidden_size":512}`, 0, 1, 0, 0, "num_hidden_layers"},
		{"bad dtype", `{"num_hidden_layers":1,"num_attention_heads":1,"hidden_size":8,"torch_dtype":"float128"}`, 0, 1, 0, 0, "dtype"},
		{"weights too big", `{"num_hidden_layers":1,"num_attention_heads":1,"hidden_size":8}`, 2 << 30, 1, 32, 0, "no KV block fits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(tc.config), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.weights > 0 {
				f, err := os.Create(filepath.Join(dir, "model.safetensors"))
				if err != nil {
					t.Fatal(err)
				}
				if err := f.Truncate(tc.weights); err != nil { // sparse
					t.Fatal(err)
				}
				_ = f.Close()
			}
			a, err := simulator.LoadModelArch(dir)
			var blocks int
			if err == nil {
				if a.KVBytesPerToken() != tc.perToken {
					t.Errorf("KV bytes per token = %d, want %d", a.KVBytesPerToken(), tc.perToken)
				}
				blocks, err = a.KVBlocks(int64(tc.gib*(1<<30)), 0.9, 16)
			}
			if tc.wantErrContains != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrContains) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErrContains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if blocks != tc.blocks {
				t.Errorf("blocks = %d, want %d", blocks, tc.blocks)
			}
		})
	}
}
