package main

import (
	"bufio"
	"encoding/base64"
	"flag"
	"fmt"
	"os"

	tiktoken "github.com/tiktoken-go/tokenizer"
)

func main() {
	encoding := flag.String("encoding", "cl100k_base", "cl100k_base or o200k_base")
	out := flag.String("o", "", "output file (default stdout)")
	flag.Parse()
	if err := run(tiktoken.Encoding(*encoding), *out); err != nil {
		fmt.Fprintln(os.Stderr, "gentiktoken:", err)
		os.Exit(1)
	}
}

// sizes are the number of ordinary ranks of each encoding (specials follow).
var sizes = map[tiktoken.Encoding]int{
	tiktoken.Cl100kBase: 100256,
	tiktoken.O200kBase:  199998,
}

func run(enc tiktoken.Encoding, path string) error {
	n, ok := sizes[enc]
	if !ok {
		return fmt.Errorf("unsupported encoding %q", enc)
	}
	codec, err := tiktoken.Get(enc)
	if err != nil {
		return err
	}
	f := os.Stdout
	if path != "" {
		if f, err = os.Create(path); err != nil {
			return err
		}
		defer f.Close()
	}
	w := bufio.NewWriter(f)
	for id := range n {
		tok, err := codec.Decode([]uint{uint(id)})
		if err != nil {
			return fmt.Errorf("rank %d: %w", id, err)
		}
		if _, err := fmt.Fprintf(w, "%s %d\n", base64.StdEncoding.EncodeToString([]byte(tok)), id); err != nil {
			return err
		}
	}
	return w.Flush()
}
