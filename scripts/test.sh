#!/usr/bin/env bash
# The test command: set up what the tests need, build, then run every test (real processes:
# the real liboffheap.so preloaded into C programs, cgo programs and third-party programs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --workspace
cargo test --release --workspace --no-fail-fast
