package simulator

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/halyard-dev/halyard/internal/simulator/kvcache"
)

// Config configures one simulated engine. Build it from a profile with
// Profile.Config, override what you need, and pass it to NewEngine, which
// validates it.
type Config struct {
	// Model is the served base model name.
	Model string
	// StepTime is the step-time model.
	StepTime StepTime
	// Capacity is the KV cache size and the scheduler limits.
	Capacity Capacity
	// Seed makes generated output deterministic: equal seeds, prompts and
	// request seeds give equal output tokens.
	Seed uint64
	// EOSProbability is the chance that each output token after MinTokens is
	// an end-of-sequence token (finish reason "stop"), drawn from the
	// request's seeded generator. 0, the default, generates exactly
	// MaxTokens tokens, as vLLM does with ignore_eos.
	EOSProbability float64
	// LoRAs are adapters loaded at start.
	LoRAs []string
	// KVEvents, when set, observes every block stored in, removed from and
	// cleared out of the prefix cache. If it also implements StepObserver it
	// is told when each step's changes are complete.
	KVEvents kvcache.Hooks
	// Logger receives the engine's logs; nil discards them. The engine adds
	// no attribute naming itself: give a logger that carries them (the
	// vLLM HTTP face adds the model).
	Logger *slog.Logger
}

// StepObserver is an optional extension of Config.KVEvents: EndStep is called
// once per engine step, with the engine lock held, after every hook call of
// that step, so that a publisher can send one batch per step.
type StepObserver interface {
	EndStep(at time.Time)
}

// Config returns an engine configuration for model with the profile's step
// time and capacity.
func (p Profile) Config(model string) Config {
	return Config{Model: model, StepTime: p.StepTime, Capacity: p.Capacity}
}

// Validate checks the configuration and names the field of each error.
func (c Config) Validate() error {
	var errs []error
	if c.Model == "" {
		errs = append(errs, errors.New("model: must not be empty"))
	}
	errs = append(errs, c.StepTime.Validate("stepTime"), c.Capacity.validate("capacity"))
	if c.EOSProbability < 0 || c.EOSProbability >= 1 || c.EOSProbability != c.EOSProbability {
		errs = append(errs, fmt.Errorf("eosProbability: must be in [0, 1), got %v", c.EOSProbability))
	}
	seen := map[string]bool{}
	for i, l := range c.LoRAs {
		switch {
		case l == "":
			errs = append(errs, fmt.Errorf("loras[%d]: must not be empty", i))
		case l == c.Model:
			errs = append(errs, fmt.Errorf("loras[%d]: %q is the base model's name", i, l))
		case seen[l]:
			errs = append(errs, fmt.Errorf("loras[%d]: duplicate adapter %q", i, l))
		}
		seen[l] = true
	}
	return errors.Join(errs...)
}
