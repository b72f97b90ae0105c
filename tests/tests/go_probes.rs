//! Go probes (issue 10): raw-syscall mappings with their Go stack, and an exit dump however a
//! Go program ends; `_exit`, `_Exit` and fatal signals of C programs.
//!
//! examples/go/rawmmap maps through `syscall.Mmap`, `unix.Mmap` + a raw partial munmap,
//! `unix.Mremap`, maps and unmaps, leaks `C.CString`s, and prints its own truth per function;
//! the exit dump (no periodic dump: the default interval is 30 s) must attribute every
//! function's outstanding bytes exactly. Frames are named by binutils' addr2line (an oracle
//! independent of the reporter); dumps are read by the harness's own reader.

use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use offheap_tests::*;

/// The program's truth lines: function → (via, bytes, count).
fn truth(stderr: &str) -> Vec<(String, String, u64, u64)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("rawmmap: truth "))
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .map(|v| {
            (
                v["func"].as_str().unwrap_or("").to_string(),
                v["via"].as_str().unwrap_or("").to_string(),
                v["bytes"].as_u64().unwrap_or(0),
                v["count"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn build(tmp: &TempDir, tc: GoToolchain, extra: &[&str]) -> Option<PathBuf> {
    if !tc.require() {
        return None;
    }
    let name = format!("rawmmap-{tc:?}{}", extra.len());
    Some(go_build(tc, "rawmmap", tmp.path(), &name, extra))
}

fn probes(d: &Dump) -> Vec<(String, String)> {
    d.header()["go"]["probes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or("").to_string(),
                        p["state"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// DW1 for one toolchain: after os.Exit(3), the exit dump attributes every function exactly.
fn exact_after_os_exit(tc: GoToolchain) {
    let tmp = TempDir::new(&format!("probes-exit-{tc:?}"));
    let Some(exe) = build(&tmp, tc, &[]) else {
        return;
    };
    let dir = tmp.subdir("dumps");
    let out = run(Cmd::new(&exe).args(["-mode", "exit"]).offheap(&dir));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{tc:?}: status\n{}",
        out.stderr_str()
    );
    let d = exit_dump(&dir, out.pid);
    assert_eq!(d.header()["exit"]["path"], "go-exit");
    assert_eq!(d.header()["exit"]["status"], 3);
    let on: Vec<_> = probes(&d);
    assert_eq!(
        on,
        vec![
            ("syscall".to_string(), "on".to_string()),
            ("exit".to_string(), "on".to_string()),
            ("signal".to_string(), "on".to_string())
        ],
        "{tc:?}: {}",
        d.header()["go"]
    );
    let t = truth(&out.stderr_str());
    assert_eq!(
        t.len(),
        5,
        "{tc:?}: the program's truth lines\n{}",
        out.stderr_str()
    );
    let mut raw_total = 0;
    for (func, via, bytes, count) in &t {
        let kind = if via == "syscall" { "mmap" } else { "malloc" };
        let got = attributed_in_dump(&d, &exe, func, kind, via);
        assert_eq!(got, (*bytes, *count), "{tc:?}: {func} ({kind} via {via})");
        if via == "syscall" {
            raw_total += bytes;
        }
    }
    assert!(t.iter().any(|r| r.0 == "main.mapAndRelease" && r.2 == 0));
    let untracked = d.json["untracked"]["bytes"].as_u64().unwrap_or(u64::MAX);
    assert!(
        untracked * 20 < raw_total,
        "{tc:?}: untracked {untracked} is not below 5% of the raw total {raw_total}"
    );
}

#[test]
fn machine_go_exit_dump_attributes_every_function_exactly() {
    exact_after_os_exit(GoToolchain::Machine);
}

#[test]
fn go1_27_3_exit_dump_attributes_every_function_exactly() {
    exact_after_os_exit(GoToolchain::Go1_27_3);
}

#[test]
fn go1_19_exit_dump_attributes_every_function_exactly() {
    exact_after_os_exit(GoToolchain::Go1_19);
}

/// Stripped (names from .gopclntab) and PIE binaries: the probes are found and work.
#[test]
fn stripped_and_pie_binaries_get_their_probes() {
    let tmp = TempDir::new("probes-stripped");
    for flags in [&["-ldflags=-s -w"][..], &["-buildmode=pie"][..]] {
        let Some(exe) = build(&tmp, GoToolchain::Machine, flags) else {
            return;
        };
        let dir = tmp.subdir(&format!("dumps{}", flags[0].len()));
        let out = run(Cmd::new(&exe).args(["-mode", "exit"]).offheap(&dir));
        assert_eq!(out.status.code(), Some(3));
        let d = exit_dump(&dir, out.pid);
        assert!(
            probes(&d).iter().all(|p| p.1 == "on"),
            "{flags:?}: {}",
            d.header()["go"]
        );
        // The syscall mappings are all there: 3 functions x 8 iterations.
        let syscall_bytes: u64 = d
            .outstanding()
            .iter()
            .filter(|o| o["via"] == "syscall")
            .map(|o| o["bytes"].as_u64().unwrap_or(0))
            .sum();
        let want: u64 = truth(&out.stderr_str())
            .iter()
            .filter(|r| r.1 == "syscall")
            .map(|r| r.2)
            .sum();
        assert_eq!(syscall_bytes, want, "{flags:?}");
    }
}

fn spawn(exe: &Path, mode: &str, dir: Option<&Path>) -> Running {
    let mut c = Cmd::new(exe).args(["-mode", mode]);
    if let Some(d) = dir {
        c = c.offheap(d);
    }
    Running::start(&c.timeout(Duration::from_secs(60)), true)
}

/// DW2: return from main (0), an unrecovered panic (2, the same panic text), SIGTERM and
/// SIGINT each end with an exit dump and the same status as without the library.
#[test]
fn every_ending_writes_an_exit_dump() {
    let tmp = TempDir::new("probes-endings");
    let Some(exe) = build(&tmp, GoToolchain::Machine, &[]) else {
        return;
    };
    for mode in ["return", "panic"] {
        let dir = tmp.subdir(&format!("dumps-{mode}"));
        let without = run(Cmd::new(&exe).args(["-mode", mode]));
        let with = run(Cmd::new(&exe).args(["-mode", mode]).offheap(&dir));
        assert_eq!(without.status.code(), with.status.code(), "{mode}: status");
        let panic_text = |o: &Outcome| {
            o.stderr_str()
                .lines()
                .filter(|l| l.starts_with("panic:") || l.starts_with("goroutine "))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            panic_text(&without),
            panic_text(&with),
            "{mode}: panic text"
        );
        let d = exit_dump(&dir, with.pid);
        assert_eq!(d.header()["exit"]["path"], "go-exit", "{mode}");
        assert_eq!(
            d.header()["exit"]["status"].as_i64(),
            without.status.code().map(i64::from),
            "{mode}"
        );
    }
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let dir = tmp.subdir(&format!("dumps-{name}"));
        let mut statuses = Vec::new();
        for lib in [None, Some(dir.as_path())] {
            let mut r = spawn(&exe, "signal", lib);
            r.wait_for_stdout_line("ready", Duration::from_secs(20));
            r.signal(sig);
            let out = r.wait();
            statuses.push((out.status.code(), out.status.signal()));
            if lib.is_some() {
                let d = exit_dump(&dir, out.pid);
                assert_eq!(d.header()["exit"]["path"], "signal", "{name}");
                assert_eq!(d.header()["exit"]["signal"], sig, "{name}");
            }
        }
        assert_eq!(statuses[0], statuses[1], "{name}: how the process died");
        assert_eq!(statuses[0].1, Some(sig), "{name}: dies of the signal");
    }
}

/// DW4: Go's own cgo test suite passes identically with the library.
#[test]
fn gos_cgo_test_suite_passes_identically() {
    let tmp = TempDir::new("probes-cgotest");
    let goroot = run(Cmd::new("go")
        .args(["env", "GOROOT"])
        .env("GOTOOLCHAIN", "local"));
    let src = PathBuf::from(goroot.stdout_str().trim()).join("src/cmd/cgo/internal/test");
    assert!(
        src.is_dir(),
        "{} (the Go installation's sources)",
        src.display()
    );
    let exe = tmp.path().join("cgotest");
    let built = run(Cmd::new("go")
        .args(["test", "-c", "-o"])
        .arg(&exe)
        .arg(".")
        .cwd(&src)
        .env("GOTOOLCHAIN", "local")
        .timeout(Duration::from_secs(600)));
    built.assert_success("go test -c cmd/cgo/internal/test");
    let dir = tmp.subdir("dumps");
    let without = run(Cmd::new(&exe).timeout(Duration::from_secs(300)));
    let with = run(Cmd::new(&exe)
        .offheap(&dir)
        .timeout(Duration::from_secs(300)));
    assert_eq!(without.stdout_str().lines().last(), Some("PASS"));
    assert_eq!(
        (with.status.code(), with.stdout_str().lines().last()),
        (without.status.code(), Some("PASS")),
        "cgo test suite under liboffheap\nstdout:\n{}\nstderr:\n{}",
        with.stdout_str(),
        with.stderr_str()
    );
    let d = exit_dump(&dir, with.pid);
    assert!(
        probes(&d).iter().all(|p| p.1 == "on"),
        "{}",
        d.header()["go"]
    );
}

/// DW6: `_exit`, `_Exit`, abort and a SIGSEGV of a C program leave an exit dump with exactly
/// its outstanding blocks; a program with its own SIGSEGV handler behaves as without us.
#[test]
fn c_programs_ending_without_exit_still_dump() {
    let tmp = TempDir::new("probes-c-exits");
    let exe = cc(
        tmp.path(),
        "exit_paths",
        &[c_example("exit_paths.c")],
        &["-O2", "-g"],
    );
    for (mode, path) in [
        ("_exit", "_exit"),
        ("_Exit", "_exit"),
        ("abort", "signal"),
        ("segv", "signal"),
        ("handler", "_exit"),
    ] {
        let dir = tmp.subdir(&format!("dumps-{mode}"));
        let without = run(Cmd::new(&exe).arg(mode));
        let with = run(Cmd::new(&exe).arg(mode).offheap(&dir));
        assert_eq!(
            (without.status.code(), without.status.signal()),
            (with.status.code(), with.status.signal()),
            "{mode}: how it ended"
        );
        assert_eq!(
            without.stderr_str(),
            with.stderr_str(),
            "{mode}: what it printed"
        );
        // The program's own truth: three sites, 311,110 bytes in 5 blocks.
        let truth: (u64, u64) = with
            .stderr_str()
            .lines()
            .filter_map(|l| l.strip_prefix("exit_paths: truth "))
            .filter_map(|j| serde_json::from_str::<Value>(j).ok())
            .fold((0, 0), |(b, c), v| {
                (
                    b + v["bytes"].as_u64().unwrap_or(0),
                    c + v["count"].as_u64().unwrap_or(0),
                )
            });
        assert_eq!(truth, (311_110, 5));
        let d = exit_dump(&dir, with.pid);
        assert_eq!(d.header()["exit"]["path"], path, "{mode}");
        assert_eq!(d.totals("malloc"), truth, "{mode}: outstanding blocks");
    }
}
