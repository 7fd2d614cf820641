#!/usr/bin/env bash
# The live Mooncake slice of docs/benchmarks.md (issue 14): 8 simulated
# Llama-3-8B/H100 engines behind the router with one profile, driven over
# HTTP by the bench with the first N requests of the Mooncake trace at 4x
# (the conformance suite's slice). Run from the repository root (the bench
# reads traces/). Usage: run-mooncake.sh [profile] [out.json] [requests];
# BASE_PORT (default 32400) moves every port: engines BASE_PORT..+7,
# router +10.
set -euo pipefail
halyard="${HALYARD:-halyard}"
profile="${1:-default}"
out="${2:-mooncake-$profile.json}"
n="${3:-1000}"
base="${BASE_PORT:-32400}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
{
  printf 'apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nrouter:\n  listen: 127.0.0.1:%d\n  scrapeInterval: 100ms\nendpoints:\n' $((base + 10))
  for i in 0 1 2 3 4 5 6 7; do printf '  - {name: sim-%d, url: "http://127.0.0.1:%d", model: llama-3-8b}\n' "$i" $((base + i)); done
  printf 'routes:\n  - {model: llama-3-8b, profile: %s, targets: [{pool: llama-3-8b}]}\n' "$profile"
} >"$work/router.yaml"
metrics=()
for i in 0 1 2 3 4 5 6 7; do
  "$halyard" sim --listen "127.0.0.1:$((base + i))" --model llama-3-8b --profile h100-llama3-8b --seed 1 --log-level warn >"$work/sim$i.log" 2>&1 &
  pids+=($!)
  metrics+=("http://127.0.0.1:$((base + i))/metrics")
done
"$halyard" router --config "$work/router.yaml" >"$work/router.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$((base + 10))/v1/models" >/dev/null && break; sleep 0.2; done
"$halyard" bench --target "http://127.0.0.1:$((base + 10))" --model llama-3-8b --api completions --workload mooncake \
  --time-scale 4 --max-requests "$n" --seed 1 --slo ttft=2s,tpot=100ms --label "router-$profile" \
  --engine-metrics "$(IFS=,; echo "${metrics[*]}")" --out "$out"
