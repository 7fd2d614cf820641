package decision_test

import (
	"context"
	"testing"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

func TestCapacityIsWhatTheEndpointsOffer(t *testing.T) {
	q := config.QueueConfig{EndpointConcurrency: 8, EngineWaiting: -1, KVUtilization: 0.9}
	kv := framework.Metrics{BlockSize: 16, NumBlocks: 100} // 1600 tokens
	for _, tc := range []struct {
		name           string
		q              config.QueueConfig
		eps            []*ep
		slots, serving int
	}{
		{"concurrency per endpoint", q, []*ep{mk("a", framework.RoleBoth, nil), mk("b", framework.RoleBoth, nil)}, 16, 2},
		{"busier than the bound keeps its own", q, []*ep{mk("a", framework.RoleBoth, func(e *ep) { e.WithInFlight(11, 0) }), mk("b", framework.RoleBoth, nil)}, 19, 2},
		{"kv full offers only its in-flight", q, []*ep{mk("a", framework.RoleBoth, func(e *ep) { e.WithInFlight(3, 0).WithMetrics(framework.Metrics{KVCacheUsage: 0.95}) })}, 3, 1},
		{"router's tokens past the kv capacity", q, []*ep{mk("a", framework.RoleBoth, func(e *ep) { e.WithInFlight(2, 1500).WithMetrics(kv) })}, 2, 1},
		{"engine queue when asked", config.QueueConfig{EngineWaiting: 1, KVUtilization: 0.9}, []*ep{mk("a", framework.RoleBoth, func(e *ep) { e.WithInFlight(5, 0).WithMetrics(framework.Metrics{WaitingRequests: 2}) })}, 5, 1},
		{"no bound", config.QueueConfig{EngineWaiting: 1, KVUtilization: 0.9}, []*ep{mk("a", framework.RoleBoth, nil)}, -1, 1},
		{"unhealthy endpoints do not count", q, []*ep{mk("a", framework.RoleBoth, func(e *ep) { e.sick = true })}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := director(t, tc.eps)
			slots, serving := d.Capacity(context.Background(), &framework.Request{Model: "m"}, []decision.Target{{Pool: "p"}}, tc.q)
			if slots != tc.slots || serving != tc.serving {
				t.Errorf("Capacity = %d slots, %d endpoints; want %d, %d", slots, serving, tc.slots, tc.serving)
			}
		})
	}
}
