//! Hostile world, real services under load (issue 7): results identical to the
//! uninstrumented runs.
//!
//! - examples/go-sqlite: github.com/mattn/go-sqlite3 (fetched through the module proxy; its
//!   own module so examples/go stays dependency-free) runs 9,600 queries and transactions
//!   from 32 goroutines on a WAL database; its deterministic checksum line must match.
//! - a threaded python3 program (work queues, dicts, json, hashlib, regex, sorting) with a
//!   deterministic result.
//! - examples/go/hostile/execer: Go `os/exec` children (raw clone(CLONE_VFORK)) started from
//!   many goroutines while others churn C memory; every child must be tracked as its own
//!   process (an exit dump with `header.ppid` = the Go process, its known leak exact).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use offheap_tests::*;

/// Builds a Go package of a module under examples/ with the machine's go.
fn go_build_in(module_dir: &Path, pkg: &str, out: &Path) {
    let res = run(Cmd::new("go")
        .cwd(module_dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "1")
        .args(["build", "-o"])
        .arg(out)
        .arg(pkg)
        .timeout(Duration::from_secs(900)));
    assert!(
        res.status.success(),
        "go build {pkg} in {} failed:\n{}",
        module_dir.display(),
        res.stderr_str()
    );
}

#[test]
fn go_sqlite3_thousands_of_queries_from_many_goroutines() {
    if !GoToolchain::Machine.require() {
        return;
    }
    let tmp = TempDir::new("h-sqlite");
    let exe = tmp.path().join("gosqlite");
    // The first build compiles SQLite's amalgamation (about 40 s on 2 cores); later builds
    // come from Go's build cache.
    go_build_in(&examples_dir().join("go-sqlite"), ".", &exe);
    let without = run(Cmd::new(&exe).timeout(Duration::from_secs(120)));
    without.assert_success("gosqlite without the library");
    let line = without.stdout_str();
    assert!(
        line.starts_with("gosqlite: rows=2000 goroutines=32 queries=300 checksum="),
        "{line}"
    );
    for i in 0..2 {
        let dir = tmp.subdir(&format!("dumps{i}"));
        let with = run(Cmd::new(&exe)
            .offheap(&dir)
            .env("OFFHEAP_INTERVAL", "0.1")
            .timeout(Duration::from_secs(120)));
        assert_same_behaviour("gosqlite", &without, &with);
        // The library did watch: SQLite's allocations went through it.
        let last = last_dump(&dir, with.pid);
        let allocs: u64 = last.json["cumulative"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["allocs"].as_u64()).sum())
            .unwrap_or(0);
        assert!(
            allocs > 10_000,
            "only {allocs} allocations tracked by the last dump"
        );
    }
}

const PY: &str = r#"
import hashlib, json, queue, re, threading
jobs = queue.Queue()
results = {}
lock = threading.Lock()
WORD = re.compile(r"[a-z]+[0-9]*")

def work():
    while True:
        n = jobs.get()
        if n is None:
            jobs.task_done()
            return
        d = {f"k{i}": [i * n, str(i) * (n % 7 + 1), {"x": i}] for i in range(n % 300)}
        s = json.dumps(d, sort_keys=True)
        words = sorted(set(WORD.findall(s + " abc12 zz9 q")))
        h = hashlib.sha256(s.encode() + b"|".join(w.encode() for w in words)).hexdigest()
        blob = bytearray(n * 37 % 100000)
        for i in range(0, len(blob), 4096):
            blob[i] = n % 256
        with lock:
            results[n] = (h[:16], len(words), sum(blob))
        jobs.task_done()

threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads:
    t.start()
for n in range(3000):
    jobs.put(n)
for _ in threads:
    jobs.put(None)
for t in threads:
    t.join()
digest = hashlib.sha256(json.dumps(sorted(results.items())).encode()).hexdigest()
print("python threads:", len(results), digest)
"#;

#[test]
fn threaded_python_identical_output() {
    let tmp = TempDir::new("h-python");
    let script = tmp.path().join("threads.py");
    std::fs::write(&script, PY).unwrap();
    let py = PathBuf::from("/usr/bin/python3");
    let py = if py.is_file() {
        py
    } else {
        PathBuf::from("python3")
    };
    let without = run(Cmd::new(&py).arg(&script).timeout(Duration::from_secs(120)));
    without.assert_success("python3 threads.py");
    assert!(without.stdout_str().starts_with("python threads: 3000 "));
    let dir = tmp.subdir("dumps");
    let with = run(Cmd::new(&py)
        .arg(&script)
        .offheap(&dir)
        .env("OFFHEAP_INTERVAL", "0.2")
        .timeout(Duration::from_secs(120)));
    assert_same_behaviour("python3 threads.py", &without, &with);
    let d = exit_dump(&dir, with.pid);
    assert!(d.totals("malloc").0 > 0, "python's live memory is tracked");
}

#[test]
fn go_os_exec_children_are_tracked() {
    if !GoToolchain::Machine.require() {
        return;
    }
    let tmp = TempDir::new("h-execer");
    let exe = go_build(
        GoToolchain::Machine,
        "hostile/execer",
        tmp.path(),
        "execer",
        &[],
    );
    let leaf = cc(
        tmp.path(),
        "spawn",
        &[examples_dir().join("c/hostile/spawn.c")],
        &["-O2", "-g"],
    );
    let args = [
        "-child",
        leaf.to_str().unwrap(),
        "-n",
        "40",
        "-parallel",
        "8",
    ];
    let without = run(Cmd::new(&exe).args(args).timeout(Duration::from_secs(60)));
    assert_eq!(without.stdout_str(), "execer: children=40 ok=40\n");
    let dir = tmp.subdir("dumps");
    let with = run(Cmd::new(&exe)
        .args(args)
        .offheap(&dir)
        .env("OFFHEAP_INTERVAL", "0")
        .timeout(Duration::from_secs(60)));
    assert_eq!(with.status.code(), without.status.code());
    assert_eq!(with.stdout_str(), without.stdout_str());
    let leaves: BTreeSet<u32> = with
        .stderr_str()
        .lines()
        .filter_map(|l| l.strip_prefix("pid leaf "))
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(leaves.len(), 40);
    // Interval 0 means no periodic dump: each child's exit dump, and the Go parent's (its
    // exit_group is diverted by the Go probes).
    let dumped: BTreeSet<u32> = read_dumps(&dir).iter().map(|d| d.pid).collect();
    let mut expected = leaves.clone();
    expected.insert(with.pid);
    assert_eq!(
        dumped, expected,
        "exactly one process per child, and the parent, dumped"
    );
    for &l in &leaves {
        let d = exit_dump(&dir, l);
        assert_eq!(
            d.header()["ppid"].as_u64(),
            Some(with.pid as u64),
            "child {l}: ppid is the Go process"
        );
    }
    let first = *leaves.iter().next().unwrap();
    let report = report_for_pid(&dir, first);
    let leak: (u64, u64) = report_stacks(&report)
        .iter()
        .filter(|s| frame_index(s, "leaf_leak").is_some())
        .fold((0, 0), |(b, c), s| {
            (
                b + s["bytes"].as_u64().unwrap_or(0),
                c + s["count"].as_u64().unwrap_or(0),
            )
        });
    assert_eq!(leak, (4321, 1), "{}", describe_report(&report));
}
