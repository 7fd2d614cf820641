package cli

import "github.com/spf13/cobra"

// newUpCommand is a placeholder until its package lands.
func newUpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "up",
		Short: "Run a router and simulated engines on this machine",
		RunE:  func(*cobra.Command, []string) error { return errNotImplemented },
	}
}
