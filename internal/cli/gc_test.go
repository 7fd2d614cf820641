package cli

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRouterGC(t *testing.T) {
	tests := []struct {
		name      string
		gogc      int
		env       map[string]string
		cgroupMax string
		want      gcSettings
	}{
		{"default, no cgroup limit", 400, nil, "max\n", gcSettings{Percent: 400}},
		{"default, no cgroup file", 400, nil, "", gcSettings{Percent: 400}},
		{"cgroup limit", 400, nil, "1073741824\n", gcSettings{Percent: 400, MemoryLimit: 966367641}},
		{"GOGC set wins", 400, map[string]string{"GOGC": "100"}, "1073741824\n", gcSettings{}},
		{"GOMEMLIMIT set wins", 200, map[string]string{"GOMEMLIMIT": "1GiB"}, "1073741824\n", gcSettings{Percent: 200}},
		{"flag off", 0, nil, "1073741824\n", gcSettings{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := routerGC(tc.gogc, func(k string) string { return tc.env[k] }, tc.cgroupMax)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
