package k8s

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/controller"
	"github.com/halyard-dev/halyard/internal/weights/dragonfly"
	"github.com/halyard-dev/halyard/internal/weights/hubtest"
)

// The controller's model weights wiring, end to end on a real API server:
// the controller renders the fetch init container, a real `halyard fetch`
// process runs it as the kubelet would (its env and arguments taken from
// the pod, the hostPath mapped to a per-node directory), reports through
// its Event, and the test writes the init container's termination status
// as the kubelet would. The origin is the local Hub stand-in; Dragonfly is
// the local dfdaemon proxy and manager stand-ins. A fetch killed half way
// and a corrupted blob are tested on KWOK nodes (TestWeightsKWOK).
func TestWeightsFetchAndDragonfly(t *testing.T) {
	k := startCluster(t, featureGates)
	hub, df, mgr := weightsStandIns(t)
	msHub := hubtest.NewModelScope()
	t.Cleanup(msHub.Close)
	dfURL, err := url.Parse(df.URL)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	clock := newFakeClock()
	if err := k.startController(clock, controller.InPlaceOff, testLogs(), t.Cleanup, func(o *controller.Options) {
		o.Registerer = reg
		o.Weights = controller.WeightsOptions{
			CacheDir:           "/var/cache/halyard-test",
			HFEndpoint:         hub.URL,
			ModelScopeEndpoint: msHub.URL,
			DragonflyProxy:     "http://$(HOST_IP):" + dfURL.Port(),
			DragonflyTag:       "halyard",
			PreheatGate:        2 * time.Minute,
			Timeout:            10 * time.Minute,
			Preheater: &controller.DragonflyPreheater{
				Manager:    dragonfly.Manager{URL: mgr.URL, Token: "pat-secret"},
				HFEndpoint: hub.URL, Tag: "halyard",
			},
		}
	}); err != nil {
		t.Fatal(err)
	}
	ns := k.namespace(t, "weights")
	for name, env := range map[string]map[string]string{
		"hf": {"HF_TOKEN": "right-token"}, "hf-wrong": {"HF_TOKEN": "wrong-token"}, "ms": {"MODELSCOPE_API_TOKEN": "ms-token"},
	} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: env}
		if err := k.c.Create(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	nodes := map[string]string{}
	for _, n := range []string{"node-a", "node-b"} {
		k.createNode(t, n, nil)
		nodes[n] = t.TempDir()
	}
	model := func(seed byte) map[string][]byte {
		big := make([]byte, 3<<20)
		for i := range big {
			big[i] = byte(i) ^ seed
		}
		return map[string][]byte{
			"config.json":       []byte(`{"num_hidden_layers": 2}`),
			"tokenizer.json":    []byte(`{"model": {"type": "BPE"}}`),
			"model.safetensors": big,
		}
	}
	size := func(files map[string][]byte) int64 {
		var n int64
		for _, b := range files {
			n += int64(len(b))
		}
		return n
	}

	t.Run("direct", func(t *testing.T) {
		files := model(1)
		hub.AddRepo("acme/tiny", hubtest.Repo{Files: files, Token: "right-token"})
		ms := weightsServing(ns, "tiny", "hf://acme/tiny", 1)
		ms.Spec.Replicas = ptr.To(int32(8)) // 8 groups of one pod
		ms.Spec.Model.Fetch = &servingv1.FetchSpec{CredentialsSecret: "hf", Exclude: []string{"*.md"}}
		create(t, k, ms)
		pods := waitPods(t, k, ns, "tiny", 8)

		// The pod spec: the fetch runs first, then the agent; the node
		// cache is a hostPath, read-write for the fetch, read-only for the
		// engine; credentials reach the fetch only.
		p := pods[0]
		var names []string
		for _, c := range p.Spec.InitContainers {
			names = append(names, c.Name)
		}
		if !slices.Equal(names, []string{servingv1.FetchContainerName, servingv1.AgentContainerName}) {
			t.Fatalf("init containers %v, want fetch then agent", names)
		}
		fetch := p.Spec.InitContainers[0]
		for _, want := range []string{"fetch", "hf://acme/tiny", "--into=/var/cache/halyard", "--report", "--exclude=*.md"} {
			if !slices.Contains(fetch.Args, want) {
				t.Errorf("fetch args %v lack %q", fetch.Args, want)
			}
		}
		if len(fetch.EnvFrom) != 1 || fetch.EnvFrom[0].SecretRef == nil || fetch.EnvFrom[0].SecretRef.Name != "hf" {
			t.Errorf("fetch envFrom %+v, want the Secret hf", fetch.EnvFrom)
		}
		var vol *corev1.Volume
		for i := range p.Spec.Volumes {
			if p.Spec.Volumes[i].Name == servingv1.WeightsVolumeName {
				vol = &p.Spec.Volumes[i]
			}
		}
		if vol == nil || vol.HostPath == nil || vol.HostPath.Path != "/var/cache/halyard-test" {
			t.Fatalf("weights volume %+v, want hostPath /var/cache/halyard-test", vol)
		}
		engine := p.Spec.Containers[0]
		env := map[string]string{}
		for _, e := range engine.Env {
			env[e.Name] = e.Value
		}
		if env["HF_HUB_CACHE"] != "/var/cache/halyard" || env["HF_HUB_OFFLINE"] != "1" {
			t.Errorf("engine env %v: want HF_HUB_CACHE and HF_HUB_OFFLINE=1", env)
		}
		if _, ok := env["HF_TOKEN"]; ok || len(engine.EnvFrom) > 0 {
			t.Errorf("the engine sees credentials: env %v envFrom %v", env, engine.EnvFrom)
		}
		if m := mountOf(engine, servingv1.WeightsVolumeName); m == nil || !m.ReadOnly || m.MountPath != "/var/cache/halyard" {
			t.Errorf("engine mount %+v, want read-only /var/cache/halyard", m)
		}

		before := hub.BodyBytes()
		runFetches(t, k, pods, nodes, 0)
		waitWeights(t, k, ns, "tiny", metav1.ConditionTrue, controller.ReasonWeightsFetched)
		got := k.get(t, ns, "tiny").Status.Weights
		if got == nil || got.Pods != 8 || got.Ready != 8 || got.TotalBytes != 8*size(files) || got.DoneBytes != got.TotalBytes {
			t.Errorf("status.weights = %+v, want 8/8 pods and %d bytes done of %d", got, 8*size(files), 8*size(files))
		}
		for i := range int32(8) {
			if g := group(k.get(t, ns, "tiny"), i); g == nil || g.Weights == nil || g.Weights.Ready != 1 || g.Weights.Pods != 1 {
				t.Errorf("group %d weights = %+v, want 1 of 1 ready", i, g)
			}
		}
		// 8 groups on 2 nodes: two copies from the origin, not eight.
		if d := hub.BodyBytes() - before; d != 2*size(files) {
			t.Errorf("origin served %d bytes for 8 pods on 2 nodes, want 2 copies (%d)", d, 2*size(files))
		}
		if ev := k.events(t, ns, "tiny", controller.ReasonWeightsFetched); len(ev) == 0 {
			t.Error("no WeightsFetched event")
		}
	})

	t.Run("progress", func(t *testing.T) {
		files := model(5)
		hub.AddRepo("acme/slow", hubtest.Repo{Files: files})
		create(t, k, weightsServing(ns, "slow", "hf://acme/slow", 1))
		pods := waitPods(t, k, ns, "slow", 1)
		hub.Hold() // the LFS file's storage answer waits
		released := false
		defer func() {
			if !released {
				hub.Release()
			}
		}()
		k.bind(t, &pods[0], "node-a")
		done := make(chan error, 1)
		go func() { done <- k.runFetch(t, &pods[0], t.TempDir(), 0) }()
		// Mid-fetch the status shows the bytes so far of the known total,
		// and the group's barrier waits for the weights: the pod is
		// scheduled but its engine must not start before the fetch ends.
		eventually(t, waitLong, "group waits for the weights", func() (bool, string) {
			g := group(k.get(t, ns, "slow"), 0)
			if g == nil {
				return false, "no group"
			}
			return g.Phase == servingv1.GroupPending && g.Reason == controller.ReasonWaitingForWeights && g.Barrier < 0,
				fmt.Sprintf("%s/%s barrier %d: %s", g.Phase, g.Reason, g.Barrier, g.Message)
		})
		if p := k.pod(t, ns, pods[0].Name); p.Annotations[servingv1.AnnotationBarrier] != "" {
			t.Errorf("barrier annotation %q before the weights are on the node", p.Annotations[servingv1.AnnotationBarrier])
		}
		eventually(t, waitLong, "progress mid-fetch", func() (bool, string) {
			ms := k.get(t, ns, "slow")
			w := ms.Status.Weights
			c := meta.FindStatusCondition(ms.Status.Conditions, controller.ConditionWeightsReady)
			if w == nil || c == nil {
				return false, "no weights status"
			}
			ok := c.Reason == controller.ReasonFetching && w.TotalBytes == size(files) && w.DoneBytes > 0 && w.DoneBytes < w.TotalBytes &&
				strings.Contains(w.Progress, "0/1 pods")
			return ok, fmt.Sprintf("%s %+v", c.Reason, *w)
		})
		hub.Release()
		released = true
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		waitWeights(t, k, ns, "slow", metav1.ConditionTrue, controller.ReasonWeightsFetched)
		// With the weights on the node the barrier is released.
		eventually(t, waitLong, "barrier released", func() (bool, string) {
			g := group(k.get(t, ns, "slow"), 0)
			p := k.pod(t, ns, pods[0].Name)
			return g != nil && g.Phase == servingv1.GroupStarting && p.Annotations[servingv1.AnnotationBarrier] == "0",
				fmt.Sprintf("group %+v, annotation %q", g, p.Annotations[servingv1.AnnotationBarrier])
		})
	})

	t.Run("failures", func(t *testing.T) {
		hub.AddRepo("acme/gated", hubtest.Repo{Files: model(2), Token: "right-token"})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().String()
		_ = ln.Close()
		for _, tc := range []struct {
			name, source, secret, reason string
		}{
			{"forbidden", "hf://acme/gated", "hf-wrong", "Forbidden"},
			{"unauthorized", "hf://acme/gated", "", "Unauthorized"},
			{"missing", "hf://acme/missing", "", "SourceNotFound"},
			{"unreachable", "http://" + closed + "/model.bin", "", "SourceUnreachable"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ms := weightsServing(ns, tc.name, tc.source, 1)
				if tc.secret != "" {
					ms.Spec.Model.Fetch = &servingv1.FetchSpec{CredentialsSecret: tc.secret}
				}
				create(t, k, ms)
				pods := waitPods(t, k, ns, tc.name, 1)
				runFetches(t, k, pods, nodes, 1)
				c := waitWeights(t, k, ns, tc.name, metav1.ConditionFalse, tc.reason)
				if !strings.Contains(c.Message, pods[0].Name) {
					t.Errorf("message %q does not name the pod", c.Message)
				}
				if strings.Contains(c.Message, "wrong-token") || strings.Contains(c.Message, "right-token") {
					t.Errorf("message %q holds a token", c.Message)
				}
				if ev := k.events(t, ns, tc.name, controller.ReasonWeightsFailed); len(ev) == 0 || !strings.Contains(ev[0], tc.reason) {
					t.Errorf("WeightsFailed events %q, want one naming %s", ev, tc.reason)
				}
			})
		}
	})

	t.Run("dragonfly", func(t *testing.T) {
		files := model(3)
		hub.AddRepo("acme/p2p", hubtest.Repo{Files: files})
		for n := range nodes {
			nodes[n] = t.TempDir() // fresh node caches
		}
		ms := weightsServing(ns, "p2p", "hf://acme/p2p", 4)
		ms.Spec.Model.Distribution = servingv1.DistributionDragonfly
		before := hub.BodyBytes()
		create(t, k, ms)
		pods := waitPods(t, k, ns, "p2p", 4)
		// The controller creates the preheat job first and, with a preheat
		// gate, creates the pods only once the job has ended (the status
		// is written before the pods are created).
		if n := len(mgr.Jobs()); n != 1 {
			t.Fatalf("pods exist and %d preheat jobs, want the job created first", n)
		}
		if ms := k.get(t, ns, "p2p"); ms.Status.Weights == nil || ms.Status.Weights.Preheat == nil || ms.Status.Weights.Preheat.State != "Success" {
			t.Fatalf("pods exist while the preheat is %+v, want them held until Success", ms.Status.Weights)
		}
		if c := meta.FindStatusCondition(k.get(t, ns, "p2p").Status.Conditions, controller.ConditionPreheated); c == nil || c.Status != metav1.ConditionTrue || c.Reason != controller.ReasonPreheated {
			t.Errorf("Preheated condition %+v, want True/Preheated", c)
		}
		// Two Preheated events (the job's end, the gate's release) are
		// recorded asynchronously: wait for the gate's.
		eventually(t, waitLong, "the gate's release event", func() (bool, string) {
			ev := k.events(t, ns, "p2p", controller.ReasonPreheated)
			return slices.ContainsFunc(ev, func(s string) bool { return strings.Contains(s, "the preheat finished") }), fmt.Sprintf("%q", ev)
		})
		// The preheat job names every file's resolve URL and the tag the
		// fetches use; it ends before the pods fetch.
		eventually(t, waitLong, "preheat Success", func() (bool, string) {
			w := k.get(t, ns, "p2p").Status.Weights
			if w == nil || w.Preheat == nil {
				return false, "no preheat status"
			}
			return w.Preheat.State == "Success", fmt.Sprintf("%+v", *w.Preheat)
		})
		jobs := mgr.Jobs()
		if len(jobs) != 1 || len(jobs[0].URLs()) != len(files) || jobs[0].Args["tag"] != "halyard" || jobs[0].Args["scope"] != "all_seed_peers" {
			t.Fatalf("preheat jobs %+v, want one with %d URLs and tag halyard", jobs, len(files))
		}
		preheated := hub.BodyBytes() - before
		if preheated != size(files) {
			t.Errorf("the preheat pulled %d bytes from the origin, want one copy (%d)", preheated, size(files))
		}
		runFetches(t, k, pods, nodes, 0)
		waitWeights(t, k, ns, "p2p", metav1.ConditionTrue, controller.ReasonWeightsFetched)
		if d := hub.BodyBytes() - before; d != size(files) {
			t.Errorf("4 pods on 2 nodes through Dragonfly: origin served %d bytes, want one copy (%d)", d, size(files))
		}
		if w := k.get(t, ns, "p2p").Status.Weights; w.Fallbacks != 0 {
			t.Errorf("fallbacks = %d, want 0", w.Fallbacks)
		}

		// A failing peer: the fetch falls back to the origin and says so.
		df.Fail.Store(true)
		defer df.Fail.Store(false)
		hub.AddRepo("acme/p2p-down", hubtest.Repo{Files: model(4)})
		ms = weightsServing(ns, "p2p-down", "hf://acme/p2p-down", 1)
		ms.Spec.Model.Distribution = servingv1.DistributionDragonfly
		create(t, k, ms)
		pods = waitPods(t, k, ns, "p2p-down", 1)
		runFetches(t, k, pods, nodes, 0)
		waitWeights(t, k, ns, "p2p-down", metav1.ConditionTrue, controller.ReasonWeightsFetched)
		if w := k.get(t, ns, "p2p-down").Status.Weights; w.Fallbacks != int64(len(files)) {
			t.Errorf("fallbacks = %d, want %d (every file)", w.Fallbacks, len(files))
		}
		if ev := k.events(t, ns, "p2p-down", controller.ReasonDragonflyFallback); len(ev) == 0 {
			t.Error("no DragonflyFallback event")
		}
		if v := counterValue(t, reg, "halyard_controller_weights_dragonfly_fallbacks_total"); v < float64(len(files)) {
			t.Errorf("fallback metric = %v, want at least %d", v, len(files))
		}
	})

	t.Run("preheat gate timeout", func(t *testing.T) {
		// A preheat job that does not end: the first pods wait for it
		// until the gate elapses, then are created, and the condition
		// says the gate timed out.
		mgr.SetPolls(1 << 30)
		defer mgr.SetPolls(1)
		hub.AddRepo("acme/p2p-slow", hubtest.Repo{Files: model(6)})
		ms := weightsServing(ns, "p2p-slow", "hf://acme/p2p-slow", 1)
		ms.Spec.Model.Distribution = servingv1.DistributionDragonfly
		create(t, k, ms)
		eventually(t, waitLong, "WaitingForPreheat", func() (bool, string) {
			ms := k.get(t, ns, "p2p-slow")
			c := meta.FindStatusCondition(ms.Status.Conditions, controller.ConditionPreheated)
			w := meta.FindStatusCondition(ms.Status.Conditions, controller.ConditionWeightsReady)
			g := group(ms, 0)
			if c == nil || w == nil || g == nil {
				return false, "no conditions or group yet"
			}
			return c.Reason == controller.ReasonWaitingForPreheat && w.Reason == controller.ReasonWaitingForPreheat && g.Reason == controller.ReasonWaitingForPreheat,
				fmt.Sprintf("Preheated %s, WeightsReady %s, group %s", c.Reason, w.Reason, g.Reason)
		})
		// The clock has not moved: the gate holds, no pod exists.
		if n := len(k.pods(t, ns, "p2p-slow")); n != 0 {
			t.Fatalf("%d pods while the preheat gate holds", n)
		}
		clock.Advance(3 * time.Minute)
		k.poke(t, ns, "p2p-slow")
		waitPods(t, k, ns, "p2p-slow", 1)
		c := meta.FindStatusCondition(k.get(t, ns, "p2p-slow").Status.Conditions, controller.ConditionPreheated)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != controller.ReasonPreheatTimedOut {
			t.Errorf("Preheated condition %+v, want False/PreheatTimedOut", c)
		}
		if ev := k.events(t, ns, "p2p-slow", controller.ReasonPreheatTimedOut); len(ev) == 0 || !strings.Contains(ev[0], "elapsed") {
			t.Errorf("PreheatTimedOut events %q, want one saying the gate elapsed", ev)
		}

		// A rollout to a new revision: while its preheat gate holds, the
		// running group keeps serving the old revision; when the gate
		// elapses the rollout goes on.
		pod := waitPods(t, k, ns, "p2p-slow", 1)[0]
		k.bind(t, &pod, "node-a")
		k.markRunning(t, &pod, 0, true)
		k.updateStatus(t, &pod, func(cur *corev1.Pod) {
			for i := range cur.Status.InitContainerStatuses {
				if cur.Status.InitContainerStatuses[i].Name == servingv1.FetchContainerName {
					cur.Status.InitContainerStatuses[i].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}
				}
			}
		})
		eventually(t, waitLong, "group 0 Running", func() (bool, string) {
			g := group(k.get(t, ns, "p2p-slow"), 0)
			return g != nil && g.Phase == servingv1.GroupRunning, fmt.Sprintf("%+v", g)
		})
		oldRev := group(k.get(t, ns, "p2p-slow"), 0).Revision
		hub.AddRepo("acme/p2p-slow2", hubtest.Repo{Files: model(9)})
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur := k.get(t, ns, "p2p-slow")
			cur.Spec.Model.Source = "hf://acme/p2p-slow2"
			return k.c.Update(context.Background(), cur)
		}); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitLong, "the new revision's preheat gate", func() (bool, string) {
			ms := k.get(t, ns, "p2p-slow")
			c := meta.FindStatusCondition(ms.Status.Conditions, controller.ConditionPreheated)
			if c == nil || ms.Status.Weights == nil || ms.Status.Weights.Preheat == nil {
				return false, "no preheat yet"
			}
			return c.Reason == controller.ReasonWaitingForPreheat && ms.Status.Weights.Preheat.Revision == ms.Status.UpdateRevision && ms.Status.UpdateRevision != oldRev,
				fmt.Sprintf("%s for revision %s (update revision %s)", c.Reason, ms.Status.Weights.Preheat.Revision, ms.Status.UpdateRevision)
		})
		if g := group(k.get(t, ns, "p2p-slow"), 0); g == nil || g.Phase != servingv1.GroupRunning || g.Revision != oldRev {
			t.Errorf("group 0 = %+v while the preheat gate holds, want Running at the old revision", g)
		}
		if p := k.pod(t, ns, pod.Name); p.DeletionTimestamp != nil {
			t.Error("the running pod was deleted while the preheat gate holds")
		}
		clock.Advance(3 * time.Minute)
		k.poke(t, ns, "p2p-slow")
		eventually(t, waitLong, "rollout after the gate", func() (bool, string) {
			g := group(k.get(t, ns, "p2p-slow"), 0)
			return g != nil && (g.Phase == servingv1.GroupRecreating || g.Revision != oldRev), fmt.Sprintf("%+v", g)
		})
		// Let the job end (it pulls from the origin), so that no later
		// subtest counts its bytes; the condition turns True.
		mgr.SetPolls(1)
		eventually(t, waitLong, "preheat finished late", func() (bool, string) {
			c := meta.FindStatusCondition(k.get(t, ns, "p2p-slow").Status.Conditions, controller.ConditionPreheated)
			return c != nil && c.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", c)
		})
	})

	t.Run("modelscope", func(t *testing.T) {
		// A private ModelScope model: the token reaches the fetch from the
		// Secret, the files land in the Hugging Face layout the engines
		// read (refs/main for master), one copy per node.
		files := model(8)
		msHub.AddRepo("acme/ms-tiny", hubtest.ModelScopeRepo{Files: files, Token: "ms-token"})
		for n := range nodes {
			nodes[n] = t.TempDir()
		}
		ms := weightsServing(ns, "ms-tiny", "modelscope://acme/ms-tiny", 1)
		ms.Spec.Replicas = ptr.To(int32(4))
		ms.Spec.Model.Fetch = &servingv1.FetchSpec{CredentialsSecret: "ms"}
		create(t, k, ms)
		pods := waitPods(t, k, ns, "ms-tiny", 4)
		env := map[string]string{}
		for _, e := range pods[0].Spec.Containers[0].Env {
			env[e.Name] = e.Value
		}
		if env["HF_HUB_CACHE"] != "/var/cache/halyard" || env["HF_HUB_OFFLINE"] != "1" {
			t.Errorf("engine env %v: want HF_HUB_CACHE and HF_HUB_OFFLINE=1", env)
		}
		runFetches(t, k, pods, nodes, 0)
		waitWeights(t, k, ns, "ms-tiny", metav1.ConditionTrue, controller.ReasonWeightsFetched)
		if got := msHub.BodyBytes(); got != 2*size(files) {
			t.Errorf("ModelScope served %d bytes for 4 pods on 2 nodes, want 2 copies (%d)", got, 2*size(files))
		}
		for n, dir := range nodes {
			ref, err := os.ReadFile(filepath.Join(dir, "models--acme--ms-tiny", "refs", "main"))
			if err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "models--acme--ms-tiny", "snapshots", string(ref), "model.safetensors"))
			if err != nil || hubtest.SHA256(got) != hubtest.SHA256(files["model.safetensors"]) {
				t.Errorf("%s: the snapshot refs/main names does not hold the weights (%v)", n, err)
			}
		}
	})

	t.Run("weights timeout", func(t *testing.T) {
		// A fetch that never ends: past the controller's weights timeout
		// (10 minutes on the fake clock) the group is recreated, and the
		// group, the condition and an event say why. Last, as moving the
		// clock concerns every ModelServing here.
		hub.AddRepo("acme/stuck", hubtest.Repo{Files: model(10)})
		create(t, k, weightsServing(ns, "stuck", "hf://acme/stuck", 1))
		pods := waitPods(t, k, ns, "stuck", 1)
		k.bind(t, &pods[0], "node-a")
		eventually(t, waitLong, "the group waiting for its weights", func() (bool, string) {
			g := group(k.get(t, ns, "stuck"), 0)
			return g != nil && g.Reason == controller.ReasonWaitingForWeights, fmt.Sprintf("%+v", g)
		})
		clock.Advance(11 * time.Minute)
		k.poke(t, ns, "stuck")
		eventually(t, waitLong, "WeightsTimeout", func() (bool, string) {
			ms := k.get(t, ns, "stuck")
			g := group(ms, 0)
			c := meta.FindStatusCondition(ms.Status.Conditions, controller.ConditionWeightsReady)
			if g == nil || c == nil {
				return false, "no group or condition"
			}
			return g.Reason == controller.ReasonWeightsTimeout && g.Recreations == 1 && c.Status == metav1.ConditionFalse && c.Reason == controller.ReasonWeightsTimeout,
				fmt.Sprintf("group %s/%s (%d recreations), WeightsReady %s/%s", g.Phase, g.Reason, g.Recreations, c.Status, c.Reason)
		})
		if ev := k.events(t, ns, "stuck", controller.ReasonWeightsTimeout); len(ev) == 0 || !strings.Contains(ev[0], pods[0].Name) {
			t.Errorf("WeightsTimeout events %q, want one naming %s", ev, pods[0].Name)
		}
		if p := k.pod(t, ns, pods[0].Name); p.DeletionTimestamp == nil {
			t.Error("the pod without its weights was not deleted")
		}
	})
}

// weightsStandIns starts the Hub, dfdaemon and Dragonfly manager stand-ins
// until the test ends; the manager (token "pat-secret") ends a job at its
// second read, preheating into the dfdaemon's store.
func weightsStandIns(t *testing.T) (*hubtest.Hub, *hubtest.Dfdaemon, *hubtest.Manager) {
	hub := hubtest.NewHub()
	t.Cleanup(hub.Close)
	df := hubtest.NewDfdaemon()
	t.Cleanup(df.Close)
	mgr := hubtest.NewManager("pat-secret")
	mgr.SetPolls(1)
	mgr.SetSeed(df)
	t.Cleanup(mgr.Close)
	return hub, df, mgr
}

func testLogs() *testLogWriter { return &testLogWriter{} }

// testLogWriter sends the controller's logs to stderr with
// HALYARD_TEST_LOGS=1, else nowhere.
type testLogWriter struct{}

func (testLogWriter) Write(p []byte) (int, error) {
	if os.Getenv("HALYARD_TEST_LOGS") == "1" {
		return os.Stderr.Write(p)
	}
	return len(p), nil
}

func weightsServing(ns, name, source string, pods int32) *servingv1.ModelServing {
	return &servingv1.ModelServing{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: servingv1.ModelServingSpec{
			Model:    servingv1.ModelSpec{Name: name, Source: source},
			Engine:   servingv1.EngineVLLM,
			Replicas: ptr.To(int32(1)),
			Roles:    []servingv1.RoleSpec{{Name: "worker", Replicas: pods, Template: engineTemplate("1")}},
		},
	}
}

func waitPods(t *testing.T, k *cluster, ns, name string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	eventually(t, waitLong, fmt.Sprintf("%d pods of %s", n, name), func() (bool, string) {
		pods = k.pods(t, ns, name)
		return len(pods) == n, fmt.Sprintf("%d pods", len(pods))
	})
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods
}

func waitWeights(t *testing.T, k *cluster, ns, name string, status metav1.ConditionStatus, reason string) metav1.Condition {
	t.Helper()
	var c metav1.Condition
	eventually(t, waitLong, fmt.Sprintf("WeightsReady %s/%s on %s", status, reason, name), func() (bool, string) {
		ms := k.get(t, ns, name)
		got := meta.FindStatusCondition(ms.Status.Conditions, controller.ConditionWeightsReady)
		if got == nil {
			return false, "no WeightsReady condition"
		}
		c = *got
		return got.Status == status && got.Reason == reason, fmt.Sprintf("%s/%s: %s", got.Status, got.Reason, got.Message)
	})
	return c
}

func mountOf(c corev1.Container, volume string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volume {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// runFetches binds the pods to the nodes in turn and runs each pod's fetch
// init container as a real process, all at once (pods of one node share its
// directory, as they share the hostPath); then writes each container's
// terminated status as the kubelet would. wantExit is the expected exit
// code of every process.
func runFetches(t *testing.T, k *cluster, pods []corev1.Pod, nodes map[string]string, wantExit int) {
	t.Helper()
	names := make([]string, 0, len(nodes))
	for n := range nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	var wg sync.WaitGroup
	errs := make([]error, len(pods))
	for i := range pods {
		node := names[i%len(names)]
		k.bind(t, &pods[i], node)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = k.runFetch(t, &pods[i], nodes[node], wantExit)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// runFetch plays the kubelet for one pod's fetch init container: it runs
// the process to its end and writes the container's terminated status.
func (k *cluster) runFetch(t *testing.T, pod *corev1.Pod, hostDir string, wantExit int) error {
	msg, err := k.execFetch(context.Background(), t, pod, hostDir, wantExit)
	if err != nil {
		return err
	}
	return k.setFetchStatus(pod, wantExit, msg)
}

// execFetch runs pod's fetch init container as a real process (fetchCommand)
// to its end and checks its exit code; it returns its termination message.
func (k *cluster) execFetch(ctx context.Context, t *testing.T, pod *corev1.Pod, hostDir string, wantExit int) (string, error) {
	cmd, termLog, err := k.fetchCommand(ctx, t, pod, hostDir)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		return "", err
	}
	if code != wantExit {
		return "", fmt.Errorf("fetch of %s exited %d, want %d:\n%s", pod.Name, code, wantExit, out)
	}
	if testing.Verbose() {
		t.Logf("fetch of %s:\n%s", pod.Name, out)
	}
	msg, _ := os.ReadFile(termLog)
	if code != 0 && len(msg) == 0 {
		return "", fmt.Errorf("fetch of %s failed without a termination message:\n%s", pod.Name, out)
	}
	return string(msg), nil
}

// fetchCommand is the process the kubelet would start for pod's fetch init
// container: its arguments and environment from the pod spec (Secret
// references and the downward API resolved), the hostPath mapped to
// hostDir. termLog is where its termination message goes. The process is
// killed if ctx ends.
func (k *cluster) fetchCommand(ctx context.Context, t *testing.T, pod *corev1.Pod, hostDir string) (cmd *exec.Cmd, termLog string, err error) {
	c := fetchContainer(pod)
	if c == nil {
		return nil, "", fmt.Errorf("pod %s has no fetch container", pod.Name)
	}
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.SecretRef == nil {
			continue
		}
		var s corev1.Secret
		if err := k.c.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: ef.SecretRef.Name}, &s); err != nil {
			return nil, "", err
		}
		for key, v := range s.Data {
			env[key] = string(v)
		}
	}
	for _, e := range c.Env {
		v := e.Value
		if f := e.ValueFrom; f != nil && f.FieldRef != nil {
			switch f.FieldRef.FieldPath {
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			case "metadata.uid":
				v = string(pod.UID)
			case "status.hostIP":
				v = "127.0.0.1"
			}
		}
		env[e.Name] = v
	}
	termLog = filepath.Join(t.TempDir(), "termination-log")
	mount := mountOf(*c, servingv1.WeightsVolumeName)
	var args []string
	for _, a := range c.Args {
		a = varRef.ReplaceAllStringFunc(a, func(m string) string { return env[m[2:len(m)-1]] })
		a = strings.Replace(a, "--into="+mount.MountPath, "--into="+hostDir, 1)
		a = strings.Replace(a, "--termination-message-path=/dev/termination-log", "--termination-message-path="+termLog, 1)
		args = append(args, a)
	}
	args = append(args, "--kubeconfig="+k.kubeconfig, "--report-interval=200ms", "--attempts=2")
	cmd = exec.CommandContext(ctx, halyardBinary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for key, v := range env {
		cmd.Env = append(cmd.Env, key+"="+v)
	}
	return cmd, termLog, nil
}

func fetchContainer(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == servingv1.FetchContainerName {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

// setFetchStatus writes the fetch init container's terminated state as the
// kubelet would.
func (k *cluster) setFetchStatus(pod *corev1.Pod, code int, msg string) error {
	ctx := context.Background()
	c := fetchContainer(pod)
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	// The controller annotates the pod meanwhile (the barrier): retry on
	// a conflict, as the kubelet does.
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &corev1.Pod{}
		if err := k.c.Get(ctx, client.ObjectKeyFromObject(pod), cur); err != nil {
			return err
		}
		cur.Status.Phase = corev1.PodPending
		cur.Status.InitContainerStatuses = []corev1.ContainerStatus{{
			Name: c.Name, Image: c.Image, ImageID: c.Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: int32(code), Reason: reason, Message: msg, StartedAt: metav1.Now(), FinishedAt: metav1.Now(),
			}},
		}}
		return k.c.Status().Update(ctx, cur)
	})
}

// counterValue sums a counter's series in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue()
		}
	}
	return v
}
