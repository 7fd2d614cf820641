package scheduling

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetrics registers with reg every plugin of the profile that is a
// Prometheus collector, adding the label profile=<name> to its metrics.
func (p *Profile) RegisterMetrics(reg prometheus.Registerer) error {
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"profile": p.name}, reg)
	for _, pl := range p.Plugins() {
		c, ok := pl.(prometheus.Collector)
		if !ok {
			continue
		}
		if err := wrapped.Register(c); err != nil {
			return fmt.Errorf("profile %s: register metrics of %s: %w", p.name, pl.TypedName(), err)
		}
	}
	return nil
}
