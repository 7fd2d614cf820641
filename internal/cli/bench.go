package cli

import (
	"log/slog"
	"math"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/halyard-dev/halyard/internal/bench"
)

// newBenchCommand binds the flags of `halyard bench` to bench.Command.
func newBenchCommand() *cobra.Command {
	var c bench.Command
	var quiet bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Drive an OpenAI-compatible endpoint and report latency and throughput",
		Long: `Drive an OpenAI-compatible endpoint (Halyard's router, one engine, another
router) over HTTP with streaming, or a simulated fleet in virtual time with
--simulate, and report TTFT, TPOT, ITL and end-to-end latency, throughput,
goodput, the engines' prefix-cache hit rate and the load imbalance, as a
table, a JSON file (--out) and PNG plots (--plots). See docs/bench.md.`,
		Example: `  halyard bench --target http://127.0.0.1:8080 --model llama-3-8b \
    --workload shared-prefix --groups 16 --users-per-group 4 --rates 1,2,4,8 \
    --slo ttft=500ms,tpot=50ms --out bench.json --plots plots/
  halyard bench --target http://127.0.0.1:8080 --model llama-3-8b --workload mooncake --time-scale 4
  halyard bench --simulate scenario.yaml --out sim.json --plots plots/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if quiet {
				level = slog.LevelWarn
			}
			c.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			if !quiet && term.IsTerminal(int(os.Stderr.Fd())) {
				c.Progress = os.Stderr
			}
			if cmd.Flags().Changed("rate") && c.Rate == 0 {
				c.Rate = math.Inf(1)
			}
			if v, ok := os.LookupEnv("OPENAI_API_KEY"); ok && c.APIKey == "" {
				c.APIKey = v
			}
			c.SetFlags = map[string]bool{}
			cmd.Flags().Visit(func(f *pflag.Flag) { c.SetFlags[f.Name] = true })
			_, err := c.Run(cmd.Context(), cmd.OutOrStdout())
			return err
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&c.Targets, "target", nil, "base URL of the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080; several (comma-separated or repeated) are run one after the other and compared")
	f.StringVar(&c.Model, "model", "", "model name to send")
	f.StringVar(&c.API, "api", "chat", "endpoint to drive: chat (/v1/chat/completions) or completions (/v1/completions)")
	f.StringVar(&c.APIKey, "api-key", "", "bearer token (default $OPENAI_API_KEY)")
	f.BoolVar(&c.IgnoreEOS, "ignore-eos", true, "send ignore_eos so engines generate exactly the requested output length")
	f.StringArrayVar(&c.Tenants, "tenant", nil, "split the requests among tenants: NAME:SHARE[:API_KEY] (repeat); the report gives each tenant's TTFT and goodput (the key is never printed)")
	f.StringArrayVar(&c.Alone, "alone", nil, "also run this --tenant alone (the others' requests left out) and report the others' runs against its TTFT p90 alone (repeat)")
	f.StringSliceVar(&c.Labels, "label", nil, "names of the targets in the report and plots, in --target order (default the URLs)")

	f.StringVar(&c.Workload.Kind, "workload", "shared-prefix", "workload: shared-prefix, multi-turn, mooncake or azure")
	f.IntVar(&c.Workload.Groups, "groups", 0, "shared-prefix: groups sharing a system prompt (default 16)")
	f.IntVar(&c.Workload.UsersPerGroup, "users-per-group", 0, "shared-prefix: users per group (default 4)")
	f.IntVar(&c.Workload.Sessions, "sessions", 0, "multi-turn: chat sessions (default 32)")
	f.IntVar(&c.Workload.SystemTokens, "system-tokens", 0, "system prompt length in tokens (default 2000 shared-prefix, 500 multi-turn)")
	f.IntVar(&c.Workload.QuestionTokens, "question-tokens", 0, "question length in tokens (default 200 shared-prefix, 100 multi-turn)")
	f.IntVar(&c.Workload.OutputTokens, "output-tokens", 0, "output length in tokens (default 100)")
	f.IntVar(&c.Workload.Turns, "turns", 0, "turns per conversation (default 1 shared-prefix, 5 multi-turn)")
	f.StringVar(&c.Workload.Trace, "trace", "", "trace file for mooncake or azure (default the vendored traces/ file, relative to the working directory: the repository root)")
	f.StringVar(&c.Workload.AzureTrace, "azure-trace", "", "azure: which vendored trace, code or conv (default conv)")
	f.IntVar(&c.Workload.MaxTokens, "max-tokens-total", 0, "drop trace requests whose prompt plus output exceeds this many tokens (0 keeps all)")

	f.Float64Var(&c.Rate, "rate", 0, "Poisson arrival rate in requests/s (inf or 0: all at once)")
	f.StringVar(&c.Rates, "rates", "", "ladder of Poisson rates to sweep, e.g. 1,2,4,8")
	f.IntVar(&c.Concurrency, "concurrency", 0, "closed loop: keep this many requests in flight")
	f.BoolVar(&c.TraceArrivals, "trace-arrivals", false, "send at the trace's own timestamps (the default for trace workloads)")
	f.Float64Var(&c.TimeScale, "time-scale", 1, "trace arrivals: speed-up factor (2 replays twice as fast)")

	f.IntVar(&c.MaxRequests, "max-requests", 0, "send at most this many requests per run (0: the whole workload)")
	f.DurationVar(&c.Duration, "duration", 0, "stop sending new requests after this long per run (0: no limit)")
	f.DurationVar(&c.RequestTimeout, "request-timeout", 0, "give up on one request after this long (0: no limit)")
	f.Uint64Var(&c.Seed, "seed", 0, "seed of the workload and the arrivals")
	f.StringVar(&c.SLO, "slo", "", "objectives for goodput, e.g. ttft=500ms,tpot=50ms,e2el=10s (bare numbers are ms)")
	f.BoolVar(&c.SLOHeaders, "slo-headers", false, "declare the SLO's ttft and tpot on every request in the x-halyard-slo-ttft-ms and x-halyard-slo-tpot-ms headers (virtual mode: the scenario's sloHeaders)")
	f.StringSliceVar(&c.EngineMetrics, "engine-metrics", nil, "engines' /metrics URLs, for the prefix-cache hit rate and load spread")
	f.StringSliceVar(&c.ResetPrefixCache, "reset-prefix-cache", nil, "engines' base URLs whose prefix caches are emptied (POST /reset_prefix_cache) before each step and each --alone run, so each starts cold (vLLM serves it with VLLM_SERVER_DEV_MODE=1; halyard sim always)")

	f.StringVar(&c.Out, "out", "", "write the JSON report to this file")
	f.StringVar(&c.Plots, "plots", "", "write PNG plots into this directory")
	f.StringVar(&c.Simulate, "simulate", "", "run the YAML scenario in virtual time instead of driving a target")
	f.StringSliceVar(&c.Policies, "policies", nil, "virtual mode: policies to compare (default the scenario's)")
	f.Float64Var(&c.MaxErrorRate, "max-error-rate", 1, "fail (exit 1, after writing the report) when a run's failed fraction exceeds this; a run with no completed request always fails")
	f.BoolVar(&quiet, "quiet", false, "no progress bar and only warnings in the log")
	return cmd
}
