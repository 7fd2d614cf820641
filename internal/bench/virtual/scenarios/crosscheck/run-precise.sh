#!/usr/bin/env bash
# The precise live cross-check of docs/benchmarks.md: 8 simulated engines
# publishing KV events behind the router following them, driven over HTTP
# by the bench with the shared-prefix-8 scenario's 20 req/s step.
# Usage: run-precise.sh [out.json]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
halyard="${HALYARD:-halyard}"
out="${1:-crosscheck-precise.json}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
metrics=()
for i in 0 1 2 3 4 5 6 7; do
  "$halyard" sim --listen "127.0.0.1:1810$i" --model llama-3-8b --profile h100-llama3-8b --seed 1 \
    --name "sim-$i" --kv-events "tcp://127.0.0.1:182${i}0" >"$work/sim$i.log" 2>&1 &
  pids+=($!)
  metrics+=("http://127.0.0.1:1810$i/metrics")
done
"$halyard" router --config "$here/router-precise.yaml" >"$work/router.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -sf http://127.0.0.1:18080/ready >/dev/null && break; sleep 0.2; done
"$halyard" bench --target http://127.0.0.1:18080 --model llama-3-8b --workload shared-prefix \
  --groups 150 --users-per-group 5 --system-tokens 6000 --question-tokens 1200 --output-tokens 100 \
  --rates 20 --seed 1 --slo ttft=500ms,tpot=50ms --label "router-precise-default" \
  --engine-metrics "$(IFS=,; echo "${metrics[*]}")" --out "$out"
curl -s http://127.0.0.1:18080/metrics | grep -E '^halyard_router_prefix_(index_mode|hit_drift_ratio)' || true
