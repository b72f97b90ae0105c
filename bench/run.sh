#!/usr/bin/env bash
# Overhead benchmarks (not part of the tests): see bench/run.py. Needs heaptrack
# (apt-get install heaptrack); run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v heaptrack >/dev/null || { echo "bench: heaptrack is not installed (apt-get install -y heaptrack)" >&2; exit 1; }
exec python3 bench/run.py "$@"
