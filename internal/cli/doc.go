// Package cli defines the halyard command line: one file per subcommand, each
// parsing flags into an options struct and calling the package that does the
// work. No serving, scheduling or simulation logic lives here.
package cli
