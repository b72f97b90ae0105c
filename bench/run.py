#!/usr/bin/env python3
"""Overhead benchmarks of liboffheap, side by side with heaptrack, in one interleaved run.

Builds the workloads, then runs every (workload, mode) pair round-robin (A B C D A B C D ...)
so that drift in machine load hits every mode alike, and prints the median wall time, CPU
time and peak RSS of each, with ratios against the uninstrumented run. Not part of the tests.

Usage: bench/run.py [--runs N] [--quick] [--markdown]
"""
import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "target", "release", "liboffheap.so")


def sh(cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def build(work, quick):
    sh(["cargo", "build", "--release", "-q", "-p", "interposer"], cwd=ROOT)
    sh(["gcc", "-O2", "-g", "-pthread", "-o", f"{work}/malloc_heavy", f"{ROOT}/bench/malloc_heavy.c"])
    sh(["gcc", "-O2", "-g", "-pthread", "-o", f"{work}/dump_stall", f"{ROOT}/bench/dump_stall.c"])
    sh(["go", "build", "-o", f"{work}/cgoloop", "./cgoloop"], cwd=f"{ROOT}/bench/go")
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


def run_once(cmd, mode, work):
    dumps = tempfile.mkdtemp(dir=work, prefix="dumps-")
    argv = cmd
    if mode == "heaptrack":
        argv = ["heaptrack", "-o", f"{dumps}/heaptrack"] + cmd
    timed = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", f"{dumps}/time"] + argv
    subprocess.run(timed, env=mode_env(mode, dumps), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, user, system, rss = open(f"{dumps}/time").read().split()[-4:]
    shutil.rmtree(dumps, ignore_errors=True)
    return float(wall), float(user) + float(system), int(rss)


def stack_depth(work):
    """Mean frames per captured malloc stack and mallocs per run of workload 1."""
    dumps = tempfile.mkdtemp(dir=work, prefix="depth-")
    env = mode_env("full", dumps)
    subprocess.run([f"{work}/malloc_heavy", "2", "200000"], env=env, check=True, stdout=subprocess.DEVNULL)
    doc = json.load(open(sorted(glob.glob(f"{dumps}/*.json"))[-1]))
    frames = {s["id"]: len(s["frames"]) for s in doc["stacks"]}
    total = sum(c["allocs"] for c in doc["cumulative"])
    weighted = sum(c["allocs"] * frames.get(c["stack"], 0) for c in doc["cumulative"])
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
    docs = [json.load(open(f)) for f in sorted(glob.glob(f"{dumps}/*.json"))]
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="offheap-bench-")
    build(work, args.quick)
    modes = ["none", "full", "sampled", "heaptrack"]
    table = []
    for name, cmd in workloads(work, args.quick).items():
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
    depth = stack_depth(work)
    stall = dump_stall(work)
    scale = scaling(work, max(3, args.runs // 2))

    cpu = "?"
    try:
        cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
    except (OSError, IndexError):
        pass
    print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}")
    print(f"runs per mode: {args.runs} (interleaved), median shown; quick={args.quick}")
    hdr = ("workload", "mode", "wall s", "cpu s", "peak RSS MiB", "wall/none", "cpu/none", "wall/heaptrack")
    fmt = "| {} | {} | {:.3f} | {:.3f} | {:.1f} | {:.2f}x | {:.2f}x | {:.3f}x |"
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name, m, w, c, rss, rw, rc, rh in table:
        print(fmt.format(name, m, w, c, rss / 1024, rw, rc, rh))
    w1 = {m: (w, c) for name, m, w, c, *_ in table if name.startswith("1 ")}
    mallocs = 2 * (1000000 if args.quick else 3000000)
    per_malloc_stacks = (w1["full"][1] - w1["nostacks"][1]) / mallocs * 1e9
    print(f"\nstack capture (workload 1): {per_malloc_stacks:.0f} ns CPU per malloc with stacks vs without, "
          f"{depth:.1f} frames per stack on average = {per_malloc_stacks / depth:.1f} ns per frame")
    per_malloc_framehop = (w1["framehop"][1] - w1["nostacks"][1]) / mallocs * 1e9
    print(f"same with OFFHEAP_UNWINDER=framehop: {per_malloc_framehop:.0f} ns per malloc = "
          f"{per_malloc_framehop / depth:.1f} ns per frame")
    print(f"tracking without stacks: {(w1['nostacks'][1] - w1['none'][1]) / mallocs * 1e9:.0f} ns CPU per malloc+free")
    print("\nthreads (workload 1, 1M ops per thread, CPU seconds, full tracking):")
    for t, r in scale.items():
        print(f"  {t} thread(s): none {r['none']:.3f} s, full {r['full']:.3f} s, "
              f"overhead per op {(r['full'] - r['none']) / (int(t) * 1e6) * 1e9:.0f} ns")
    print("\ndump with 1,000,000 live allocations (OFFHEAP_INTERVAL=1, 5 s):")
    for k, v in stall.items():
        if v is not None:
            print(f"  {k}: {v}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
