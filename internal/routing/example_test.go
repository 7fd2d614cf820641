package routing_test

import (
	"fmt"
	"net/http"
	"strings"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/routing"
)

// A 3:1 canary split is interleaved, and a header rule overrides it.
func Example() {
	w := func(n int32) *int32 { return &n }
	table, err := routing.New([]config.RouteSpec{{
		Model: "llama",
		Rules: []config.RouteRule{{
			Headers: []config.HeaderMatch{{Name: "x-canary", Value: "1", Type: config.MatchExact}},
			Targets: []config.TargetSpec{{Pool: "canary"}},
		}},
		Targets: []config.TargetSpec{{Pool: "stable", Weight: w(3)}, {Pool: "canary", Weight: w(1)}},
	}})
	if err != nil {
		panic(err)
	}
	route, _ := table.Lookup("llama")
	var picks []string
	for range 8 {
		t, _ := route.Pick(http.Header{})
		picks = append(picks, t.Pool)
	}
	fmt.Println(strings.Join(picks, " "))
	h := http.Header{}
	h.Set("X-Canary", "1")
	t, _ := route.Pick(h)
	fmt.Println(t.Pool)
	// Output:
	// stable stable canary stable stable stable canary stable
	// canary
}
