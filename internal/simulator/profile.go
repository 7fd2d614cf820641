package simulator

import (
	"embed"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/halyard-dev/halyard/internal/steptime"
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

// StepTime is the linear step-time model of DESIGN.md §7, shared with the
// scheduler's latency model through the leaf package steptime.
type StepTime = steptime.Coefficients

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
	errs = append(errs, p.StepTime.Validate("stepTime"), p.Capacity.validate("capacity"))
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
