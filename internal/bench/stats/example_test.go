package stats_test

import (
	"fmt"
	"time"

	"github.com/halyard-dev/halyard/internal/bench/stats"
)

func ExampleRecord_TPOT() {
	r := stats.Record{TTFT: 200 * time.Millisecond, E2E: 2 * time.Second, OutputTokens: 10}
	tpot, _ := r.TPOT()
	fmt.Println(tpot) // (2s − 200ms) / (10 − 1)
	// Output: 200ms
}

func ExampleParseSLO() {
	slo, err := stats.ParseSLO("ttft=500ms,tpot=50")
	if err != nil {
		panic(err)
	}
	fmt.Println(slo.TTFT, slo.TPOT, slo)
	// Output: 500ms 50ms ttft=500ms,tpot=50ms
}

func ExamplePercentile() {
	fmt.Println(stats.Percentile([]float64{10, 20, 30, 40}, 50), stats.Percentile([]float64{10, 20, 30, 40}, 90))
	// Output: 25 37
}
