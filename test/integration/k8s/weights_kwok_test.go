package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/controller"
	"github.com/halyard-dev/halyard/internal/weights"
	"github.com/halyard-dev/halyard/internal/weights/dragonfly"
	"github.com/halyard-dev/halyard/internal/weights/hubtest"
)

// What the fetch runtime writes on a pod when its fetch init container has
// exited, for the KWOK stages to turn into the kubelet's status.
const (
	annFetchExit     = "halyard.test/fetch-exit"     // the exit code
	annFetchRestarts = "halyard.test/fetch-restarts" // the restart count of the run
	annFetchMessage  = "halyard.test/fetch-message"  // the termination message
)

// fetchStages are KWOK stages that replace the stock pod-ready stage: a pod
// on a KWOK node stays Pending until the test's fetch runtime has written
// the exit code of its real `halyard fetch` run on it; then the fetch init
// container is terminated with that code and message (the agent sidecar
// and the engine running and the pod Ready after a 0, the pod Pending and
// not initialized otherwise). A stage applies once per run: its selector
// holds only while the status does not show that run's exit code and
// restart count yet.
const fetchStages = `
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: halyard-fetch-succeeded
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.metadata.annotations["` + annFetchExit + `"]'
      operator: 'In'
      values: ['0']
    - key: '` + fetchRunPending + `'
      operator: 'In'
      values: ['true']
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $ann := .metadata.annotations }}
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
        started: true
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        {{ if eq .name "` + servingv1.FetchContainerName + `" }}
        ready: false
        restartCount: {{ index $ann "` + annFetchRestarts + `" }}
        state:
          terminated:
            exitCode: 0
            reason: Completed
            message: {{ index $ann "` + annFetchMessage + `" | Quote }}
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
        {{ else if eq .restartPolicy "Always" }}
        ready: true
        restartCount: 0
        started: true
        state:
          running:
            startedAt: {{ $now | Quote }}
        {{ else }}
        ready: false
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
        {{ end }}
      {{ end }}
      {{ with NodeIPsWith .spec.nodeName }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ with PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: halyard-fetch-failed
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.metadata.annotations["` + annFetchExit + `"]'
      operator: 'Exists'
    - key: '.metadata.annotations["` + annFetchExit + `"]'
      operator: 'NotIn'
      values: ['0']
    - key: '` + fetchRunPending + `'
      operator: 'In'
      values: ['true']
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $ann := .metadata.annotations }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotInitialized
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotInitialized
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotInitialized
        type: ContainersReady
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        {{ if eq .name "` + servingv1.FetchContainerName + `" }}
        restartCount: {{ index $ann "` + annFetchRestarts + `" }}
        state:
          terminated:
            exitCode: {{ index $ann "` + annFetchExit + `" }}
            reason: Error
            message: {{ index $ann "` + annFetchMessage + `" | Quote }}
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
        {{ else }}
        restartCount: 0
        state:
          waiting:
            reason: PodInitializing
        {{ end }}
      {{ end }}
      phase: Pending
`

// fetchRunPending is a jq expression, true while the pod's status does not
// show the fetch run its annotations describe.
const fetchRunPending = `.metadata.annotations as $a | ([.status.initContainerStatuses[]? | select(.name == "` +
	servingv1.FetchContainerName + `" and .state.terminated != null and (.restartCount | tostring) == $a["` + annFetchRestarts +
	`"] and (.state.terminated.exitCode | tostring) == $a["` + annFetchExit + `"])] | length) == 0`

// withFetchStages runs KWOK with the stock stages except pod-ready, plus
// fetchStages, from a file in dir.
func withFetchStages(t *testing.T, dir string) func(*kwokConfig) {
	return func(c *kwokConfig) {
		c.stages = func(stock string) string {
			path, err := writeStages(stock, dir, "kwok-fetch-stages.yaml", fetchStages)
			if err != nil {
				t.Fatal(err)
			}
			return path
		}
	}
}

// fetchRuntime plays the container runtime of KWOK nodes for the fetch init
// container only: for each pod the scheduler bound to a node, it runs the
// real `halyard fetch` from the pod's own init container (fetchCommand),
// with that node's hostPath cache mapped to the node's directory (so pods
// of one node share one cache and its lock), then writes the exit code on
// the pod for KWOK's stages. Pods of the ModelServings named in manual are
// left to the test.
type fetchRuntime struct {
	k      *cluster
	t      *testing.T
	ns     string
	caches map[string]string // node → its cache directory

	ctx  context.Context
	wg   sync.WaitGroup
	mu   sync.Mutex
	seen map[types.UID]bool
	man  map[string]bool
	errs []error
}

// startFetchRuntime runs the runtime for the pods of ns until the test ends.
func startFetchRuntime(t *testing.T, k *cluster, ns string, caches map[string]string) *fetchRuntime {
	ctx, cancel := context.WithCancel(context.Background())
	r := &fetchRuntime{k: k, t: t, ns: ns, caches: caches, ctx: ctx, seen: map[types.UID]bool{}, man: map[string]bool{}}
	r.wg.Add(1)
	go r.loop()
	t.Cleanup(func() { cancel(); r.wg.Wait() })
	return r
}

// manual leaves the pods of ModelServing name to the test.
func (r *fetchRuntime) manual(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.man[name] = true
}

// err is the first failure of a fetch the runtime ran.
func (r *fetchRuntime) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.errs...)
}

func (r *fetchRuntime) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

// loop looks at the namespace's pods as a kubelet watches its own: a pod
// newly bound to a node gets its fetch run.
func (r *fetchRuntime) loop() {
	defer r.wg.Done()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var list corev1.PodList
		if err := r.k.c.List(r.ctx, &list, client.InNamespace(r.ns)); err != nil && r.ctx.Err() == nil {
			r.fail(fmt.Errorf("list pods: %w", err))
		}
		for i := range list.Items {
			p := &list.Items[i]
			if p.Spec.NodeName == "" || p.DeletionTimestamp != nil || p.Annotations[annFetchExit] != "" || fetchContainer(p) == nil {
				continue
			}
			r.mu.Lock()
			skip := r.seen[p.UID] || r.man[p.Labels[servingv1.LabelModelServing]]
			r.seen[p.UID] = true
			r.mu.Unlock()
			if skip {
				continue
			}
			dir, ok := r.caches[p.Spec.NodeName]
			if !ok {
				r.fail(fmt.Errorf("pod %s is on node %s, which has no cache directory", p.Name, p.Spec.NodeName))
				continue
			}
			r.wg.Add(1)
			go func(p corev1.Pod) {
				defer r.wg.Done()
				msg, err := r.k.execFetch(r.ctx, r.t, &p, dir, 0)
				if err != nil {
					if r.ctx.Err() == nil {
						r.fail(err)
					}
					return
				}
				if err := r.exited(&p, 0, 0, msg); err != nil && r.ctx.Err() == nil {
					r.fail(err)
				}
			}(*p)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// exited writes on pod that its fetch init container's run (restarts
// earlier runs) exited with code and msg, which KWOK's stages turn into the
// container's status.
func (r *fetchRuntime) exited(pod *corev1.Pod, code, restarts int, msg string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		annFetchExit: strconv.Itoa(code), annFetchRestarts: strconv.Itoa(restarts), annFetchMessage: msg,
	}}})
	if err != nil {
		return err
	}
	return r.k.c.Patch(r.ctx, pod, client.RawPatch(types.MergePatchType, patch))
}

// kwokPool labels KWOK node i with a pool ("big" for the first two, "small"
// after) and gives it room for four pods.
func kwokPool(i int, n *corev1.Node) {
	pool := "big"
	if i >= 2 {
		pool = "small"
	}
	n.Labels["halyard.test/pool"] = pool
	room := corev1.ResourceList{
		corev1.ResourcePods:   resource.MustParse("4"),
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
	}
	n.Status.Capacity, n.Status.Allocatable = room, room.DeepCopy()
}

// e2eModelBytes is the size of the synthetic weights file of
// TestWeightsKWOK: 2 GiB, or HALYARD_E2E_MODEL_MIB MiB.
func e2eModelBytes(t *testing.T) int64 {
	v := os.Getenv("HALYARD_E2E_MODEL_MIB")
	if v == "" {
		return 2 << 30
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		t.Fatalf("HALYARD_E2E_MODEL_MIB=%q: want a number of MiB", v)
	}
	return n << 20
}

// The end-to-end test of model weights, on the real control plane:
// KWOK nodes, pods placed by kube-scheduler, every pod's fetch init
// container a real `halyard fetch` process run by the test's fetch runtime
// against the local Hub stand-in, and KWOK completing the pod only from
// that process's exit code.
//
//   - A ModelServing of 8 one-pod groups on 2 nodes with a 2 GiB model:
//     the origin serves 2 copies, one per node, not 8; the status shows the
//     bytes done below the total mid-fetch (both transfers held at half),
//     then WeightsReady and every group Running.
//   - A new revision through Dragonfly: its preheat job (manager stand-in)
//     ends before the first pod of the revision exists, while every old
//     group still runs; then the rollout completes with one copy from the
//     origin (the preheat's).
//   - A fetch killed half way: the pod stays Pending with the exit code,
//     WeightsReady False; the rerun resumes with a Range request and the
//     origin serves one copy in all. A blob corrupted in the node cache is
//     refetched, alone, by the next pod on that node.
func TestWeightsKWOK(t *testing.T) {
	size := e2eModelBytes(t)
	built := time.Now()
	halyardBinary(t) // built before the runtime's goroutines need it (once per test binary)
	t.Logf("halyard binary ready in %s", time.Since(built).Round(time.Millisecond))
	tmp := t.TempDir()
	begin := time.Now()
	k := kwokCluster(t, 3, withFetchStages(t, tmp), func(c *kwokConfig) { c.node = kwokPool })
	t.Logf("API server, scheduler, KWOK and 3 ready nodes in %s", time.Since(begin).Round(time.Millisecond))
	hub, df, mgr := weightsStandIns(t)
	dfURL, err := url.Parse(df.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.startController(realClock{}, controller.InPlaceOff, testLogs(), t.Cleanup, func(o *controller.Options) {
		o.Weights = controller.WeightsOptions{
			CacheDir:       "/var/cache/halyard-kwok",
			HFEndpoint:     hub.URL,
			DragonflyProxy: "http://$(HOST_IP):" + dfURL.Port(),
			DragonflyTag:   "halyard",
			PreheatGate:    10 * time.Minute, // never elapses here: the job's end opens it
			Preheater: &controller.DragonflyPreheater{
				Manager:    dragonfly.Manager{URL: mgr.URL, Token: "pat-secret"},
				HFEndpoint: hub.URL, Tag: "halyard",
			},
		}
	}); err != nil {
		t.Fatal(err)
	}
	ns := k.namespace(t, "weights-kwok")
	caches := map[string]string{}
	for i := range 3 {
		caches[fmt.Sprintf("kwok-node-%d", i)] = filepath.Join(tmp, fmt.Sprintf("node-%d", i))
	}
	rt := startFetchRuntime(t, k, ns, caches)
	// ok adds the runtime's failures to a condition's answer: a fetch
	// that failed fails the wait at once.
	ok := func(done bool, msg string) (bool, string) {
		if err := rt.err(); err != nil {
			t.Fatalf("the fetch runtime failed: %v", err)
		}
		return done, msg
	}
	small := map[string][]byte{
		"config.json":    []byte(`{"num_hidden_layers": 2}`),
		"tokenizer.json": []byte(`{"model": {"type": "BPE"}}`),
	}
	const weightsFile = "model.safetensors"
	inPool := func(ms *servingv1.ModelServing, pool string) *servingv1.ModelServing {
		for i := range ms.Spec.Roles {
			ms.Spec.Roles[i].Template.Spec.NodeSelector = map[string]string{"halyard.test/pool": pool}
		}
		return ms
	}

	if !t.Run("8 replicas on 2 nodes fetch 2 copies", func(t *testing.T) {
		start := time.Now()
		big := hubtest.NewSynthetic(1, size)
		hub.AddRepo("acme/big", hubtest.Repo{Files: small, Synthetic: map[string]*hubtest.Synthetic{weightsFile: big}})
		t.Logf("origin: %d MiB synthetic file, sha256 in %s", size>>20, time.Since(start).Round(time.Millisecond))
		modelSize := size + int64(len(small["config.json"])+len(small["tokenizer.json"]))
		// Every transfer of the weights waits at half way until the
		// status has been seen mid-fetch.
		release := hub.Stall(weightsFile, size/2)
		t.Cleanup(release)
		bodyBefore, fileBefore := hub.BodyBytes(), hub.FileBytes(weightsFile)

		ms := inPool(weightsServing(ns, "big", "hf://acme/big", 1), "big")
		ms.Spec.Replicas = ptr.To(int32(8))
		ms.Spec.Rollout.MaxUnavailable = ptr.To(int32(4))
		create(t, k, ms)
		eventually(t, 3*waitLong, "one transfer per node held at half", func() (bool, string) {
			n := hub.FileBytes(weightsFile) - fileBefore
			return ok(n == 2*(size/2), fmt.Sprintf("%d bytes of the weights served, want 2 x %d", n, size/2))
		})
		eventually(t, waitLong, "progress below the total in the status", func() (bool, string) {
			ms := k.get(t, ns, "big")
			w := ms.Status.Weights
			c := meta.FindStatusCondition(ms.Status.Conditions, controller.ConditionWeightsReady)
			if w == nil || c == nil {
				return ok(false, "no weights status")
			}
			return ok(c.Reason == controller.ReasonFetching && w.Pods == 8 && w.DoneBytes >= 2*(size/2) && w.DoneBytes < w.TotalBytes &&
				strings.HasPrefix(w.Progress, "0/8 pods"), fmt.Sprintf("%s %+v", c.Reason, *w))
		})
		for _, p := range k.pods(t, ns, "big") {
			if p.Status.Phase != corev1.PodPending {
				t.Errorf("pod %s is %s while its weights are half fetched", p.Name, p.Status.Phase)
			}
		}
		release()

		eventually(t, 3*waitLong, "8 groups running", func() (bool, string) { return ok(allRunning(t, k, ns, "big", 8)) })
		waitWeights(t, k, ns, "big", metav1.ConditionTrue, controller.ReasonWeightsFetched)
		t.Logf("8 pods on 2 nodes with %d MiB: running %s after the create", size>>20, time.Since(start).Round(time.Millisecond))
		got := k.get(t, ns, "big").Status.Weights
		if got == nil || got.Pods != 8 || got.Ready != 8 || got.TotalBytes != 8*modelSize || got.DoneBytes != got.TotalBytes {
			t.Errorf("status.weights = %+v, want 8/8 pods and %d bytes done of %d", got, 8*modelSize, 8*modelSize)
		}
		for i := range int32(8) {
			g := group(k.get(t, ns, "big"), i)
			if g == nil || g.Weights == nil || g.Weights.Pods != 1 || g.Weights.Ready != 1 || g.Weights.TotalBytes != modelSize || g.Weights.DoneBytes != modelSize {
				t.Errorf("group %d: %+v, want its pod's weights done (%d bytes)", i, g, modelSize)
			}
		}
		perNode := map[string]int{}
		for _, p := range k.pods(t, ns, "big") {
			perNode[p.Spec.NodeName]++
		}
		if len(perNode) != 2 || perNode["kwok-node-0"] != 4 || perNode["kwok-node-1"] != 4 {
			t.Errorf("pods per node %v, want 4 on each of the 2 big nodes", perNode)
		}
		if n := hub.FileBytes(weightsFile) - fileBefore; n != 2*size {
			t.Errorf("origin served %d bytes of the weights for 8 pods on 2 nodes, want 2 copies (%d)", n, 2*size)
		}
		if n := hub.BodyBytes() - bodyBefore; n != 2*modelSize {
			t.Errorf("origin served %d bytes in all, want 2 copies of the model (%d)", n, 2*modelSize)
		}
		for _, node := range []string{"kwok-node-0", "kwok-node-1"} {
			st, err := os.Stat(filepath.Join(caches[node], "models--acme--big", "blobs", big.SHA256()))
			if err != nil || st.Size() != size {
				t.Errorf("%s: the weights blob: %v", node, err)
			}
		}
	}) {
		return
	}

	t.Run("a new revision is preheated before its first pod exists", func(t *testing.T) {
		v2 := map[string][]byte{"config.json": small["config.json"], "tokenizer.json": small["tokenizer.json"], weightsFile: hubtest.NewSynthetic(2, 3<<20).Bytes()}
		hub.AddRepo("acme/big-v2", hubtest.Repo{Files: v2})
		oldRev := k.get(t, ns, "big").Status.UpdateRevision
		type atEnd struct {
			job                hubtest.ManagerJob
			pods, newRev, gone int
			preheated          string
			err                error
		}
		var (
			mu   sync.Mutex
			ends []atEnd
		)
		// When the manager ends the job, before it tells the controller:
		// the pods and the conditions as the API server has them.
		mgr.SetOnEnd(func(j hubtest.ManagerJob) {
			e := atEnd{job: j}
			var list corev1.PodList
			e.err = k.c.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{servingv1.LabelModelServing: "big"})
			for _, p := range list.Items {
				e.pods++
				if p.Labels[servingv1.LabelRevision] != oldRev {
					e.newRev++
				}
				if p.DeletionTimestamp != nil {
					e.gone++
				}
			}
			var ms servingv1.ModelServing
			if err := k.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "big"}, &ms); err != nil {
				e.err = errors.Join(e.err, err)
			}
			if c := meta.FindStatusCondition(ms.Status.Conditions, controller.ConditionPreheated); c != nil {
				e.preheated = c.Reason
			}
			mu.Lock()
			ends = append(ends, e)
			mu.Unlock()
		})
		defer mgr.SetOnEnd(nil)
		jobsBefore := len(mgr.Jobs())
		before, p2pBefore := hub.BodyBytes(), df.P2PRequests()

		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur := k.get(t, ns, "big")
			cur.Spec.Model.Source = "hf://acme/big-v2"
			cur.Spec.Model.Distribution = servingv1.DistributionDragonfly
			return k.c.Update(context.Background(), cur)
		}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 3*waitLong, "rollout to the new revision", func() (bool, string) {
			ms := k.get(t, ns, "big")
			done, msg := allRunning(t, k, ns, "big", 8)
			return ok(done && ms.Status.UpdateRevision != oldRev && ms.Status.UpdatedReplicas == 8, fmt.Sprintf("%s, %d updated", msg, ms.Status.UpdatedReplicas))
		})
		waitWeights(t, k, ns, "big", metav1.ConditionTrue, controller.ReasonWeightsFetched)

		jobs := mgr.Jobs()[jobsBefore:]
		if len(jobs) != 1 || jobs[0].State != "SUCCESS" || len(jobs[0].URLs()) != len(v2) {
			t.Fatalf("preheat jobs %+v, want one SUCCESS with %d URLs", jobs, len(v2))
		}
		mu.Lock()
		defer mu.Unlock()
		if len(ends) != 1 {
			t.Fatalf("%d job ends seen, want 1", len(ends))
		}
		e := ends[0]
		if e.err != nil {
			t.Fatal(e.err)
		}
		// The order, from the API server at the job's end: no pod of the
		// new revision existed yet, no old one was going, and the gate held.
		if e.newRev != 0 || e.pods != 8 || e.gone != 0 {
			t.Errorf("when the preheat ended: %d pods, %d of the new revision, %d deleting; want 8 old ones, none going", e.pods, e.newRev, e.gone)
		}
		if e.preheated != controller.ReasonWaitingForPreheat {
			t.Errorf("Preheated condition %q when the job ended, want %s (the gate holding)", e.preheated, controller.ReasonWaitingForPreheat)
		}
		for _, p := range k.pods(t, ns, "big") {
			// Seconds, as the API server keeps them: a weaker check.
			if p.CreationTimestamp.Before(&metav1.Time{Time: e.job.Ended.Truncate(time.Second)}) {
				t.Errorf("pod %s created at %s, before the preheat ended (%s)", p.Name, p.CreationTimestamp, e.job.Ended)
			}
		}
		if c := meta.FindStatusCondition(k.get(t, ns, "big").Status.Conditions, controller.ConditionPreheated); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("Preheated condition %+v, want True", c)
		}
		// The preheat pulled one copy; the 8 fetches came from the peers.
		if n := hub.BodyBytes() - before; n != filesBytes(v2) {
			t.Errorf("origin served %d bytes for the new revision, want one copy (%d, the preheat's)", n, filesBytes(v2))
		}
		// One P2P request per file and node: the node cache serves the
		// node's other pods.
		if n := df.P2PRequests() - p2pBefore; n != int64(2*len(v2)) {
			t.Errorf("%d P2P requests through the dfdaemon stand-in, want %d (each file once per node)", n, 2*len(v2))
		}
	})

	t.Run("killed half way resumes, a corrupted blob is refetched", func(t *testing.T) {
		const mib = 16
		big := hubtest.NewSynthetic(3, mib<<20)
		hub.AddRepo("acme/resume", hubtest.Repo{Files: small, Synthetic: map[string]*hubtest.Synthetic{weightsFile: big}})
		modelSize := big.Size() + int64(len(small["config.json"])+len(small["tokenizer.json"]))
		rt.manual("resume")
		create(t, k, inPool(weightsServing(ns, "resume", "hf://acme/resume", 1), "small"))
		var pod corev1.Pod
		eventually(t, waitLong, "the pod scheduled", func() (bool, string) {
			pods := k.pods(t, ns, "resume")
			if len(pods) != 1 || pods[0].Spec.NodeName == "" {
				return ok(false, fmt.Sprintf("%d pods, none scheduled", len(pods)))
			}
			pod = pods[0]
			return ok(true, "")
		})
		node := caches[pod.Spec.NodeName]
		if pod.Spec.NodeName != "kwok-node-2" {
			t.Fatalf("pod on %s, want the small pool's kwok-node-2", pod.Spec.NodeName)
		}
		half := big.Size() / 2
		release := hub.PauseAfter(weightsFile, half)
		defer release()
		start := hub.BodyBytes()
		seen := len(hub.Ranges(weightsFile))
		cmd, _, err := k.fetchCommand(context.Background(), t, &pod, node)
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		partial := filepath.Join(node, "models--acme--resume", "blobs", big.SHA256()+".incomplete")
		eventually(t, waitLong, "half the weights on disk", func() (bool, string) {
			st, err := os.Stat(partial)
			if err != nil {
				return false, err.Error()
			}
			return st.Size() == half, fmt.Sprintf("%d of %d bytes", st.Size(), half)
		})
		// Killed as an evicted or OOM-killed container dies: no clean-up.
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		release()
		if err := rt.exited(&pod, 137, 0, ""); err != nil {
			t.Fatal(err)
		}
		waitWeights(t, k, ns, "resume", metav1.ConditionFalse, weights.ReasonFetchFailed)
		if p := k.pod(t, ns, pod.Name); p.Status.Phase != corev1.PodPending {
			t.Errorf("pod %s after its fetch was killed, want Pending", p.Status.Phase)
		}
		// The kubelet runs the init container again: it resumes with a range.
		msg, err := k.execFetch(context.Background(), t, &pod, node, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.exited(&pod, 0, 1, msg); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitLong, "the group running after the rerun", func() (bool, string) { return ok(allRunning(t, k, ns, "resume", 1)) })
		waitWeights(t, k, ns, "resume", metav1.ConditionTrue, controller.ReasonWeightsFetched)
		if got := hub.BodyBytes() - start; got != modelSize {
			t.Errorf("origin served %d bytes over the killed run and the rerun, want one copy (%d)", got, modelSize)
		}
		if r := hub.Ranges(weightsFile)[seen:]; len(r) != 2 || r[0] != "" || r[1] != fmt.Sprintf("bytes=%d-", half) {
			t.Errorf("requests of the weights had ranges %q, want none then bytes=%d-", r, half)
		}

		// A corrupted blob in the node cache: the next pod on that node
		// rehashes it and refetches only it.
		blob := filepath.Join(node, "models--acme--resume", "blobs", big.SHA256())
		if err := os.WriteFile(blob, make([]byte, big.Size()), 0o644); err != nil {
			t.Fatal(err)
		}
		before := hub.BodyBytes()
		create(t, k, inPool(weightsServing(ns, "resume-2", "hf://acme/resume", 1), "small"))
		eventually(t, waitLong, "the second pod running", func() (bool, string) { return ok(allRunning(t, k, ns, "resume-2", 1)) })
		waitWeights(t, k, ns, "resume-2", metav1.ConditionTrue, controller.ReasonWeightsFetched)
		if got := hub.BodyBytes() - before; got != big.Size() {
			t.Errorf("origin served %d bytes after the corruption, want the corrupted file only (%d)", got, big.Size())
		}
		if b, err := os.ReadFile(blob); err != nil || hubtest.SHA256(b) != big.SHA256() {
			t.Errorf("the corrupted blob was not replaced (%v)", err)
		}
	})
}

// filesBytes is the total size of files.
func filesBytes(files map[string][]byte) int64 {
	var n int64
	for _, b := range files {
		n += int64(len(b))
	}
	return n
}
