package cli

import "github.com/spf13/cobra"

// newControllerCommand is a placeholder until its package lands.
func newControllerCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "controller",
		Short: "Run the Kubernetes controller",
		RunE:  func(*cobra.Command, []string) error { return errNotImplemented },
	}
}
