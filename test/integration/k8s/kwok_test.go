package k8s

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/controller"
)

const zoneKey = "topology.kubernetes.io/zone"

// spawn runs a control-plane component, its output in logPath, until
// cleanup runs.
func spawn(name, logPath string, cleanup func(func()), args ...string) error {
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		log.Close()
	})
	return nil
}

// logTail writes the last lines of a component's log to the test log.
func logTail(t *testing.T, path string) {
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	t.Logf("last lines of %s:\n%s", filepath.Base(path), strings.Join(lines, "\n"))
}

// startKWOK runs kube-scheduler and KWOK (with the given stages) against
// k until cleanup runs, and creates nodes KWOK nodes spread over zone-a
// and zone-b, waiting until they are Ready. It returns the components'
// log files, in dir.
func startKWOK(k *cluster, scheduler, kwok, stages string, nodes int, dir string, cleanup func(func())) ([]string, error) {
	logs := []string{filepath.Join(dir, "kube-scheduler.log"), filepath.Join(dir, "kwok.log")}
	if err := spawn(scheduler, logs[0], cleanup, "--kubeconfig", k.kubeconfig, "--leader-elect=false", "--secure-port", "0"); err != nil {
		return nil, err
	}
	if err := spawn(kwok, logs[1], cleanup, "--kubeconfig", k.kubeconfig, "--config", stages,
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake",
		"--cidr", "10.0.0.1/16", "--node-ip", "10.0.0.1"); err != nil {
		return nil, err
	}
	ctx := context.Background()
	for i := 0; i < nodes; i++ {
		zone := []string{"zone-a", "zone-b"}[i%2]
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("kwok-node-%d", i),
			Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": fmt.Sprintf("kwok-node-%d", i), zoneKey: zone},
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
		}}
		if err := k.c.Create(ctx, n); err != nil {
			return logs, fmt.Errorf("create node: %w", err)
		}
	}
	deadline := time.Now().Add(waitLong)
	for {
		var list corev1.NodeList
		if err := k.c.List(ctx, &list); err != nil {
			return logs, err
		}
		ready := 0
		for _, n := range list.Items {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready == nodes {
			return logs, nil
		}
		if time.Now().After(deadline) {
			return logs, fmt.Errorf("timed out after %s waiting for KWOK nodes: %d of %d ready", waitLong, ready, nodes)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kwokCluster is an API server plus kube-scheduler and KWOK (with its
// stock stages) managing fake nodes spread over zone-a and zone-b.
func kwokCluster(t *testing.T, nodes int) *cluster {
	t.Helper()
	scheduler := requireTool(t, "kube-scheduler")
	kwok := requireTool(t, "kwok")
	stages := filepath.Join(filepath.Dir(kwok), "kwok-stages.yaml")
	if !fileExists(stages) {
		t.Fatalf("%s missing: hack/controlplane.sh build writes it", stages)
	}
	k := startCluster(t, featureGates)
	logs, err := startKWOK(k, scheduler, kwok, stages, nodes, t.TempDir(), t.Cleanup)
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range logs {
				logTail(t, l)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// zonesOf maps each group of a ModelServing to the zones its pods run in.
func zonesOf(t *testing.T, k *cluster, ns, name string) map[string][]string {
	t.Helper()
	var nodes corev1.NodeList
	if err := k.c.List(context.Background(), &nodes); err != nil {
		t.Fatal(err)
	}
	zone := map[string]string{}
	for _, n := range nodes.Items {
		zone[n.Name] = n.Labels[zoneKey]
	}
	set := map[string]map[string]bool{}
	for _, p := range k.pods(t, ns, name) {
		g := p.Labels[servingv1.LabelGroup]
		if set[g] == nil {
			set[g] = map[string]bool{}
		}
		set[g][zone[p.Spec.NodeName]] = true
	}
	out := map[string][]string{}
	for g, zs := range set {
		for z := range zs {
			out[g] = append(out[g], z)
		}
		sort.Strings(out[g])
	}
	return out
}

func allRunning(t *testing.T, k *cluster, ns, name string, want int) (bool, string) {
	pods := k.pods(t, ns, name)
	running := 0
	for _, p := range pods {
		if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
			running++
		}
	}
	ms := k.get(t, ns, name)
	return running == want && len(pods) == want && ms.Status.ReadyReplicas == *ms.Spec.Replicas,
		fmt.Sprintf("%d of %d pods running, %d listed, %d groups ready", running, want, len(pods), ms.Status.ReadyReplicas)
}

// On KWOK nodes in two zones, with kube-scheduler placing pods, every group
// is packed inside one zone and groups spread over zones; scaling adds
// packed groups; a rollout replaces groups one at a time.
func TestKWOKPlacementScaleAndRollout(t *testing.T) {
	k := kwokCluster(t, 4)
	k.runController(t, realClock{}, controller.InPlaceAuto)
	ns := k.namespace(t, "kwok")
	ms := pdServing(ns, "zoned", 2)
	ms.Spec.Placement.TopologyKey = zoneKey
	create(t, k, ms)

	eventually(t, 2*waitLong, "6 pods running", func() (bool, string) { return allRunning(t, k, ns, "zoned", 6) })
	zones := zonesOf(t, k, ns, "zoned")
	for g, zs := range zones {
		if len(zs) != 1 {
			t.Errorf("group %s spans zones %v, want one", g, zs)
		}
	}
	if len(zones) != 2 || zones["0"][0] == zones["1"][0] {
		t.Errorf("groups in zones %v, want the two groups in different zones", zones)
	}
	st := k.get(t, ns, "zoned").Status
	for _, g := range st.Groups {
		if want := zones[fmt.Sprint(g.Index)][0]; g.Domain != want {
			t.Errorf("group %d status domain %q, pods in %q", g.Index, g.Domain, want)
		}
	}

	t.Run("scale up packs new groups", func(t *testing.T) {
		cur := k.get(t, ns, "zoned")
		cur.Spec.Replicas = ptrInt32(4)
		if err := k.c.Update(context.Background(), cur); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*waitLong, "12 pods running", func() (bool, string) { return allRunning(t, k, ns, "zoned", 12) })
		perZone := map[string]int{}
		for g, zs := range zonesOf(t, k, ns, "zoned") {
			if len(zs) != 1 {
				t.Errorf("group %s spans zones %v, want one", g, zs)
				continue
			}
			perZone[zs[0]]++
		}
		if perZone["zone-a"] != 2 || perZone["zone-b"] != 2 {
			t.Errorf("groups per zone %v, want 2 and 2", perZone)
		}
	})

	t.Run("rollout replaces one group at a time", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			maxDown int
			order   []string
		)
		oldRev := k.get(t, ns, "zoned").Status.UpdateRevision
		wg.Add(1)
		go func() { // watch the groups: how many are not fully running, and which turn over first
			defer wg.Done()
			seen := map[string]bool{}
			for ctx.Err() == nil {
				down := map[string]bool{}
				count := map[string]int{}
				for _, p := range k.pods(t, ns, "zoned") {
					g := p.Labels[servingv1.LabelGroup]
					count[g]++
					if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
						down[g] = true
					}
					if p.Labels[servingv1.LabelRevision] != oldRev && !seen[g] {
						seen[g] = true
						mu.Lock()
						order = append(order, g)
						mu.Unlock()
					}
				}
				for _, g := range []string{"0", "1", "2", "3"} {
					if count[g] < 3 {
						down[g] = true
					}
				}
				mu.Lock()
				if len(down) > maxDown {
					maxDown = len(down)
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
		cur := k.get(t, ns, "zoned")
		for i := range cur.Spec.Roles {
			c := &cur.Spec.Roles[i].Template.Spec.Containers[0]
			c.Env = append(c.Env, corev1.EnvVar{Name: "VLLM_LOGGING_LEVEL", Value: "DEBUG"})
		}
		if err := k.c.Update(context.Background(), cur); err != nil {
			t.Fatal(err)
		}
		eventually(t, 3*waitLong, "rollout complete", func() (bool, string) {
			ms := k.get(t, ns, "zoned")
			ok, msg := allRunning(t, k, ns, "zoned", 12)
			return ok && ms.Status.UpdatedReplicas == 4 && ms.Status.UpdateRevision != oldRev, fmt.Sprintf("%s, updated %d", msg, ms.Status.UpdatedReplicas)
		})
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if maxDown > 1 {
			t.Errorf("%d groups were unavailable at once, want at most maxUnavailable=1", maxDown)
		}
		if strings.Join(order, ",") != "3,2,1,0" {
			t.Errorf("groups replaced in order %v, want 3,2,1,0", order)
		}
		for _, p := range k.pods(t, ns, "zoned") {
			if p.Labels[servingv1.LabelRevision] == oldRev {
				t.Errorf("pod %s still at the old revision", p.Name)
			}
		}
		for g, zs := range zonesOf(t, k, ns, "zoned") {
			if len(zs) != 1 {
				t.Errorf("after the rollout group %s spans zones %v", g, zs)
			}
		}
	})
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
