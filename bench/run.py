#!/usr/bin/env python3
"""Overhead benchmarks of liboffheap, side by side with heaptrack, in one interleaved run.

Builds the workloads, then runs every (workload, mode) pair round-robin (A B C D A B C D ...)
so that drift in machine load hits every mode alike, and prints the median wall time, CPU
time and peak RSS of each, with ratios against the uninstrumented run. Not part of the tests.

The goprobes, fork and scale sections (issues 10, 16 and 12) are in bench/bars.py: each prints
its figures side by side with the bar it is measured against and PASS or FAIL.

The tcache section (issue 14) runs bench/tcache.c at 1, 2 and 4 threads in every mode, timed
inside the program, and prints ns per pair, ratios and how the overhead per pair grows with
threads, next to a sampling comparison that includes workload 1. Its modes include "forward",
a preload that only forwards malloc and free to glibc (bench/forward.c, -fno-plt: one indirect
jump per call), and "direct", the same with the jumps made direct as liboffheap makes its own:
the floor any malloc preload pays, so sampling's own cost is told apart from the preload's. The instructions section
(bench/bars.py) counts what the same tcache and workload 1 cost per pair under cachegrind, next
to a forward-only preload: counts stay put where a loaded machine's timings do not.

Usage: bench/run.py [--runs N] [--quick] [--lib PATH] [--only SECTION,...] [--tcache-pairs N]
  sections: workloads (the three-workload table), tcache, instructions, extras (stack depth, dump stall,
  malloc_heavy thread scaling), goprobes (issue 10), fork (issue 16), scale (issue 12), ledger
  (issue 11: the ledger's cost per dump at ~1,000 mappings and 8 arenas); all by default.
  --lib uses a prebuilt liboffheap.so and skips cargo; without it the library is
  built into $CARGO_TARGET_DIR (default target/).
"""
import argparse
import glob
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bars  # noqa: E402  (bench/bars.py: the goprobes, fork and scale sections)

TARGET = os.path.abspath(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"))
LIB = os.path.join(TARGET, "release", "liboffheap.so")  # --lib replaces it
SECTIONS = ("workloads", "tcache", "instructions", "extras", "goprobes", "fork", "scale", "ledger")
TCACHE_THREADS = (1, 2, 4)
# "forward": a preload whose malloc and free only forward to glibc (bench/forward.c, built
# -fno-plt: one indirect jump per call); "direct": the same with the jumps made direct (-DDIRECT),
# the floor any malloc preload pays; both timed side by side with the rest.
TCACHE_MODES = ("none", "forward", "direct", "full", "sampled", "nostacks", "heaptrack")


def sh(cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def build(work, quick, prebuilt):
    if not prebuilt:
        sh(["cargo", "build", "--release", "-q", "-p", "interposer"], cwd=ROOT)
    for prog in ("malloc_heavy", "dump_stall", "tcache", "forkserver", "ledgercost"):
        sh(["gcc", "-O2", "-g", "-pthread", "-o", f"{work}/{prog}", f"{ROOT}/bench/{prog}.c"])
    sh(["gcc", "-O2", "-shared", "-fPIC", "-fno-plt", "-o", f"{work}/libforward.so",
        f"{ROOT}/bench/forward.c"])
    sh(["gcc", "-O2", "-shared", "-fPIC", "-fno-plt", "-DDIRECT", "-o", f"{work}/libdirect.so",
        f"{ROOT}/bench/forward.c"])
    # dumpscale's call tree must keep one frame per level: no tail calls.
    sh(["gcc", "-O2", "-g", "-fno-optimize-sibling-calls", "-o", f"{work}/dumpscale", f"{ROOT}/bench/dumpscale.c"])
    for prog in ("cgoloop", "rawsys"):
        sh(["go", "build", "-o", f"{work}/{prog}", f"./{prog}"], cwd=f"{ROOT}/bench/go")
    rows = "20000" if quick else "60000"
    with open(f"{work}/workload.sql", "w") as f:
        sh([sys.executable, f"{ROOT}/bench/sqlite_workload.py", rows], stdout=f)


def workloads(work, quick):
    ops = "1000000" if quick else "3000000"
    reqs = "100000" if quick else "400000"
    return {
        "1 C malloc-heavy, 2 threads": [f"{work}/malloc_heavy", "2", ops],
        "2 cgo service loop, 8 goroutines": [f"{work}/cgoloop", "-workers", "8", "-requests", reqs],
        # sqlite3 itself, not a shell around it: heaptrack follows only the process it starts.
        "3 sqlite3 CLI script": ["sqlite3", ":memory:", f".read {work}/workload.sql"],
    }


def mode_env(mode, dumps):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("OFFHEAP_") or k == "LD_PRELOAD":
            del env[k]
    if mode in ("forward", "direct"):
        env["LD_PRELOAD"] = os.path.join(os.path.dirname(dumps), f"lib{mode}.so")
    if mode in ("full", "nostacks", "sampled", "framehop"):
        env["LD_PRELOAD"] = LIB
        env["OFFHEAP_DIR"] = dumps
        env["OFFHEAP_INTERVAL"] = "0"
    if mode == "nostacks":
        env["OFFHEAP_STACKS"] = "0"
    if mode == "framehop":
        env["OFFHEAP_UNWINDER"] = "framehop"
    if mode == "sampled":
        env["OFFHEAP_SAMPLE_BYTES"] = "524288"
    return env


def run_once(cmd, mode, work, stdout=None):
    """Wall s, CPU s and peak RSS KiB of one run, from /usr/bin/time. With stdout=[], the
    program's stdout is appended to it."""
    dumps = tempfile.mkdtemp(dir=work, prefix="dumps-")
    argv = cmd
    if mode == "heaptrack":
        argv = ["heaptrack", "-o", f"{dumps}/heaptrack"] + cmd
    timed = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", f"{dumps}/time"] + argv
    out = subprocess.run(timed, env=mode_env(mode, dumps), check=True, text=True,
                         stdout=subprocess.PIPE if stdout is not None else subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL).stdout
    if stdout is not None:
        stdout.append(out)
    wall, user, system, rss = open(f"{dumps}/time").read().split()[-4:]
    shutil.rmtree(dumps, ignore_errors=True)
    return float(wall), float(user) + float(system), int(rss)


def tcache_once(work, threads, pairs, mode):
    """(core-ns, CPU ns) per malloc+free pair as tcache measured them around its own loop;
    heaptrack's own lines on stdout do not match the pattern."""
    out = []
    run_once([f"{work}/tcache", str(threads), str(pairs)], mode, work, stdout=out)
    m = re.search(r"^tcache: threads=.* ns_per_pair=([0-9.]+) cpu_ns_per_pair=([0-9.]+)", out[0], re.M)
    if not m:
        sys.exit(f"bench: no total line from tcache {threads} {pairs} under {mode}:\n{out[0]}")
    return float(m.group(1)), float(m.group(2))


def tcache_section(work, runs, quick, pairs):
    """tcache at 1, 2, 4 threads in every mode, and workload 1 none/sampled, all round-robin."""
    # The sampled cost per pair falls as runs get longer (measured at 1 thread: ~46 ns at 1M
    # pairs, ~42 at 4M, ~36 at 16M, native ~33): --quick numbers are smoke, and
    # --tcache-pairs sets a longer run for the sampling bar.
    pairs = pairs or (1000000 if quick else 4000000)
    w1 = [f"{work}/malloc_heavy", "2", "1000000" if quick else "3000000"]
    ns = {(t, m): [] for t in TCACHE_THREADS for m in TCACHE_MODES}
    whole = {m: [] for m in ("none", "forward", "sampled")}
    for r in range(runs):
        for t in TCACHE_THREADS:
            for m in TCACHE_MODES:
                ns[(t, m)].append(tcache_once(work, t, pairs, m))
        for m in whole:
            whole[m].append(run_once(w1, m, work))
        print(f"tcache: run {r + 1}/{runs} done", file=sys.stderr)
    med = {k: tuple(statistics.median(x[i] for x in v) for i in range(2)) for k, v in ns.items()}
    w1med = {m: tuple(statistics.median(x[i] for x in v) for i in range(2)) for m, v in whole.items()}
    return {"pairs": pairs, "runs": runs, "ns": med, "raw": ns, "w1": w1med}


def print_tcache(res):
    ns, pairs = res["ns"], res["pairs"]
    print(f"\ntcache-sized workload (bench/tcache.c: {pairs:,} malloc+free pairs per thread, sizes "
          f"16-1,040 B, 1 in 256 up to 68 KiB, depth 0-11, ring of 128; timed inside the program; "
          f"medians of {res['runs']} interleaved runs)")
    for k, label in ((0, "core-ns per pair (wall x min(threads, cores) / pairs)"),
                     (1, "CPU ns per pair (the program's threads only: heaptrack's interpreter, "
                         "a process of its own, is not in it)")):
        print(f"\n{label}:\n")
        tt = TCACHE_THREADS
        hdr = (["mode"] + [f"ns {t}t" for t in tt] + [f"x none {t}t" for t in tt]
               + [f"overhead ns {t}t" for t in tt] + [f"overhead {t}t / 1t" for t in tt[1:]])
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for m in TCACHE_MODES:
            v = {t: ns[(t, m)][k] for t in tt}
            base = {t: ns[(t, "none")][k] for t in tt}
            over = {t: v[t] - base[t] for t in tt}
            cells = ([m] + [f"{v[t]:.1f}" for t in tt] + [f"{v[t] / base[t]:.2f}x" for t in tt]
                     + [f"{over[t]:.1f}" for t in tt]
                     + [f"{over[t] / over[1]:.2f}x" if m != "none" and over[1] > 0 else "" for t in tt[1:]])
            print("| " + " | ".join(cells) + " |")
    # Medians hide a bimodal cell (e.g. 4 threads on 2 cores); the range shows it.
    print("\nrun-to-run range of core-ns per pair (min-max):")
    for m in TCACHE_MODES:
        cells = [f"{t}t {min(x[0] for x in res['raw'][(t, m)]):.1f}-{max(x[0] for x in res['raw'][(t, m)]):.1f}"
                 for t in TCACHE_THREADS]
        print(f"  {m}: " + ", ".join(cells))
    w1 = res["w1"]
    print("\nsampling (OFFHEAP_SAMPLE_BYTES=524288) vs none, same run:")
    for t in (1, 2, 4):
        print(f"  tcache {t} thread(s): {ns[(t, 'sampled')][0] / ns[(t, 'none')][0]:.3f}x core-ns, "
              f"{ns[(t, 'sampled')][1] / ns[(t, 'none')][1]:.3f}x CPU ns")
    print(f"  workload 1 (malloc_heavy, 2 threads, whole process): {w1['sampled'][0] / w1['none'][0]:.3f}x wall, "
          f"{w1['sampled'][1] / w1['none'][1]:.3f}x CPU")
    print("\nthe floor: a preload that only forwards (bench/forward.c, -fno-plt) vs none, same run:")
    for t in (1, 2, 4):
        print(f"  tcache {t} thread(s): {ns[(t, 'forward')][0] / ns[(t, 'none')][0]:.3f}x core-ns "
              f"with indirect jumps, {ns[(t, 'direct')][0] / ns[(t, 'none')][0]:.3f}x with direct ones; "
              f"sampled over the direct one {ns[(t, 'sampled')][0] / ns[(t, 'direct')][0]:.3f}x")
    print(f"  workload 1: {w1['forward'][0] / w1['none'][0]:.3f}x wall; "
          f"sampled over it {w1['sampled'][0] / w1['forward'][0]:.3f}x")

    def bar(name, value, limit):
        print(f"  {name}: {value:.2f} (bar <= {limit}) {'met' if value <= limit else 'NOT met'}")
    o = {t: ns[(t, "full")][0] - ns[(t, "none")][0] for t in TCACHE_THREADS}
    print("\nissue 14 bars (core-ns):")
    bar("full / none at 2 threads", ns[(2, "full")][0] / ns[(2, "none")][0], 2.5)
    bar("full overhead per pair, 2 threads / 1 thread", o[2] / o[1], 1.25)
    bar("full overhead per pair, 4 threads / 1 thread", o[4] / o[1], 1.5)
    for t in (1, 2):
        bar(f"sampled / none, tcache {t} thread(s)", ns[(t, "sampled")][0] / ns[(t, "none")][0], 1.05)
    bar("sampled / none, workload 1 (wall)", w1["sampled"][0] / w1["none"][0], 1.05)


def stack_depth(work):
    """Mean frames per captured malloc stack and mallocs per run of workload 1 (dump format
    2: the dump's cumulative column table, the stacks in the series' stacks file)."""
    dumps = tempfile.mkdtemp(dir=work, prefix="depth-")
    env = mode_env("full", dumps)
    subprocess.run([f"{work}/malloc_heavy", "2", "200000"], env=env, check=True, stdout=subprocess.DEVNULL)
    doc = bars.load_dumps(dumps)[-1]
    frames = bars.stack_lengths(glob.glob(f"{dumps}/*.stacks.gz")[0])
    cum = doc["cumulative"]
    ids = bars.undelta(cum["stack"])
    total = sum(cum["allocs"])
    weighted = sum(a * frames.get(i, 0) for i, a in zip(ids, cum["allocs"]))
    shutil.rmtree(dumps, ignore_errors=True)
    return weighted / max(total, 1)


def dump_stall(work):
    dumps = tempfile.mkdtemp(dir=work, prefix="stall-")
    env = mode_env("full", dumps)
    env["OFFHEAP_INTERVAL"] = "1"
    out = subprocess.run([f"{work}/dump_stall", "1000000", "5"], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    base = subprocess.run([f"{work}/dump_stall", "1000000", "5"], env=mode_env("none", dumps),
                          check=True, capture_output=True, text=True).stdout.strip()
    docs = bars.load_dumps(dumps)
    periodic = [d for d in docs if d["header"]["trigger"] == "interval"]
    shutil.rmtree(dumps, ignore_errors=True)
    return {
        "probe_with_library": out,
        "probe_without_library": base,
        "dumps": len(periodic),
        "snapshot_ms_max": max(d["self"]["snapshot_ms"] for d in periodic),
        "dump_ms_max": max(d["self"]["previous_dump_ms"] for d in docs[1:]),
        "max_shard_hold_us": max(d["self"]["max_shard_hold_us"] for d in periodic),
        "table_bytes_per_live": periodic[-1]["self"]["table_bytes"] / periodic[-1]["self"]["live_records"],
        "dump_file_bytes": None,
    }


def scaling(work, runs):
    """Per-operation cost under full tracking with 1, 2 and 4 threads (same ops per thread)."""
    res = {}
    for threads in ("1", "2", "4"):
        cmd = [f"{work}/malloc_heavy", threads, "1000000"]
        walls = {"none": [], "full": []}
        for _ in range(runs):
            for mode in walls:
                walls[mode].append(run_once(cmd, mode, work)[1])
        res[threads] = {m: statistics.median(v) for m, v in walls.items()}
    return res


def main():
    global LIB
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, help="counted runs per mode (default 5, 3 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smaller workloads and fewer runs (a smoke run)")
    ap.add_argument("--lib", help="a prebuilt liboffheap.so to measure (cargo is not run)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="sections to run: " + ", ".join(SECTIONS))
    ap.add_argument("--tcache-pairs", type=int, help="malloc+free pairs per tcache thread (default 4M, 1M with --quick)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    only = set(args.only.split(","))
    if not only <= set(SECTIONS):
        ap.error(f"--only: unknown section(s) {', '.join(sorted(only - set(SECTIONS)))}")
    if args.lib:
        LIB = os.path.abspath(args.lib)
    work = tempfile.mkdtemp(prefix="offheap-bench-")
    build(work, args.quick, prebuilt=bool(args.lib))
    modes = ["none", "full", "sampled", "heaptrack"]
    table = []
    for name, cmd in (workloads(work, args.quick) if "workloads" in only else {}).items():
        ms = modes + (["nostacks", "framehop"] if name.startswith("1 ") else [])
        res = {m: [] for m in ms}
        for _ in range(args.runs):
            for m in ms:
                res[m].append(run_once(cmd, m, work))
        med = {m: tuple(statistics.median(r[i] for r in v) for i in range(3)) for m, v in res.items()}
        for m in ms:
            w, c, rss = med[m]
            table.append((name, m, w, c, rss, w / med["none"][0], c / med["none"][1],
                          w / med["heaptrack"][0]))
        print(f"done: {name}", file=sys.stderr)
    tc = tcache_section(work, args.runs, args.quick, args.tcache_pairs) if "tcache" in only else None
    if "extras" in only:
        depth = stack_depth(work)
        stall = dump_stall(work)
        scale = scaling(work, max(3, args.runs // 2))
    issue_lines = []
    if "instructions" in only:
        issue_lines += bars.instructions_section(work, LIB, args.runs, args.quick)
    if "goprobes" in only:
        issue_lines += bars.goprobes_section(work, LIB, args.runs, args.quick)
    if "fork" in only:
        issue_lines += bars.fork_section(work, LIB, args.runs, args.quick)
    if "scale" in only:
        issue_lines += bars.scale_section(work, LIB, args.runs, args.quick)
    if "ledger" in only:
        issue_lines += bars.ledger_section(work, LIB, args.runs, args.quick)

    cpu = "?"
    try:
        cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
    except (OSError, IndexError):
        pass
    print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}")
    print(f"runs per mode: {args.runs} (interleaved), median shown; quick={args.quick}; library {LIB}")
    if table:
        print_table(table, args.quick)
    if tc:
        print_tcache(tc)
    if "extras" in only:
        print_extras(depth, stall, scale, table, args.quick)
    for line in issue_lines:
        print(line)
    shutil.rmtree(work, ignore_errors=True)


def print_table(table, quick):
    hdr = ("workload", "mode", "wall s", "cpu s", "peak RSS MiB", "wall/none", "cpu/none", "wall/heaptrack")
    fmt = "| {} | {} | {:.3f} | {:.3f} | {:.1f} | {:.2f}x | {:.2f}x | {:.3f}x |"
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name, m, w, c, rss, rw, rc, rh in table:
        print(fmt.format(name, m, w, c, rss / 1024, rw, rc, rh))


def print_extras(depth, stall, scale, table, quick):
    w1 = {m: (w, c) for name, m, w, c, *_ in table if name.startswith("1 ")}
    if w1:
        # The per-frame split needs workload 1's full, nostacks and framehop rows.
        mallocs = 2 * (1000000 if quick else 3000000)
        per_malloc_stacks = (w1["full"][1] - w1["nostacks"][1]) / mallocs * 1e9
        print(f"\nstack capture (workload 1): {per_malloc_stacks:.0f} ns CPU per malloc with stacks vs without, "
              f"{depth:.1f} frames per stack on average = {per_malloc_stacks / depth:.1f} ns per frame")
        per_malloc_framehop = (w1["framehop"][1] - w1["nostacks"][1]) / mallocs * 1e9
        print(f"same with OFFHEAP_UNWINDER=framehop: {per_malloc_framehop:.0f} ns per malloc = "
              f"{per_malloc_framehop / depth:.1f} ns per frame")
        print(f"tracking without stacks: {(w1['nostacks'][1] - w1['none'][1]) / mallocs * 1e9:.0f} ns CPU per malloc+free")
    else:
        print(f"\nstack depth (workload 1): {depth:.1f} frames per stack on average")
    print("\nthreads (workload 1, 1M ops per thread, CPU seconds, full tracking):")
    for t, r in scale.items():
        print(f"  {t} thread(s): none {r['none']:.3f} s, full {r['full']:.3f} s, "
              f"overhead per op {(r['full'] - r['none']) / (int(t) * 1e6) * 1e9:.0f} ns")
    print("\ndump with 1,000,000 live allocations (OFFHEAP_INTERVAL=1, 5 s):")
    for k, v in stall.items():
        if v is not None:
            print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
