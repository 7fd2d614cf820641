package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/autoscale"
	"github.com/halyard-dev/halyard/internal/controller"
)

// TestAutoscalingSpecValidation checks spec.autoscaling's CEL rules and
// bounds on the real API server (dry runs: nothing is stored).
func TestAutoscalingSpecValidation(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "autoscaling-cel")
	valid := func() *servingv1.AutoscalingSpec {
		return &servingv1.AutoscalingSpec{
			MinGroups: ptr.To[int32](0), MaxGroups: 4,
			Targets:      &servingv1.AutoscalingTargets{WaitingPerEngine: ptr.To[int32](4), KVUsagePercent: ptr.To[int32](70)},
			StableWindow: &metav1.Duration{Duration: time.Minute},
			PanicWindow:  &metav1.Duration{Duration: 6 * time.Second},
		}
	}
	pd := func() *servingv1.AutoscalingPD {
		return &servingv1.AutoscalingPD{
			Prefill:         servingv1.AutoscalingTargets{PrefillTokensPerEngine: ptr.To[int32](8000)},
			Decode:          servingv1.AutoscalingTargets{KVUsagePercent: ptr.To[int32](70)},
			MinRatioPercent: ptr.To[int32](50), MaxRatioPercent: ptr.To[int32](200),
		}
	}
	tests := []struct {
		name   string
		mutate func(*servingv1.ModelServing)
		want   string // "" = accepted
	}{
		{"valid with targets", func(*servingv1.ModelServing) {}, ""},
		{"valid with pd", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.Targets, m.Spec.Autoscaling.PD = nil, pd() }, ""},
		{"min above max", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.MinGroups = ptr.To[int32](5) }, "minGroups must not exceed maxGroups"},
		{"max 0", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.MaxGroups = 0 }, "spec.autoscaling.maxGroups"},
		{"no load target", func(m *servingv1.ModelServing) {
			m.Spec.Autoscaling.Targets = &servingv1.AutoscalingTargets{AttainmentPercent: ptr.To[int32](95)}
		}, "at least one of waitingPerEngine"},
		{"kv above 100", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.Targets.KVUsagePercent = ptr.To[int32](120) }, "kvUsagePercent"},
		{"panic window beyond stable", func(m *servingv1.ModelServing) {
			m.Spec.Autoscaling.PanicWindow = &metav1.Duration{Duration: 2 * time.Minute}
		}, "panicWindow must not exceed stableWindow"},
		{"targets and pd", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.PD = pd() }, "give either targets or pd"},
		{"neither targets nor pd", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.Targets = nil }, "give either targets or pd"},
		{"pd ratio inverted", func(m *servingv1.ModelServing) {
			m.Spec.Autoscaling.Targets, m.Spec.Autoscaling.PD = nil, pd()
			m.Spec.Autoscaling.PD.MinRatioPercent = ptr.To[int32](300)
		}, "minRatioPercent must not exceed maxRatioPercent"},
		{"pd without prefill and decode roles", func(m *servingv1.ModelServing) {
			m.Spec.Autoscaling.Targets, m.Spec.Autoscaling.PD = nil, pd()
			m.Spec.Roles = m.Spec.Roles[:1]
			m.Spec.Roles[0].Name = "worker"
		}, "autoscaling.pd needs roles named prefill and decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms := pdServing(ns, "scaled", 1)
			ms.Spec.Autoscaling = valid()
			tt.mutate(ms)
			err := k.c.Create(context.Background(), ms, client.DryRunAll)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("create (dry run): %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("create succeeded, want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// signalServer stands in for the routers' admin listeners: it serves
// GET /autoscale/signals?pool= in the router's wire format, with the
// signals a test sets per pool, over a real socket.
var signalServer struct {
	once    sync.Once
	srv     *httptest.Server
	mu      sync.Mutex
	pools   map[string]autoscale.Signals
	routers map[string]*controller.RouterSignals
}

// testRouterSignals is the shared controller's signal source: the real
// HTTP client (controller.RouterSignals) reading signalServer, or, for a
// pool a test gave a real router (useRouter), that router's admin
// listener.
func testRouterSignals() controller.SignalSource {
	signalServer.once.Do(func() {
		signalServer.pools = map[string]autoscale.Signals{}
		signalServer.routers = map[string]*controller.RouterSignals{}
		signalServer.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			signalServer.mu.Lock()
			defer signalServer.mu.Unlock()
			pool := r.URL.Query().Get("pool")
			if r.URL.Path == "/autoscale/endpoints" { // no engine to drain
				_ = json.NewEncoder(w).Encode(map[string]any{"endpoints": []any{}})
				return
			}
			s, ok := signalServer.pools[pool]
			if r.URL.Path != "/autoscale/signals" || !ok {
				http.NotFound(w, r)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"pools": map[string]autoscale.Signals{pool: s}})
		}))
	})
	return poolSignals{fake: &controller.RouterSignals{URLs: []string{signalServer.srv.URL}}}
}

// poolSignals sends each pool's reads to its real router, else to the
// fake.
type poolSignals struct{ fake *controller.RouterSignals }

func (p poolSignals) source(pool string) *controller.RouterSignals {
	signalServer.mu.Lock()
	defer signalServer.mu.Unlock()
	if r := signalServer.routers[pool]; r != nil {
		return r
	}
	return p.fake
}

func (p poolSignals) Signals(ctx context.Context, pool string) (autoscale.Signals, error) {
	return p.source(pool).Signals(ctx, pool)
}

func (p poolSignals) Endpoints(ctx context.Context, pool string) ([]autoscale.EndpointLoad, error) {
	return p.source(pool).Endpoints(ctx, pool)
}

// useRouter makes the shared controller read pool's signals and
// endpoints from a real router's admin listener until the test ends.
func useRouter(t *testing.T, pool, adminURL string) {
	signalServer.mu.Lock()
	signalServer.routers[pool] = &controller.RouterSignals{URLs: []string{adminURL}}
	signalServer.mu.Unlock()
	t.Cleanup(func() {
		signalServer.mu.Lock()
		delete(signalServer.routers, pool)
		signalServer.mu.Unlock()
	})
}

func setSignals(pool string, s autoscale.Signals) {
	signalServer.mu.Lock()
	signalServer.pools[pool] = s
	signalServer.mu.Unlock()
}

func scalingCondition(ms *servingv1.ModelServing) *metav1.Condition {
	for i := range ms.Status.Conditions {
		if ms.Status.Conditions[i].Type == servingv1.ConditionScalingActive {
			return &ms.Status.Conditions[i]
		}
	}
	return nil
}

// TestAutoscalerScalesAndYieldsToManualScale runs the controller's
// autoscaler against the real API server: signals asking for 9 engines
// (3 groups of 3) scale a ModelServing from 1 to 3 groups and their pods
// appear; a kubectl scale to 2 is kept (ManualOverride) while the
// autoscaler keeps deciding; after the override and the scale-down
// window, low signals bring it down to minGroups.
func TestAutoscalerScalesAndYieldsToManualScale(t *testing.T) {
	k, clock := sharedCluster(t)
	ns := k.namespace(t, "autoscaler")
	pool := ns + "/as"
	unknown := float64(autoscale.Unknown)
	setSignals(pool, autoscale.Signals{Engines: 3, Running: 90, TTFTAttainment: unknown, TPOTAttainment: unknown})
	ms := pdServing(ns, "as", 1) // prefill ×2 + decode ×1: 3 engines per group
	ms.Spec.Autoscaling = &servingv1.AutoscalingSpec{
		MinGroups: ptr.To[int32](1), MaxGroups: 4,
		Targets:     &servingv1.AutoscalingTargets{RunningPerEngine: ptr.To[int32](10)},
		PanicWindow: &metav1.Duration{},
		ScaleDown:   servingv1.AutoscalingScaleDown{MaxGroups: ptr.To[int32](4), Period: &metav1.Duration{Duration: time.Second}},
	}
	create(t, k, ms)
	eventually(t, waitLong, "3 groups asked and 9 pods", func() (bool, string) {
		ms := k.get(t, ns, "as")
		n := len(k.pods(t, ns, "as"))
		c := scalingCondition(ms)
		ok := *ms.Spec.Replicas == 3 && n == 9 && c != nil && c.Status == metav1.ConditionTrue && ms.Status.Autoscaling != nil &&
			ms.Status.Autoscaling.DesiredGroups == 3 && strings.Contains(ms.Status.Autoscaling.Reason, "running")
		return ok, fmt.Sprintf("replicas %d, %d pods, condition %+v, status %+v", *ms.Spec.Replicas, n, c, ms.Status.Autoscaling)
	})

	// kubectl scale --replicas=2 while autoscaling is on.
	scaleTo(t, k, k.get(t, ns, "as"), 2)
	eventually(t, waitLong, "manual override kept", func() (bool, string) {
		ms := k.get(t, ns, "as")
		c := scalingCondition(ms)
		return c != nil && c.Reason == controller.ReasonManualOverride && *ms.Spec.Replicas == 2,
			fmt.Sprintf("replicas %d, condition %+v", *ms.Spec.Replicas, c)
	})
	// The condition is written by the autoscaler after it saw the manual
	// value and chose to keep it (signals still ask for 3).

	// Past the override (10m) and the scale-down window (5m), demand for
	// 3 engines (1 group) brings it down.
	setSignals(pool, autoscale.Signals{Engines: 6, Running: 20, TTFTAttainment: unknown, TPOTAttainment: unknown})
	clock.Advance(11 * time.Minute)
	eventually(t, waitLong, "scaled down to 1 group", func() (bool, string) {
		ms := k.get(t, ns, "as")
		c := scalingCondition(ms)
		if *ms.Spec.Replicas != 1 {
			clock.Advance(10 * time.Second) // the windows count on the controller's clock
		}
		return *ms.Spec.Replicas == 1 && len(k.pods(t, ns, "as")) <= 3 || false, fmt.Sprintf("replicas %d, condition %+v", *ms.Spec.Replicas, c)
	})
}

// rolePods counts a ModelServing's live pods per role, and returns their
// UIDs by name.
func rolePods(t *testing.T, k *cluster, ns, name string) (map[string]int, map[string]string) {
	t.Helper()
	n, uids := map[string]int{}, map[string]string{}
	for _, p := range k.pods(t, ns, name) {
		if p.DeletionTimestamp == nil {
			n[p.Labels[servingv1.LabelRole]]++
			uids[p.Name] = string(p.UID)
		}
	}
	return n, uids
}
