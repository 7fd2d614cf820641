package cli

import (
	"os"
	"testing"

	"github.com/halyard-dev/halyard/internal/testbin"
)

// TestMain lets a test run this test binary as the halyard command (a real
// process) by setting HALYARD_CLI_TEST_MAIN=1: the arguments after the
// binary are halyard's.
func TestMain(m *testing.M) {
	if os.Getenv("HALYARD_CLI_TEST_MAIN") == "1" {
		os.Exit(Main(os.Args[1:]))
	}
	code := m.Run()
	testbin.Remove()
	os.Exit(code)
}
