package simulator

import (
	"github.com/halyard-dev/halyard/internal/steptime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBuiltinProfiles(t *testing.T) {
	if diff := cmp.Diff([]string{"a100-llama3-8b", "h100-llama3-8b", "zero"}, BuiltinProfiles()); diff != "" {
		t.Errorf("built-in profiles (-want +got):\n%s", diff)
	}
	for _, name := range BuiltinProfiles() {
		t.Run(name, func(t *testing.T) {
			p, err := LoadProfile(name)
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != name {
				t.Errorf("name = %q", p.Name)
			}
			if _, err := NewEngine(p.Config("m"), nil); err == nil {
				t.Error("NewEngine with nil clock succeeded")
			}
		})
	}
	def, err := LoadProfile("")
	if err != nil || def.Name != DefaultProfile {
		t.Fatalf("default profile = %q, %v", def.Name, err)
	}
	want := StepTime{BaseMs: 5.8, PrefillTokenMs: 0.018, DecodeSeqMs: 0.006, ContextTokenMs: 4e-5}
	if diff := cmp.Diff(want, def.StepTime); diff != "" {
		t.Errorf("h100 step time is not DESIGN.md §7's (-want +got):\n%s", diff)
	}
	zero, _ := LoadProfile("zero")
	if !zero.StepTime.IsZero() {
		t.Errorf("zero profile has latency: %+v", zero.StepTime)
	}
}

func TestLoadProfileFile(t *testing.T) {
	tests := []struct {
		path    string
		wantErr []string
	}{
		{"testdata/custom-profile.yaml", nil},
		{"testdata/unknown-field.yaml", []string{"testdata/unknown-field.yaml", "typo"}},
		{"testdata/invalid-values.yaml", []string{"stepTime.baseMs", "capacity.numGPUBlocks"}},
		{"testdata/missing.yaml", []string{"read profile"}},
		{"no-such-profile", []string{"unknown profile", "h100-llama3-8b"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			p, err := LoadProfile(tt.path)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if p.Capacity.MaxNumSeqs != 4 || p.StepTime.BaseMs != 2 {
					t.Errorf("decoded %+v", p)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	p, _ := LoadProfile("zero")
	cfg := p.Config("")
	cfg.EOSProbability = 1
	cfg.LoRAs = []string{"a", "a", ""}
	err := cfg.Validate()
	for _, w := range []string{"model:", "eosProbability:", "loras[1]: duplicate", "loras[2]: must not be empty"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate error %v does not mention %q", err, w)
		}
	}
}

// The scheduler's latency model starts from steptime.H100Llama3_8B; it must
// stay the h100 profile's step time.
func TestH100PriorMatchesProfile(t *testing.T) {
	p, err := LoadProfile("h100-llama3-8b")
	if err != nil {
		t.Fatal(err)
	}
	if p.StepTime != steptime.H100Llama3_8B {
		t.Fatalf("steptime.H100Llama3_8B = %+v, profile h100-llama3-8b has %+v", steptime.H100Llama3_8B, p.StepTime)
	}
}
