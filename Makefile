# Halyard. `make run` starts local mode; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
BIN := bin/halyard
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.1.0-dev)
LDFLAGS := -X github.com/halyard-dev/halyard/internal/cli.Version=$(VERSION)
LINT := $(GO) tool -modfile=tools/go.mod golangci-lint
CONTROLLER_GEN := $(GO) tool -modfile=tools/go.mod controller-gen

.PHONY: all build run test test-deps test-short lint vet fmt fuzz bench clean generate verify-generate k8s-controlplane test-k8s kubelet test-kubelet test-kubelet-ci

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/halyard

# Local mode: a router and simulated engines, then one request and a short
# bench report; keeps serving until Ctrl-C.
run: build
	./$(BIN) up --demo

# Every test, with the race detector, including the Kubernetes control-plane
# tests (test-deps installs kubectl and builds the control plane first; with
# HALYARD_REQUIRE_K8S=1 those tests fail instead of skipping if anything is
# missing; HALYARD_REQUIRE_E2E=1 does the same for the end-to-end tests that
# need the halyard binary). .ci/run calls this target.
test: test-deps
	KUBEBUILDER_ASSETS=$(CURDIR)/.k8scp/bin HALYARD_REQUIRE_K8S=1 HALYARD_REQUIRE_E2E=1 HALYARD_REQUIRE_REDIS=1 HALYARD_REQUIRE_PROMETHEUS=1 HALYARD_REQUIRE_CHROMIUM=1 $(GO) test -race -timeout 60m ./...
	@$(MAKE) --no-print-directory test-kubelet-ci

# What the tests need besides Go: kubectl (Debian's package) and the control
# plane binaries (built from the Go module proxy into .k8scp/bin; about 9
# minutes from cold caches, seconds when warm).
test-deps:
	@command -v kubectl >/dev/null 2>&1 || { echo "installing kubectl (Debian package)"; \
	  (apt-get update -qq && apt-get install -y -qq kubectl) >/dev/null || { echo "could not install kubectl: install it and retry" >&2; exit 1; }; }
	@command -v prometheus >/dev/null 2>&1 || { echo "installing prometheus (Debian package)"; \
	  (apt-get update -qq && apt-get install -y -qq prometheus) >/dev/null || { echo "could not install prometheus: install it and retry" >&2; exit 1; }; }
	@command -v redis-server >/dev/null 2>&1 || { echo "installing redis-server (Debian package)"; \
	  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null || { echo "could not install redis-server: install it and retry" >&2; exit 1; }; }
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (Debian package)"; \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null || { echo "could not install chromium: install it and retry" >&2; exit 1; }; }
	@t0=$$(date +%s); hack/controlplane.sh build; echo "control plane build: $$(( $$(date +%s) - t0 ))s"

test-short:
	$(GO) test -short ./...

vet:
	$(GO) vet ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint: fmt vet
	$(LINT) run --allow-parallel-runners ./...

# Fuzzing of every native fuzz target, FUZZTIME each (hack/fuzz.sh builds
# each package once); FUZZTIME=1m for longer. .ci/run runs it with 3s.
FUZZTIME ?= 20s
fuzz:
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin out

# Deep-copy functions, CRD manifests and RBAC from the API types and the
# controller's kubebuilder markers; the Helm chart carries copies of the CRDs.
generate:
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd:generateEmbeddedObjectMeta=true paths=./api/v1alpha1/... output:crd:artifacts:config=config/crd/bases
	$(GO) run ./hack/crdtrim config/crd/bases/*.yaml
	$(CONTROLLER_GEN) rbac:roleName=halyard-controller paths=./internal/controller/... output:rbac:artifacts:config=config/rbac
	rm -rf deploy/helm/halyard/crds && mkdir -p deploy/helm/halyard/crds && cp config/crd/bases/*.yaml deploy/helm/halyard/crds/

# Fails when generated files differ from what `make generate` writes.
verify-generate: generate
	@git diff --exit-code -- api config deploy/helm/halyard/crds || { echo "generated files are stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- api config deploy/helm/halyard/crds)" || { git status --porcelain -- api config deploy/helm/halyard/crds; echo "untracked generated files: run make generate and commit"; exit 1; }

# The Kubernetes control plane for the controller tests (etcd, kube-apiserver,
# kube-scheduler, kube-controller-manager, KWOK), built from the Go module
# proxy into .k8scp/bin.
k8s-controlplane:
	hack/controlplane.sh build

# The real-kubelet test (test/integration/kubelet) needs root, cgroups and
# containerd. Inside `go test ./...` it skips (it is timing sensitive and
# runs alone); `make test` runs it afterwards through test-kubelet-ci.

# containerd, runc, CNI plugins and iptables from Debian (idempotent), the
# kubelet built from the Go module proxy (8-10 minutes of 2 cores from a
# cold build cache, skipped when .kubelet/bin has the version) and the
# halyard and pause images as archives, all into .kubelet/.
kubelet:
	@hack/kubelet.sh deps
	@t0=$$(date +%s); hack/kubelet.sh build; echo "kubelet and images build: $$(( $$(date +%s) - t0 ))s"

# In-place group recovery on a real kubelet; fails rather than skips here.
test-kubelet: k8s-controlplane kubelet
	KUBEBUILDER_ASSETS=$(CURDIR)/.k8scp/bin HALYARD_REQUIRE_KUBELET=1 $(GO) test -race -count=1 -timeout 20m -v ./test/integration/kubelet/...

# What `make test` (so CI) runs after every other test, alone: test-kubelet
# where `hack/kubelet.sh host` says this machine can run a kubelet (Linux,
# root, CAP_SYS_ADMIN, writable cgroups, overlayfs, containerd or apt-get),
# else a SKIP line with the reasons. Where the machine can, any failure on
# the way (packages, build, the test) fails.
test-kubelet-ci:
	@if why=$$(hack/kubelet.sh host 2>&1); then $(MAKE) --no-print-directory test-kubelet; \
	else echo "SKIP test/integration/kubelet (in-place recovery on a real kubelet): this machine cannot run a kubelet:"; \
	  echo "$$why" | sed 's/^/  - /'; fi

# Only the control-plane integration tests; they fail rather than skip here.
test-k8s: k8s-controlplane
	KUBEBUILDER_ASSETS=$(CURDIR)/.k8scp/bin HALYARD_REQUIRE_K8S=1 $(GO) test -race -count=1 -timeout 20m ./test/integration/k8s/... ./internal/controller/... ./internal/agent/...
