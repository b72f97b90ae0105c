"""Benchmarks for the bars of issues 10, 12 and 16, as sections of bench/run.py.

- goprobes (issue 10, "Done when 5"): bench/go/rawsys, raw read/write system calls in a hot
  loop and a syscall.Mmap + syscall.Munmap loop, plain vs under the library with the Go probes
  on (default) vs OFFHEAP_GO_PROBES=0.
- fork (issue 16, "Done when 6"): 300-subshell bash loops (subshell only, and a subshell that
  execs /bin/true) plain vs under the library (default, and OFFHEAP_INTERVAL=1); the
  fork-per-connection server bench/forkserver.c plain vs with the library in the server; a
  real `pgbench -C -S` against PostgreSQL with the library preloaded into the server, when
  PostgreSQL is installed.
- instructions (issue 14, next to the timed tcache section): instructions and simulated D1
  misses per malloc+free pair under cachegrind, for no preload, a forward-only preload
  (bench/forward.c, the floor of any preload), sampling and full tracking. Counts, not time:
  the same on a loaded machine, where wall-clock ratios of a few per cent are noise.
- scale (issue 12, "Done when 1" and "2"): bench/dumpscale.c with 131,072 distinct stacks
  (exit dump; OFFHEAP_INTERVAL=1 for 6 s) and with 10,000,000 live blocks from 1,000 stacks
  (demand dumps after the fill; periodic dumps during it).

Every measurement is of one whole process per run; runs of the modes being compared are
interleaved, in a rotating order, so that drift in machine load hits every mode alike.
Each section returns the lines it prints; each bar is printed with PASS or FAIL next to it.
"""
import glob
import gzip
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

MiB = 1 << 20


def clean_env():
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("OFFHEAP_") or k == "LD_PRELOAD":
            del env[k]
    return env


def lib_env(lib, dumps, **offheap):
    """The environment of a run under the library: dumps into `dumps`, OFFHEAP_<K>=<V> for
    every keyword (OFFHEAP_INTERVAL defaults to 0 unless given; None leaves a variable at the
    library's default)."""
    env = clean_env()
    env["LD_PRELOAD"] = lib
    env["OFFHEAP_DIR"] = dumps
    offheap.setdefault("INTERVAL", "0")
    for k, v in offheap.items():
        if v is not None:
            env[f"OFFHEAP_{k}"] = str(v)
    return env


def rotations(modes, runs):
    """The order of the modes in each round: A B C, B C A, C A B, ..."""
    for r in range(runs):
        k = r % len(modes)
        yield list(modes[k:]) + list(modes[:k])


def kv(line):
    return {k: v for k, v in re.findall(r"(\w+)=(\S+)", line)}


def bar(label, value, ok, limit_text, fmt="{:.2f}"):
    return f"  {label}: {fmt.format(value)} (bar {limit_text}) {'PASS' if ok else 'FAIL'}"


def bar2(label, med, best, ok, limit_text, fmt="{:.2f}"):
    """A timing bar judged twice: on the medians and on the best runs (the fastest of the
    interleaved runs of each mode; load from other work only ever slows a run down, so the
    best run is the one least disturbed)."""
    return (f"  {label}: median {fmt.format(med)} {'PASS' if ok(med) else 'FAIL'}, "
            f"best runs {fmt.format(best)} {'PASS' if ok(best) else 'FAIL'} (bar {limit_text})")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def dir_bytes(d):
    return sum(os.path.getsize(f) for f in glob.glob(f"{d}/*") if os.path.isfile(f))


def load_dumps(d):
    docs = []
    for f in sorted(glob.glob(f"{d}/*.json.gz")):
        with gzip.open(f) as fh:
            doc = json.load(fh)
        doc["_file"] = f
        doc["_bytes"] = os.path.getsize(f)
        docs.append(doc)
    docs.sort(key=lambda x: (x["header"]["pid"], x["header"]["seq"]))
    return docs


def undelta(column):
    """The ids of a delta-encoded id column."""
    out, last = [], 0
    for d in column:
        last += d
        out.append(last)
    return out


def stack_lengths(path):
    """{stack id: frames} from a stacks file: a row's stack is its own frames followed by the
    previous row's last `keep` frames."""
    lengths = {}
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
        d = zlib.decompressobj(wbits=31)
        body = d.decompress(data[pos:])
        if not d.eof:
            break
        pos = len(data) - len(d.unused_data)
        st = json.loads(body)["stacks"]
        for i, keep, frames in zip(st["id"], st["keep"], st["frames"]):
            lengths[i] = len(frames) + keep
    return lengths


def stacks_members(path):
    """[(seq, compressed bytes)] of the gzip members of a stacks file, in file order."""
    data = open(path, "rb").read()
    out, pos = [], 0
    while pos < len(data):
        d = zlib.decompressobj(wbits=31)
        body = d.decompress(data[pos:])
        if not d.eof:
            break
        used = len(data) - pos - len(d.unused_data)
        out.append((json.loads(body)["seq"], used))
        pos += used
    return out


def timed_popen(argv, env, tfile, **kw):
    """Starts argv under /usr/bin/time (peak RSS, CPU) through env(1), so that only argv gets
    `env`'s LD_PRELOAD and OFFHEAP_*. Linux starts a child's peak RSS at its parent's RSS at
    fork (it survives exec), so the child must not be forked from this Python process, whose
    RSS grows with the dumps it has read: /usr/bin/time and env are small."""
    assigns = [f"{k}={v}" for k, v in env.items() if k.startswith("OFFHEAP_") or k == "LD_PRELOAD"]
    return subprocess.Popen(["/usr/bin/time", "-f", "%M %U %S", "-o", tfile, "env"] + assigns + list(argv),
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **kw)


def timed_result(tfile):
    """(peak RSS KiB, CPU s) from a timed_popen's file."""
    rss, user, system = open(tfile).read().split()[-3:]
    return int(rss), float(user) + float(system)


def spawn_measured(argv, env):
    """Runs argv to its end: (stdout text, seconds from start to end, peak RSS KiB, CPU s,
    CLOCK_MONOTONIC ns at the end)."""
    fd, tfile = tempfile.mkstemp(prefix="offheap-bench-time-")
    os.close(fd)
    t0 = time.monotonic_ns()
    p = timed_popen(argv, env, tfile)
    out = p.stdout.read()
    p.wait()
    t1 = time.monotonic_ns()
    p.stdout.close()
    if p.returncode != 0:
        sys.exit(f"bench: {argv} exited with {p.returncode}")
    rss, cpu = timed_result(tfile)
    os.unlink(tfile)
    return out, (t1 - t0) / 1e9, rss, cpu, t1


# ---------------------------------------------------------------------------------------------
# goprobes: issue 10, Done when 5


GO_MODES = ("plain", "probes", "noprobes")


def go_env(mode, lib, dumps):
    if mode == "plain":
        return clean_env()
    return lib_env(lib, dumps, GO_PROBES="0" if mode == "noprobes" else None)


def goprobes_section(work, lib, runs, quick):
    """The probes' cost is a few ns on a ~400 ns system call, well inside the run-to-run
    spread of a loaded machine: it takes many short runs (at least 11) to see it."""
    exe = f"{work}/rawsys"
    goroutines = 4
    runs = max(runs, 3 if quick else 11)
    rw_iters = 100000 if quick else 250000
    mm_iters = 30000 if quick else 50000
    rw = {m: [] for m in GO_MODES}
    mm = {m: [] for m in GO_MODES}
    en = {m: [] for m in GO_MODES}
    me = {m: [] for m in GO_MODES}
    probes_state = None
    for order in rotations(GO_MODES, runs):
        for m in order:
            d = tempfile.mkdtemp(dir=work, prefix="go-")
            out = subprocess.run([exe, "-mode", "rw", "-goroutines", str(goroutines), "-iters", str(rw_iters)],
                                 env=go_env(m, lib, d), check=True, capture_output=True, text=True).stdout
            rw[m].append(kv(out))
            if m == "probes" and probes_state is None:
                docs = load_dumps(d)
                if docs and docs[-1]["header"].get("go"):
                    probes_state = ", ".join(f"{p['name']} {p['state']}" for p in docs[-1]["header"]["go"]["probes"])
                    probes_state = f"{docs[-1]['header']['go']['version']}; probes: {probes_state}"
            shutil.rmtree(d, ignore_errors=True)
        for m in order:
            d = tempfile.mkdtemp(dir=work, prefix="go-")
            out = subprocess.run([exe, "-mode", "mmap", "-iters", str(mm_iters)],
                                 env=go_env(m, lib, d), check=True, capture_output=True, text=True).stdout
            mm[m].append(kv(out))
            out = subprocess.run([exe, "-mode", "entry", "-iters", "20000", "-blocks", "30" if quick else "100"],
                                 env=go_env(m, lib, d), check=True, capture_output=True, text=True).stdout
            en[m].append(kv(out))
            out = subprocess.run([exe, "-mode", "mapentry", "-iters", "2000", "-blocks", "15" if quick else "40"],
                                 env=go_env(m, lib, d), check=True, capture_output=True, text=True).stdout
            me[m].append(kv(out))
            shutil.rmtree(d, ignore_errors=True)
        print("goprobes: round done", file=sys.stderr)

    ops = {m: [float(x["ops_per_s"]) for x in rw[m]] for m in GO_MODES}
    cpu = {m: [float(x["cpu_ns_per_op"]) for x in rw[m]] for m in GO_MODES}
    pair = {m: [float(x["ns_per_pair"]) for x in mm[m]] for m in GO_MODES}
    pcpu = {m: [float(x["cpu_ns_per_pair"]) for x in mm[m]] for m in GO_MODES}
    med = {m: median(ops[m]) for m in GO_MODES}
    best = {m: max(ops[m]) for m in GO_MODES}
    L = [f"\nGo probes (issue 10; bench/go/rawsys, {probes_state or 'probe state unknown: no dump read'}; "
         f"{runs} interleaved runs per mode; timed inside the program; 'best' = the fastest run of the mode)",
         f"\nraw read(/dev/zero) + write(/dev/null) of 64 B, {goroutines} goroutines x {rw_iters:,} iterations "
         f"(each read and each write is one op):\n",
         "| mode | ops/s median | ops/s best | CPU ns per op median | CPU ns per op best | median vs plain | "
         "median vs probes off | best vs plain | best vs probes off |",
         "|---|---|---|---|---|---|---|---|---|"]
    for m in GO_MODES:
        L.append(f"| {m} | {med[m]:,.0f} | {best[m]:,.0f} | {median(cpu[m]):.1f} | {min(cpu[m]):.1f} | "
                 f"{med[m] / med['plain']:.3f}x | {med[m] / med['noprobes']:.3f}x | "
                 f"{best[m] / best['plain']:.3f}x | {best[m] / best['noprobes']:.3f}x |")
    # Paired: the ratio within each round (the modes of a round ran back to back).
    paired_off = median([a / b for a, b in zip(ops["probes"], ops["noprobes"])])
    paired_plain = median([a / b for a, b in zip(ops["probes"], ops["plain"])])
    L.append(f"\nper-round ratios (median): probes/probes-off {paired_off:.3f}, probes/plain {paired_plain:.3f}; "
             f"CPU per op, probes on - probes off: median {median(cpu['probes']) - median(cpu['noprobes']):+.1f} ns, "
             f"best {min(cpu['probes']) - min(cpu['noprobes']):+.1f} ns")
    # Ops per CPU second: what the loop costs the process, whatever share of the two cores
    # other work on the machine leaves it.
    cps = {m: [1e9 / float(x["cpu_ns_per_op"]) for x in rw[m]] for m in GO_MODES}
    L.append(f"ops per CPU second: median plain {median(cps['plain']):,.0f}, probes {median(cps['probes']):,.0f}, "
             f"probes off {median(cps['noprobes']):,.0f}; best {max(cps['plain']):,.0f} / {max(cps['probes']):,.0f} / "
             f"{max(cps['noprobes']):,.0f}")
    # The entry's own cost, paired within each process (see rawsys -mode entry).
    ent = {m: [float(x["entry_minus_direct_ns"]) for x in en[m]] for m in GO_MODES}
    L.append(f"\nthe runtime's raw system-call entry, per call, minus a bare SYSCALL of getpid in the same process "
             f"(rawsys -mode entry; median of 100 interleaved blocks of 20,000 calls per run, then median over runs):\n")
    L.append("| mode | entry - bare ns per call, median | min-max over runs | getpid via the entry ns |")
    L.append("|---|---|---|---|")
    for m in GO_MODES:
        L.append(f"| {m} | {median(ent[m]):.2f} | {min(ent[m]):.2f}-{max(ent[m]):.2f} | "
                 f"{median([float(x['entry_ns']) for x in en[m]]):.1f} |")
    probe_ns = median(ent["probes"]) - median(ent["noprobes"])
    op_ns = median(cpu["noprobes"])
    est = 100 * probe_ns / op_ns
    L.append(f"probe cost per system call: {probe_ns:.2f} ns (probes on - probes off; vs plain "
             f"{median(ent['probes']) - median(ent['plain']):+.2f} ns); a read or write op of the loop above costs "
             f"{op_ns:.0f} CPU ns with probes off, so the probe takes {est:.2f} % of its throughput")
    L.append("issue 10 bars (throughput loss from the probes):")
    within = lambda v: v <= 2.0  # noqa: E731
    L.append(bar("loss from the probe's measured cost per call (paired, in-process)", est, est <= 2.0, "<= 2 %",
                 "{:.2f} %"))
    L.append(bar2("loss in ops per CPU second, probes on vs OFFHEAP_GO_PROBES=0",
                  100 * (1 - median(cps["probes"]) / median(cps["noprobes"])),
                  100 * (1 - max(cps["probes"]) / max(cps["noprobes"])), within, "<= 2 %", "{:.1f} %"))
    L.append(bar2("loss in ops/s (wall), probes on vs OFFHEAP_GO_PROBES=0", 100 * (1 - med["probes"] / med["noprobes"]),
                  100 * (1 - best["probes"] / best["noprobes"]), within, "<= 2 %", "{:.1f} %"))
    L.append(bar2("loss in ops/s (wall), probes on vs plain", 100 * (1 - med["probes"] / med["plain"]),
                  100 * (1 - best["probes"] / best["plain"]), within, "<= 2 %", "{:.1f} %"))
    L.append(f"\nsyscall.Mmap of one anonymous page + syscall.Munmap, {mm_iters:,} pairs:\n")
    L.append("| mode | ns per pair median | best | CPU ns per pair median | best |")
    L.append("|---|---|---|---|---|")
    for m in GO_MODES:
        L.append(f"| {m} | {median(pair[m]):.0f} | {min(pair[m]):.0f} | {median(pcpu[m]):.0f} | {min(pcpu[m]):.0f} |")
    cap = median(pair["probes"]) - median(pair["noprobes"])
    L.append(f"end to end (medians): probes on - probes off {cap:+.0f} ns per pair, probes on - plain "
             f"{median(pair['probes']) - median(pair['plain']):+.0f} ns (inside the run-to-run spread)")
    ment = {m: [float(x["entry_minus_direct_ns"]) for x in me[m]] for m in GO_MODES}
    L.append(f"\nthe same pair through the entry (syscall.RawSyscall6 mmap + RawSyscall munmap) minus the bare "
             f"instructions in the same process (rawsys -mode mapentry; median of 40 interleaved blocks of 2,000 pairs "
             f"per run, then median over runs):\n")
    L.append("| mode | entry - bare ns per pair, median | min-max over runs | pair via the entry ns |")
    L.append("|---|---|---|---|")
    for m in GO_MODES:
        L.append(f"| {m} | {median(ment[m]):.0f} | {min(ment[m]):.0f}-{max(ment[m]):.0f} | "
                 f"{median([float(x['entry_ns']) for x in me[m]]):.0f} |")
    capture = median(ment["probes"]) - median(ment["noprobes"])
    L.append(f"capture cost: {capture:.0f} ns per mmap+munmap pair (probes on - probes off): the mmap recorded in "
             f"the interval table with its Go stack (frame-pointer walk) and removed again at munmap; "
             f"{capture / 2:.0f} ns per call on average")
    return L


# ---------------------------------------------------------------------------------------------
# fork: issue 16, Done when 6

BASH_VARIANTS = {
    "subshell x=$(echo $i)": "x=$(echo $i)",
    "subshell exec x=$(/bin/true)": "x=$(/bin/true)",
}
# lib-tmpfs: the dumps on tmpfs (/dev/shm), to tell the filesystem's part of a dump from
# ours; lib-nofollow: OFFHEAP_FOLLOW_CHILDREN=0, exec'd programs are not tracked.
BASH_MODES = ("plain", "lib", "lib-interval1", "lib-tmpfs", "lib-nofollow")
SERVER_MODES = ("plain", "lib", "lib-childmin0")


def fork_env(mode, lib, dumps):
    if mode == "plain":
        return clean_env()
    extra = {"INTERVAL": None}  # the library's default settings
    if mode == "lib-interval1":
        extra["INTERVAL"] = "1"
    if mode == "lib-childmin0":
        extra["CHILD_MIN"] = "0"
    if mode == "lib-nofollow":
        extra["FOLLOW_CHILDREN"] = "0"
    return lib_env(lib, dumps, **extra)


def bash_once(body, n, env):
    script = f't0=$EPOCHREALTIME; for i in $(seq {n}); do {body}; done; t1=$EPOCHREALTIME; echo "$t0 $t1"'
    t0 = time.monotonic()
    out = subprocess.run(["bash", "-c", script], env=env, check=True, capture_output=True, text=True).stdout
    wall = time.monotonic() - t0
    a, b = out.split()
    return float(b) - float(a), wall


def server_once(work, lib, mode, conns, frees):
    d = tempfile.mkdtemp(dir=work, prefix="fork-")
    srv = subprocess.Popen([f"{work}/forkserver", "serve", "20000", str(frees)], env=fork_env(mode, lib, d),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = srv.stdout.readline()
        m = re.match(r"port (\d+)", line)
        if not m:
            sys.exit(f"bench: forkserver did not start under {mode}: {line!r}")
        out = subprocess.run([f"{work}/forkserver", "client", m.group(1), str(conns)], env=clean_env(),
                             check=True, capture_output=True, text=True).stdout
    finally:
        srv.terminate()
        srv.wait()
    time.sleep(0.05)  # the last children's exits
    files, size = len(glob.glob(f"{d}/*")), dir_bytes(d)
    shutil.rmtree(d, ignore_errors=True)
    return float(kv(out)["conns_per_s"]), files, size


def fork_section(work, lib, runs, quick):
    n = 300
    conns = 500 if quick else 2000
    L = [f"\nfork-heavy hosts (issue 16; {runs} interleaved runs per mode, median)"]
    L.append(f"\nbash, {n} subshells in a loop (in-loop time from $EPOCHREALTIME; 'process' is the whole bash "
             f"run, start-up and exit included; lib-tmpfs: dumps on /dev/shm; lib-nofollow: "
             f"OFFHEAP_FOLLOW_CHILDREN=0):\n")
    L.append("| loop | mode | ms per subshell median | best | process s | x plain median | x plain best | "
             "dump files | dump KiB |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    bars = []
    for label, body in BASH_VARIANTS.items():
        res = {m: [] for m in BASH_MODES}
        for order in rotations(BASH_MODES, runs):
            for m in order:
                d = tempfile.mkdtemp(dir="/dev/shm" if m == "lib-tmpfs" else work, prefix="offheap-bash-")
                loop, wall = bash_once(body, n, fork_env(m, lib, d))
                res[m].append((loop / n * 1e3, wall, len(glob.glob(f"{d}/*")), dir_bytes(d)))
                shutil.rmtree(d, ignore_errors=True)
        base = median([x[0] for x in res["plain"]])
        base_best = min(x[0] for x in res["plain"])
        for m in BASH_MODES:
            per = [x[0] for x in res[m]]
            ratio, ratio_best = median(per) / base, min(per) / base_best
            L.append(f"| {label} | {m} | {median(per):.3f} | {min(per):.3f} | "
                     f"{median([x[1] for x in res[m]]):.3f} | {ratio:.2f}x | {ratio_best:.2f}x | "
                     f"{median([x[2] for x in res[m]]):.0f} | {median([x[3] for x in res[m]]) / 1024:.0f} |")
            if m in ("lib", "lib-interval1"):
                bars.append(bar2(f"{label}, {m}, per subshell vs plain", ratio, ratio_best, lambda v: v <= 2.0,
                                 "<= 2x", "{:.2f}x"))
        print(f"fork: {label} done", file=sys.stderr)
    L.append(f"\nfork-per-connection server (bench/forkserver.c, 20,000 live blocks in the parent; "
             f"{conns:,} sequential connect/request/close cycles per run; library in the server only; "
             f"lib-childmin0 = OFFHEAP_CHILD_MIN=0, every child writes its exit dump; 'frees' = each child's "
             f"atexit handler frees that many inherited blocks, as a postgres backend's OPENSSL_cleanup does):\n")
    L.append("| children | mode | conns/s median | best | median vs plain | best vs plain | dump files | dump KiB |")
    L.append("|---|---|---|---|---|---|---|---|")
    configs = [("keep the inherited blocks", 0, SERVER_MODES), ("frees 10,000 inherited", 10000, ("plain", "lib"))]
    for label, frees, modes in configs:
        res = {m: [] for m in modes}
        for order in rotations(modes, runs):
            for m in order:
                res[m].append(server_once(work, lib, m, conns, frees))
        base = median([x[0] for x in res["plain"]])
        base_best = max(x[0] for x in res["plain"])
        for m in modes:
            c = [x[0] for x in res[m]]
            ratio, ratio_best = median(c) / base, max(c) / base_best
            L.append(f"| {label} | {m} | {median(c):.0f} | {max(c):.0f} | {ratio:.2f}x | {ratio_best:.2f}x | "
                     f"{median([x[1] for x in res[m]]):.0f} | {median([x[2] for x in res[m]]) / 1024:.0f} |")
            if m == "lib":
                bars.append(bar2(f"forkserver, children {label}, library default, conns/s vs plain", 100 * ratio,
                                 100 * ratio_best, lambda v: v >= 80, ">= 80 %", "{:.0f} %"))
            elif m != "plain":
                bars.append(f"  (forkserver, {m}: {100 * ratio:.0f} % of plain median, {100 * ratio_best:.0f} % "
                            f"best; no bar: every child writes its exit dump)")
    print("fork: forkserver done", file=sys.stderr)
    L.extend(pgbench_rows(work, lib, runs, quick, bars))
    L.append("\nissue 16 bars:")
    L.extend(bars)
    return L


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pgbench_rows(work, lib, runs, quick, bars):
    """A real `pgbench -C -S` against a throw-away PostgreSQL cluster, plain vs with the
    library preloaded into the server (postmaster and every backend). Skipped, with a note,
    when PostgreSQL is not installed or cannot run here."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    pgbench = shutil.which("pgbench") or (bins and os.path.join(os.path.dirname(bins[-1]), "pgbench"))
    if not bins or not pgbench or not os.path.exists(pgbench):
        return ["\npgbench: skipped (PostgreSQL is not installed: apt-get install -y postgresql)"]
    bindir = os.path.dirname(bins[-1])
    user = {}
    if os.geteuid() == 0:
        try:
            import pwd
            pw = pwd.getpwnam("postgres")
            user = {"user": pw.pw_uid, "group": pw.pw_gid}
        except KeyError:
            return ["\npgbench: skipped (running as root and there is no postgres user)"]
    top = tempfile.mkdtemp(prefix="offheap-bench-pg-")
    if user:
        os.chown(top, user["user"], user["group"])
    data, log, port = f"{top}/data", f"{top}/log", free_port()
    seconds = 2 if quick else 5

    def pg(argv, env=None, **kw):
        return subprocess.run(argv, env=env or clean_env(), cwd=top, check=True, capture_output=True,
                              text=True, **user, **kw)

    opts = f"-p {port} -k {top} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=20"

    def start(env):
        pg([f"{bindir}/pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", opts, "start"], env=env)

    def stop():
        # pg_ctl returns once the postmaster has removed its pid file, which it does before
        # it exits (and before the library's exit dump): wait for the process itself.
        try:
            pid = int(open(f"{data}/postmaster.pid").readline())
        except (OSError, ValueError):
            pid = None
        pg([f"{bindir}/pg_ctl", "-D", data, "-w", "-m", "fast", "stop"])
        deadline = time.monotonic() + 30
        while pid and os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        pg([f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"])
        start(None)
        pg([pgbench, "-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "postgres"])
        stop()
        res = {"plain": [], "lib": []}
        for order in rotations(tuple(res), runs):
            for m in order:
                d = f"{top}/dumps-{m}-{len(res[m])}"
                env = clean_env() if m == "plain" else lib_env(lib, d, INTERVAL=None)
                start(env)
                try:
                    out = pg([pgbench, "-C", "-S", "-n", "-T", str(seconds), "-c", "1", "-h", "127.0.0.1",
                              "-p", str(port), "-U", "postgres", "postgres"]).stdout
                finally:
                    stop()
                tps = re.search(r"^tps = ([0-9.]+)", out, re.M)
                if not tps:
                    return [f"\npgbench: skipped (no tps line in its output: {out[-200:]!r})"]
                res[m].append((float(tps.group(1)), len(glob.glob(f"{d}/*")), dir_bytes(d)))
        print("fork: pgbench done", file=sys.stderr)
    except (subprocess.CalledProcessError, OSError) as e:
        msg = getattr(e, "stderr", "") or str(e)
        try:
            stop()
        except (subprocess.CalledProcessError, OSError):
            pass
        shutil.rmtree(top, ignore_errors=True)
        return [f"\npgbench: skipped (PostgreSQL did not run here: {msg.strip()[-300:]})"]
    shutil.rmtree(top, ignore_errors=True)
    base = median([x[0] for x in res["plain"]])
    base_best = max(x[0] for x in res["plain"])
    L = [f"\npgbench -C -S -c 1 -T {seconds} (PostgreSQL {os.path.basename(os.path.dirname(bindir))}, "
         f"127.0.0.1, fsync=off; the library preloaded into the server, default settings):\n",
         "| mode | tps median | best | median vs plain | best vs plain | dump files | dump KiB |",
         "|---|---|---|---|---|---|---|"]
    for m, v in res.items():
        t = [x[0] for x in v]
        L.append(f"| {m} | {median(t):.1f} | {max(t):.1f} | {median(t) / base:.2f}x | {max(t) / base_best:.2f}x | "
                 f"{median([x[1] for x in v]):.0f} | {median([x[2] for x in v]) / 1024:.0f} |")
    t = [x[0] for x in res["lib"]]
    bars.append(bar2("pgbench -C -S, library in the server, tps vs plain", 100 * median(t) / base,
                     100 * max(t) / base_best, lambda v: v >= 80, ">= 80 %", "{:.0f} %"))
    return L


# ---------------------------------------------------------------------------------------------
# scale: issue 12, Done when 1 and 2


def demand_dump(pid, timeout=300):
    """A dump now, over the library's control socket (what `offheap snapshot` does, with a
    longer wait for the reply): the reply line."""
    deadline = time.monotonic() + 10
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(f"\0offheap.{pid}")
            break
        except (ConnectionRefusedError, FileNotFoundError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with s:
        s.settimeout(timeout)
        s.sendall(b"snapshot\n")
        return s.makefile().readline().strip()


def stacks_exit(work, lib, runs):
    """131,072 stacks, the exit dump only (OFFHEAP_INTERVAL=0), interleaved with plain runs."""
    exe = [f"{work}/dumpscale", "stacks"]
    res = {"plain": [], "lib": []}
    last = None
    for order in rotations(("plain", "lib"), runs):
        for m in order:
            d = tempfile.mkdtemp(dir=work, prefix="scale-")
            env = clean_env() if m == "plain" else lib_env(lib, d)
            out, wall, rss, cpu, t_end = spawn_measured(exe, env)
            v = kv(out)
            after = (t_end - int(v["end_mono_ns"])) / 1e6
            row = {"wall": wall, "rss": rss, "cpu": cpu, "after_main_ms": after, "alloc_s": float(v["alloc_s"]),
                   "files": len(glob.glob(f"{d}/*")), "bytes": dir_bytes(d)}
            if m == "lib":
                docs = load_dumps(d)
                row["untracked"] = max(x["untracked"]["bytes"] for x in docs)
                row["stacks"] = docs[-1]["self"]["stacks"]
                last = docs[-1]
            res[m].append(row)
            shutil.rmtree(d, ignore_errors=True)
        print("scale: 131k exit round done", file=sys.stderr)
    return res, last


def stacks_interval(work, lib, seconds=6):
    """131,072 stacks kept live for `seconds` with OFFHEAP_INTERVAL=1: every dump's size with
    the stacks-file member it wrote counted in."""
    d = tempfile.mkdtemp(dir=work, prefix="scale-")
    out, wall, rss, cpu, t_end = spawn_measured([f"{work}/dumpscale", "stacks", str(seconds)],
                                                lib_env(lib, d, INTERVAL="1"))
    docs = load_dumps(d)
    members = {}
    for f in glob.glob(f"{d}/*.stacks.gz"):
        for seq, n in stacks_members(f):
            members[seq] = members.get(seq, 0) + n
    rows = []
    for x in docs:
        h = x["header"]
        rows.append({"seq": h["seq"], "trigger": h["trigger"], "uptime_ms": h["uptime_ms"], "dump": x["_bytes"],
                     "member": members.get(h["seq"], 0), "untracked": x["untracked"]["bytes"],
                     "prev_ms": x["self"]["previous_dump_ms"], "prev_peak": x["self"]["previous_dump_peak_bytes"],
                     "snapshot_ms": x["self"]["snapshot_ms"], "hold_us": x["self"]["max_shard_hold_us"],
                     "stacks": x["self"]["stacks"]})
    total = dir_bytes(d)
    shutil.rmtree(d, ignore_errors=True)
    return {"rows": rows, "rss": rss, "wall": wall, "cpu": cpu, "total": total}


def dumper_switches(pid):
    """(voluntary, involuntary) context switches of the process's offheap-dumper thread so
    far, or None: an involuntary switch during a dump is the thread being preempted, with a
    shard lock held if it happens during a copy."""
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            if open(f"{task}/comm").read().strip() != "offheap-dumper":
                continue
            st = dict(l.split(":", 1) for l in open(f"{task}/status") if ":" in l)
            return int(st["voluntary_ctxt_switches"]), int(st["nonvoluntary_ctxt_switches"])
        except (OSError, KeyError, ValueError):
            continue
    return None


def live_demand(work, lib, count, stacks, dumps=3):
    """`count` live blocks from `stacks` stacks; after the fill (no dump during it), `dumps`
    demand dumps one after another, then the exit dump."""
    d = tempfile.mkdtemp(dir=work, prefix="live-")
    env = lib_env(lib, d, THREAD="always")
    tfile = f"{d}.time"
    t0 = time.monotonic_ns()
    p = timed_popen([f"{work}/dumpscale", "live", str(count), str(stacks), "-1"], env, tfile,
                    stdin=subprocess.PIPE)
    if p.stdout.readline().strip() != "ready":
        sys.exit("bench: dumpscale live did not get ready")
    fill_s = (time.monotonic_ns() - t0) / 1e9
    # /usr/bin/time's child is env, which execs dumpscale: the same pid.
    pid = int(subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()[0])
    replies = []
    for _ in range(dumps):
        before = dumper_switches(pid)
        t = time.monotonic()
        reply = demand_dump(pid)
        took = time.monotonic() - t
        after = dumper_switches(pid)
        preempted = after[1] - before[1] if before and after else None
        replies.append((reply, took, preempted))
    p.stdin.close()
    out = p.stdout.read()
    p.wait()
    t_end = time.monotonic_ns()
    p.stdout.close()
    rss, _ = timed_result(tfile)
    os.unlink(tfile)
    v = kv(out)
    docs = load_dumps(d)
    shutil.rmtree(d, ignore_errors=True)
    return {"docs": docs, "replies": replies, "fill_s": fill_s, "alloc_s": float(v["alloc_s"]),
            "after_main_ms": (t_end - int(v["end_mono_ns"])) / 1e6, "rss": rss}


def live_interval(work, lib, count, stacks, seconds=4):
    """The same fill with periodic dumps every second running while it fills."""
    d = tempfile.mkdtemp(dir=work, prefix="live-")
    out, wall, rss, cpu, t_end = spawn_measured([f"{work}/dumpscale", "live", str(count), str(stacks), str(seconds)],
                                                lib_env(lib, d, INTERVAL="1"))
    docs = load_dumps(d)
    shutil.rmtree(d, ignore_errors=True)
    return {"docs": docs, "alloc_s": float(kv(out)["alloc_s"]), "rss": rss, "wall": wall}


def scale_section(work, lib, runs, quick):
    runs = max(1, min(runs, 3))
    count = 1000000 if quick else 10000000
    L = [f"\ndumps at scale (issue 12; bench/dumpscale.c)"]
    bars = []
    # 1. 131,072 stacks, exit dump only.
    ex, last = stacks_exit(work, lib, runs)
    plain_rss = median([r["rss"] for r in ex["plain"]]) / 1024
    lib_rss = median([r["rss"] for r in ex["lib"]]) / 1024
    plain_after = median([r["after_main_ms"] for r in ex["plain"]])
    exit_ms = median([r["after_main_ms"] for r in ex["lib"]]) - plain_after
    files_mb = median([r["bytes"] for r in ex["lib"]]) / 1e6
    untracked = max(r["untracked"] for r in ex["lib"])
    L.append(f"\n131,072 distinct stacks, one 32 B block each (4 MiB live), OFFHEAP_INTERVAL=0 (the exit dump is "
             f"the only one); {runs} interleaved runs, median:\n")
    L.append("| mode | process s | CPU s | peak RSS MiB | allocating s | main's return to process end ms | dump files | dump MB |")
    L.append("|---|---|---|---|---|---|---|---|")
    for m in ("plain", "lib"):
        rs = ex[m]
        L.append(f"| {m} | {median([r['wall'] for r in rs]):.2f} | {median([r['cpu'] for r in rs]):.2f} | "
                 f"{median([r['rss'] for r in rs]) / 1024:.1f} | {median([r['alloc_s'] for r in rs]):.3f} | "
                 f"{median([r['after_main_ms'] for r in rs]):.0f} | {median([r['files'] for r in rs]):.0f} | "
                 f"{median([r['bytes'] for r in rs]) / 1e6:.2f} |")
    L.append(f"(stacks in the dump: {last['self']['stacks'] if last else '?'}; the exit dump's time is the library "
             f"run's main-to-end minus plain's)")
    bars.append(bar("131k stacks: host peak RSS - plain", lib_rss - plain_rss, lib_rss - plain_rss <= 192,
                    "<= 192 MiB", "{:.1f} MiB"))
    bars.append(bar("131k stacks: exit dump", exit_ms / 1e3, exit_ms <= 1000, "<= 1 s", "{:.2f} s"))
    bars.append(bar("131k stacks: dump directory after exit", files_mb, files_mb <= 25, "<= 25 MB", "{:.2f} MB"))
    # 2. 131,072 stacks with a dump every second.
    iv = stacks_interval(work, lib)
    L.append(f"\nthe same, kept live 6 s with OFFHEAP_INTERVAL=1 (one run; size = dump file + the stacks-file "
             f"member it wrote; previous = this dump's figures for the dump before it):\n")
    L.append("| seq | trigger | uptime ms | dump B | stacks member B | size B | x first | snapshot ms | "
             "previous dump ms | previous dump peak MiB | untracked B |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = iv["rows"]
    first = rows[0]["dump"] + rows[0]["member"] if rows else 1
    worst_later = 0.0
    for r in rows:
        size = r["dump"] + r["member"]
        if r is not rows[0]:
            worst_later = max(worst_later, size / first)
        L.append(f"| {r['seq']} | {r['trigger']} | {r['uptime_ms']} | {r['dump']:,} | {r['member']:,} | {size:,} | "
                 f"{size / first:.3f} | {r['snapshot_ms']:.1f} | {r['prev_ms']:.0f} | {r['prev_peak'] / MiB:.1f} | "
                 f"{r['untracked']:,} |")
    L.append(f"(process {iv['wall']:.1f} s, CPU {iv['cpu']:.1f} s, peak RSS {iv['rss'] / 1024:.1f} MiB, "
             f"directory {iv['total'] / 1e6:.2f} MB)")
    later = len(rows) - 1
    bars.append(bar(f"131k stacks, interval 1: largest later dump / first ({later} later dumps)", 100 * worst_later,
                    later > 0 and worst_later <= 0.10, "<= 10 %", "{:.1f} %"))
    unt = max([untracked] + [r["untracked"] for r in rows])
    bars.append(bar("131k stacks: untracked bytes (largest in any dump)", unt / MiB, unt < MiB, "< 1 MiB", "{:.3f} MiB"))
    peak = max([r["prev_peak"] for r in rows] or [0])
    bars.append(bar("131k stacks: previous_dump_peak_bytes (largest)", peak / MiB, peak <= 16 * MiB, "<= 16 MiB",
                    "{:.1f} MiB"))
    bars.append(bar("131k stacks, interval 1: host peak RSS - plain", iv["rss"] / 1024 - plain_rss,
                    iv["rss"] / 1024 - plain_rss <= 192, "<= 192 MiB", "{:.1f} MiB"))
    print("scale: 131k done", file=sys.stderr)
    # 3. 10M live from 1,000 stacks.
    base = spawn_measured([f"{work}/dumpscale", "live", str(count), "1000"], clean_env())
    lv = live_demand(work, lib, count, 1000)
    docs = lv["docs"]
    L.append(f"\n{count:,} live 16 B blocks from 1,000 stacks; after the fill (no dump during it, "
             f"OFFHEAP_INTERVAL=0, OFFHEAP_THREAD=always), demand dumps one after another, then the exit dump:\n")
    L.append("| seq | trigger | live records | table B per live | snapshot ms | max shard hold us | "
             "this dump's total ms (next dump's previous_dump_ms) | its peak MiB | demand reply s | "
             "dumper preempted (involuntary switches) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    worst_dump, worst_hold, per_live, worst_peak = 0.0, 0.0, 0.0, 0
    for i, x in enumerate(docs):
        s = x["self"]
        nxt = docs[i + 1]["self"] if i + 1 < len(docs) else None
        total_ms = nxt["previous_dump_ms"] if nxt else float("nan")
        pk = nxt["previous_dump_peak_bytes"] if nxt else 0
        reply = f"{lv['replies'][i][1]:.2f} | {lv['replies'][i][2]}" if i < len(lv["replies"]) else " | "
        bpl = s["table_bytes"] / max(s["live_records"], 1)
        L.append(f"| {x['header']['seq']} | {x['header']['trigger']} | {s['live_records']:,} | {bpl:.1f} | "
                 f"{s['snapshot_ms']:.0f} | {s['max_shard_hold_us']:.0f} | {total_ms:.0f} | {pk / MiB:.1f} | {reply} |")
        if s["live_records"] >= count:
            per_live = max(per_live, bpl)
            worst_hold = max(worst_hold, s["max_shard_hold_us"])
            worst_dump = max(worst_dump, total_ms if nxt else s["snapshot_ms"])
            worst_peak = max(worst_peak, pk)
    L.append(f"(fill: {lv['alloc_s']:.2f} s under the library vs {float(kv(base[0])['alloc_s']):.2f} s plain; "
             f"peak RSS {lv['rss'] / 1024:.0f} MiB vs {base[2] / 1024:.0f} MiB plain; the exit dump ended the process "
             f"{lv['after_main_ms']:.0f} ms after main returned)")
    bars.append(bar(f"{count:,} live: table bytes per live allocation", per_live, 0 < per_live <= 40, "<= 40",
                    "{:.1f} B"))
    bars.append(bar(f"{count:,} live: dump (snapshot to rename, largest)", worst_dump / 1e3, worst_dump <= 2000,
                    "<= 2 s", "{:.2f} s"))
    bars.append(bar(f"{count:,} live: longest shard hold", worst_hold / 1e3, worst_hold <= 1000, "<= 1 ms",
                    "{:.2f} ms"))
    L.append(f"  (peak extra memory of those dumps beyond their snapshot copy: {worst_peak / MiB:.1f} MiB)")
    print("scale: 10M demand done", file=sys.stderr)
    li = live_interval(work, lib, count, 1000)
    L.append(f"\nthe same fill with OFFHEAP_INTERVAL=1 (dumps running while it fills, then 4 s live):\n")
    L.append("| seq | trigger | uptime ms | live records | snapshot ms | max shard hold us | previous dump ms |")
    L.append("|---|---|---|---|---|---|---|")
    for x in li["docs"]:
        s = x["self"]
        L.append(f"| {x['header']['seq']} | {x['header']['trigger']} | {x['header']['uptime_ms']} | "
                 f"{s['live_records']:,} | {s['snapshot_ms']:.0f} | {s['max_shard_hold_us']:.0f} | "
                 f"{s['previous_dump_ms']:.0f} |")
    L.append(f"(fill: {li['alloc_s']:.2f} s, process {li['wall']:.1f} s, peak RSS {li['rss'] / 1024:.0f} MiB)")
    print("scale: 10M interval done", file=sys.stderr)
    L.append("\nissue 12 bars:")
    L.extend(bars)
    return L


def ledger_section(work, lib, runs, quick):
    """Issue 11 "Done when 4": the ledger's cost per dump (`ledger.ms`, measured by the library
    on the dumper thread: smaps read between steady VmRSS reads, classification, mincore) with
    about 1,000 mappings and 8 thread arenas (bench/ledgercost.c), over the periodic dumps of
    `runs` runs of 3 s at a 0.2 s interval."""
    L = [f"\nRSS ledger cost (issue 11; bench/ledgercost.c: ~1,000 mappings, 8 thread arenas + main; "
         f"{runs} runs, periodic dumps every 0.2 s)\n"]
    ms, arenas = [], set()
    for _ in range(runs):
        d = tempfile.mkdtemp(dir=work, prefix="offheap-ledger-")
        subprocess.run([f"{work}/ledgercost", "3"], env=lib_env(lib, d, INTERVAL="0.2"), check=True)
        for doc in load_dumps(d):
            if doc["header"]["trigger"] == "interval" and doc.get("ledger"):
                ms.append(doc["ledger"]["ms"])
                arenas.add(len(doc["ledger"]["arenas"]))
        shutil.rmtree(d, ignore_errors=True)
    ms.sort()
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    L.append(f"  dumps: {len(ms)}, arenas seen: {sorted(arenas)}; ledger ms median {median(ms):.2f}, "
             f"p95 {p95:.2f}, max {ms[-1]:.2f}")
    L.append(bar("ledger per dump, median ms", median(ms), median(ms) <= 20, "<= 20 ms"))
    # The kernel's smaps text alone takes 5-7 ms at this size on a 2-core EPYC; the tail is
    # machine load (and the occasional second smaps read when VmRSS moved during the first).
    L.append(bar("ledger per dump, p95 ms", p95, p95 <= 20, "<= 20 ms"))
    return L


def cachegrind_counts(argv, env):
    """(instructions, D1 misses) of one run under cachegrind's cache simulation."""
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=yes", "--cachegrind-out-file=/dev/null"] + argv,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True).stderr

    def total(label):
        m = re.search(label + r":\s+([\d,]+)", out)
        if not m:
            raise RuntimeError(f"cachegrind printed no {label} line:\n{out}")
        return int(m.group(1).replace(",", ""))
    return total(r"I\s+refs"), total(r"D1\s+misses")


def instructions_section(work, lib, runs, quick):
    """Issue 14: what sampling and full tracking add per pair, in instructions and D1 misses.
    Each figure is the difference between a run of 2N pairs and one of N, divided by N: the
    marginal cost of a pair, without start-up and the exit dump (which the two runs share)."""
    forward = f"{work}/libforward.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", forward,
                    os.path.join(os.path.dirname(os.path.abspath(__file__)), "forward.c")], check=True)
    pairs = 100_000 if quick else 200_000
    programs = {
        "tcache, 1 thread": (lambda n: [f"{work}/tcache", "1", str(n)], 1),
        "workload 1, 2 threads": (lambda n: [f"{work}/malloc_heavy", "2", str(n)], 2),
    }
    dumps = tempfile.mkdtemp(prefix="instr-dumps-", dir=work)
    envs = {
        "none": clean_env(),
        "forward": dict(clean_env(), LD_PRELOAD=forward),
        "sampled": lib_env(lib, dumps, SAMPLE_BYTES="524288", INTERVAL="0"),
        "full": lib_env(lib, dumps, INTERVAL="0"),
    }
    lines = ["", "instructions and D1 misses per malloc+free pair (cachegrind; (run of 2N pairs - run of N) / N, "
             f"N = {pairs:,} per thread: start-up and the exit dump cancel out):", "",
             "| program | mode | instr / pair | D1 misses / pair | instr vs none | instr vs forward | "
             "instr over forward |", "|---|---|---|---|---|---|---|"]
    for name, (argv, threads) in programs.items():
        counts = {}
        for m, env in envs.items():
            one = cachegrind_counts(argv(pairs), env)
            two = cachegrind_counts(argv(2 * pairs), env)
            n = pairs * threads
            counts[m] = ((two[0] - one[0]) / n, (two[1] - one[1]) / n)
        none, fwd = counts["none"][0], counts["forward"][0]
        for m, (ir, d1) in counts.items():
            lines.append(f"| {name} | {m} | {ir:.1f} | {d1:.2f} | {ir / none:.3f}x | {ir / fwd:.3f}x "
                         f"| {ir - fwd:+.1f} |")
        print(f"done: instructions, {name}", file=sys.stderr)
    shutil.rmtree(dumps, ignore_errors=True)
    return lines
