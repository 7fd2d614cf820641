#!/usr/bin/env bash
# A real kubelet (Kubernetes 1.35.4, built from the Go module proxy) and
# containerd (Debian's package) on 127.0.0.1, for the in-place recovery test
# in test/integration/kubelet. What a 1.35.4 kubelet needs on these machines,
# and where it writes, is recorded in docs/kubernetes.md ("A real kubelet").
#
#   hack/kubelet.sh deps     # apt-get install containerd, runc, CNI plugins (idempotent)
#   hack/kubelet.sh build    # kubelet into $KROOT/bin; halyard + pause image archives into $KROOT/images
#   hack/kubelet.sh host     # exit 0 if this machine could run it (root, cgroups, ...), else print why
#   hack/kubelet.sh check    # host, and deps and build done: exit 0, else print why and exit 1
#   hack/kubelet.sh start    # containerd + kubelet against $KUBECONFIG; writes $KROOT/env
#   hack/kubelet.sh stop     # stop both, remove pods' containers, cgroups, iptables chains, dirs
#
# Knobs (env): KROOT (<repo>/.kubelet), KUBECONFIG (start: the API server),
#   NODE_NAME (halyard-kubelet), KUBELET_PORT / KUBELET_HEALTHZ_PORT (free ports),
#   K8S_VERSION (1.35.4), K8SCP_ROOT (<repo>/.k8scp: its module dir seeds go.sum).
# One kubelet per machine: start takes $LOCK (a directory holding the owner's
# KROOT), waiting up to LOCK_WAIT seconds (900) while another run holds it.
# Requires root, cgroup v1 or v2 with cgroupfs, and the Debian packages of `deps`.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.35.4}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KROOT=$(mkdir -p "${KROOT:-$REPO/.kubelet}" && cd "${KROOT:-$REPO/.kubelet}" && pwd)
K8SCP_ROOT=${K8SCP_ROOT:-$REPO/.k8scp}
BIN=$KROOT/bin
IMAGES=$KROOT/images
RUN=$KROOT/run
NODE_NAME=${NODE_NAME:-halyard-kubelet}
LOCK=${LOCK:-/run/lock/halyard-kubelet.lock}
# Image names the test pods use (imagePullPolicy: Never).
HALYARD_IMAGE=halyard.local/halyard:test
PAUSE_IMAGE=halyard.local/pause:test

log() { printf '[kubelet %s] %s\n' "$(date +%T)" "$*" >&2; }

deps() {
  local missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [[ -x /usr/lib/cni/host-local || -x /opt/cni/bin/host-local ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]} (Debian packages)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null
}

build() {
  local t0=$SECONDS mod=$KROOT/mod
  mkdir -p "$mod" "$BIN" "$IMAGES"
  if [[ ! -f $mod/go.sum || "$(cat "$mod/.stamp" 2>/dev/null)" != "$K8S_VERSION" ]]; then
    log "resolving k8s.io/kubernetes v$K8S_VERSION for the kubelet"
    local sv="v0.${K8S_VERSION#1.}" kmod
    kmod=$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
           sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      printf 'module halyard.local/kubelet\n\ngo 1.25.0\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S_VERSION"
      grep -E '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$kmod" | awk -v v="$sv" '{printf "\t%s => %s %s\n", $1, $1, v}' | sort -u
      printf ')\n'
    } >"$mod/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kubelet"\n' >"$mod/tools.go"
    # The control plane's go.sum (same k8s.io/kubernetes) saves most look-ups;
    # tidy adds what only the kubelet needs (without it: "missing go.sum entry
    # for module providing package github.com/armon/circbuf").
    if [[ -f $K8SCP_ROOT/mod/go.sum ]]; then cp "$K8SCP_ROOT/mod/go.sum" "$mod/go.sum"; else rm -f "$mod/go.sum"; fi
    (cd "$mod" && go mod tidy)
    echo "$K8S_VERSION" >"$mod/.stamp"
    log "module resolved in $((SECONDS - t0))s"
  fi
  # The kubelet's source is fixed by its version: relinking it (about a
  # minute here) is only needed when the version changes.
  if [[ -x $BIN/kubelet && "$(cat "$BIN/.kubelet-version" 2>/dev/null)" == "$K8S_VERSION" ]]; then
    log "kubelet v$K8S_VERSION already built"
    images
    log "build total $((SECONDS - t0))s"
    return 0
  fi
  local ver="-X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
  ver+=" -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*}"
  local minor=${K8S_VERSION#*.}; ver+=" -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
  ver+=" -X k8s.io/component-base/version.gitTreeState=clean"
  local t1=$SECONDS
  (cd "$mod" && go build -trimpath -ldflags "-s -w $ver" -o "$BIN/kubelet" k8s.io/kubernetes/cmd/kubelet)
  echo "$K8S_VERSION" >"$BIN/.kubelet-version"
  log "kubelet built in $((SECONDS - t1))s"
  images
  log "build total $((SECONDS - t0))s"
}

# images writes the halyard and pause image archives (go-containerregistry,
# hack/ociimage) from static binaries of this checkout.
images() {
  local t0=$SECONDS
  mkdir -p "$IMAGES" "$BIN"
  (cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/halyard-static" ./cmd/halyard &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/pause" ./hack/pause &&
    go run ./hack/ociimage -o "$IMAGES/halyard.tar" -ref "$HALYARD_IMAGE" -bin "$BIN/halyard-static" -path /halyard &&
    go run ./hack/ociimage -o "$IMAGES/pause.tar" -ref "$PAUSE_IMAGE" -bin "$BIN/pause" -path /pause)
  log "images written in $((SECONDS - t0))s"
}

# host says why this machine could not run the kubelet and containerd even
# after `deps` and `build`, if it could not: what CI asks before it builds.
host() {
  local why=()
  [[ $(uname -s) == Linux ]] || { echo "not Linux"; return 1; }
  [[ $(id -u) == 0 ]] || why+=("not root (the kubelet and containerd need root)")
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    [[ -w /sys/fs/cgroup ]] || why+=("cgroup v2 hierarchy /sys/fs/cgroup is read-only")
  elif [[ -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/cpu ]]; then
    [[ -w /sys/fs/cgroup/memory ]] || why+=("cgroup v1 memory hierarchy is read-only")
  else
    why+=("no cgroup v2 or v1 (cpu, memory) hierarchy under /sys/fs/cgroup")
  fi
  grep -qw overlay /proc/filesystems 2>/dev/null || modprobe overlay 2>/dev/null ||
    why+=("no overlay filesystem (containerd's overlayfs snapshotter)")
  # CAP_SYS_ADMIN (bit 21) for mounts and runc: absent in an unprivileged container.
  local cap
  cap=$(awk '/^CapEff:/ {print $2}' /proc/self/status 2>/dev/null)
  [[ -n $cap ]] && (((16#$cap >> 21) & 1)) || why+=("no CAP_SYS_ADMIN (an unprivileged container?)")
  if ! command -v containerd >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || why+=("containerd/runc missing and no apt-get to install them")
  fi
  command -v go >/dev/null 2>&1 || why+=("no go toolchain to build the kubelet")
  if ((${#why[@]})); then printf '%s\n' "${why[@]}"; return 1; fi
}

# check says why this machine cannot run the kubelet now, if it cannot.
check() {
  local why=()
  local h
  h=$(host) || mapfile -t why <<<"$h"
  local c
  for c in containerd runc ctr iptables; do command -v "$c" >/dev/null 2>&1 || why+=("$c missing (hack/kubelet.sh deps)"); done
  [[ -x $BIN/kubelet ]] || why+=("$BIN/kubelet missing (hack/kubelet.sh build)")
  [[ -f $IMAGES/halyard.tar && -f $IMAGES/pause.tar ]] || why+=("image archives missing in $IMAGES (hack/kubelet.sh build)")
  if ((${#why[@]})); then printf '%s\n' "${why[@]}"; return 1; fi
}

alive() { # pid; a zombie counts as dead
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $st != Z* ]]
}

# free_port picks a port that nothing listens on, below the kernel's
# ephemeral range (which the tests' port-0 listeners draw from), so that no
# other process is handed it before the kubelet binds it.
free_port() {
  local p lo
  lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  ((lo > 12000)) || lo=32768
  for _ in $(seq 1 100); do
    p=$((10000 + RANDOM % (lo - 10000)))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}

# lock takes the one-kubelet-per-machine lock or fails naming its holder.
# wait_lock takes the lock, waiting up to LOCK_WAIT seconds (default 900)
# while another kubelet run holds it, so that two runs on one machine (two
# checkouts' make test) take turns instead of failing.
wait_lock() {
  local deadline=$((SECONDS + ${LOCK_WAIT:-900})) said=
  until lock 2>"$KROOT/lock.err"; do
    if ((SECONDS >= deadline)); then
      cat "$KROOT/lock.err" >&2
      log "gave up waiting for $LOCK after ${LOCK_WAIT:-900}s"
      return 1
    fi
    [[ -n $said ]] || { cat "$KROOT/lock.err" >&2; log "waiting for it (up to ${LOCK_WAIT:-900}s)"; said=1; }
    sleep 2
  done
  rm -f "$KROOT/lock.err"
}

lock() {
  mkdir -p "$(dirname "$LOCK")"
  if mkdir "$LOCK" 2>/dev/null; then
    echo "$KROOT" >"$LOCK/owner"
    return 0
  fi
  local owner pid
  owner=$(cat "$LOCK/owner" 2>/dev/null || true)
  pid=$(cat "$owner/run/kubelet.pid" 2>/dev/null || true)
  if [[ $owner == "$KROOT" ]]; then return 0; fi
  if [[ -n $pid ]] && alive "$pid"; then
    log "another kubelet (pid $pid, $owner) holds $LOCK: one kubelet per machine"
    return 1
  fi
  if [[ -z $owner || ! -d $owner/run ]] || ! ls "$owner"/run/*.pid >/dev/null 2>&1; then
    log "taking over stale lock $LOCK (owner ${owner:-unknown} runs nothing)"
    echo "$KROOT" >"$LOCK/owner"
    return 0
  fi
  log "lock $LOCK is held by $owner, whose pid files remain: run KROOT=$owner $0 stop"
  return 1
}

# write_kubelet_config port healthz-port containerd-socket
write_kubelet_config() {
  local port=$1 hport=$2 sock=$3
  cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $hport
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
featureGates:
  RestartAllContainersOnContainerExits: true
  NodeDeclaredFeatures: true
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$sock
podLogsDir: $RUN/logs/pods
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
registerNode: true
EOF
}

start() {
  local t0=$SECONDS
  local why
  why=$(check) || { log "cannot run here: $why"; return 1; }
  [[ -n ${KUBECONFIG:-} && -f $KUBECONFIG ]] || { log "KUBECONFIG must name the API server's kubeconfig"; return 1; }
  [[ ! -f $RUN/kubelet.pid && ! -f $RUN/containerd.pid ]] || { log "left over from an earlier run; stopping it first"; stop; }
  wait_lock
  mkdir -p "$RUN"/{containerd/root,containerd/state,runc,kubelet,certs,logs/pods,cni/net.d,cni/bin}
  cp "$KUBECONFIG" "$RUN/kubeconfig"
  # What exists before the kubelet runs, so stop removes only what it made.
  [[ -e /var/lib/kubelet ]] || touch "$RUN/made-var-lib-kubelet"
  [[ -e /var/log/containers ]] || touch "$RUN/made-var-log-containers"
  [[ -e /var/log/pods ]] || touch "$RUN/made-var-log-pods"
  # The test's pods use the host network, but the CRI plugin reports the
  # node's network not ready (and the kubelet keeps the node NotReady)
  # until a CNI configuration loads: a loopback-only one is enough and
  # gives pods no address beyond 127.0.0.1.
  local cnibin=/usr/lib/cni
  [[ -x $cnibin/loopback ]] || cnibin=/opt/cni/bin
  echo '{"cniVersion": "1.0.0", "name": "halyard-loopback", "plugins": [{"type": "loopback"}]}' >"$RUN/cni/net.d/10-loopback.conflist"
  local sock=$RUN/containerd.sock
  cat >"$RUN/containerd.toml" <<EOF
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without it every sandbox fails: runc cannot write oom_score_adj here
  # (root lacks CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cnibin"
    conf_dir = "$RUN/cni/net.d"
EOF
  containerd --config "$RUN/containerd.toml" --log-level warn >"$RUN/containerd.log" 2>&1 &
  echo $! >"$RUN/containerd.pid"
  local i
  for ((i = 0; i < 300; i++)); do
    ctr -a "$sock" version >/dev/null 2>&1 && break
    alive "$(cat "$RUN/containerd.pid")" || { log "containerd exited"; tail -5 "$RUN/containerd.log" >&2; stop; return 1; }
    sleep 0.1
  done
  log "containerd ready at $((SECONDS - t0))s"
  local img
  for img in pause halyard; do
    ctr -a "$sock" -n k8s.io images import --no-unpack=false "$IMAGES/$img.tar" >/dev/null ||
      { log "import of $img failed"; stop; return 1; }
  done
  log "images imported at $((SECONDS - t0))s"
  # A port taken between free_port and the kubelet's bind ("address already
  # in use" on this shared machine) costs a retry with other ports.
  local port hport attempt
  for ((attempt = 1; ; attempt++)); do
    port=${KUBELET_PORT:-$(free_port)} hport=${KUBELET_HEALTHZ_PORT:-$(free_port)}
    write_kubelet_config "$port" "$hport" "$sock"
    "$BIN/kubelet" --config "$RUN/kubelet.yaml" --kubeconfig "$RUN/kubeconfig" \
      --hostname-override "$NODE_NAME" --root-dir "$RUN/kubelet" --cert-dir "$RUN/certs" \
      --v 1 >"$RUN/kubelet.log" 2>&1 &
    echo $! >"$RUN/kubelet.pid"
    for ((i = 0; i < 600; i++)); do
      # healthy on both ports: the main one binds after the healthz one
      curl -sf "http://127.0.0.1:$hport/healthz" >/dev/null 2>&1 &&
        curl -skf "https://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
      alive "$(cat "$RUN/kubelet.pid")" || break
      sleep 0.1
    done
    alive "$(cat "$RUN/kubelet.pid")" && break
    if ((attempt < 5)) && grep -q 'address already in use' "$RUN/kubelet.log"; then
      log "kubelet could not bind port $port or $hport (taken meanwhile); retrying with others"
      rm -f "$RUN/kubelet.pid"
      continue
    fi
    log "kubelet exited"; grep -E '^[EF]' "$RUN/kubelet.log" | tail -5 >&2; stop; return 1
  done
  ((i < 600)) || { log "kubelet not healthy within 60s"; grep -E '^[EF]' "$RUN/kubelet.log" | tail -5 >&2; stop; return 1; }
  {
    echo "KUBELET_NODE=$NODE_NAME"
    echo "KUBELET_PORT=$port"
    echo "KUBELET_HEALTHZ_PORT=$hport"
    echo "KUBELET_POD_LOGS=$RUN/logs/pods"
    echo "CONTAINERD_ADDRESS=$sock"
    echo "HALYARD_IMAGE=$HALYARD_IMAGE"
  } >"$KROOT/env"
  log "kubelet healthy at $((SECONDS - t0))s (node $NODE_NAME, port $port); logs in $RUN"
}

stop_pid() { # name [signal wait-tenths]
  local f=$RUN/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 "${2:-100}"); do alive "$pid" || break; sleep 0.1; done
  ! alive "$pid" || kill -9 "$pid" 2>/dev/null || true  # only the pid this script started
  rm -f "$f"
}

stop() {
  local t0=$SECONDS sock=$RUN/containerd.sock
  stop_pid kubelet 100
  # The pods' containers and sandboxes (their shims outlive containerd).
  if [[ -f $RUN/containerd.pid ]] && ctr -a "$sock" version >/dev/null 2>&1; then
    local id
    for id in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 50); do
      [[ -z $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null | head -1) ]] && break
      ctr -a "$sock" -n k8s.io tasks ls 2>/dev/null | awk 'NR>1 && $3!="RUNNING"{print $1}' |
        xargs -r -n1 ctr -a "$sock" -n k8s.io tasks delete >/dev/null 2>&1 || true
      sleep 0.1
    done
    for id in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr -a "$sock" -n k8s.io containers ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_pid containerd 100
  # Shims of our containers that are still around: they run from our state dir.
  local p
  for p in $(grep -l -- "$RUN/containerd" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
    grep -q containerd-shim "/proc/$p/cmdline" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
  done
  # Mounts under our directories (rootfs overlays, sandbox shm, volumes).
  local m
  for m in $(awk -v r="$RUN/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  cleanup_cgroups
  cleanup_iptables
  # The kubelet's writes outside --root-dir.
  [[ -f $RUN/made-var-lib-kubelet ]] && rm -rf /var/lib/kubelet
  [[ -f $RUN/made-var-log-containers ]] && rm -rf /var/log/containers
  [[ -f $RUN/made-var-log-pods ]] && rm -rf /var/log/pods
  [[ -d /var/log/containers ]] && find /var/log/containers -maxdepth 1 -type l -lname "$RUN/*" -delete 2>/dev/null
  rm -rf "$RUN" "$KROOT/env"
  if [[ -d $LOCK && "$(cat "$LOCK/owner" 2>/dev/null)" == "$KROOT" ]]; then rm -rf "$LOCK"; fi
  log "stopped and cleaned in $((SECONDS - t0))s"
}

# cleanup_cgroups removes the kubepods hierarchy the kubelet made (cgroupfs
# driver), deepest first; a cgroup with processes left stays (and is named).
cleanup_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $d ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d $d ]] && log "cgroup $d still busy"
  done
  return 0
}

# cleanup_iptables removes the KUBE-* chains the kubelet adds (KUBE-FIREWALL
# drops non-local traffic to 127/8; KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT).
cleanup_iptables() {
  local ipt table chain rule
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null 2>&1 || continue
    for table in filter nat mangle; do
      # jumps into KUBE-* chains from the built-in chains
      # (grep finds nothing in most tables: not an error under pipefail)
      "$ipt" -t "$table" -S 2>/dev/null | { grep -E '^-A [A-Z]+ .*-j KUBE-' || true; } | while read -r rule; do
        # shellcheck disable=SC2086
        "$ipt" -t "$table" ${rule/-A/-D} 2>/dev/null || true
      done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^KUBE-/ {print $2}'); do
        "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^KUBE-/ {print $2}'); do
        "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

case "${1:-}" in
  deps) deps ;;
  build) build ;;
  images) images ;;
  host) host ;;
  check) check ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 deps|build|images|host|check|start|stop" >&2; exit 2 ;;
esac
