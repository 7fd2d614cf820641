package v1alpha1

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestPodBoundsMatchTheCRD: the CEL rules in the generated CRD bound the pod
// count with the same numbers as MaxPodsPerGroup and MaxPods, which the
// controller checks.
func TestPodBoundsMatchTheCRD(t *testing.T) {
	crd, err := os.ReadFile("../../config/crd/bases/serving.halyard.dev_modelservings.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf(".sum() <= %d", MaxPodsPerGroup),
		fmt.Sprintf(".sum() <= %d", MaxPods),
		fmt.Sprintf("at most %d pods", MaxPodsPerGroup),
		fmt.Sprintf("at most %d pods", MaxPods),
	} {
		if !strings.Contains(string(crd), want) {
			t.Errorf("the ModelServing CRD lacks %q: keep the CEL rules on ModelServingSpec and the constants equal, then make generate", want)
		}
	}
}

func TestPodsPerGroup(t *testing.T) {
	s := ModelServingSpec{Roles: []RoleSpec{{Replicas: 2, Workers: 3}, {}, {Replicas: 1}}}
	if got := s.PodsPerGroup(); got != 2*4+1+1 {
		t.Errorf("PodsPerGroup() = %d, want 10", got)
	}
}
