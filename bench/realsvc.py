#!/usr/bin/env python3
"""Throughput of cgo services on real C libraries under liboffheap (issue 14, Done when 3), and
their leak hunts (issue 13, Done when 1). Not part of the tests.

Builds examples/go-real (zstdsvc on DataDog/zstd, rocksdbsvc on grocksdb + librocksdb) with
examples/go-real/build.sh, then runs each service's -bench mode plain, under liboffheap with full
tracking and sampling (OFFHEAP_SAMPLE_BYTES=524288), round-robin (A B C A B C ...) so drift in
machine load hits every mode alike, and prints the median ops/s (as each program measured it
around its own loop) with the ratios against plain.

--hunt SECONDS instead runs each service's paced leak path under the library with
OFFHEAP_INTERVAL=1 and prints the truth the program printed next to the head of
`offheap report` (Go programs get no exit dump: the last periodic dump is what is reported).

--baseline-lib PATH adds a fourth mode, full tracking under another build of the library (say
main before a change), to the same rounds: before and after measured side by side, not in two
runs minutes apart on a machine whose speed drifts.

Usage: bench/realsvc.py [--runs N] [--quick] [--lib PATH] [--baseline-lib PATH] [--offheap PATH]
                        [--bin-dir DIR] [--services zstdsvc,rocksdbsvc] [--workers 1,2]
                        [--hunt SECONDS]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("plain", "full", "sampled")
# -bench operations per run: about a second plain on a 2-core machine. Short runs and many
# rounds: this machine's speed drifts by 10-20 % within minutes, and a round must be shorter
# than the drift for the interleaving to cancel it.
OPS = {"zstdsvc": 10000, "rocksdbsvc": 150000}


BASELINE = "full-baseline"


def mode_env(mode, dumps, lib, baseline_lib=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFHEAP_") and k != "LD_PRELOAD"}
    if mode != "plain":
        env.update(LD_PRELOAD=baseline_lib if mode == BASELINE else lib, OFFHEAP_DIR=dumps,
                   OFFHEAP_INTERVAL="0")
    if mode == "sampled":
        env["OFFHEAP_SAMPLE_BYTES"] = "524288"
    return env


def bench_once(binary, ops, workers, mode, args, work):
    dumps = tempfile.mkdtemp(dir=work, prefix="dumps-")
    env = mode_env(mode, dumps, args.lib, args.baseline_lib)
    out = subprocess.run([binary, "-bench", str(ops), "-workers", str(workers)], env=env,
                         check=True, capture_output=True, text=True).stdout
    shutil.rmtree(dumps, ignore_errors=True)
    m = re.search(r"bench ops=\d+ workers=\d+ seconds=[0-9.]+ ops_per_s=([0-9.]+)", out)
    if not m:
        sys.exit(f"realsvc: no bench line from {binary} under {mode}:\n{out}")
    return float(m.group(1))


def bench(bins, args, work):
    ops_scale = 0.25 if args.quick else 1.0
    cases = [(svc, w) for svc in bins for w in args.workers]
    modes = MODES + ((BASELINE,) if args.baseline_lib else ())
    got = {(svc, w, m): [] for svc, w in cases for m in modes}
    for r in range(args.runs):
        for svc, w in cases:
            for m in modes:
                got[(svc, w, m)].append(bench_once(bins[svc], int(OPS[svc] * ops_scale), w, m, args, work))
        print(f"realsvc: run {r + 1}/{args.runs} done", file=sys.stderr)
    print(f"library {args.lib}; {args.runs} interleaved runs per mode, median ops/s "
          f"(measured by each program around its -bench loop)\n")
    if args.baseline_lib:
        print(f"{BASELINE}: full tracking under {args.baseline_lib}, in the same rounds\n")
    # The per-round columns divide each run by the plain run of the same round, seconds apart,
    # and take the median of those ratios: drift between rounds cancels, which the ratio of
    # the medians does not do when the machine's speed moves by more than the overhead.
    hdr = ("service", "workers", "plain ops/s", "full ops/s", "sampled ops/s", "full/plain", "sampled/plain",
           "full/plain per round", "sampled/plain per round")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    bars = []
    for svc, w in cases:
        med = {m: statistics.median(got[(svc, w, m)]) for m in MODES}
        paired = {m: statistics.median(x / p for x, p in zip(got[(svc, w, m)], got[(svc, w, "plain")]))
                  for m in MODES}
        print(f"| {svc} | {w} | {med['plain']:,.0f} | {med['full']:,.0f} | {med['sampled']:,.0f} | "
              f"{med['full'] / med['plain']:.1%} | {med['sampled'] / med['plain']:.1%} | "
              f"{paired['full']:.1%} | {paired['sampled']:.1%} |")
        bars.append((svc, w, paired["full"], paired["sampled"]))
    if args.baseline_lib:
        print(f"\n{BASELINE} vs plain (median ops/s; per round):")
        for svc, w in cases:
            base = got[(svc, w, BASELINE)]
            per_round = statistics.median(x / p for x, p in zip(base, got[(svc, w, "plain")]))
            print(f"  {svc}, {w} worker(s): {statistics.median(base):,.0f} ops/s, {per_round:.1%} "
                  f"(full under --lib: {statistics.median(x / p for x, p in zip(got[(svc, w, 'full')], got[(svc, w, 'plain')])):.1%})")
    print("\nrun-to-run range (min-max ops/s):")
    for svc, w in cases:
        print(f"  {svc}, {w} worker(s): " + ", ".join(
            f"{m} {min(got[(svc, w, m)]):,.0f}-{max(got[(svc, w, m)]):,.0f}" for m in modes))
    print("\nissue 14 bars (full >= 85 %, sampled >= 97 % of plain; per-round ratios):")
    for svc, w, full, sampled in bars:
        print(f"  {svc}, {w} worker(s): full {full:.1%} {'met' if full >= 0.85 else 'NOT met'}, "
              f"sampled {sampled:.1%} {'met' if sampled >= 0.97 else 'NOT met'}")


def hunt(bins, args, work):
    for svc, binary in bins.items():
        dumps = tempfile.mkdtemp(dir=work, prefix=f"hunt-{svc}-")
        env = mode_env("full", dumps, args.lib)
        env["OFFHEAP_INTERVAL"] = "1"
        # One interval more than asked, so that SECONDS of periodic dumps exist.
        run = subprocess.run([binary, "-duration", f"{args.hunt + 1}s"], env=env, check=True,
                             capture_output=True, text=True)
        rep = subprocess.run([args.offheap, "report", dumps], capture_output=True, text=True)
        lines = rep.stdout.splitlines()
        # The summary and the suspects table: everything before the first stack listing.
        head = []
        for line in lines:
            if line.startswith("Stacks"):
                break
            head.append(line)
        print(f"== {svc}: {args.hunt} s under full tracking, OFFHEAP_INTERVAL=1 ==")
        print(run.stderr.strip())
        print("\n".join(head))
        print(f"(report: {len(lines)} lines, exit status {rep.returncode}"
              f"{', stderr: ' + rep.stderr.strip() if rep.stderr.strip() else ''})\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, help="counted runs per mode (default 9, 3 with --quick)")
    ap.add_argument("--quick", action="store_true", help="a quarter of the operations, fewer runs")
    ap.add_argument("--lib", default=os.path.join(ROOT, "target", "release", "liboffheap.so"))
    ap.add_argument("--baseline-lib", help="another build of the library, run with full tracking in the same rounds")
    ap.add_argument("--services", default=",".join(OPS), help="services to run, comma-separated")
    ap.add_argument("--offheap", default=os.path.join(ROOT, "target", "release", "offheap"))
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "go-real"),
                    help="where build.sh puts (and keeps) the service binaries")
    ap.add_argument("--workers", default="1,2", help="goroutine counts for -bench, comma-separated")
    ap.add_argument("--hunt", type=float, metavar="SECONDS", help="leak hunts instead of throughput")
    args = ap.parse_args()
    if args.runs is None:
        args.runs = 3 if args.quick else 9
    args.workers = [int(w) for w in args.workers.split(",")]
    args.lib = os.path.abspath(args.lib)
    if not os.path.exists(args.lib):
        sys.exit(f"realsvc: no library at {args.lib} (cargo build --release, or --lib PATH)")
    if args.baseline_lib:
        args.baseline_lib = os.path.abspath(args.baseline_lib)
        if not os.path.exists(args.baseline_lib):
            sys.exit(f"realsvc: no baseline library at {args.baseline_lib}")
    services = [s for s in args.services.split(",") if s]
    unknown = [s for s in services if s not in OPS]
    if unknown or not services:
        sys.exit(f"realsvc: --services takes some of {', '.join(OPS)}; got {args.services!r}")
    subprocess.run([f"{ROOT}/examples/go-real/build.sh", args.bin_dir], check=True)
    bins = {svc: os.path.join(args.bin_dir, svc) for svc in services}
    work = tempfile.mkdtemp(prefix="offheap-realsvc-")
    try:
        if args.hunt:
            hunt(bins, args, work)
        else:
            bench(bins, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
