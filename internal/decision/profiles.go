package decision

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// ErrUnknownProfile is returned for a profile name that is neither
// configured nor a preset.
var ErrUnknownProfile = errors.New("unknown profile")

// Profiles turns profile names into built profiles, the one place that
// does: a configured profile of the name wins, else a preset. A profile is
// built once, on first use, and then kept (plugins hold state such as the
// prefix index). It is safe for concurrent use.
type Profiles struct {
	specs, presets map[string]config.ProfileSpec
	reg            *framework.Registry
	handle         framework.Handle

	mu    sync.Mutex
	built map[string]*scheduling.Profile
}

// NewProfiles resolves names in specs (the configuration's, winning) and
// presets, building their plugins through reg (wrapped to record the
// prefix-cache scorer's scores, see PrefixScore) with handle h.
func NewProfiles(specs, presets map[string]config.ProfileSpec, reg *framework.Registry, h framework.Handle) *Profiles {
	return &Profiles{
		specs:   maps.Clone(specs),
		presets: maps.Clone(presets),
		reg:     recordingRegistry(reg),
		handle:  h,
		built:   map[string]*scheduling.Profile{},
	}
}

// Spec returns the spec a name resolves to.
func (p *Profiles) Spec(name string) (config.ProfileSpec, bool) {
	if s, ok := p.specs[name]; ok {
		return s, true
	}
	s, ok := p.presets[name]
	return s, ok
}

// Has reports whether name resolves to a profile.
func (p *Profiles) Has(name string) bool {
	_, ok := p.Spec(name)
	return ok
}

// Get returns the profile name resolves to, building it on first use.
// The error wraps ErrUnknownProfile for an unknown name, or names the
// field of a spec that does not build.
func (p *Profiles) Get(name string) (*scheduling.Profile, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr := p.built[name]; pr != nil {
		return pr, nil
	}
	spec, ok := p.Spec(name)
	if !ok {
		return nil, fmt.Errorf("%w %q (presets: %v)", ErrUnknownProfile, name, p.PresetNames())
	}
	pr, err := scheduling.NewProfile(name, spec, p.reg, p.handle)
	if err != nil {
		return nil, err
	}
	p.built[name] = pr
	return pr, nil
}

// Built reports whether name's profile has been built.
func (p *Profiles) Built(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.built[name] != nil
}

// PresetNames lists the presets, sorted.
func (p *Profiles) PresetNames() []string { return slices.Sorted(maps.Keys(p.presets)) }

// BuiltProfiles returns the profiles built so far, by name (a new map).
func (p *Profiles) BuiltProfiles() map[string]*scheduling.Profile {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.built)
}
