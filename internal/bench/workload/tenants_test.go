package workload

import (
	"slices"
	"testing"
)

func TestAssignTenantsFollowsSharesAndSeed(t *testing.T) {
	a := AssignTenants([]float64{10, 1}, 7, 0, 11000)
	if !slices.Equal(a, AssignTenants([]float64{10, 1}, 7, 0, 11000)) {
		t.Fatal("the same seed and step drew different tenants")
	}
	if slices.Equal(a, AssignTenants([]float64{10, 1}, 7, 1, 11000)) {
		t.Error("another step drew the same tenants")
	}
	light := 0
	for _, k := range a {
		light += k
	}
	if light < 850 || light > 1150 {
		t.Errorf("light drew %d of 11000, want about 1000", light)
	}
	if AssignTenants(nil, 7, 0, 5) != nil {
		t.Error("no shares should draw nothing")
	}
}
