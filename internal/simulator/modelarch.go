package simulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// ModelArch is what the simulator takes from a model's config.json (a
// Hugging Face transformers config): enough to size the KV cache.
type ModelArch struct {
	// Layers, KVHeads and HeadDim: num_hidden_layers,
	// num_key_value_heads (default num_attention_heads) and head_dim
	// (default hidden_size / num_attention_heads).
	Layers, KVHeads, HeadDim int
	// DType is torch_dtype (or dtype); DTypeBytes its element size.
	DType      string
	DTypeBytes int
	// WeightBytes is the size of the weight files (*.safetensors, *.bin,
	// *.pt, *.gguf) in the directory.
	WeightBytes int64
}

type hfConfig struct {
	NumHiddenLayers   int              `json:"num_hidden_layers"`
	NumAttentionHeads int              `json:"num_attention_heads"`
	NumKeyValueHeads  int              `json:"num_key_value_heads"`
	HeadDim           int              `json:"head_dim"`
	HiddenSize        int              `json:"hidden_size"`
	TorchDType        string           `json:"torch_dtype"`
	DType             string           `json:"dtype"`
	TextConfig        *json.RawMessage `json:"text_config"`
}

// dtypeBytes is the element size of the dtypes config.json names.
var dtypeBytes = map[string]int{
	"float16": 2, "bfloat16": 2, "half": 2, "float32": 4, "float": 4,
	"float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1, "uint8": 1,
}

// LoadModelArch reads dir/config.json (the text model's part,
// text_config, for multimodal configs) and sizes dir's weight files.
func LoadModelArch(dir string) (ModelArch, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return ModelArch{}, fmt.Errorf("model dir: %w", err)
	}
	var c hfConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return ModelArch{}, fmt.Errorf("model dir: config.json: %w", err)
	}
	if c.NumHiddenLayers == 0 && c.TextConfig != nil {
		var t hfConfig
		if err := json.Unmarshal(*c.TextConfig, &t); err != nil {
			return ModelArch{}, fmt.Errorf("model dir: config.json text_config: %w", err)
		}
		if t.TorchDType == "" && t.DType == "" {
			t.TorchDType, t.DType = c.TorchDType, c.DType
		}
		c = t
	}
	a := ModelArch{Layers: c.NumHiddenLayers, KVHeads: c.NumKeyValueHeads, HeadDim: c.HeadDim, DType: c.TorchDType}
	if a.DType == "" {
		a.DType = c.DType
	}
	if a.DType == "" {
		a.DType = "bfloat16"
	}
	if a.KVHeads == 0 {
		a.KVHeads = c.NumAttentionHeads
	}
	if a.HeadDim == 0 && c.NumAttentionHeads > 0 {
		a.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	var ok bool
	if a.DTypeBytes, ok = dtypeBytes[strings.ToLower(a.DType)]; !ok {
		return ModelArch{}, fmt.Errorf("model dir: config.json: unknown dtype %q", a.DType)
	}
	switch {
	case a.Layers <= 0:
		return ModelArch{}, errors.New("model dir: config.json: num_hidden_layers missing")
	case a.KVHeads <= 0:
		return ModelArch{}, errors.New("model dir: config.json: num_key_value_heads/num_attention_heads missing")
	case a.HeadDim <= 0:
		return ModelArch{}, errors.New("model dir: config.json: head_dim (or hidden_size and num_attention_heads) missing")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".safetensors", ".bin", ".pt", ".gguf":
			if st, err := os.Stat(filepath.Join(dir, e.Name())); err == nil {
				a.WeightBytes += st.Size()
			}
		}
	}
	return a, nil
}

// KVBytesPerToken is the KV cache size of one token: keys and values of
// every layer's KV heads.
func (a ModelArch) KVBytesPerToken() int64 {
	return 2 * int64(a.Layers) * int64(a.KVHeads) * int64(a.HeadDim) * int64(a.DTypeBytes)
}

// KVBlocks is the number of blockSize-token KV blocks that fit in a GPU of
// gpuBytes when utilization of it may be used and the weights take their
// size (vLLM's sizing without activation memory).
func (a ModelArch) KVBlocks(gpuBytes int64, utilization float64, blockSize int) (int, error) {
	if blockSize <= 0 {
		return 0, errors.New("block size must be positive")
	}
	free := int64(math.Floor(float64(gpuBytes)*utilization)) - a.WeightBytes
	blocks := free / (a.KVBytesPerToken() * int64(blockSize))
	if blocks < 1 {
		return 0, fmt.Errorf("no KV block fits: %d bytes of GPU memory at utilization %.2f, %d bytes of weights", gpuBytes, utilization, a.WeightBytes)
	}
	return int(blocks), nil
}
