package simulator

import (
	"embed"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// DefaultProfile is the profile used when none is named.
const DefaultProfile = "h100-llama3-8b"

//go:embed profiles/*.yaml
var builtinProfiles embed.FS

// Profile describes one model on one accelerator: how long a step takes and
// how much fits. It is data: the built-in profiles are YAML files embedded in
// the binary, and LoadProfile reads others from disk.
type Profile struct {
	// Name identifies the profile.
	Name string `json:"name"`
	// Description says what the profile models.
	Description string `json:"description,omitempty"`
	// StepTime gives the duration of one engine step.
	StepTime StepTime `json:"stepTime"`
	// Capacity gives the KV cache size and the scheduler limits.
	Capacity Capacity `json:"capacity"`
}

// StepTime is the linear step-time model of DESIGN.md §7:
//
//	step_ms = BaseMs + PrefillTokenMs·prefill_tokens + DecodeSeqMs·decode_seqs
//	          + ContextTokenMs·Σcontext_tokens
//
// where prefill_tokens counts the prompt (or recomputed) tokens of the batch,
// decode_seqs the sequences that decode one token, and Σcontext_tokens the
// context length of every sequence in the batch after the step.
type StepTime struct {
	BaseMs         float64 `json:"baseMs"`
	PrefillTokenMs float64 `json:"prefillTokenMs"`
	DecodeSeqMs    float64 `json:"decodeSeqMs"`
	ContextTokenMs float64 `json:"contextTokenMs"`
}

// Duration returns the time of a step with the given batch composition.
func (s StepTime) Duration(prefillTokens, decodeSeqs, contextTokens int) time.Duration {
	ms := s.BaseMs + s.PrefillTokenMs*float64(prefillTokens) +
		s.DecodeSeqMs*float64(decodeSeqs) + s.ContextTokenMs*float64(contextTokens)
	return time.Duration(math.Round(ms * float64(time.Millisecond)))
}

// IsZero reports whether every coefficient is zero.
func (s StepTime) IsZero() bool { return s == StepTime{} }

func (s StepTime) validate(field string) error {
	var errs []error
	for _, c := range []struct {
		name string
		v    float64
	}{{"baseMs", s.BaseMs}, {"prefillTokenMs", s.PrefillTokenMs}, {"decodeSeqMs", s.DecodeSeqMs}, {"contextTokenMs", s.ContextTokenMs}} {
		if c.v < 0 || c.v != c.v {
			errs = append(errs, fmt.Errorf("%s.%s: must be a number >= 0, got %v", field, c.name, c.v))
		}
	}
	return errors.Join(errs...)
}

// Capacity is the KV cache size and the scheduler limits, named as vLLM's
// options (num_gpu_blocks, block_size, max_num_seqs, max_num_batched_tokens,
// max_model_len, max_loras).
type Capacity struct {
	NumGPUBlocks        int `json:"numGPUBlocks"`
	BlockSize           int `json:"blockSize"`
	MaxNumSeqs          int `json:"maxNumSeqs"`
	MaxNumBatchedTokens int `json:"maxNumBatchedTokens"`
	MaxModelLen         int `json:"maxModelLen"`
	MaxLoras            int `json:"maxLoras"`
}

func (c Capacity) validate(field string) error {
	var errs []error
	positive := func(name string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s.%s: must be > 0, got %d", field, name, v))
		}
	}
	positive("numGPUBlocks", c.NumGPUBlocks)
	positive("blockSize", c.BlockSize)
	positive("maxNumSeqs", c.MaxNumSeqs)
	positive("maxNumBatchedTokens", c.MaxNumBatchedTokens)
	positive("maxModelLen", c.MaxModelLen)
	positive("maxLoras", c.MaxLoras)
	return errors.Join(errs...)
}

// Validate checks every field and names the path of each bad one.
func (p Profile) Validate() error {
	var errs []error
	if p.Name == "" {
		errs = append(errs, errors.New("name: must not be empty"))
	}
	errs = append(errs, p.StepTime.validate("stepTime"), p.Capacity.validate("capacity"))
	return errors.Join(errs...)
}

// BuiltinProfiles returns the names of the embedded profiles, sorted.
func BuiltinProfiles() []string {
	entries, _ := builtinProfiles.ReadDir("profiles")
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(names)
	return names
}

// LoadProfile returns the built-in profile of that name, or else reads the
// YAML file at that path. An empty name means DefaultProfile. Unknown fields
// are errors, and the profile is validated.
func LoadProfile(nameOrPath string) (Profile, error) {
	if nameOrPath == "" {
		nameOrPath = DefaultProfile
	}
	data, err := builtinProfiles.ReadFile(path.Join("profiles", nameOrPath+".yaml"))
	source := "built-in profile " + nameOrPath
	if err != nil {
		if !strings.ContainsAny(nameOrPath, "/.") {
			return Profile{}, fmt.Errorf("unknown profile %q (built-in: %s; or give a YAML file path)",
				nameOrPath, strings.Join(BuiltinProfiles(), ", "))
		}
		data, err = os.ReadFile(nameOrPath)
		if err != nil {
			return Profile{}, fmt.Errorf("read profile: %w", err)
		}
		source = "profile " + nameOrPath
	}
	p, err := ParseProfile(data)
	if err != nil {
		return Profile{}, fmt.Errorf("%s: %w", source, err)
	}
	return p, nil
}

// ParseProfile decodes a YAML profile strictly and validates it.
func ParseProfile(data []byte) (Profile, error) {
	var p Profile
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return Profile{}, fmt.Errorf("decode: %w", err)
	}
	if err := p.Validate(); err != nil {
		return Profile{}, err
	}
	return p, nil
}
