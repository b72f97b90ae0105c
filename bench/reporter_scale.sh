#!/usr/bin/env bash
# Reporter at scale (issue 12 "Done when 1" and "3", reporter side): time and peak RSS of
# `offheap report` on
#   1. bench/manystacks.c: 131,072 distinct stacks, one 32-byte block each (OFFHEAP_INTERVAL=1
#      for 6 s, then the exit dump); also the size of the default JSON report and the text
#      report's line for the one allocation site;
#   2. bench/service10k.c: a 10,000-stack service dumped every 0.1 s for SECONDS (default 1500,
#      thousands of dumps; OFFHEAP_KEEP at its default 500 keeps an even spread on disk).
# Targets: 1. <= 10 s, <= 1 GiB, JSON <= 50 MB; 2. <= 30 s.
# Usage: bench/reporter_scale.sh [SECONDS]   (builds with CARGO_TARGET_DIR or target/)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
seconds="${1:-1500}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo build --release -p interposer -p reporter --manifest-path "$root/Cargo.toml" >&2
lib="$target/release/liboffheap.so"
offheap="$target/release/offheap"
for p in manystacks service10k; do
    gcc -O2 -g -fno-optimize-sibling-calls -o "$work/$p" "$root/bench/$p.c"
done

measure() { # label, command...
    local label="$1"; shift
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/out" 2> "$work/err" || true
    read -r secs kib < "$work/time"
    printf '%-44s %6.2f s  %7.1f MiB  output %s bytes\n' "$label" "$secs" "$(echo "$kib/1024" | bc -l)" \
        "$(wc -c < "$work/out")"
}

mkdir "$work/many"
LD_PRELOAD="$lib" OFFHEAP_DIR="$work/many" OFFHEAP_INTERVAL=1 "$work/manystacks" 6
echo "manystacks: $(ls "$work/many" | wc -l) files, $(du -sh "$work/many" | cut -f1)"
measure "report (text), 131,072 stacks" "$offheap" report "$work/many"
grep -E "131072 +131072 .* leaf" "$work/out" | head -1
measure "report --format json, 131,072 stacks" "$offheap" report --format json "$work/many"

mkdir "$work/svc"
LD_PRELOAD="$lib" OFFHEAP_DIR="$work/svc" OFFHEAP_INTERVAL=0.1 "$work/service10k" "$seconds"
last=$(ls "$work/svc" | grep -c json.gz)
echo "service10k: $last dumps kept of seq 0..$(ls "$work/svc" | grep json.gz | tail -1 | cut -d. -f3 | sed 's/^0*//'), $(du -sh "$work/svc" | cut -f1)"
measure "report (text), 10k-stack service series" "$offheap" report "$work/svc"
measure "report --format json, 10k-stack series" "$offheap" report --format json "$work/svc"
