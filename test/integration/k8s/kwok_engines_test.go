package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
	"github.com/halyard-dev/halyard/internal/controller"
	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

// The KWOK engine harness: pods of a ModelServing are bound by the real
// kube-scheduler to KWOK nodes and made Running and Ready by KWOK itself,
// with a pod IP where a real simulated engine listens. KWOK's pod-ready
// stage is replaced by one that fires only once the pod carries
// annotationEngineIP (written by an engineFleet after it started the pod's
// engine on that loopback address) and takes the pod IP from it. No test
// code writes pod status.

// annotationEngineIP on a pod is the loopback address its simulated engine
// listens on; KWOK's pod-ready stage waits for it and copies it to
// status.podIP.
const annotationEngineIP = "kwok.halyard.test/engine-ip"

// podReadyOnEngineStage is KWOK's stock pod-ready stage with two changes:
// its selector also needs annotationEngineIP, and the pod IP is that
// annotation's value (KWOK's stage templates are Go templates over the pod
// object).
const podReadyOnEngineStage = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready-on-engine
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.metadata.annotations["` + annotationEngineIP + `"]'
      operator: 'Exists'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Pending'
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values:
      - 'True'
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $ip := index .metadata.annotations "` + annotationEngineIP + `" }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        {{ if eq .restartPolicy "Always" }}
        started: true
        state:
          running:
            startedAt: {{ $now | Quote }}
        {{ else }}
        state:
          terminated:
            exitCode: 0
            finishedAt: {{ $now | Quote }}
            reason: Completed
            startedAt: {{ $now | Quote }}
        {{ end }}
      {{ end }}
      {{ with NodeIPsWith .spec.nodeName }}
      hostIP: {{ index . 0 | Quote }}
      {{ end }}
      podIP: {{ $ip | Quote }}
      podIPs:
      - ip: {{ $ip | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
`

// writeEngineStages writes KWOK's stock stages with the pod-ready stage
// replaced by podReadyOnEngineStage, and returns the file's path.
func writeEngineStages(stock, dir string) (string, error) {
	b, err := os.ReadFile(stock)
	if err != nil {
		return "", err
	}
	docs := []string{podReadyOnEngineStage}
	replaced := false
	for _, d := range strings.Split(string(b), "\n---\n") {
		switch {
		case strings.TrimSpace(strings.Trim(d, "-\n")) == "":
		case strings.Contains(d, "\n  name: pod-ready\n"):
			replaced = true
		default:
			docs = append(docs, strings.TrimPrefix(d, "---\n"))
		}
	}
	if !replaced {
		return "", fmt.Errorf("%s has no pod-ready stage to replace", stock)
	}
	path := filepath.Join(dir, "kwok-engine-stages.yaml")
	return path, os.WriteFile(path, []byte(strings.Join(docs, "\n---\n")), 0o600)
}

// The KWOK engine cluster is shared by the tests that use it (as
// sharedCluster is): an API server, kube-scheduler, KWOK with the engine
// stages and two KWOK nodes, and a controller on its own fake clock.
// TestMain stops it.
var kwokShared struct {
	once  sync.Once
	k     *cluster
	clock *fakeClock
	logs  []string
	err   error
}

// kwokEngineCluster returns the shared KWOK engine cluster and its
// controller's clock. When the test fails, the last lines of the
// scheduler's and KWOK's logs go to its log.
func kwokEngineCluster(t *testing.T) (*cluster, *fakeClock) {
	t.Helper()
	requireControlPlane(t)
	scheduler := requireTool(t, "kube-scheduler")
	kwok := requireTool(t, "kwok")
	kwokShared.once.Do(func() {
		// Stopped by TestMain, with the shared cluster.
		cleanup := func(f func()) { shared.stop = append(shared.stop, f) }
		dir, err := os.MkdirTemp("", "halyard-kwok-")
		if err != nil {
			kwokShared.err = err
			return
		}
		cleanup(func() { _ = os.RemoveAll(dir) })
		stages, err := writeEngineStages(filepath.Join(filepath.Dir(kwok), "kwok-stages.yaml"), dir)
		if err != nil {
			kwokShared.err = fmt.Errorf("%w (hack/controlplane.sh build writes the stock stages)", err)
			return
		}
		k, err := newCluster(featureGates, dir, cleanup)
		if err != nil {
			kwokShared.err = err
			return
		}
		logs, err := startKWOK(k, scheduler, kwok, stages, 2, dir, cleanup)
		if err != nil {
			kwokShared.err = err
			return
		}
		clock := newFakeClock()
		if err := k.startController(clock, controller.InPlaceAuto, io.Discard, cleanup); err != nil {
			kwokShared.err = err
			return
		}
		kwokShared.k, kwokShared.clock, kwokShared.logs = k, clock, logs
	})
	if kwokShared.err != nil {
		t.Fatalf("KWOK engine cluster: %v", kwokShared.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range kwokShared.logs {
				logTail(t, l)
			}
		}
	})
	return kwokShared.k, kwokShared.clock
}

// nextEngineIP hands out loopback addresses for fleet engines, from
// 127.0.0.10 on (the other tests use 127.0.0.1-4).
var nextEngineIP atomic.Int32

func takeEngineIP() string {
	n := 10 + nextEngineIP.Add(1) - 1
	return fmt.Sprintf("127.0.%d.%d", n/250, n%250+1)
}

// fleetEngine is the simulated engine of one pod.
type fleetEngine struct {
	pod      string
	ip       string
	finished atomic.Int64 // generation requests it finished
	srv      *vllmapi.Server
	stop     context.CancelFunc
	inst     *vllmapi.Instance
}

// busy is the requests the engine runs or queues.
func (e *fleetEngine) busy() int {
	s := e.srv.Engine().Snapshot()
	return s.Running + s.Waiting
}

// engineFleet plays the container runtime for one ModelServing on the KWOK
// engine cluster: when kube-scheduler has bound one of its pods to a node,
// the fleet starts a simulated engine for it on a fresh loopback address
// at the fleet's port (the port of the ModelServing's template) and
// annotates the pod with that address; KWOK then makes the pod Running and
// Ready with it as pod IP. When the pod is being deleted or gone, its
// engine stops (gracefully: requests in flight finish).
type engineFleet struct {
	t        *testing.T
	k        *cluster
	ns, name string
	port     int32
	// clockFor gives a pod's engine clock; nil or a nil answer is real time.
	clockFor func(pod *corev1.Pod) simclock.Clock

	mu      sync.Mutex
	held    bool
	spare   net.Listener // the listener that picked the port, for the first engine
	engines map[types.UID]*fleetEngine
	byPod   map[string]*fleetEngine
	stopped []*fleetEngine
}

// newEngineFleet picks the fleet's port; start runs it.
func newEngineFleet(t *testing.T, k *cluster, ns, name string) *engineFleet {
	t.Helper()
	f := &engineFleet{t: t, k: k, ns: ns, name: name, engines: map[types.UID]*fleetEngine{}, byPod: map[string]*fleetEngine{}}
	ln, err := net.Listen("tcp", takeEngineIP()+":0")
	if err != nil {
		t.Fatal(err)
	}
	f.spare = ln
	f.port = int32(ln.Addr().(*net.TCPAddr).Port)
	return f
}

// hold keeps the fleet from starting engines (a cold start in progress)
// until release.
func (f *engineFleet) hold() { f.mu.Lock(); f.held = true; f.mu.Unlock() }

func (f *engineFleet) release() { f.mu.Lock(); f.held = false; f.mu.Unlock() }

// engine returns the engine of pod (by name), or nil.
func (f *engineFleet) engine(pod string) *fleetEngine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byPod[pod]
}

// busy is the requests the fleet's engines run or queue.
func (f *engineFleet) busy() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, e := range f.engines {
		n += e.busy()
	}
	return n
}

// start runs the fleet until the test ends.
func (f *engineFleet) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			f.sync(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	f.t.Cleanup(func() {
		cancel()
		<-done
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, e := range f.engines {
			e.stop()
			_ = e.inst.Wait()
		}
		for _, e := range f.stopped {
			_ = e.inst.Wait()
		}
		if f.spare != nil {
			f.spare.Close()
		}
	})
}

// sync starts engines for bound pods without one and stops the engines of
// pods being deleted or gone.
func (f *engineFleet) sync(ctx context.Context) {
	var list corev1.PodList
	if err := f.k.c.List(ctx, &list, client.InNamespace(f.ns), client.MatchingLabels{servingv1.LabelModelServing: f.name}); err != nil {
		return
	}
	live := map[types.UID]bool{}
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		live[p.UID] = true
		f.mu.Lock()
		e, held := f.engines[p.UID], f.held
		f.mu.Unlock()
		if e == nil && p.Spec.NodeName != "" && !held {
			var err error
			if e, err = f.startEngine(p); err != nil {
				f.t.Errorf("engine for pod %s: %v", p.Name, err)
				continue
			}
		}
		if e != nil && p.Annotations[annotationEngineIP] != e.ip {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, annotationEngineIP, e.ip)
			_ = f.k.c.Patch(ctx, p, client.RawPatch(types.MergePatchType, []byte(patch)))
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for uid, e := range f.engines {
		if !live[uid] {
			e.stop() // Serve finishes the requests in flight, then closes
			delete(f.engines, uid)
			if f.byPod[e.pod] == e {
				delete(f.byPod, e.pod)
			}
			f.stopped = append(f.stopped, e)
		}
	}
}

// startEngine serves a simulated engine for pod on a fresh loopback
// address at the fleet's port, in the pod's role. An engine on the real
// clock is started as `halyard sim` starts it (vllmapi.Start: a prefill
// engine also serves its KV side channel); one on another clock is built
// on it and served on the listener.
func (f *engineFleet) startEngine(p *corev1.Pod) (*fleetEngine, error) {
	var clock simclock.Clock
	if f.clockFor != nil {
		clock = f.clockFor(p)
	}
	e := &fleetEngine{pod: p.Name}
	role := "both"
	if r := p.Labels[servingv1.LabelRole]; r == "prefill" || r == "decode" {
		role = r
	}
	spec := vllmapi.Spec{Model: "qwen3-8b", Profile: "zero", Role: role,
		OnResult: func(simulator.Result) { e.finished.Add(1) }}
	var srv *vllmapi.Server
	if clock != nil {
		var err error
		if srv, err = spec.Build(clock, nil); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.mu.Lock()
	spare := f.spare
	f.spare = nil
	f.mu.Unlock()
	for e.inst == nil {
		var ip string
		if spare != nil {
			ip = spare.Addr().(*net.TCPAddr).IP.String()
		} else {
			ip = takeEngineIP()
		}
		addr := fmt.Sprintf("%s:%d", ip, f.port)
		var err error
		switch {
		case srv == nil: // real time
			if spare != nil {
				spare.Close()
				spare = nil
			}
			spec.Listen = addr
			e.inst, err = vllmapi.Start(ctx, spec, nil)
		case spare != nil:
			e.inst = vllmapi.Serve(ctx, spare, srv, nil)
			spare = nil
		default:
			var ln net.Listener
			if ln, err = net.Listen("tcp", addr); err == nil {
				e.inst = vllmapi.Serve(ctx, ln, srv, nil)
			}
		}
		switch {
		case err == nil:
			e.ip = ip
		case errors.Is(err, syscall.EADDRINUSE): // taken on that address: the next one
		default:
			cancel()
			return nil, err
		}
	}
	e.stop, e.srv = cancel, e.inst.Server
	f.mu.Lock()
	f.engines[p.UID], f.byPod[p.Name] = e, e
	f.mu.Unlock()
	return e, nil
}

// TestScaleFromZeroAndBack, on KWOK nodes with simulated engines: a
// ModelServing at 0 groups with autoscaling minGroups 0, behind a real
// router whose admission queue is the waiting room. A first request
// (OpenAI SDK) waits in the queue; the router's waitingRoom signal says 1
// and makes the controller create a group; kube-scheduler binds its pod to
// a KWOK node; while its engine is starting (the fleet holds it) the
// request still waits; once the engine listens KWOK makes the pod Ready
// with the engine's address, and the request is served with its tokens;
// nothing is refused. After idleToZero without traffic the model goes back
// to 0 groups (drained, then retired), its pod is deleted and its engine
// stops.
func TestScaleFromZeroAndBack(t *testing.T) {
	k, clock := kwokEngineCluster(t)
	ns := k.namespace(t, "aszero")
	pool := ns + "/zero"
	fleet := newEngineFleet(t, k, ns, "zero")
	fleet.hold()
	fleet.start()

	ms := servingOn(ns, "zero", fleet.port)
	ms.Spec.Replicas = ptr.To[int32](0)
	ms.Spec.Autoscaling = &servingv1.AutoscalingSpec{
		MinGroups: ptr.To[int32](0), MaxGroups: 2,
		Targets:     &servingv1.AutoscalingTargets{RunningPerEngine: ptr.To[int32](10)},
		PanicWindow: &metav1.Duration{},
		IdleToZero:  &metav1.Duration{Duration: 2 * time.Minute},
	}
	create(t, k, ms)
	// The queue holds a request for a pool without endpoints up to
	// noEndpointWait: a bound far above what the test needs.
	admin, sdk := routeToRouter(t, k, ns, "zero", ", admission: {queue: {noEndpointWait: 120s, maxWait: 120s}}, autoscaling: {window: 1s}", "")
	// The router knows the route (it reports the routed pool, without
	// endpoints) before the first request.
	eventually(t, waitLong, "the router reports the pool", func() (bool, string) {
		resp, err := http.Get(admin + "/autoscale/signals?pool=" + pool)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	eventually(t, waitLong, "the autoscaler holds 0 groups", func() (bool, string) {
		cur := k.get(t, ns, "zero")
		as := cur.Status.Autoscaling
		return as != nil && as.LastDecision != nil && *cur.Spec.Replicas == 0 && len(k.pods(t, ns, "zero")) == 0,
			fmt.Sprintf("replicas %d, status %+v", *cur.Spec.Replicas, as)
	})

	got := chatAsync(sdk, "the first request in a while")
	notYet := func() {
		t.Helper()
		select {
		case r := <-got:
			t.Fatalf("the request ended before any engine was ready: %+v", r)
		default:
		}
	}
	// The router tells of the waiting request.
	eventually(t, waitLong, "the waiting room signal", func() (bool, string) {
		s := routerSignals(t, admin, pool)
		return s.WaitingRoom == 1, fmt.Sprintf("%+v", s)
	})
	// The controller creates a group; kube-scheduler binds its pod to a
	// KWOK node; its engine is still starting.
	eventually(t, waitLong, "a group created for the waiting request, its pod bound", func() (bool, string) {
		notYet()
		cur := k.get(t, ns, "zero")
		pods := k.pods(t, ns, "zero")
		return *cur.Spec.Replicas == 1 && len(pods) == 1 && strings.HasPrefix(pods[0].Spec.NodeName, "kwok-node-"),
			fmt.Sprintf("replicas %d, %d pods, reason %q", *cur.Spec.Replicas, len(pods), cur.Status.Autoscaling.Reason)
	})
	pod := k.groupPod(t, ns, "zero", 0)
	if pod.Status.Phase != corev1.PodPending || pod.Status.PodIP != "" {
		t.Fatalf("pod %s is %s with IP %q before its engine started", pod.Name, pod.Status.Phase, pod.Status.PodIP)
	}
	notYet()
	fleet.release() // the engine starts; KWOK makes the pod Ready
	expectAnswered(t, got, 1, "the waiting request")
	pod = k.groupPod(t, ns, "zero", 0)
	eng := fleet.engine(pod.Name)
	if eng == nil || pod.Status.PodIP != eng.ip || eng.finished.Load() != 1 {
		t.Fatalf("pod IP %q, engine %+v: want the request served by the pod's engine at its IP", pod.Status.PodIP, eng)
	}

	// Idle: past idleToZero and the scale-down windows, back to 0.
	eventually(t, waitLong, "back to 0 groups", func() (bool, string) {
		cur := k.get(t, ns, "zero")
		n := len(k.pods(t, ns, "zero"))
		if *cur.Spec.Replicas != 0 {
			clock.Advance(30 * time.Second) // the windows count on the controller's clock
		}
		return *cur.Spec.Replicas == 0 && n == 0 && fleet.engine(pod.Name) == nil, fmt.Sprintf("replicas %d retired %v, %d pods, reason %q",
			*cur.Spec.Replicas, cur.Spec.RetiredGroups, n, cur.Status.Autoscaling.Reason)
	})
}

// routeToRouter routes model "chat" to the ModelServing name in ns, runs
// a router (startKubeRouterWith's extra and top) whose admin listener the
// shared controllers read the pool's signals and endpoints from, and
// returns that listener's URL and an OpenAI SDK client of the router (no
// retries: every error counts).
func routeToRouter(t *testing.T, k *cluster, ns, name, extra, top string) (string, openai.Client) {
	t.Helper()
	if err := k.c.Create(context.Background(), modelRoute(ns, "chat", "chat", weighted(name, 1))); err != nil {
		t.Fatal(err)
	}
	_, base, admin := startKubeRouterWith(t, k, ns, extra, top)
	useRouter(t, ns+"/"+name, admin)
	return admin, openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

// chatResult is how one chat completion ended.
type chatResult struct {
	text string
	err  error
}

// chatAsync sends one chat completion (model "chat", 4 tokens at most)
// per prompt, each in the background; their ends come on the channel.
func chatAsync(sdk openai.Client, prompts ...string) <-chan chatResult {
	got := make(chan chatResult, len(prompts))
	for _, prompt := range prompts {
		go func() {
			res, err := sdk.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
				Model: "chat", MaxTokens: openai.Int(4),
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
			})
			r := chatResult{err: err}
			if err == nil && len(res.Choices) > 0 {
				r.text = res.Choices[0].Message.Content
			}
			got <- r
		}()
	}
	return got
}

// expectAnswered waits for n ends on got and fails the test unless each is
// a 200 with tokens.
func expectAnswered(t *testing.T, got <-chan chatResult, n int, what string) {
	t.Helper()
	for range n {
		select {
		case r := <-got:
			if r.err != nil || r.text == "" {
				t.Fatalf("%s: error %v, text %q; want 200 with tokens", what, r.err, r.text)
			}
		case <-time.After(waitLong):
			t.Fatalf("%s: not answered after %s", what, waitLong)
		}
	}
}

// routerSignals reads the router's GET /autoscale/signals?pool=.
func routerSignals(t *testing.T, admin, pool string) autoscale.Signals {
	t.Helper()
	resp, err := http.Get(admin + "/autoscale/signals?pool=" + pool)
	if err != nil {
		t.Fatalf("signals: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Pools map[string]autoscale.Signals `json:"pools"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("signals: %v", err)
	}
	return body.Pools[pool]
}
