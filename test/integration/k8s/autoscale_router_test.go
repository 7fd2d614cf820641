package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/autoscale"
	"github.com/halyard-dev/halyard/internal/simclock"
)

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

// heldEngine moves a fleet engine's virtual clock only while the engine
// has more than keep requests: each step of the zero profile gives every
// running request one token, so the first keep requests it took stay in
// flight (a long answer progresses only while others are served), and
// every later request is served. free lets everything finish.
type heldEngine struct {
	clock *simclock.Virtual
	keep  atomic.Int32
}

func newHeldEngine(keep int32) *heldEngine {
	h := &heldEngine{clock: simclock.NewVirtual(time.Unix(0, 0))}
	h.keep.Store(keep)
	return h
}

// pump runs the clock until the test ends; busy counts the requests of
// the engines on it.
func (h *heldEngine) pump(t *testing.T, busy func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for busy() > int(h.keep.Load()) && h.clock.Step() {
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func (h *heldEngine) free() { h.keep.Store(0) }

// steadyLoad is several OpenAI SDK clients sending requests one after the
// other, streaming and not in turn, each with its own prompt, until stop.
type steadyLoad struct {
	stopped atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	done    []int // answered requests per client
	errs    []string
}

func startSteadyLoad(sdk openai.Client, clients int) *steadyLoad {
	l := &steadyLoad{done: make([]int, clients)}
	for c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; !l.stopped.Load(); i++ {
				err := steadyRequest(sdk, fmt.Sprintf("steady client %d request %d", c, i), (c+i)%2 == 0)
				l.mu.Lock()
				if err != nil {
					l.errs = append(l.errs, fmt.Sprintf("client %d request %d: %v", c, i, err))
				} else {
					l.done[c]++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// steadyRequest sends one request and checks it is answered with tokens.
func steadyRequest(sdk openai.Client, prompt string, stream bool) error {
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model: "chat", MaxTokens: openai.Int(3),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	}
	if !stream {
		res, err := sdk.Chat.Completions.New(ctx, params)
		if err != nil {
			return err
		}
		if len(res.Choices) == 0 || res.Choices[0].Message.Content == "" {
			return fmt.Errorf("no tokens: %+v", res)
		}
		return nil
	}
	s := sdk.Chat.Completions.NewStreaming(ctx, params)
	var text strings.Builder
	for s.Next() {
		for _, c := range s.Current().Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if err := s.Err(); err != nil {
		return err
	}
	if text.Len() == 0 {
		return errors.New("stream without tokens")
	}
	return nil
}

// answered returns the requests answered per client so far.
func (l *steadyLoad) answered() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.done)
}

// stop ends the load (every request sent is let finish) and returns the
// failures.
func (l *steadyLoad) stop() []string {
	l.stopped.Store(true)
	l.wg.Wait()
	return l.errs
}

// TestAutoscalerDrainsTheColdGroup, on KWOK nodes with simulated engines:
// a ModelServing of three groups behind a real router (Kubernetes
// discovery, the OpenAI SDK as client). Groups 0 and 2 serve repeated
// prompts (the router records their cache hits); group 1 serves one long
// streamed request that stays in flight (its engine's clock moves only
// while it serves other requests too). Six SDK clients then send requests,
// streaming and not, throughout. With autoscaling on and load for one
// engine, the autoscaler removes one group: it drains group 1, the cold
// one, not the highest index; routers stop sending to it (its engine
// takes no new request); it is not removed while requests are in flight;
// they end with 200 and their tokens; then group 1 is retired, its pod
// deleted and its engine stopped, groups 0 and 2 stay, and no request of
// the steady load failed.
func TestAutoscalerDrainsTheColdGroup(t *testing.T) {
	k, clock := kwokEngineCluster(t)
	ns := k.namespace(t, "asdrain")
	pool := ns + "/drain"
	ctx := context.Background()
	fleet := newEngineFleet(t, k, ns, "drain")
	hold := newHeldEngine(1)
	fleet.clockFor = func(p *corev1.Pod) simclock.Clock {
		if p.Labels[servingv1.LabelGroup] == "1" {
			return hold.clock
		}
		return nil
	}
	fleet.start()

	ms := servingOn(ns, "drain", fleet.port)
	ms.Spec.Replicas = ptr.To[int32](3)
	create(t, k, ms)
	eventually(t, waitLong, "3 pods serving", func() (bool, string) {
		ok, msg := allRunning(t, k, ns, "drain", 3)
		for _, p := range k.pods(t, ns, "drain") {
			if e := fleet.engine(p.Name); e == nil || p.Status.PodIP != e.ip {
				return false, fmt.Sprintf("pod %s at %q without its engine", p.Name, p.Status.PodIP)
			}
		}
		return ok, msg
	})
	cold := k.groupPod(t, ns, "drain", 1).Name
	hold.pump(t, func() int {
		if e := fleet.engine(cold); e != nil {
			return e.busy()
		}
		return 0
	})
	admin, sdk := routeToRouter(t, k, ns, "drain", "", "")

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

	// A long streamed request in flight on group 1.
	steer(0, 2)
	type result struct {
		chunks int
		text   string
		err    error
	}
	got := make(chan result, 1)
	go func() {
		stream := sdk.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: "chat", MaxTokens: openai.Int(8000),
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

	// Steady load from here to the end, on every group.
	load := startSteadyLoad(sdk, 6)
	defer load.stop()
	progress := func(what string, n int) {
		t.Helper()
		from := load.answered()
		eventually(t, waitLong, what, func() (bool, string) {
			now := load.answered()
			for c := range now {
				if now[c] < from[c]+n {
					return false, fmt.Sprintf("answered %v, from %v", now, from)
				}
			}
			return true, ""
		})
	}
	progress("steady load on 3 groups", 3)

	// Autoscaling on: load for one engine, at least 2 groups.
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
	eventually(t, waitLong, "a group draining", func() (bool, string) {
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
	// What group 1's engine took up to now; it takes nothing more.
	coldEngine := fleet.engine(cold)
	taken := coldEngine.finished.Load() + int64(routerEndpoints(t, admin, pool)["1"].InFlight)
	// While requests are in flight the group stays, however long: a
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
	progress("steady load during the drain", 3)

	// Let group 1's engine run: the requests in flight on it finish.
	hold.free()
	var res result
	select {
	case res = <-got:
	case <-time.After(waitLong):
		t.Fatal("the streamed request did not finish")
	}
	if res.err != nil || res.chunks == 0 || res.text == "" {
		t.Fatalf("the streamed request on the draining group: error %v, %d chunks, text %q", res.err, res.chunks, res.text)
	}

	eventually(t, waitLong, "group 1 retired, its pod and engine gone", func() (bool, string) {
		cur := k.get(t, ns, "drain")
		return *cur.Spec.Replicas == 2 && slices.Equal(cur.Spec.RetiredGroups, []int32{1}) && k.groupPod(t, ns, "drain", 1) == nil && fleet.engine(cold) == nil,
			fmt.Sprintf("replicas %d retired %v", *cur.Spec.Replicas, cur.Spec.RetiredGroups)
	})
	progress("steady load after the scale-down", 3)
	errs := load.stop()
	t.Logf("steady load: %v requests answered per client, %d failed; group 1's engine finished %d requests", load.answered(), len(errs), coldEngine.finished.Load())
	if len(errs) > 0 {
		t.Errorf("%d requests of the steady load failed during the scale-down, e.g. %v", len(errs), errs[:min(len(errs), 5)])
	}
	// taken may count a request twice (finished on the engine, its answer
	// still relayed by the router): at most, never more.
	if n := coldEngine.finished.Load(); n > taken {
		t.Errorf("group 1's engine finished %d requests, had taken at most %d when the router drained it: it took new ones during the drain", n, taken)
	}
	for _, g := range []int{0, 2} {
		if k.groupPod(t, ns, "drain", g) == nil {
			t.Errorf("group %d was removed; only group 1 should go", g)
		}
	}
}

// groupIndices returns the group indices of a ModelServing's live pods,
// sorted.
func groupIndices(t *testing.T, k *cluster, ns, name string) []int {
	t.Helper()
	var out []int
	for _, p := range k.pods(t, ns, name) {
		if g, err := strconv.Atoi(p.Labels[servingv1.LabelGroup]); err == nil && p.DeletionTimestamp == nil && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	slices.Sort(out)
	return out
}

// TestAutoscalerFollowsAStepInLoad, on KWOK nodes with simulated engines
// behind a real router: a ModelServing of groups 0 and 2 (group 1 retired
// earlier), autoscaling between 2 and 5 groups at one waiting request per
// engine, adding at most 2 groups per minute. Five requests (OpenAI SDK)
// held in its engines' queues are a step to five engines' load, which the
// router reports. The autoscaler adds groups as the policy says: two
// at once, taking back the retired index 1 first, then 3; none more
// within the minute, though the load asks for a fifth (the status says
// the rate limit holds it); after the minute group 4, and not beyond
// maxGroups. Every new group's pod is bound by kube-scheduler, Ready with
// its engine through KWOK, and served; the held requests end with 200
// and their tokens.
func TestAutoscalerFollowsAStepInLoad(t *testing.T) {
	k, clock := kwokEngineCluster(t)
	ns := k.namespace(t, "asstep")
	pool := ns + "/step"
	fleet := newEngineFleet(t, k, ns, "step")
	// Every engine runs on one clock that stands still until the end: the
	// requests stay in flight.
	hold := newHeldEngine(math.MaxInt32)
	fleet.clockFor = func(*corev1.Pod) simclock.Clock { return hold.clock }
	fleet.start()
	hold.pump(t, fleet.busy)

	ms := servingOn(ns, "step", fleet.port)
	ms.Spec.Replicas = ptr.To[int32](2)
	ms.Spec.RetiredGroups = []int32{1}
	ms.Spec.Autoscaling = &servingv1.AutoscalingSpec{
		MinGroups: ptr.To[int32](2), MaxGroups: 5,
		Targets:     &servingv1.AutoscalingTargets{WaitingPerEngine: ptr.To[int32](1)},
		PanicWindow: &metav1.Duration{},
		ScaleUp:     servingv1.AutoscalingScaleUp{MaxGroups: ptr.To[int32](2), Period: &metav1.Duration{Duration: time.Minute}},
	}
	create(t, k, ms)
	admin, sdk := routeToRouter(t, k, ns, "step", "", "")
	ready := func(groups int) {
		t.Helper()
		eventually(t, waitLong, fmt.Sprintf("%d groups serving", groups), func() (bool, string) {
			ok, msg := allRunning(t, k, ns, "step", groups)
			s := routerSignals(t, admin, pool)
			return ok && s.Engines == groups, fmt.Sprintf("%s, router sees %d engines", msg, s.Engines)
		})
	}
	ready(2)
	if g := groupIndices(t, k, ns, "step"); !slices.Equal(g, []int{0, 2}) {
		t.Fatalf("groups %v, want 0 and 2", g)
	}
	eventually(t, waitLong, "the autoscaler holds 2 groups", func() (bool, string) {
		cur := k.get(t, ns, "step")
		as := cur.Status.Autoscaling
		return as != nil && as.LastDecision != nil && *cur.Spec.Replicas == 2, fmt.Sprintf("replicas %d, status %+v", *cur.Spec.Replicas, as)
	})

	// The step: five requests in flight.
	got := chatAsync(sdk, "step request 0", "step request 1", "step request 2", "step request 3", "step request 4")
	// The engines' clock stands still: the five wait in their queues.
	eventually(t, waitLong, "the router reports 5 waiting", func() (bool, string) {
		s := routerSignals(t, admin, pool)
		return s.Waiting == 5, fmt.Sprintf("%+v", s)
	})
	// Past the stable window: the decisions see only the step.
	clock.Advance(61 * time.Second)
	eventually(t, waitLong, "2 groups added", func() (bool, string) {
		cur := k.get(t, ns, "step")
		g := groupIndices(t, k, ns, "step")
		return *cur.Spec.Replicas == 4 && len(g) == 4, fmt.Sprintf("replicas %d, groups %v, reason %q", *cur.Spec.Replicas, g, cur.Status.Autoscaling.Reason)
	})
	if g := groupIndices(t, k, ns, "step"); !slices.Equal(g, []int{0, 1, 2, 3}) {
		t.Errorf("groups %v after the first scale-up, want the retired 1 back and 3", g)
	}
	if r := k.get(t, ns, "step").Spec.RetiredGroups; len(r) != 0 {
		t.Errorf("retired groups %v after the scale-up, want none", r)
	}
	ready(4)

	// Within the minute: no more, though the load asks for 5.
	clock.Advance(30 * time.Second)
	after := clock.Now().Truncate(time.Second)
	k.poke(t, ns, "step")
	eventually(t, waitLong, "a decision within the minute", func() (bool, string) {
		as := k.get(t, ns, "step").Status.Autoscaling
		return as.LastDecision != nil && !as.LastDecision.Time.Before(after), fmt.Sprintf("last decision %v, want from %v", as.LastDecision, after)
	})
	cur := k.get(t, ns, "step")
	if as := cur.Status.Autoscaling; *cur.Spec.Replicas != 4 || !strings.Contains(as.Reason, "limited to 2 groups per 1m0s") {
		t.Fatalf("within the minute: replicas %d, reason %q; want 4, held by the rate limit", *cur.Spec.Replicas, as.Reason)
	}

	// After the minute: the fifth group, and no more (maxGroups).
	clock.Advance(31 * time.Second)
	eventually(t, waitLong, "the fifth group", func() (bool, string) {
		cur := k.get(t, ns, "step")
		g := groupIndices(t, k, ns, "step")
		return *cur.Spec.Replicas == 5 && len(g) == 5, fmt.Sprintf("replicas %d, groups %v, reason %q", *cur.Spec.Replicas, g, cur.Status.Autoscaling.Reason)
	})
	ready(5)
	if g := groupIndices(t, k, ns, "step"); !slices.Equal(g, []int{0, 1, 2, 3, 4}) {
		t.Errorf("groups %v, want 0 to 4", g)
	}
	clock.Advance(61 * time.Second)
	after = clock.Now().Truncate(time.Second)
	k.poke(t, ns, "step")
	eventually(t, waitLong, "a decision a minute later", func() (bool, string) {
		as := k.get(t, ns, "step").Status.Autoscaling
		return as.LastDecision != nil && !as.LastDecision.Time.Before(after), fmt.Sprintf("last decision %v, want from %v", as.LastDecision, after)
	})
	if cur := k.get(t, ns, "step"); *cur.Spec.Replicas != 5 {
		t.Errorf("replicas %d beyond maxGroups 5", *cur.Spec.Replicas)
	}

	// The engines run: the held requests are answered.
	hold.free()
	expectAnswered(t, got, 5, "the requests of the step")
}

// pdRoles returns the prefill and decode replicas of a ModelServing's
// spec.
func pdRoles(ms *servingv1.ModelServing) (pf, dc int32) {
	for _, r := range ms.Spec.Roles {
		switch r.Name {
		case "prefill":
			pf = r.Replicas
		case "decode":
			dc = r.Replicas
		}
	}
	return pf, dc
}

// TestAutoscalerScalesPDRoles, on KWOK nodes with simulated engines behind
// a real router serving the pool disaggregated (nixl): under a pd policy
// the autoscaler writes the prefill and decode roles' replicas from the
// router's per-role signals, keeping prefill:decode within the policy's
// bounds [1, 2]. Four requests (OpenAI SDK) prefilled on the prefill
// engines wait on the decode engine (its clock stands still): decode load
// for 4 instances at one waiting request each, and 1:1 the least ratio,
// so prefill goes to 4 too; the running group grows in place (its first
// pods keep their UIDs) and every new pod is bound by kube-scheduler and
// made Ready by KWOK with its engine. The requests then end with 200 and
// their tokens; with the load down to two SDK clients each role shrinks
// one instance per decision, each removed instance drained first in the
// router's view, still within the bounds at every step, down to 1 and 1,
// and none of the clients' requests fails.
func TestAutoscalerScalesPDRoles(t *testing.T) {
	k, clock := kwokEngineCluster(t)
	ns := k.namespace(t, "aspd")
	pool := ns + "/pd"
	fleet := newEngineFleet(t, k, ns, "pd")
	hold := newHeldEngine(math.MaxInt32)
	fleet.clockFor = func(p *corev1.Pod) simclock.Clock {
		if p.Labels[servingv1.LabelRole] == "decode" {
			return hold.clock
		}
		return nil // prefill on real time
	}
	fleet.start()
	hold.pump(t, fleet.busy)

	ms := pdServing(ns, "pd", 1)
	ms.Spec.Roles[0].Replicas = 1 // prefill x1, decode x1: what no load asks for
	for i := range ms.Spec.Roles {
		ms.Spec.Roles[i].Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: fleet.port}}
	}
	ms.Spec.Autoscaling = &servingv1.AutoscalingSpec{
		MinGroups: ptr.To[int32](1), MaxGroups: 1,
		PD: &servingv1.AutoscalingPD{
			Prefill:         servingv1.AutoscalingTargets{PrefillTokensPerEngine: ptr.To[int32](1000)},
			Decode:          servingv1.AutoscalingTargets{WaitingPerEngine: ptr.To[int32](1)},
			MinRatioPercent: ptr.To[int32](100), MaxRatioPercent: ptr.To[int32](200),
		},
		PanicWindow: &metav1.Duration{},
		// A grace far beyond the test: instances go when drained.
		ScaleDown: servingv1.AutoscalingScaleDown{DrainGrace: &metav1.Duration{Duration: 24 * time.Hour}},
	}
	create(t, k, ms)
	admin, sdk := routeToRouter(t, k, ns, "pd", "", fmt.Sprintf("pools: [{name: %s, pd: {mode: nixl}}]", pool))
	ratioOK := func(cur *servingv1.ModelServing) (int32, int32) {
		t.Helper()
		pf, dc := pdRoles(cur)
		if pf < dc || pf > 2*dc {
			t.Fatalf("prefill %d decode %d: ratio out of [1, 2]", pf, dc)
		}
		return pf, dc
	}
	serving := func(pf, dc int) (bool, string) {
		cur := k.get(t, ns, "pd")
		p, d := ratioOK(cur)
		n, _ := rolePods(t, k, ns, "pd")
		ok, msg := allRunning(t, k, ns, "pd", pf+dc)
		s := routerSignals(t, admin, pool)
		reason := ""
		if as := cur.Status.Autoscaling; as != nil {
			reason = as.Reason
		}
		return ok && p == int32(pf) && d == int32(dc) && n["prefill"] == pf && n["decode"] == dc && s.Roles["prefill"].Engines == pf && s.Roles["decode"].Engines == dc,
			fmt.Sprintf("prefill %d decode %d, pods %v, %s, router sees %+v, reason %q", p, d, n, msg, s.Roles, reason)
	}
	eventually(t, waitLong, "the group serving", func() (bool, string) { return serving(1, 1) })
	_, before := rolePods(t, k, ns, "pd")

	// Four requests wait on the decode engine.
	got := chatAsync(sdk, "disaggregated request 0", "disaggregated request 1", "disaggregated request 2", "disaggregated request 3")
	eventually(t, waitLong, "the router reports 4 waiting on decode", func() (bool, string) {
		s := routerSignals(t, admin, pool)
		return s.Roles["decode"].Waiting == 4, fmt.Sprintf("%+v", s.Roles)
	})
	// Past the stable and trend windows (5m): the decisions see the load
	// alone, without a trend from before it.
	clock.Advance(5*time.Minute + time.Second)
	// The decision, the roles' replicas and the pods agree on 4 and 4.
	// (Once in about fifteen runs under -race a status right after the
	// growth showed desired prefill and decode 1: cause not found; the
	// next decisions said 4 and 4.)
	eventually(t, waitLong, "prefill 4 and decode 4 decided and serving", func() (bool, string) {
		ok, msg := serving(4, 4)
		as := k.get(t, ns, "pd").Status.Autoscaling
		return ok && as != nil && as.DesiredPrefill == 4 && as.DesiredDecode == 4, fmt.Sprintf("%s, status %+v", msg, as)
	})
	_, after := rolePods(t, k, ns, "pd")
	for name, uid := range before {
		if after[name] != uid {
			t.Errorf("pod %s was recreated (uid %s, now %q): the group should grow in place", name, uid, after[name])
		}
	}

	// The decode engines run: the requests are answered.
	hold.free()
	expectAnswered(t, got, 4, "the disaggregated requests")

	// The load falls to two SDK clients, each with one request at a time:
	// down one instance per decision, each drained in the router's view
	// first, within the bounds, and no request fails.
	load := startSteadyLoad(sdk, 2)
	defer load.stop()
	eventually(t, waitLong, "prefill 1 and decode 1 serving", func() (bool, string) {
		ok, msg := serving(1, 1)
		if !ok {
			clock.Advance(10 * time.Second) // the windows count on the controller's clock
		}
		return ok, msg
	})
	errs := load.stop()
	t.Logf("steady load while the roles shrank: %v requests answered per client, %d failed", load.answered(), len(errs))
	if len(errs) > 0 {
		t.Errorf("%d requests failed while the roles shrank, e.g. %v", len(errs), errs[:min(len(errs), 5)])
	}
}
