#!/usr/bin/env bash
# Soak (issue 7; not in CI): a non-leaking cgo service (examples/go/hostile/soak) runs under
# liboffheap.so with a dump every 5 s for DURATION seconds (default 1800 = 30 min). Then:
#   - every dump parses, is an offheap-dump v1 of the service, seq is contiguous from 0 and
#     none is missing (about DURATION/5 of them; OFFHEAP_KEEP is raised so retention deletes
#     nothing and a gap can only mean a lost dump);
#   - the library's own memory (self.footprint_bytes, self.resident_bytes) is bounded: after a
#     warm-up (first 20 % of the run), the second half never exceeds the first half's maximum
#     by more than 5 % + 1 MiB. A leak in the library grows linearly and fails this;
#   - the service exits 0 with its normal output line.
# Prints a table of the figures over time and a summary line; exit status 0 = pass.
#
# usage: scripts/soak.sh [DURATION_SECONDS] [WORK_DIR]
# needs: target/release/liboffheap.so (cargo build --release -p interposer), go with cgo, python3
# SOAK_LIBRARY=/path/to/liboffheap.so soaks another build (e.g. a copy, so that rebuilding
# target/ during a long soak cannot pull the library from under the running service).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${1:-1800}
WORK=${2:-$(mktemp -d /tmp/offheap-soak.XXXXXX)}
INTERVAL=5
LIB=${SOAK_LIBRARY:-$ROOT/target/release/liboffheap.so}

[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 30 ]] || { echo "soak: DURATION must be an integer >= 30 (seconds)" >&2; exit 2; }
[[ -f $LIB ]] || { echo "soak: $LIB missing: run cargo build --release -p interposer" >&2; exit 2; }
mkdir -p "$WORK"
DUMPS=$WORK/dumps
rm -rf "$DUMPS"

echo "soak: building examples/go/hostile/soak into $WORK"
(cd examples/go && GOFLAGS=-mod=mod CGO_ENABLED=1 go build -o "$WORK/soak" ./hostile/soak)

echo "soak: running ${DURATION}s with OFFHEAP_INTERVAL=$INTERVAL, dumps in $DUMPS"
start=$(date +%s)
set +e
# timeout runs outside the preload (env sets it for the service only): one tracked process.
timeout --signal=KILL $((DURATION + 120)) env LD_PRELOAD="$LIB" OFFHEAP_DIR="$DUMPS" \
    OFFHEAP_INTERVAL=$INTERVAL OFFHEAP_KEEP=1000000 "$WORK/soak" -duration "${DURATION}s" \
    >"$WORK/stdout" 2>"$WORK/stderr"
status=$?
set -e
end=$(date +%s)
echo "soak: service exited with status $status after $((end - start)) s"

python3 - "$DUMPS" "$DURATION" "$INTERVAL" "$status" "$WORK/stdout" "$WORK/stderr" <<'PY'
import json, os, re, sys

dumps, duration, interval, status = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
stdout, stderr = open(sys.argv[5]).read(), open(sys.argv[6]).read()
fail = []
if status != 0:
    fail.append(f"service exit status {status}")
if not re.fullmatch(r"soak: workers=\d+ ops=\d+ mismatches=0\n", stdout):
    fail.append(f"unexpected service stdout {stdout!r}")
if stderr:
    fail.append(f"unexpected stderr {stderr!r}")

rows, pids = [], set()
for name in sorted(os.listdir(dumps)):
    m = re.fullmatch(r"offheap\.(\d+)\.(\d{6,})\.json", name)
    if not m:
        if not name.startswith("."):
            fail.append(f"stray file {name}")
        else:
            fail.append(f"leftover temporary file {name}")
        continue
    with open(os.path.join(dumps, name)) as f:
        d = json.load(f)
    h = d["header"]
    assert d["format"] == "offheap-dump" and d["version"] == 1, name
    assert h["pid"] == int(m[1]) and h["seq"] == int(m[2]), name
    pids.add(h["pid"])
    s = d["self"]
    rows.append((h["seq"], h["uptime_ms"], h["trigger"], s["footprint_bytes"], s.get("resident_bytes", 0),
                 s["live_records"], s["stacks"], d["totals"]["malloc"]["bytes"], d["process"]["rss_bytes"]))
rows.sort()
if len(pids) != 1:
    fail.append(f"dumps from {len(pids)} processes, expected 1")
seqs = [r[0] for r in rows]
if seqs != list(range(len(seqs))):
    missing = sorted(set(range(max(seqs) + 1)) - set(seqs)) if seqs else []
    fail.append(f"sequence not contiguous from 0: missing {missing[:20]}")
expected = int(duration / interval)
if len(rows) < expected - 1:
    fail.append(f"{len(rows)} dumps, expected at least {expected - 1} ({duration}s / {interval}s)")
if any(r[2] != "interval" for r in rows):
    fail.append("a dump with a trigger other than interval")
gaps = [b[1] - a[1] for a, b in zip(rows, rows[1:])]
if gaps and max(gaps) > interval * 1000 * 2:
    fail.append(f"largest gap between dumps {max(gaps)} ms (interval {interval} s)")

def mib(x): return f"{x / 1048576:8.2f}"
print(f"{'seq':>5} {'t(s)':>6} {'footprint MiB':>14} {'resident MiB':>13} {'live recs':>10} {'stacks':>7} {'malloc MiB':>11} {'RSS MiB':>8}")
n = len(rows)
for i in sorted(set([0, 1] + [int(n * k / 10) for k in range(1, 10)] + [n - 1])) if n else []:
    r = rows[i]
    print(f"{r[0]:>5} {r[1] / 1000:>6.0f} {mib(r[3]):>14} {mib(r[4]):>13} {r[5]:>10} {r[6]:>7} {mib(r[7]):>11} {mib(r[8]):>8}")

if n >= 10:
    warm = next(i for i, r in enumerate(rows) if r[1] >= duration * 1000 * 0.2)
    mid = (warm + n) // 2
    for col, label in ((3, "footprint_bytes"), (4, "resident_bytes")):
        first = max(r[col] for r in rows[warm:mid])
        second = max(r[col] for r in rows[mid:])
        bound = first * 1.05 + 1048576
        print(f"soak: {label}: max {mib(first).strip()} MiB in [{rows[warm][1] // 1000}s, {rows[mid][1] // 1000}s), "
              f"max {mib(second).strip()} MiB after; overall min {mib(min(r[col] for r in rows)).strip()} "
              f"max {mib(max(r[col] for r in rows)).strip()} MiB")
        if second > bound:
            fail.append(f"{label} grew: {second} > {first} * 1.05 + 1 MiB")
else:
    fail.append(f"only {n} dumps: too few to judge")

print("soak: service said: " + stdout.strip())
print(f"soak: {n} dumps over {duration}s, seq 0..{n - 1}, " + ("PASS" if not fail else "FAIL"))
for f in fail:
    print("soak: FAIL: " + f)
sys.exit(1 if fail else 0)
PY
