package cli

import "github.com/spf13/cobra"

// newRouterCommand is a placeholder until its package lands.
func newRouterCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "router",
		Short: "Run the OpenAI-compatible router",
		RunE:  func(*cobra.Command, []string) error { return errNotImplemented },
	}
}
