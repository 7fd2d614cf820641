package v1alpha1

import "time"

// AutoscalingSignalsConfig sets how the router summarises load for
// autoscalers (GET /autoscale/signals on the admin listener and the
// halyard_router_autoscale_* metrics, docs/autoscaling.md).
type AutoscalingSignalsConfig struct {
	// TTFT and TPOT are the objectives whose attainment is reported (the
	// share of requests finished in the window that met each); default 1s
	// and 100ms.
	TTFT Duration `json:"ttft,omitempty"`
	TPOT Duration `json:"tpot,omitempty"`
	// Window is how far back request outcomes and generated tokens count;
	// default 30s.
	Window Duration `json:"window,omitempty"`
}

// Defaults of AutoscalingSignalsConfig.
const (
	DefaultAutoscalingTTFT   = time.Second
	DefaultAutoscalingTPOT   = 100 * time.Millisecond
	DefaultAutoscalingWindow = 30 * time.Second
)
