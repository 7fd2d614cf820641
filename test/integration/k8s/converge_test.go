package k8s

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/controller"
)

// TestConvergeManyModelServings measures how long the controller takes to
// bring N ModelServings of one group each (2 prefill + 2 decode pods) to
// Running on KWOK nodes with the real scheduler: the figure in
// docs/benchmarks.md. Opt in with HALYARD_K8S_CONVERGE=N; it is not a
// pass/fail timing test (the only assertion is that it converges within
// 15 minutes).
func TestConvergeManyModelServings(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("HALYARD_K8S_CONVERGE"))
	if n <= 0 {
		t.Skip("set HALYARD_K8S_CONVERGE=200 to measure convergence of 200 ModelServings (800 pods) on KWOK")
	}
	k := kwokCluster(t, 16)
	k.runController(t, realClock{}, controller.InPlaceAuto)
	ns := k.namespace(t, "converge")
	start := time.Now()
	for i := 0; i < n; i++ {
		ms := pdServing(ns, fmt.Sprintf("m%03d", i), 1)
		ms.Spec.Roles[0].Template = engineTemplate("100m")
		ms.Spec.Roles[1].Template = engineTemplate("100m")
		ms.Spec.Roles[1].Replicas = 2
		ms.Spec.Placement.TopologyKey = zoneKey
		create(t, k, ms)
	}
	created := time.Since(start)
	deadline := time.Now().Add(15 * time.Minute)
	ready := 0
	for time.Now().Before(deadline) {
		var list servingv1.ModelServingList
		if err := k.c.List(context.Background(), &list); err != nil {
			t.Fatal(err)
		}
		ready = 0
		for _, ms := range list.Items {
			if ms.Status.ReadyReplicas == 1 {
				ready++
			}
		}
		if ready == n {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	took := time.Since(start)
	if ready != n {
		t.Fatalf("%d of %d ModelServings ready after %s", ready, n, took)
	}
	pods := 0
	for i := 0; i < n; i++ {
		pods += len(k.pods(t, ns, fmt.Sprintf("m%03d", i)))
	}
	t.Logf("converged: %d ModelServings, %d pods, 16 KWOK nodes: all groups Running %.1fs after the first create (creates took %.1fs)", n, pods, took.Seconds(), created.Seconds())
}
