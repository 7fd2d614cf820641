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
		budget    int64
		want      gcSettings
	}{
		{"no cgroup limit: half the machine", 400, nil, "max\n", 0, gcSettings{Percent: 400, MemoryLimit: 8 << 30}},
		{"no cgroup file", 400, nil, "", 0, gcSettings{Percent: 400, MemoryLimit: 8 << 30}},
		{"cgroup limit", 400, nil, "1073741824\n", 0, gcSettings{Percent: 400, MemoryLimit: 966367641}},
		{"small buffer budget lowers it", 400, nil, "max\n", 128 << 20, gcSettings{Percent: 400, MemoryLimit: 512 << 20}},
		{"large buffer budget does not raise it", 400, nil, "1073741824\n", 4 << 30, gcSettings{Percent: 400, MemoryLimit: 966367641}},
		{"GOGC set wins", 400, map[string]string{"GOGC": "100"}, "1073741824\n", 0, gcSettings{MemoryLimit: 966367641}},
		{"GOMEMLIMIT set wins", 200, map[string]string{"GOMEMLIMIT": "1GiB"}, "1073741824\n", 0, gcSettings{Percent: 200}},
		{"flag off", 0, nil, "1073741824\n", 0, gcSettings{MemoryLimit: 966367641}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := routerGC(tc.gogc, func(k string) string { return tc.env[k] }, tc.cgroupMax, 16<<30, tc.budget)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
