package cli

import "github.com/spf13/cobra"

// newAgentCommand is a placeholder until its package lands.
func newAgentCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "agent",
		Short: "Run the in-pod group restart agent",
		RunE:  func(*cobra.Command, []string) error { return errNotImplemented },
	}
}
