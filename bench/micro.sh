#!/usr/bin/env bash
# Runs the library's micro-benchmarks (core, fd, io_uring) six times each and
# summarizes them with benchstat: bench/micro.sh [OUT_DIR] (default docs/).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs}"
mkdir -p "$out"
go test -run '^$' -bench . -benchmem -count 6 -timeout 60m ./... | tee "$out/micro.txt"
(cd bench && go run golang.org/x/perf/cmd/benchstat@latest "../$out/micro.txt") | tee "$out/micro-benchstat.txt"
