package tokenizer_test

import (
	"fmt"
	"path/filepath"

	"github.com/halyard-dev/halyard/internal/tokenizer"
)

func ExampleLoad() {
	tok, err := tokenizer.Load(filepath.Join("testdata", "cl100k_base.tiktoken"))
	if err != nil {
		fmt.Println(err)
		return
	}
	ids := tok.Encode("hello world<|endoftext|>")
	fmt.Println(ids)
	fmt.Printf("%q\n", tok.Decode(ids))
	// Output:
	// [15339 1917 100257]
	// "hello world<|endoftext|>"
}
