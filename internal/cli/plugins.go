package cli

import (
	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
)

// pluginRegistry returns a registry with every built-in scheduling plugin
// registered explicitly, and the preset profiles (default among them).
func pluginRegistry() (*framework.Registry, map[string]config.ProfileSpec, error) {
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		return nil, nil, err
	}
	return reg, presets.Specs(), nil
}
