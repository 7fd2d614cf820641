package k8s

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/discovery"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// The router's Kubernetes source reports the ready pods of a ModelServing
// as endpoints, with role, group and domain labels, and follows pods
// becoming ready and unready without a restart.
func TestKubernetesDiscoveryFollowsReadiness(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "disco")
	create(t, k, pdServing(ns, "disc", 1))
	eventually(t, waitLong, "3 pods", func() (bool, string) {
		n := len(k.pods(t, ns, "disc"))
		return n == 3, fmt.Sprintf("%d pods", n)
	})
	cs, err := kubernetes.NewForConfig(k.cfg)
	if err != nil {
		t.Fatal(err)
	}
	updates := make(chan []datastore.EndpointSpec, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	src := &discovery.Kubernetes{Client: cs, Namespace: ns}
	go func() { done <- src.Run(ctx, func(s []datastore.EndpointSpec) { updates <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("discovery: %v", err)
		}
	})

	waitFor := func(what string, ok func([]datastore.EndpointSpec) bool) []datastore.EndpointSpec {
		t.Helper()
		deadline := time.After(waitLong)
		var last []datastore.EndpointSpec
		for {
			select {
			case s := <-updates:
				last = s
				if ok(s) {
					return s
				}
			case <-deadline:
				t.Fatalf("no update with %s; last %+v", what, last)
			}
		}
	}
	waitFor("no endpoints while nothing is ready", func(s []datastore.EndpointSpec) bool { return len(s) == 0 })

	node := k.createNode(t, "disc-node", nil)
	for _, name := range []string{"disc-0-prefill-0", "disc-0-decode-0"} {
		p := k.pod(t, ns, name)
		k.bind(t, p, node.Name)
		k.markRunning(t, p, 0, true)
	}
	got := waitFor("two ready endpoints", func(s []datastore.EndpointSpec) bool { return len(s) == 2 })
	dec, pre := got[0], got[1] // sorted by name: decode before prefill
	if dec.Pool != ns+"/disc" || dec.Metadata.Role != framework.RoleDecode || pre.Metadata.Role != framework.RolePrefill {
		t.Errorf("endpoints %+v: want pool disc, decode and prefill roles", got)
	}
	wantAddr := "http://" + podIP("disc-0-decode-0") + ":8000"
	if dec.Metadata.Address != wantAddr || dec.Metadata.Model != "qwen3-8b" || dec.Metadata.Name != ns+"/disc-0-decode-0" {
		t.Errorf("decode endpoint %+v: want address %s, model qwen3-8b", dec.Metadata, wantAddr)
	}
	if l := dec.Metadata.Labels; l[discovery.LabelGroup] != "0" || l[discovery.LabelRole] != "decode" || l[discovery.LabelNode] != "disc-node" {
		t.Errorf("decode labels %v", l)
	}

	// The decode pod turns unready: it leaves the set.
	k.markRunning(t, k.pod(t, ns, "disc-0-decode-0"), 0, false)
	got = waitFor("only the prefill endpoint", func(s []datastore.EndpointSpec) bool { return len(s) == 1 })
	if got[0].Metadata.Role != framework.RolePrefill {
		t.Errorf("remaining endpoint %+v, want the prefill", got[0])
	}
	// Ready again: back.
	k.markRunning(t, k.pod(t, ns, "disc-0-decode-0"), 0, true)
	waitFor("both endpoints again", func(s []datastore.EndpointSpec) bool { return len(s) == 2 })
}
