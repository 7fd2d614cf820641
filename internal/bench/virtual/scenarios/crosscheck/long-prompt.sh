#!/usr/bin/env bash
# The long-prompt live run of docs/benchmarks.md (issue 14): distinct
# 1M-token text prompts (about 4 MiB each, no tokenizer: text hashing) at
# 10 req/s through the router to two zero-latency `halyard sim` engines;
# prints the router's CPU (from /proc: CPU seconds over the run's wall
# time, and per request), peak RSS (VmHWM) and minor page faults per request.
# Usage: long-prompt.sh [profile] [requests]; BASE_PORT (default 31600)
# moves every port: engines BASE_PORT and +1, router +10, admin +11,
# pprof +12.
# TOKENIZER=path (or pseudo) configures the model's tokenizer (models[]);
# PPROF=file saves a CPU profile of the router over the run's first
# PPROF_SECONDS (default 5).
set -euo pipefail
halyard="${HALYARD:-halyard}"
profile="${1:-default}"
n="${2:-60}"
base="${BASE_PORT:-31600}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
for i in 0 1; do
  "$halyard" sim --listen "127.0.0.1:$((base + i))" --model llama-3-8b --profile zero --max-model-len 1100000 \
    --kv-blocks 300000 --max-num-batched-tokens 1100000 --log-level warn >"$work/sim$i.log" 2>&1 &
  pids+=($!)
done
cat >"$work/router.yaml" <<YAML
apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  listen: 127.0.0.1:$((base + 10))
  scrapeInterval: 100ms
endpoints:
  - {name: sim-0, url: "http://127.0.0.1:$base", model: llama-3-8b}
  - {name: sim-1, url: "http://127.0.0.1:$((base + 1))", model: llama-3-8b}
routes:
  - {model: llama-3-8b, profile: $profile, targets: [{pool: llama-3-8b}]}
YAML
if [ -n "${TOKENIZER:-}" ]; then
  printf 'models:\n  - {name: llama-3-8b, tokenizer: "%s"}\n' "$TOKENIZER" >>"$work/router.yaml"
fi
extra=()
if [ -n "${PPROF:-}" ]; then extra=(--pprof-listen "127.0.0.1:$((base + 12))"); fi
"$halyard" router --config "$work/router.yaml" "${extra[@]}" >"$work/router.log" 2>&1 &
rp=$!
pids+=("$rp")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((base + 10))/v1/models" >/dev/null && break; sleep 0.2; done
read -r u0 s0 f0 < <(awk '{print $14, $15, $10}' "/proc/$rp/stat")
t0=$(date +%s.%N)
if [ -n "${PPROF:-}" ]; then
  curl -sf -o "$PPROF" "http://127.0.0.1:$((base + 12))/debug/pprof/profile?seconds=${PPROF_SECONDS:-5}" &
  pids+=($!)
fi
"$halyard" bench --target "http://127.0.0.1:$((base + 10))" --model llama-3-8b --api completions --workload shared-prefix \
  --groups "$n" --users-per-group 1 --system-tokens 1000000 --question-tokens 50 --output-tokens 4 \
  --rates 10 --seed 1 --quiet
read -r u1 s1 f1 < <(awk '{print $14, $15, $10}' "/proc/$rp/stat")
t1=$(date +%s.%N)
hwm=$(awk '/VmHWM/{print $2}' "/proc/$rp/status")
tck=$(getconf CLK_TCK)
awk -v c=$(( (u1 + s1) - (u0 + s0) )) -v t="$tck" -v n="$n" -v h="$hwm" -v p="$profile" -v w="$(echo "$t1 - $t0" | bc)" -v k="${TOKENIZER:-none}" -v f=$((f1 - f0)) \
  'BEGIN { printf "profile %s, tokenizer %s: router CPU %.2f s over %.1f s of wall time = %.2f of a core; %d requests, %.1f ms per request; peak RSS %.0f MiB; %.0f minor page faults per request\n", p, k, c/t, w, c/t/w, n, 1000*c/t/n, h/1024, f/n }'
uptime
