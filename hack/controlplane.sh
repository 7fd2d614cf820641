#!/usr/bin/env bash
# Provenance: copied from the team's shared k8s/controlplane.sh (written for
# Halyard, same licence as this repository) so that CI, which runs on a clean
# clone, carries it. Changes: usage names this file; ROOT defaults to the
# repository's .k8scp/ (gitignored) wherever it is called from.
# k8s control plane for controller tests, built from the Go module proxy only
# (no Docker, no downloads other than Go modules; openssl + curl from Debian).
#
#   hack/controlplane.sh build   # go build etcd, kube-apiserver, kube-scheduler,
#                            # kube-controller-manager (+ kwok); cached in GOCACHE/GOMODCACHE
#   hack/controlplane.sh start   # start them on 127.0.0.1, write $ROOT/env and $ROOT/kubeconfig
#   hack/controlplane.sh stop    # stop what start started (by pid files), wipe data
#   hack/controlplane.sh env     # print the env lines (KUBECONFIG, KUBEBUILDER_ASSETS, ...)
#
# envtest-only use: run `build`, then `export KUBEBUILDER_ASSETS=$ROOT/bin` and let
# controller-runtime's envtest start etcd + kube-apiserver itself (no `start` needed).
#
# Knobs (env): K8S_VERSION (1.35.4), KWOK_VERSION (v0.8.0, "" = skip), ROOT (<repo>/.k8scp),
#   FEATURE_GATES, WITH_SCHEDULER (1), WITH_KCM (1), WITH_KWOK (1), KWOK_NODES (0),
#   ETCD_PORT (22379), APISERVER_PORT (26443). GOCACHE / GOMODCACHE are honoured as usual.
#
# Measured on a 2-core / 24 GiB machine, Go 1.26.8, K8S_VERSION=1.35.4, kwok v0.8.0:
#   build, empty GOCACHE+GOMODCACHE: 521 s (module resolve 50 s, 4 k8s/etcd binaries 353 s,
#     kwok 118 s); caches afterwards: GOMODCACHE 1.1 GB (198 MB zips), GOCACHE 3.4 GB
#   build, warm caches, fresh checkout (new ROOT): 22 s;  binaries already in ROOT/bin: 3 s
#   start (etcd+apiserver+scheduler+KCM+kwok, default SA present): 3-4 s;  stop: ~1.3 s
#   binaries: kube-apiserver 99 MiB, kube-controller-manager 89, kube-scheduler 68, kwok 80, etcd 25
# Requires: go, openssl, curl, ps. The sandbox's PID 1 may not reap children: stop() treats
# zombies as dead.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.35.4}
KWOK_VERSION=${KWOK_VERSION-v0.8.0}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(mkdir -p "${ROOT:-$REPO/.k8scp}" && cd "${ROOT:-$REPO/.k8scp}" && pwd)
BIN=$ROOT/bin
RUN=$ROOT/run
FEATURE_GATES=${FEATURE_GATES:-RestartAllContainersOnContainerExits=true,NodeDeclaredFeatures=true}
ETCD_PORT=${ETCD_PORT:-22379}
APISERVER_PORT=${APISERVER_PORT:-26443}
TOKEN=${TOKEN:-k8scp-admin-token}

log() { printf '[k8scp %s] %s\n' "$(date +%T)" "$*" >&2; }

build() {
  local t0=$SECONDS mod=$ROOT/mod
  mkdir -p "$mod" "$BIN"
  local sv="v0.${K8S_VERSION#1.}"          # staging repos: 1.35.4 -> v0.35.4
  local stamp="$K8S_VERSION"
  if [[ ! -f $mod/go.sum || "$(cat "$mod/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    log "resolving k8s.io/kubernetes v$K8S_VERSION (staging repos -> $sv)"
    local kmod
    kmod=$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
           sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      printf 'module k8scp.local/tools\n\ngo 1.25.0\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S_VERSION"
      # every staging repo that k8s.io/kubernetes requires as v0.0.0
      grep -E '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$kmod" | awk -v v="$sv" '{printf "\t%s => %s %s\n", $1, $1, v}' | sort -u
      printf ')\n'
    } > "$mod/go.mod"
    cat > "$mod/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3" // etcd at the version k8s.io/kubernetes already pins
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
EOF
    rm -f "$mod/go.sum"
    (cd "$mod" && go mod tidy)
    echo "$stamp" > "$mod/.stamp"
    log "module resolved in $((SECONDS - t0))s"
  fi
  local ver="-X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
  ver+=" -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*}"
  local minor=${K8S_VERSION#*.}; ver+=" -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
  ver+=" -X k8s.io/component-base/version.gitTreeState=clean"
  local t1=$SECONDS
  (cd "$mod" && go build -trimpath -ldflags "-s -w $ver" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kube-controller-manager &&
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
  log "control plane binaries ready in $((SECONDS - t1))s"
  if [[ -n $KWOK_VERSION ]]; then
    local t2=$SECONDS
    (cd "$mod" && GOBIN=$BIN go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
    # kwok's default "fast" stages, read from the module cache at run time
    local kd
    kd="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
    for f in "$kd/node/fast/node-initialize.yaml" "$kd/pod/fast/pod-ready.yaml" \
             "$kd/pod/fast/pod-complete.yaml" "$kd/pod/fast/pod-delete.yaml"; do
      echo '---'; cat "$f"
    done > "$BIN/kwok-stages.yaml"
    log "kwok ready in $((SECONDS - t2))s"
  fi
  log "build total $((SECONDS - t0))s; $(cd "$BIN" && ls | tr '\n' ' ')"
}

wait_http() { # url timeout_s [pidfile]
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -skf -H "Authorization: Bearer $TOKEN" "$1" >/dev/null 2>&1 && return 0
    [[ -z ${3:-} ]] || alive "$(cat "$3")" || return 1   # process died
    sleep 0.1
  done
  return 1
}

spawn() { # name args...
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

api() { curl -skf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "https://127.0.0.1:$APISERVER_PORT$1" "${@:2}"; }

start() {
  local t0=$SECONDS
  [[ -x $BIN/kube-apiserver && -x $BIN/etcd ]] || build
  mkdir -p "$RUN"
  [[ -f $RUN/sa.key ]] || { openssl genrsa -out "$RUN/sa.key" 2048 2>/dev/null; openssl rsa -in "$RUN/sa.key" -pubout -out "$RUN/sa.pub" 2>/dev/null; }
  echo "$TOKEN,admin,admin,system:masters" >"$RUN/tokens.csv"
  cat >"$ROOT/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: k8scp
  cluster: {server: "https://127.0.0.1:$APISERVER_PORT", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: "$TOKEN"}
contexts:
- name: k8scp
  context: {cluster: k8scp, user: admin}
current-context: k8scp
EOF
  local nofsync=()
  "$BIN/etcd" --help 2>&1 | grep -q unsafe-no-fsync && nofsync=(--unsafe-no-fsync)
  spawn etcd "$BIN/etcd" --name k8scp --data-dir "$RUN/etcd-data" "${nofsync[@]}" --log-level warn \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "k8scp=http://127.0.0.1:$((ETCD_PORT + 1))"
  wait_http "http://127.0.0.1:$ETCD_PORT/health" 30 "$RUN/etcd.pid" || { log "etcd failed"; tail -5 "$RUN/etcd.log"; stop; return 1; }
  log "etcd ready at $((SECONDS - t0))s"
  local adm=()
  [[ ${WITH_KCM:-1} == 1 ]] || adm=(--disable-admission-plugins=ServiceAccount)  # no KCM -> no default SA
  spawn kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --cert-dir "$RUN/pki" --token-auth-file "$RUN/tokens.csv" --authorization-mode Node,RBAC \
    --service-cluster-ip-range 10.96.0.0/24 --endpoint-reconciler-type none \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$RUN/sa.pub" --service-account-signing-key-file "$RUN/sa.key" \
    --feature-gates "$FEATURE_GATES" "${adm[@]}"
  wait_http "https://127.0.0.1:$APISERVER_PORT/readyz" 60 "$RUN/kube-apiserver.pid" ||
    { log "kube-apiserver failed"; grep -E '^[EF]' "$RUN/kube-apiserver.log" | tail -5 >&2; stop; return 1; }
  log "kube-apiserver ready at $((SECONDS - t0))s"
  local kc=$ROOT/kubeconfig
  [[ ${WITH_SCHEDULER:-1} == 1 ]] && spawn kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$kc" --leader-elect=false --secure-port 0
  [[ ${WITH_KCM:-1} == 1 ]] && spawn kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$kc" \
    --leader-elect=false --secure-port 0 --service-account-private-key-file "$RUN/sa.key" \
    --root-ca-file "$RUN/pki/apiserver.crt" --use-service-account-credentials=false
  if [[ ${WITH_KWOK:-1} == 1 && -x $BIN/kwok ]]; then
    spawn kwok "$BIN/kwok" --kubeconfig "$kc" --config "$BIN/kwok-stages.yaml" \
      --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
      --cidr 10.0.0.1/16 --node-ip 10.0.0.1
    local i z zones=(a b)
    for ((i = 0; i < ${KWOK_NODES:-0}; i++)); do
      z=${zones[i % 2]}
      api /api/v1/nodes -o /dev/null -d "{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"kwok-node-$i\",
        \"labels\":{\"type\":\"kwok\",\"kubernetes.io/hostname\":\"kwok-node-$i\",\"topology.kubernetes.io/zone\":\"zone-$z\"},
        \"annotations\":{\"kwok.x-k8s.io/node\":\"fake\"}}}"
    done
  fi
  if [[ ${WITH_KCM:-1} == 1 ]]; then  # default ServiceAccount appears once KCM runs
    for ((i = 0; i < 300; i++)); do api /api/v1/namespaces/default/serviceaccounts/default -o /dev/null && break; sleep 0.1; done
  fi
  env_lines >"$ROOT/env"
  log "control plane up in $((SECONDS - t0))s; source $ROOT/env"
}

env_lines() {
  echo "export KUBECONFIG=$ROOT/kubeconfig"
  echo "export KUBEBUILDER_ASSETS=$BIN"
  echo "export K8SCP_BIN=$BIN"
}

alive() { # pid; a zombie counts as dead (PID 1 in some sandboxes never reaps)
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $st != Z* ]]
}

stop() {
  local f pid
  for f in kwok kube-controller-manager kube-scheduler kube-apiserver etcd; do  # apiserver before etcd
    [[ -f $RUN/$f.pid ]] || continue
    pid=$(cat "$RUN/$f.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    ! alive "$pid" || kill -9 "$pid" 2>/dev/null || true   # only the pid this script started
    rm -f "$RUN/$f.pid"
  done
  rm -rf "$RUN/etcd-data"
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  env) env_lines ;;
  *) echo "usage: $0 build|start|stop|env" >&2; exit 2 ;;
esac
