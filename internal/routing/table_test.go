package routing

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
)

func w(n int32) *int32 { return &n }

func table(t *testing.T) *Table {
	t.Helper()
	routes := []config.RouteSpec{
		{
			Model: "llama",
			Rules: []config.RouteRule{
				{Headers: []config.HeaderMatch{{Name: "x-canary", Value: "yes", Type: config.MatchExact}}, Targets: []config.TargetSpec{{Pool: "canary"}}},
				{Headers: []config.HeaderMatch{{Name: "X-Tenant", Value: "team-.*", Type: config.MatchRegularExpression}, {Name: "x-tier", Value: "gold"}}, Targets: []config.TargetSpec{{Pool: "gold"}}},
			},
			Targets:  []config.TargetSpec{{Pool: "stable", Weight: w(90)}, {Pool: "canary", Weight: w(10)}},
			Fallback: []config.TargetSpec{{Pool: "spare"}},
		},
		{Model: "sql", Adapter: "sql-lora", Profile: "lora", Targets: []config.TargetSpec{{Pool: "stable"}}},
		{Model: "alias", Targets: []config.TargetSpec{{Pool: "stable", Model: "meta-llama/Llama-3-8B"}}},
	}
	tb, err := New(routes)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestRulesDecideTheSplit(t *testing.T) {
	tb := table(t)
	r, ok := tb.Lookup("llama")
	if !ok {
		t.Fatal("no route for llama")
	}
	spareThenCanary := []Target{{Pool: "spare", Weight: 1}, {Pool: "canary", Weight: 10}}
	spare := []Target{{Pool: "spare", Weight: 1}}
	tests := []struct {
		name     string
		headers  map[string]string
		want     string
		fallback []Target
	}{
		{"exact match", map[string]string{"x-canary": "yes"}, "canary", spare},
		{"regex and exact both hold", map[string]string{"x-tenant": "team-a", "x-tier": "gold"}, "gold", spare},
		{"regex is anchored", map[string]string{"x-tenant": "my-team-a", "x-tier": "gold"}, "stable", spareThenCanary},
		{"one of two fails", map[string]string{"x-tenant": "team-a"}, "stable", spareThenCanary},
		{"exact is case-sensitive in value", map[string]string{"x-canary": "YES"}, "stable", spareThenCanary},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.headers {
				h.Set(k, v)
			}
			r.split.mu.Lock()
			clear(r.split.current) // the first pick of the 90/10 split is stable
			r.split.mu.Unlock()
			got, fb := r.Pick(h)
			if got.Pool != tt.want {
				t.Errorf("pool = %q, want %q", got.Pool, tt.want)
			}
			if diff := cmp.Diff(tt.fallback, fb); diff != "" {
				t.Errorf("fallback (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSplitHitsWeightsExactlyAndSmoothly(t *testing.T) {
	tests := []struct {
		weights []int32
		n       int
	}{
		{[]int32{90, 10}, 1000},
		{[]int32{1, 1, 1}, 999},
		{[]int32{5, 0, 3}, 800},
		{[]int32{7, 13}, 1000},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			var specs []config.TargetSpec
			var total int32
			for i, wt := range tt.weights {
				specs = append(specs, config.TargetSpec{Pool: fmt.Sprint("p", i), Weight: w(wt)})
				total += wt
			}
			s, err := newSplit(specs, "")
			if err != nil {
				t.Fatal(err)
			}
			counts := map[string]int{}
			longestRun, run, prev := 0, 0, ""
			for range tt.n {
				p := s.targets[s.next()].Pool
				counts[p]++
				if p == prev {
					run++
				} else {
					run = 1
				}
				prev = p
				longestRun = max(longestRun, run)
			}
			for i, wt := range tt.weights {
				want := float64(tt.n) * float64(wt) / float64(total)
				got := float64(counts[fmt.Sprint("p", i)])
				if got < want-1 || got > want+1 {
					t.Errorf("p%d got %v picks, want %v±1", i, got, want)
				}
			}
			// Smooth: no target runs longer than its share of a cycle allows.
			maxW := int32(0)
			for _, wt := range tt.weights {
				maxW = max(maxW, wt)
			}
			if limit := int(maxW/(total-maxW+1)) + 2; total != maxW && longestRun > limit {
				t.Errorf("longest run %d, want at most %d", longestRun, limit)
			}
		})
	}
}

func TestAdapterAndModelOverride(t *testing.T) {
	tb := table(t)
	sql, _ := tb.Lookup("sql")
	got, _ := sql.Pick(http.Header{})
	if diff := cmp.Diff(Target{Pool: "stable", Model: "sql-lora", Weight: 1}, got); diff != "" {
		t.Errorf("LoRA target (-want +got):\n%s", diff)
	}
	if sql.Profile != "lora" || sql.Adapter != "sql-lora" {
		t.Errorf("route = %+v", sql)
	}
	alias, _ := tb.Lookup("alias")
	if got, _ := alias.Pick(nil); got.Model != "meta-llama/Llama-3-8B" {
		t.Errorf("override model = %q", got.Model)
	}
	if diff := cmp.Diff([]string{"alias", "llama", "sql"}, tb.Models()); diff != "" {
		t.Errorf("models (-want +got):\n%s", diff)
	}
	if _, ok := tb.Lookup("nope"); ok {
		t.Error("unknown model found")
	}
}

func TestNewRejectsBadRoutes(t *testing.T) {
	tests := []struct {
		name   string
		routes []config.RouteSpec
	}{
		{"duplicate", []config.RouteSpec{{Model: "a", Targets: []config.TargetSpec{{Pool: "p"}}}, {Model: "a", Targets: []config.TargetSpec{{Pool: "p"}}}}},
		{"no targets", []config.RouteSpec{{Model: "a"}}},
		{"zero weights", []config.RouteSpec{{Model: "a", Targets: []config.TargetSpec{{Pool: "p", Weight: w(0)}}}}},
		{"bad regex", []config.RouteSpec{{Model: "a", Targets: []config.TargetSpec{{Pool: "p"}}, Rules: []config.RouteRule{{Headers: []config.HeaderMatch{{Name: "x", Value: "(", Type: config.MatchRegularExpression}}, Targets: []config.TargetSpec{{Pool: "p"}}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.routes); err == nil {
				t.Fatal("New accepted bad routes")
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	tb, err := New([]config.RouteSpec{{Model: "m", Targets: []config.TargetSpec{{Pool: "a", Weight: w(9)}, {Pool: "b", Weight: w(1)}}}})
	if err != nil {
		b.Fatal(err)
	}
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		r, _ := tb.Lookup("m")
		r.Pick(h)
	}
}
