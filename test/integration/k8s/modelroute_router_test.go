package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/discovery"
	"github.com/halyard-dev/halyard/internal/router"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

// simEngine is an in-process `halyard sim` on 127.0.0.1 that counts the
// generation requests it finished.
type simEngine struct {
	inst *vllmapi.Instance
	port int32
	n    atomic.Int64
}

func startSimEngine(t *testing.T, model string) *simEngine {
	t.Helper()
	e := &simEngine{}
	ctx, cancel := context.WithCancel(context.Background())
	inst, err := vllmapi.Start(ctx, vllmapi.Spec{Listen: "127.0.0.1:0", Model: model, Profile: "zero",
		OnResult: func(simulator.Result) { e.n.Add(1) }}, nil)
	if err != nil {
		cancel()
		t.Fatalf("start sim: %v", err)
	}
	t.Cleanup(func() { cancel(); _ = inst.Wait() })
	p, err := strconv.ParseInt(inst.Addr[strings.LastIndexByte(inst.Addr, ':')+1:], 10, 32)
	if err != nil {
		t.Fatalf("sim address %q: %v", inst.Addr, err)
	}
	e.inst, e.port = inst, int32(p)
	return e
}

// servingOn is a ModelServing of one worker pod whose engine container
// listens on port (the port discovery puts in the endpoint's address).
func servingOn(ns, name string, port int32) *servingv1.ModelServing {
	tpl := engineTemplate("1")
	tpl.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: port}}
	return &servingv1.ModelServing{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: servingv1.ModelServingSpec{
			Model:    servingv1.ModelSpec{Name: "qwen3-8b", Source: "hf://Qwen/Qwen3-8B"},
			Engine:   servingv1.EngineVLLM,
			Replicas: ptr.To(int32(1)),
			Roles:    []servingv1.RoleSpec{{Name: "worker", Replicas: 1, Template: tpl}},
		},
	}
}

// serveOnLoopback plays the kubelet for a pod whose engine runs on this
// machine: bound, IP 127.0.0.1, running and ready.
func (k *cluster) serveOnLoopback(t *testing.T, pod *corev1.Pod, node string) {
	t.Helper()
	k.serveOnIP(t, pod, node, "127.0.0.1")
}

func modelRoute(ns, name, model string, targets ...config.TargetSpec) *servingv1.ModelRoute {
	mr := &servingv1.ModelRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	mr.Spec.Model = model
	mr.Spec.Targets = targets
	return mr
}

func weighted(pool string, w int32) config.TargetSpec {
	return config.TargetSpec{Pool: pool, Weight: ptr.To(w)}
}

// The router with Kubernetes discovery follows ModelRoute objects live: a
// new route serves, edits of weights and targets (ModelServings and
// external endpoints) move the traffic, an invalid or conflicting route
// breaks nothing, and a deleted route's model is a 404 in OpenAI's shape.
func TestRouterFollowsModelRoutes(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "mroute")
	ctx := context.Background()

	alpha, beta, hosted := startSimEngine(t, "qwen3-8b"), startSimEngine(t, "qwen3-8b"), startSimEngine(t, "qwen3-8b")
	create(t, k, servingOn(ns, "alpha", alpha.port))
	create(t, k, servingOn(ns, "beta", beta.port))
	node := k.createNode(t, "mroute-node", nil)
	for _, ms := range []string{"alpha", "beta"} {
		eventually(t, waitLong, "the pod of "+ms, func() (bool, string) {
			n := len(k.pods(t, ns, ms))
			return n == 1, fmt.Sprintf("%d pods", n)
		})
		p := k.pods(t, ns, ms)[0]
		k.serveOnLoopback(t, &p, node.Name)
	}

	r, base, _ := startKubeRouter(t, k, ns, "")
	sdk := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	chat := func(model string) error {
		_, err := sdk.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:     model,
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello from the route test")},
			MaxTokens: openai.Int(4),
		})
		return err
	}
	counts := func() [3]int64 { return [3]int64{alpha.n.Load(), beta.n.Load(), hosted.n.Load()} }
	// send sends n requests to model and returns how many each engine got.
	send := func(model string, n int) [3]int64 {
		t.Helper()
		before := counts()
		for i := range n {
			if err := chat(model); err != nil {
				t.Fatalf("request %d to %s: %v", i, model, err)
			}
		}
		after := counts()
		return [3]int64{after[0] - before[0], after[1] - before[1], after[2] - before[2]}
	}
	// until polls a request to model until it is served by engine idx
	// (-1: until it fails with 404).
	until := func(what, model string, ok func(err error, got [3]int64) bool) {
		t.Helper()
		eventually(t, waitLong, what, func() (bool, string) {
			before := counts()
			err := chat(model)
			after := counts()
			got := [3]int64{after[0] - before[0], after[1] - before[1], after[2] - before[2]}
			return ok(err, got), fmt.Sprintf("error %v, served by %v", err, got)
		})
	}

	// 1. A new ModelRoute serves.
	mr := modelRoute(ns, "chat", "chat", weighted("alpha", 1))
	if err := k.c.Create(ctx, mr); err != nil {
		t.Fatalf("create modelroute: %v", err)
	}
	until("chat served by alpha", "chat", func(err error, got [3]int64) bool { return err == nil && got[0] == 1 })
	if got := send("chat", 10); got != [3]int64{10, 0, 0} {
		t.Errorf("route to alpha: engines served %v, want all 10 on alpha", got)
	}

	// 2. An invalid route (a header expression the schema cannot check)
	// and a younger route claiming the same model break nothing.
	broken := modelRoute(ns, "broken", "broken", weighted("beta", 1))
	broken.Spec.Rules = []config.RouteRule{{Headers: []config.HeaderMatch{{Name: "x-team", Value: "(", Type: config.MatchRegularExpression}}, Targets: []config.TargetSpec{{Pool: "beta"}}}}
	rival := modelRoute(ns, "chat-rival", "chat", weighted("beta", 1))
	for _, o := range []*servingv1.ModelRoute{broken, rival} {
		if err := k.c.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", o.Name, err)
		}
	}
	eventually(t, waitLong, "the broken and the rival route counted as skipped", func() (bool, string) {
		inv, conf := skippedRoutes(t, r, "invalid"), skippedRoutes(t, r, "conflict")
		return inv == 1 && conf == 1, fmt.Sprintf("invalid %v, conflict %v", inv, conf)
	})
	if got := send("chat", 10); got != [3]int64{10, 0, 0} {
		t.Errorf("with a rival route: engines served %v, want all 10 still on alpha (the older route wins)", got)
	}
	var apiErr *openai.Error
	if err := chat("broken"); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Errorf("the invalid route's model: %v, want a 404", err)
	}
	if err := k.c.Delete(ctx, rival); err != nil {
		t.Fatal(err)
	}

	// 3. Edit the weights: 1:3 between alpha and beta.
	edit := func(f func(*servingv1.ModelRoute)) {
		t.Helper()
		eventually(t, waitLong, "modelroute updated", func() (bool, string) {
			cur := &servingv1.ModelRoute{}
			if err := k.c.Get(ctx, client.ObjectKeyFromObject(mr), cur); err != nil {
				return false, err.Error()
			}
			f(cur)
			if err := k.c.Update(ctx, cur); err != nil {
				return false, err.Error()
			}
			return true, ""
		})
	}
	edit(func(m *servingv1.ModelRoute) {
		m.Spec.Targets = []config.TargetSpec{weighted("alpha", 1), weighted("beta", 3)}
	})
	until("chat served by beta", "chat", func(err error, got [3]int64) bool { return err == nil && got[1] == 1 })
	got := send("chat", 40)
	if got[2] != 0 || got[0]+got[1] != 40 || got[1] < 2*got[0] || got[0] == 0 {
		t.Errorf("1:3 split: engines served %v of 40, want about 10 on alpha and 30 on beta", got)
	}

	// 4. Edit the targets: an external endpoint declared by the route.
	edit(func(m *servingv1.ModelRoute) {
		m.Spec.Targets = []config.TargetSpec{weighted("hosted", 1)}
		m.Spec.Endpoints = []config.EndpointSpec{{Name: "hosted-0", URL: hosted.inst.URL, Model: "qwen3-8b", Pool: "hosted"}}
	})
	until("chat served by the external endpoint", "chat", func(err error, got [3]int64) bool { return err == nil && got[2] == 1 })
	if got := send("chat", 10); got != [3]int64{0, 0, 10} {
		t.Errorf("route to the external endpoint: engines served %v, want all 10 on it", got)
	}

	// 5. Delete it: 404 in OpenAI's shape.
	if err := k.c.Delete(ctx, mr); err != nil {
		t.Fatal(err)
	}
	until("chat gone", "chat", func(err error, _ [3]int64) bool {
		return errors.As(err, &apiErr) && apiErr.StatusCode == 404
	})
	if apiErr.Code != "model_not_found" || apiErr.Type != "invalid_request_error" || !strings.Contains(apiErr.Message, "chat") {
		t.Errorf("404 body: code %q type %q message %q", apiErr.Code, apiErr.Type, apiErr.Message)
	}
	if n := len(r.Store().Pool(ns + "/hosted")); n != 0 {
		t.Errorf("the deleted route's endpoint is still in the store (%d)", n)
	}
}

// startKubeRouter runs a router in process, as `halyard router
// --kubernetes --namespace ns` runs it (extra is YAML under router:,
// e.g. "admission: {...}"), until the test ends. It returns the router
// and its public and admin base URLs.
func startKubeRouter(t *testing.T, k *cluster, ns, extra string) (*router.Router, string, string) {
	t.Helper()
	return startKubeRouterWith(t, k, ns, extra, "")
}

// startKubeRouterWith is startKubeRouter with top, YAML added at the top
// level of the configuration (e.g. "pools: [...]").
func startKubeRouterWith(t *testing.T, k *cluster, ns, extra, top string) (*router.Router, string, string) {
	t.Helper()
	cfg, err := config.Parse([]byte("apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nrouter: {scrapeInterval: 50ms, health: {failureThreshold: 2, successThreshold: 1}" + extra + "}\n" + top + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(k.cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := dynamic.NewForConfig(k.cfg)
	if err != nil {
		t.Fatal(err)
	}
	logOut := slog.New(slog.DiscardHandler)
	if os.Getenv("HALYARD_TEST_LOGS") == "1" {
		logOut = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	r, err := router.New(router.Options{
		Config: cfg, Registry: reg, PresetProfiles: presets.Specs(), Logger: logOut,
		Source: &discovery.Kubernetes{Client: cs, Namespace: ns, Log: logOut},
		Routes: &discovery.ModelRoutes{Client: dc, Namespace: ns, Log: logOut},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := httptest.NewServer(r.AdminHandler())
	rctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.Serve(rctx, ln, 5*time.Second) }()
	t.Cleanup(func() {
		admin.Close()
		stop()
		if err := <-served; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	return r, "http://" + ln.Addr().String(), admin.URL
}

// skippedRoutes reads halyard_router_routes_skipped{reason}.
func skippedRoutes(t *testing.T, r *router.Router, reason string) float64 {
	t.Helper()
	fams, err := r.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "halyard_router_routes_skipped" {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelIs(m, "reason", reason) {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
