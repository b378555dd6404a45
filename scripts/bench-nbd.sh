#!/usr/bin/env bash
# fio over NBD against `cairn serve` and `nbdkit file` (same disk), then the
# volume-level Go benchmarks of internal/node, printed as ratios.
# Flags go to internal/benchnbd: -quick (smoke run), -out FILE.md, -bin PATH,
# -rounds N, -go=false. See `go run ./internal/benchnbd -h`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./internal/benchnbd "$@"
