package cli

import "github.com/spf13/cobra"

// newSimCommand is a placeholder until its package lands.
func newSimCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "sim",
		Short: "Run one simulated vLLM-compatible engine",
		RunE:  func(*cobra.Command, []string) error { return errNotImplemented },
	}
}
