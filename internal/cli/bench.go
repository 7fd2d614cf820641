package cli

import "github.com/spf13/cobra"

// newBenchCommand is a placeholder until its package lands.
func newBenchCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "bench",
		Short: "Drive an OpenAI-compatible endpoint and report latency and throughput",
		RunE:  func(*cobra.Command, []string) error { return errNotImplemented },
	}
}
