package report

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/bench/stats"
)

func TestTenantRunsAndCompareAlone(t *testing.T) {
	slo, err := stats.ParseSLO("ttft=100ms")
	if err != nil {
		t.Fatal(err)
	}
	ms := time.Millisecond
	recs := []stats.Record{
		{Tenant: "heavy", TTFT: 50 * ms, E2E: time.Second, OutputTokens: 1},
		{Tenant: "heavy", Refused: true, Err: "HTTP 429: overloaded", E2E: 2 * ms},
		{Tenant: "light", TTFT: 80 * ms, E2E: time.Second, OutputTokens: 1},
		{Tenant: "light", TTFT: 300 * ms, E2E: time.Second, OutputTokens: 1},
	}
	got := TenantRuns(recs, slo)
	want := []TenantRun{
		{Name: "heavy", Sent: 2, Completed: 1, Refused: 1, P50TTFTMs: 50, P90TTFTMs: 50, P99TTFTMs: 50, GoodputShare: 0.5, P99RefusalMs: 2},
		{Name: "light", Sent: 2, Completed: 2, P50TTFTMs: got[1].P50TTFTMs, P90TTFTMs: got[1].P90TTFTMs, P99TTFTMs: got[1].P99TTFTMs, GoodputShare: 0.5},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	runs := []Run{{Admission: "on", Tenants: got}, {Admission: "alone:light", Tenants: []TenantRun{{Name: "light", P90TTFTMs: got[1].P90TTFTMs / 2}}}}
	CompareAlone(runs)
	if r := runs[0].Tenants[1].P90TTFTVsAlone; r != 2 {
		t.Errorf("light's ratio to alone = %v, want 2", r)
	}
	if runs[0].Tenants[0].AloneP90TTFTMs != 0 {
		t.Error("heavy never ran alone but got an alone p90")
	}
}
