package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/autoscale"
	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

// startSimOn serves a simulated engine on addr (host:port, port 0 picks
// one) on clock until the test ends; nil clock is real time.
func startSimOn(t *testing.T, addr string, clock simclock.Clock) (string, error) {
	t.Helper()
	if clock == nil {
		clock = simclock.Real{}
	}
	srv, err := vllmapi.Spec{Model: "qwen3-8b", Profile: "zero"}.Build(clock, nil)
	if err != nil {
		t.Fatalf("build sim: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := vllmapi.Serve(ctx, ln, srv, nil)
	t.Cleanup(func() { cancel(); _ = inst.Wait() })
	return ln.Addr().String(), nil
}

// threeEngines starts engines on 127.0.0.2, .3 and .4 on one port (a
// ModelServing's pods share their template's port; their IPs differ), the
// second on clock. It returns the port.
func threeEngines(t *testing.T, clock simclock.Clock) int32 {
	t.Helper()
	for range 10 {
		first, err := startSimOn(t, "127.0.0.2:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(first)
		if _, err := startSimOn(t, "127.0.0.3:"+port, clock); err != nil {
			continue // the port is taken on that address: another one
		}
		if _, err := startSimOn(t, "127.0.0.4:"+port, nil); err != nil {
			continue
		}
		p, _ := strconv.Atoi(port)
		return int32(p)
	}
	t.Fatal("no port free on 127.0.0.2-4")
	return 0
}

// serveOnIP plays the kubelet for a pod whose engine listens on ip (a
// loopback address): bound, running and ready.
func (k *cluster) serveOnIP(t *testing.T, pod *corev1.Pod, node, ip string) {
	t.Helper()
	if pod.Spec.NodeName == "" {
		k.bind(t, pod, node)
	}
	// The controller writes the pod too (annotations): retry on conflict.
	eventually(t, waitLong, "pod "+pod.Name+" serving on "+ip, func() (bool, string) {
		cur := &corev1.Pod{}
		if err := k.c.Get(context.Background(), client.ObjectKeyFromObject(pod), cur); err != nil {
			return false, err.Error()
		}
		now := metav1.Now()
		cur.Status.Phase = corev1.PodRunning
		cur.Status.PodIP = ip
		cur.Status.PodIPs = []corev1.PodIP{{IP: ip}}
		cur.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		}
		if err := k.c.Status().Update(context.Background(), cur); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// groupPod returns the live pod of group idx, or nil.
func (k *cluster) groupPod(t *testing.T, ns, ms string, idx int) *corev1.Pod {
	t.Helper()
	for _, p := range k.pods(t, ns, ms) {
		if p.Labels[servingv1.LabelGroup] == strconv.Itoa(idx) && p.DeletionTimestamp == nil {
			return &p
		}
	}
	return nil
}

// routerEndpoints reads the router's GET /autoscale/endpoints?pool=.
func routerEndpoints(t *testing.T, admin, pool string) map[string]autoscale.EndpointLoad {
	t.Helper()
	resp, err := http.Get(admin + "/autoscale/endpoints?pool=" + pool)
	if err != nil {
		t.Fatalf("endpoints: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Endpoints []autoscale.EndpointLoad `json:"endpoints"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("endpoints: %v", err)
	}
	out := map[string]autoscale.EndpointLoad{}
	for _, e := range body.Endpoints {
		out[e.Group] = e
	}
	return out
}

// TestAutoscalerDrainsTheColdGroup: a ModelServing of three groups, each
// a simulated engine behind a real router (Kubernetes discovery, the
// OpenAI SDK as client). Groups 0 and 2 serve repeated prompts (the router
// records their cache hits); group 1 serves one long streamed request that
// stays in flight (its engine runs on a clock the test holds). With
// autoscaling on and no load, the autoscaler removes one group: it drains
// group 1, the cold one, not the highest index; routers stop sending to
// it; it is not removed while the request is in flight; the request ends
// with 200 and its tokens; then group 1 is retired and groups 0 and 2 stay.
func TestAutoscalerDrainsTheColdGroup(t *testing.T) {
	k, clock := sharedCluster(t)
	ns := k.namespace(t, "asdrain")
	pool := ns + "/drain"
	ctx := context.Background()
	engineClock := simclock.NewVirtual(time.Unix(0, 0))
	port := threeEngines(t, engineClock)

	ms := servingOn(ns, "drain", port)
	ms.Spec.Replicas = ptr.To[int32](3)
	create(t, k, ms)
	node := k.createNode(t, "asdrain-node", nil)
	eventually(t, waitLong, "3 pods", func() (bool, string) {
		n := len(k.pods(t, ns, "drain"))
		return n == 3, fmt.Sprintf("%d pods", n)
	})
	for g := range 3 {
		k.serveOnIP(t, k.groupPod(t, ns, "drain", g), node.Name, fmt.Sprintf("127.0.0.%d", g+2))
	}
	if err := k.c.Create(ctx, modelRoute(ns, "chat", "chat", weighted("drain", 1))); err != nil {
		t.Fatal(err)
	}
	_, base, admin := startKubeRouter(t, k, ns, "")
	useRouter(t, pool, admin)
	sdk := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))

	// steer marks the groups in drain as draining (by hand, before the
	// autoscaler runs) and waits until the router follows.
	steer := func(drain ...int) {
		t.Helper()
		for g := range 3 {
			pod := k.groupPod(t, ns, "drain", g)
			v := "null"
			if slices.Contains(drain, g) {
				v = `"2026-01-01T00:00:00Z"`
			}
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, servingv1.AnnotationDraining, v)
			if err := k.c.Patch(ctx, pod, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, waitLong, fmt.Sprintf("router drains %v", drain), func() (bool, string) {
			eps := routerEndpoints(t, admin, pool)
			for g := range 3 {
				e, ok := eps[strconv.Itoa(g)]
				if !ok || e.Draining != slices.Contains(drain, g) {
					return false, fmt.Sprintf("%+v", eps)
				}
			}
			return true, ""
		})
	}
	warm := func(prefix string) {
		t.Helper()
		prompt := strings.Repeat(prefix+" shares this long system prompt with its repeats. ", 24)
		send := func() error {
			_, err := sdk.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model: "chat", MaxTokens: openai.Int(2),
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
			})
			return err
		}
		// Each is sent until it is answered: 404 until the router knows the
		// route, 503 while the one endpoint left undrained is not ready in
		// the router's view yet (its first scrape, or a scrape missed on a
		// loaded machine). Any other error fails the test.
		for i := range 3 {
			eventually(t, waitLong, fmt.Sprintf("warm %s request %d", prefix, i+1), func() (bool, string) {
				err := send()
				var apiErr *openai.Error
				if errors.As(err, &apiErr) && (apiErr.StatusCode == http.StatusNotFound || apiErr.StatusCode == http.StatusServiceUnavailable) {
					return false, err.Error()
				}
				if err != nil {
					t.Fatalf("warm %s request %d: %v", prefix, i+1, err)
				}
				return true, ""
			})
		}
	}
	t.Log("engines serving")
	steer(1, 2)
	warm("alpha")
	steer(0, 1)
	warm("gamma")
	eps := routerEndpoints(t, admin, pool)
	if len(eps["0"].Hot) == 0 || len(eps["2"].Hot) == 0 || len(eps["1"].Hot) != 0 {
		t.Fatalf("hit ledgers: group 0 %d blocks, 1 %d, 2 %d; want 0 and 2 hot, 1 cold", len(eps["0"].Hot), len(eps["1"].Hot), len(eps["2"].Hot))
	}

	// A streamed request in flight on group 1.
	steer(0, 2)
	// The SDK returns once the answer's headers came; the engine sends
	// nothing until its clock moves: read it in the background.
	type result struct {
		chunks int
		text   string
		err    error
	}
	got := make(chan result, 1)
	go func() {
		stream := sdk.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: "chat", MaxTokens: openai.Int(16),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a long answer, please")},
		})
		var text strings.Builder
		n := 0
		for stream.Next() {
			n++
			for _, c := range stream.Current().Choices {
				text.WriteString(c.Delta.Content)
			}
		}
		got <- result{n, text.String(), stream.Err()}
	}()
	t.Log("streaming on group 1")
	eventually(t, waitLong, "the request in flight on group 1", func() (bool, string) {
		e := routerEndpoints(t, admin, pool)["1"]
		return e.InFlight == 1, fmt.Sprintf("%+v", e)
	})
	steer()

	// Autoscaling on: no load, at least 2 groups.
	eventually(t, waitLong, "autoscaling on", func() (bool, string) {
		cur := k.get(t, ns, "drain")
		cur.Spec.Autoscaling = &servingv1.AutoscalingSpec{
			MinGroups: ptr.To[int32](2), MaxGroups: 3,
			Targets:     &servingv1.AutoscalingTargets{RunningPerEngine: ptr.To[int32](10)},
			PanicWindow: &metav1.Duration{},
			ScaleDown:   servingv1.AutoscalingScaleDown{StabilizationWindow: &metav1.Duration{Duration: time.Minute}, DrainGrace: &metav1.Duration{Duration: time.Hour}},
		}
		if err := k.c.Update(ctx, cur); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	eventually(t, waitLong, "group 1 draining", func() (bool, string) {
		cur := k.get(t, ns, "drain")
		as := cur.Status.Autoscaling
		if as == nil || len(as.Draining) == 0 {
			clock.Advance(10 * time.Second) // past the first scale-down window
			return false, fmt.Sprintf("status %+v", as)
		}
		return true, ""
	})
	cur := k.get(t, ns, "drain")
	if d := cur.Status.Autoscaling.Draining; len(d) != 1 || d[0].Index != 1 {
		t.Fatalf("draining %+v, want group 1 (the cold one), not the highest index", d)
	}
	eventually(t, waitLong, "the router drains group 1", func() (bool, string) {
		e := routerEndpoints(t, admin, pool)["1"]
		return e.Draining, fmt.Sprintf("%+v", e)
	})
	// While the request is in flight the group stays, however long: a
	// decision taken after ten more minutes still keeps it.
	clock.Advance(10 * time.Minute)
	after := clock.Now().Truncate(time.Second)
	k.poke(t, ns, "drain")
	eventually(t, waitLong, "a decision after the advance", func() (bool, string) {
		as := k.get(t, ns, "drain").Status.Autoscaling
		return as.LastDecision != nil && !as.LastDecision.Time.Before(after), fmt.Sprintf("last decision %v, want from %v", as.LastDecision, after)
	})
	cur = k.get(t, ns, "drain")
	if *cur.Spec.Replicas != 3 || k.groupPod(t, ns, "drain", 1) == nil || len(cur.Status.Autoscaling.Draining) != 1 {
		t.Fatalf("replicas %d, group 1 pod %v, draining %+v: removed with a request in flight", *cur.Spec.Replicas, k.groupPod(t, ns, "drain", 1) != nil, cur.Status.Autoscaling.Draining)
	}
	// New requests go to groups 0 and 2 only.
	for i := range 4 {
		if _, err := sdk.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "chat", MaxTokens: openai.Int(2),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("during the drain " + strconv.Itoa(i))},
		}); err != nil {
			t.Fatalf("request during the drain: %v", err)
		}
	}
	if e := routerEndpoints(t, admin, pool)["1"]; e.InFlight != 1 {
		t.Errorf("group 1 in flight %d during the drain, want only the streamed request", e.InFlight)
	}

	// Let group 1's engine run (its clock moves only when the test moves
	// it): the request finishes.
	var res result
	deadline := time.After(waitLong)
pump:
	for {
		engineClock.Advance(time.Second)
		select {
		case res = <-got:
			break pump
		case <-deadline:
			t.Fatal("the streamed request did not finish")
		case <-time.After(10 * time.Millisecond): // pump the engine's clock again
		}
	}
	chunks, text, err := res.chunks, res.text, res.err
	if err != nil || chunks == 0 || text == "" {
		t.Fatalf("the streamed request on the draining group: error %v, %d chunks, text %q", err, chunks, text)
	}

	eventually(t, waitLong, "group 1 retired", func() (bool, string) {
		cur := k.get(t, ns, "drain")
		return *cur.Spec.Replicas == 2 && slices.Equal(cur.Spec.RetiredGroups, []int32{1}) && k.groupPod(t, ns, "drain", 1) == nil,
			fmt.Sprintf("replicas %d retired %v", *cur.Spec.Replicas, cur.Spec.RetiredGroups)
	})
	for _, g := range []int{0, 2} {
		if k.groupPod(t, ns, "drain", g) == nil {
			t.Errorf("group %d was removed; only group 1 should go", g)
		}
	}
}
