#!/usr/bin/env bash
# The main job: build offheap, then run a leak hunt on the bundled example service and print
# the report. Usage: scripts/hunt.sh [seconds]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}

cargo build --release -p interposer -p reporter
out=$(mktemp -d /tmp/offheap-hunt.XXXXXX)
(cd examples/go && go build -o "$out/leakyservice" ./leakyservice)

echo "== leak hunt: leakyservice for ${seconds}s, a dump every 2 s, dumps in $out/dumps" >&2
# The service's transient burst is held 5 s (default 1 s) so that dumps 2 s apart see it come
# and go: the report then names what made RSS step up at ~5 s.
target/release/offheap run --interval 2 --dir "$out/dumps" -- \
  "$out/leakyservice" -duration "${seconds}s" -burst-hold 5s
target/release/offheap report --format pprof -o "$out/profile.pb.gz" "$out/dumps"
target/release/offheap report --format flamegraph -o "$out/flamegraph.svg" "$out/dumps"
target/release/offheap report --format chart -o "$out/growth.svg" "$out/dumps"
echo "== also written: $out/profile.pb.gz (go tool pprof), $out/flamegraph.svg, $out/growth.svg" >&2
