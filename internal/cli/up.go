package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/local"
	"github.com/halyard-dev/halyard/internal/observability"
)

// upOptions are the flags of `halyard up`.
type upOptions struct {
	configPath   string
	listen       string
	admin        string
	demo         bool
	demoRequests int
	logLevel     string
	logFormat    string
}

func newUpCommand() *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a router and simulated engines on this machine",
		Long: `Start simulated engines and the router in one process and print where to
send requests. Without --config: one model (llama-3-8b) on four simulated
engines, the router on 127.0.0.1:8080. With --config, the file's engines
block is started and added to its endpoints. --demo then sends one chat
request, runs a short load and prints a report. Ctrl-C stops everything.`,
		Example: `  halyard up
  halyard up --demo
  halyard up --config examples/canary.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.demoRequests < 1 {
				return fmt.Errorf("--demo-requests: must be at least 1, got %d", o.demoRequests)
			}
			var cfg *config.Config
			if o.configPath != "" {
				c, err := config.Load(o.configPath)
				if err != nil {
					return err
				}
				cfg = c
			} else {
				cfg = local.DefaultConfig()
			}
			if o.listen != "" {
				cfg.Router.Listen = o.listen
			}
			if o.admin != "" {
				cfg.Router.AdminListen = o.admin
			}
			log, err := observability.NewLogger(os.Stderr, o.logLevel, o.logFormat)
			if err != nil {
				return err
			}
			reg, presets, err := pluginRegistry()
			if err != nil {
				return err
			}
			tp, flush, err := setupTracing(cmd.Context(), cfg.Tracing, "halyard", log)
			if err != nil {
				return err
			}
			defer flush()
			return local.Run(cmd.Context(), local.Options{
				Config: cfg, Registry: reg, PresetProfiles: presets, Logger: log,
				Out: cmd.OutOrStdout(), Demo: o.demo, DemoRequests: o.demoRequests,
				TracerProvider: tp,
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.configPath, "config", "", "configuration file (default: one model on four simulated engines)")
	f.StringVar(&o.listen, "listen", "", "router address (default: router.listen, 127.0.0.1:8080)")
	f.StringVar(&o.admin, "admin-listen", "", `admin listener for /metrics and /debug/route (default: router.adminListen, else 127.0.0.1 on the router's port plus one, 8081); "off" for none`)
	f.BoolVar(&o.demo, "demo", false, "send one request, run a short load and print a report, then keep serving")
	f.IntVar(&o.demoRequests, "demo-requests", 300, "requests of the demo's load")
	f.StringVar(&o.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	return cmd
}
