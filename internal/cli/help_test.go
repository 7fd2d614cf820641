package cli

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestFlagValueNamesAreOneWord: pflag takes a back-quoted word in a flag's
// usage as the name of its value in --help ("--agent-image halyard agent"
// once read so); every flag of every subcommand names its value with one
// word, or none for booleans.
func TestFlagValueNamesAreOneWord(t *testing.T) {
	root := NewRootCommand()
	for _, cmd := range root.Commands() {
		t.Run(cmd.Name(), func(t *testing.T) {
			cmd.Flags().VisitAll(func(f *pflag.Flag) {
				name, _ := pflag.UnquoteUsage(f)
				if strings.ContainsAny(name, " \t") {
					t.Errorf("--%s: --help shows its value as %q; drop the back quotes from its usage", f.Name, name)
				}
			})
		})
	}
}
