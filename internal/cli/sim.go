package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

func newSimCommand() *cobra.Command {
	var (
		sp       vllmapi.Spec
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run one simulated vLLM-compatible engine",
		Long: `Serve one simulated inference engine with vLLM's HTTP API until interrupted.

The engine steps one batch at a time like vLLM's V1 scheduler (continuous
batching, chunked prefill, prefix caching, preemption) with step times from
a profile. Built-in profiles: ` + strings.Join(simulator.BuiltinProfiles(), ", ") + `; or give a
YAML file path. Zero capacity flags keep the profile's values.
See docs/simulator.md.`,
		Example: `  halyard sim --listen 127.0.0.1:8101 --model llama-3-8b
  halyard sim --model llama-3-8b --profile zero --lora sql-lora=/adapters/sql
  halyard sim --model m --fault-error-rate 0.1 --ready-delay 5s
  halyard sim --model m --role prefill --listen 127.0.0.1:8101 --bootstrap-port 8998
  halyard sim --model m --role decode --listen 127.0.0.1:8111 --kv-transfer-per-token 5us`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sp.Model == "" {
				return fmt.Errorf("--model is required")
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			// Engine spans when the OTEL_* variables turn tracing on.
			tp, flush, err := setupTracing(cmd.Context(), nil, "halyard-sim", log)
			if err != nil {
				return err
			}
			defer flush()
			sp.TracerProvider = tp
			return vllmapi.Run(cmd.Context(), sp, log)
		},
	}
	bindSimFlags(cmd.Flags(), &sp)
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// bindSimFlags defines the `halyard sim` engine flags on f, writing into sp.
func bindSimFlags(f *pflag.FlagSet, sp *vllmapi.Spec) {
	f.StringVar(&sp.Listen, "listen", "127.0.0.1:8000", "address to serve on (port 0 picks a free port)")
	f.StringVar(&sp.Model, "model", "", "served model name (required)")
	f.StringVar(&sp.Profile, "profile", simulator.DefaultProfile, "built-in profile ("+strings.Join(simulator.BuiltinProfiles(), ", ")+") or YAML file path")
	f.IntVar(&sp.NumGPUBlocks, "kv-blocks", 0, "number of KV cache blocks, vLLM's num_gpu_blocks (0: the profile's)")
	f.IntVar(&sp.BlockSize, "block-size", 0, "tokens per KV block (0: the profile's, 16 in the built-ins)")
	f.IntVar(&sp.MaxNumSeqs, "max-num-seqs", 0, "most requests in one batch (0: the profile's)")
	f.IntVar(&sp.MaxNumBatchedTokens, "max-num-batched-tokens", 0, "token budget of one step; longer prompts are prefilled in chunks (0: the profile's)")
	f.IntVar(&sp.MaxModelLen, "max-model-len", 0, "context length: prompt plus output tokens (0: the profile's)")
	f.IntVar(&sp.MaxLoras, "max-loras", 0, "most distinct LoRA adapters in one batch (0: the profile's, 1 as vLLM)")
	f.StringVar(&sp.Role, "role", "both", "disaggregation role: both, prefill (keeps prompt KV for decode engines) or decode (pulls it); see docs/pd.md")
	f.StringVar(&sp.PD.EngineID, "engine-id", "", "engine id in kv_transfer_params (remote_engine_id); default a random UUID")
	f.StringVar(&sp.PD.SideChannel, "side-channel", "", "prefill role: host:port of the NixlConnector side channel decode engines pull KV from (default: the --listen host, a free port)")
	f.IntVar(&sp.PD.BootstrapPort, "bootstrap-port", vllmapi.DefaultBootstrapPort, "prefill role: port of the SGLang bootstrap server on the --listen host (0 picks a free port)")
	f.DurationVar(&sp.PD.AbortTimeout, "kv-abort-timeout", vllmapi.DefaultKVAbortTimeout, "prefill role: free kept KV blocks no decode engine pulled after this long (vLLM's VLLM_NIXL_ABORT_REQUEST_TIMEOUT)")
	f.DurationVar(&sp.PD.TransferPerToken, "kv-transfer-per-token", vllmapi.DefaultKVTransferPerToken, "decode role: modelled KV transfer time per prompt token not already cached")
	f.DurationVar(&sp.PD.BootstrapTimeout, "bootstrap-timeout", vllmapi.DefaultBootstrapTimeout, "decode role: longest wait for the prefill of an SGLang bootstrap room")
	f.StringVar(&sp.KVEvents, "kv-events", "", "publish KV-cache events in vLLM's ZMQ format on this endpoint, e.g. tcp://*:5557 (off by default)")
	f.StringSliceVar(&sp.LoRAs, "lora", nil, "LoRA adapter loaded at start, as NAME or NAME=PATH (repeatable)")
	f.BoolVar(&sp.EnableLoRA, "enable-lora", false, "enable LoRA without loading an adapter at start (vLLM's --enable-lora; --lora and --max-loras > 0 imply it); exposes vllm:lora_requests_info")
	f.Uint64Var(&sp.Seed, "seed", 0, "seed of generated tokens and fault draws")
	f.Float64Var(&sp.EOSProbability, "eos-probability", 0, "chance per token of an early end (finish_reason stop); 0 generates exactly max_tokens")
	f.DurationVar(&sp.ReadyDelay, "ready-delay", 0, "slow start: /health answers 503 until this long after start")
	f.IntVar(&sp.DefaultMaxTokens, "default-max-tokens", vllmapi.DefaultMaxTokens, "max_tokens of completion requests that give none")
	f.IntVar(&sp.DefaultChatMaxTokens, "default-chat-max-tokens", vllmapi.DefaultChatMaxTokens, "max tokens of chat requests that give none")
	f.Float64Var(&sp.Faults.ErrorRate, "fault-error-rate", 0, "fraction of requests answered 500 before any byte")
	f.Float64Var(&sp.Faults.SpikeRate, "fault-spike-rate", 0, "fraction of engine steps that take --fault-spike-duration longer")
	f.DurationVar(&sp.Faults.SpikeDuration.Duration, "fault-spike-duration", 0, "extra time of a latency spike")
	f.IntVar(&sp.Faults.CrashAfterTokens, "fault-crash-after-tokens", 0, "drop the connection after this many tokens (0: never)")
	f.Float64Var(&sp.Faults.CrashRate, "fault-crash-rate", 0, "fraction of requests that crash after --fault-crash-after-tokens (0: all)")
	f.StringVar(&sp.ModelDir, "model-dir", "", "model directory (e.g. from halyard fetch): KV cache sized from its config.json with --gpu-memory-gib, tokenizer from its tokenizer.json")
	f.Float64Var(&sp.GPUMemoryGiB, "gpu-memory-gib", 0, "with --model-dir: GPU memory of the simulated engine; KV blocks = (GiB × utilization − weights) / KV bytes per block")
	f.Float64Var(&sp.GPUMemoryUtilization, "gpu-memory-utilization", 0.9, "with --model-dir: fraction of GPU memory the engine may use (vLLM's --gpu-memory-utilization)")
	bindKVEventFlags(f, sp)
}

// parseSimArgs parses `halyard sim` engine flags (e.g. EngineSpec.Args of a
// `halyard up` config, such as "--max-num-seqs=64") over base: flags not
// given keep base's values.
func parseSimArgs(args []string, base vllmapi.Spec) (vllmapi.Spec, error) {
	sp := base
	f := pflag.NewFlagSet("sim", pflag.ContinueOnError)
	f.SetOutput(io.Discard)
	bindSimFlags(f, &sp)
	// bindSimFlags set flag defaults over sp; put base back, then parse.
	sp = base
	if err := f.Parse(args); err != nil {
		return vllmapi.Spec{}, fmt.Errorf("engine args: %w", err)
	}
	if f.NArg() > 0 {
		return vllmapi.Spec{}, fmt.Errorf("engine args: unexpected argument %q", f.Arg(0))
	}
	return sp, nil
}
