package plugins

import (
	"fmt"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/ejection"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/health"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/loracapable"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/role"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/peerpolicy"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/maxscore"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/random"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/roundrobin"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/kvutilization"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/leastrequest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/loraaffinity"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/predictedlatency"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/queuedepth"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/sessionaffinity"
)

// BuiltIn lists every built-in plugin type with its factory.
func BuiltIn() map[string]framework.Factory {
	return map[string]framework.Factory{
		health.Type:           health.Factory,
		role.Type:             role.Factory,
		loracapable.Type:      loracapable.Factory,
		ejection.Type:         ejection.Factory,
		queuedepth.Type:       queuedepth.Factory,
		kvutilization.Type:    kvutilization.Factory,
		leastrequest.Type:     leastrequest.Factory,
		prefixcache.Type:      prefixcache.Factory,
		loraaffinity.Type:     loraaffinity.Factory,
		predictedlatency.Type: predictedlatency.Factory,
		sessionaffinity.Type:  sessionaffinity.Factory,
		maxscore.Type:         maxscore.Factory,
		random.Type:           random.Factory,
		roundrobin.Type:       roundrobin.Factory,
		// The peers' policies (package peerpolicy).
		peerpolicy.SGLangType:      peerpolicy.SGLangFactory,
		peerpolicy.AIBrixType:      peerpolicy.AIBrixFactory,
		peerpolicy.KthenaLeastType: peerpolicy.KthenaLeastFactory,
		peerpolicy.MaxWaitingType:  peerpolicy.MaxWaitingFactory,
	}
}

// RegisterAll registers every built-in plugin on reg. It fails if a type is
// already registered.
func RegisterAll(reg *framework.Registry) error {
	for typ, f := range BuiltIn() {
		if err := reg.Register(typ, f); err != nil {
			return fmt.Errorf("register built-in plugins: %w", err)
		}
	}
	return nil
}
