#!/usr/bin/env bash
# The live PD comparison of docs/benchmarks.md: 4 co-located simulated
# engines, then 2 prefill + 2 decode, each behind the router, driven over
# HTTP by the bench with the pd-long-prompt scenario's workload (8,000-token
# prompts, 256-token answers). The two fleets run one after the other.
# Usage: run.sh [rates] [out-prefix] [pd-mode]
# MAX (default 100) is the requests per rate. UNMEETABLE=serve|shed puts
# both routers behind admission (router.admission.unmeetable set to it,
# one anonymous tenant) and has the bench declare the SLO in the
# x-halyard-slo-* headers.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
halyard="${HALYARD:-halyard}"
rates="${1:-4,8,10}"
out="${2:-pd-live}"
mode="${3:-nixl}"
max="${MAX:-100}"
unmeetable="${UNMEETABLE:-}"
work="$(mktemp -d)"
sloheaders=()
# config FILE: the router's configuration, behind admission when asked.
config() {
  if [ -z "$unmeetable" ]; then
    cat "$1"
    return
  fi
  sed "s/^router:$/router:\n  admission: {unmeetable: $unmeetable, queue: {endpointConcurrency: 1024, maxWait: 750ms}}/" "$1"
  printf 'tenants:\n  - name: anonymous\n'
}
if [ -n "$unmeetable" ]; then sloheaders=(--slo-headers); fi
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap 'stop; rm -rf "$work"' EXIT
bench() { # target label out
  for _ in $(seq 100); do curl -sf "$1/ready" >/dev/null && break; sleep 0.2; done
  "$halyard" bench --target "$1" --model llama-3-8b --api completions --workload shared-prefix \
    --groups 300 --users-per-group 1 --system-tokens 7900 --question-tokens 100 --output-tokens 256 \
    --rates "$rates" --max-requests "$max" --seed 1 --slo ttft=1s,tpot=15ms "${sloheaders[@]}" --label "$2" --quiet --out "$3"
}
for i in 0 1 2 3; do
  "$halyard" sim --listen "127.0.0.1:1820$i" --model llama-3-8b --profile h100-llama3-8b --seed 1 >"$work/co$i.log" 2>&1 &
  pids+=($!)
done
config "$here/colocated.yaml" >"$work/colocated.yaml"
"$halyard" router --config "$work/colocated.yaml" >"$work/router-co.log" 2>&1 &
pids+=($!)
bench http://127.0.0.1:18280 "co-located 4" "$out-colocated.json"
stop
for i in 0 1; do
  "$halyard" sim --listen "127.0.0.1:1821$i" --model llama-3-8b --profile h100-llama3-8b --seed 1 --role prefill \
    --engine-id "prefill-$i" --bootstrap-port "1822$i" >"$work/p$i.log" 2>&1 &
  pids+=($!)
  "$halyard" sim --listen "127.0.0.1:1821$((i + 2))" --model llama-3-8b --profile h100-llama3-8b --seed 1 --role decode \
    --engine-id "decode-$i" >"$work/d$i.log" 2>&1 &
  pids+=($!)
done
config "$here/pd.yaml" | sed "s/mode: nixl/mode: $mode/" >"$work/pd.yaml"
"$halyard" router --config "$work/pd.yaml" >"$work/router-pd.log" 2>&1 &
pids+=($!)
bench http://127.0.0.1:18281 "pd 2P+2D ($mode)" "$out-pd.json"
