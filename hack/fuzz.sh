#!/usr/bin/env bash
# Fuzzes every native fuzz target (func FuzzX in a _test.go file) for
# FUZZTIME each (default 3s). Each package is compiled once, instrumented for
# fuzzing (go test -c -fuzz=.), and its binary runs one target at a time
# (-test.fuzz takes one target per run), so a package with several targets
# is not rebuilt for each. A crash fails the run; the input that caused it
# is written to the package's testdata/fuzz/FuzzX/ and becomes a seed that
# `go test` runs from then on. `make fuzz` and .ci/run call this; package
# directories as arguments (./internal/openai ...) limit it to those.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-3s}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cache=${FUZZCACHE:-$out/cache}
t0=$(date +%s)
build=0
n=0
dirs=("$@")
if [ ${#dirs[@]} -eq 0 ]; then
	mapfile -t dirs < <(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u)
fi
for dir in "${dirs[@]}"; do
	bin="$out/$(echo "${dir#./}" | tr / _).test"
	b0=$(date +%s)
	go test -c -fuzz=. -o "$bin" "$dir"
	build=$((build + $(date +%s) - b0))
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | cut -d' ' -f2 | sort -u); do
		echo "== $dir $f ($FUZZTIME)"
		n=$((n + 1))
		if ! (cd "$dir" && "$bin" -test.run='^$' -test.fuzz="^$f\$" -test.fuzztime="$FUZZTIME" -test.fuzzcachedir="$cache"); then
			echo "fuzz: $dir $f failed; the input is in $dir/testdata/fuzz/$f/" >&2
			exit 1
		fi
	done
done
echo "fuzzed $n targets for $FUZZTIME each in $(($(date +%s) - t0))s (of which ${build}s compiling)"
