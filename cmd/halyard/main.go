// Command halyard is Halyard's single binary: local mode, router, controller,
// simulator, bench and the in-pod agent, as subcommands. Wiring only.
package main

import (
	"os"

	"github.com/halyard-dev/halyard/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
