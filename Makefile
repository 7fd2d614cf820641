# Halyard. `make run` starts local mode; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
BIN := bin/halyard
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.1.0-dev)
LDFLAGS := -X github.com/halyard-dev/halyard/internal/cli.Version=$(VERSION)
LINT := $(GO) tool -modfile=tools/go.mod golangci-lint

.PHONY: all build run test test-short lint vet fmt fuzz bench clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/halyard

# Local mode: a router and simulated engines, then one request and a short
# bench report; keeps serving until Ctrl-C.
run: build
	./$(BIN) up --demo

# Every test, with the race detector. .ci/run calls this target.
test:
	$(GO) test -race -timeout 45m ./...

test-short:
	$(GO) test -short ./...

vet:
	$(GO) vet ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint: fmt vet
	$(LINT) run ./...

# Short fuzzing of every parser; FUZZTIME=1m for longer.
FUZZTIME ?= 20s
fuzz:
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$t/*_test.go | cut -d' ' -f2); do \
	    echo "== $$t $$f"; $(GO) test $$t -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin out
