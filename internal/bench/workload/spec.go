package workload

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/halyard-dev/halyard/internal/bench/trace"
)

// Workload kinds.
const (
	KindSharedPrefix = "shared-prefix"
	KindMultiTurn    = "multi-turn"
	KindMooncake     = "mooncake"
	KindAzure        = "azure"
)

// Default trace files, relative to the working directory (the repository's
// traces/ folder).
var defaultTraces = map[string]string{
	KindMooncake: filepath.Join("traces", "conversation_trace.jsonl"),
	"azure-code": filepath.Join("traces", "AzureLLMInferenceTrace_code.csv"),
	"azure-conv": filepath.Join("traces", "AzureLLMInferenceTrace_conv.csv"),
	KindAzure:    filepath.Join("traces", "AzureLLMInferenceTrace_conv.csv"),
}

// Spec says which workload to generate. It is both the CLI's
// workload flags and the `workload` block of a --simulate scenario.
type Spec struct {
	// Kind is shared-prefix, multi-turn, mooncake or azure.
	Kind string `json:"kind"`
	// Shared-prefix and multi-turn parameters.
	Groups         int `json:"groups,omitempty"`
	UsersPerGroup  int `json:"usersPerGroup,omitempty"`
	Sessions       int `json:"sessions,omitempty"`
	SystemTokens   int `json:"systemTokens,omitempty"`
	QuestionTokens int `json:"questionTokens,omitempty"`
	OutputTokens   int `json:"outputTokens,omitempty"`
	Turns          int `json:"turns,omitempty"`
	// Trace is the trace file for mooncake and azure; AzureTrace picks the
	// vendored Azure trace ("code" or "conv", default conv) when Trace is
	// empty.
	Trace      string `json:"trace,omitempty"`
	AzureTrace string `json:"azureTrace,omitempty"`
	// MaxTokens drops trace requests whose prompt plus output exceeds it
	// (0: keep all); the report says how many were dropped.
	MaxTokens int `json:"maxTokens,omitempty"`
}

// Default fills unset fields with the defaults of the kind.
func (s *Spec) Default() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	switch s.Kind {
	case KindSharedPrefix:
		def(&s.Groups, 16)
		def(&s.UsersPerGroup, 4)
		def(&s.SystemTokens, 2000)
		def(&s.QuestionTokens, 200)
		def(&s.OutputTokens, 100)
		def(&s.Turns, 1)
	case KindMultiTurn:
		def(&s.Sessions, 32)
		def(&s.SystemTokens, 500)
		def(&s.QuestionTokens, 100)
		def(&s.OutputTokens, 100)
		def(&s.Turns, 5)
	case KindAzure:
		if s.AzureTrace == "" {
			s.AzureTrace = "conv"
		}
	}
}

// Validate checks the spec; errors name the field under path.
func (s *Spec) Validate(path string) error {
	switch s.Kind {
	case KindSharedPrefix, KindMultiTurn, KindMooncake:
	case KindAzure:
		if s.AzureTrace != "code" && s.AzureTrace != "conv" {
			return fmt.Errorf("%s.azureTrace: want code or conv, got %q", path, s.AzureTrace)
		}
	case "":
		return fmt.Errorf("%s.kind: required (shared-prefix, multi-turn, mooncake or azure)", path)
	default:
		return fmt.Errorf("%s.kind: unknown workload %q (want shared-prefix, multi-turn, mooncake or azure)", path, s.Kind)
	}
	if s.MaxTokens < 0 {
		return fmt.Errorf("%s.maxTokens: must not be negative, got %d", path, s.MaxTokens)
	}
	return nil
}

// Params returns the spec's parameters for the report.
func (s *Spec) Params() map[string]string {
	p := map[string]string{}
	set := func(k string, v int) {
		if v != 0 {
			p[k] = strconv.Itoa(v)
		}
	}
	switch s.Kind {
	case KindSharedPrefix:
		set("groups", s.Groups)
		set("usersPerGroup", s.UsersPerGroup)
		set("turns", s.Turns)
	case KindMultiTurn:
		set("sessions", s.Sessions)
		set("turns", s.Turns)
	case KindMooncake, KindAzure:
		p["trace"] = s.tracePath()
	}
	if s.Kind == KindSharedPrefix || s.Kind == KindMultiTurn {
		set("systemTokens", s.SystemTokens)
		set("questionTokens", s.QuestionTokens)
		set("outputTokens", s.OutputTokens)
	}
	set("maxTokens", s.MaxTokens)
	return p
}

func (s *Spec) tracePath() string {
	if s.Trace != "" {
		return s.Trace
	}
	if s.Kind == KindAzure {
		return defaultTraces["azure-"+s.AzureTrace]
	}
	return defaultTraces[s.Kind]
}

// Builder makes the workload of each step from a spec, reading a trace file
// once.
type Builder struct {
	Spec Spec
	Seed uint64

	once     sync.Once
	mooncake []trace.MooncakeEntry
	azure    []trace.AzureEntry
	err      error
	// Dropped is set by Build to the number of requests MaxTokens dropped.
	Dropped int
}

func (b *Builder) load() error {
	b.once.Do(func() {
		path := b.Spec.tracePath()
		f, err := os.Open(path)
		if err != nil {
			b.err = fmt.Errorf("trace: %w (set the trace file with --trace or workload.trace)", err)
			return
		}
		defer f.Close()
		switch b.Spec.Kind {
		case KindMooncake:
			b.mooncake, err = trace.ReadMooncake(f)
		case KindAzure:
			b.azure, err = trace.ReadAzure(f)
		}
		if err != nil {
			b.err = fmt.Errorf("trace %s: %w", path, err)
		}
	})
	return b.err
}

// Build returns the workload of step (seeded with Seed+step).
func (b *Builder) Build(step int) (Workload, error) {
	s := b.Spec
	seed := b.Seed + uint64(step)
	var w Workload
	var err error
	switch s.Kind {
	case KindSharedPrefix:
		w, err = NewSharedPrefix(SharedPrefix{
			Groups: s.Groups, UsersPerGroup: s.UsersPerGroup, SystemTokens: s.SystemTokens,
			QuestionTokens: s.QuestionTokens, OutputTokens: s.OutputTokens, Turns: s.Turns, Seed: seed,
		})
	case KindMultiTurn:
		w, err = NewMultiTurn(s.Sessions, s.Turns, s.SystemTokens, s.QuestionTokens, s.OutputTokens, seed)
	case KindMooncake:
		if err = b.load(); err == nil {
			w = &Mooncake{Entries: b.mooncake, Seed: seed}
		}
	case KindAzure:
		if err = b.load(); err == nil {
			w = &Azure{Kind: "azure-" + s.AzureTrace, Entries: b.azure, Seed: seed}
		}
	default:
		err = fmt.Errorf("kind: unknown workload %q", s.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", s.Kind, err)
	}
	w, b.Dropped, err = Limit(w, s.MaxTokens)
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", s.Kind, err)
	}
	return w, nil
}
