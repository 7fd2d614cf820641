package prefixindex_test

import (
	"fmt"
	"strings"

	"github.com/halyard-dev/halyard/internal/prefixindex"
)

func Example() {
	var h prefixindex.Hasher // 16-token blocks, 64-byte chunks
	idx, err := prefixindex.NewApproximate(prefixindex.ApproximateConfig{})
	if err != nil {
		panic(err)
	}
	system := strings.Repeat("You are a terse assistant. ", 20) // 540 bytes: 8 chunks
	first := h.AppendChain(nil, "llama-3-8b", []byte(system+"user: hello"), nil)
	idx.Add("pod-a", 0, first) // routed to pod-a

	next := h.AppendChain(nil, "llama-3-8b", []byte(system+"user: what is a halyard?"), nil)
	matched := make([]int, 2)
	idx.Match(next, []string{"pod-a", "pod-b"}, matched)
	fmt.Printf("prompt blocks %d, pod-a holds %d, pod-b holds %d\n", len(next), matched[0], matched[1])
	// Output: prompt blocks 8, pod-a holds 8, pod-b holds 0
}
