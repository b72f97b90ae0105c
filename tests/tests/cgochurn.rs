//! examples/go/cgochurn with the machine's Go (issue 2 "Done when 3", issue 3
//! "Done when 2").
//!
//! 100 goroutines calling C.malloc/C.free and C.CString with Go heap churn
//! for 10 s must print the same (deterministic) output with the same exit
//! status with and without the library, and the Go runtime's own mappings
//! (heap arenas reserved PROT_NONE, then committed with MAP_FIXED, through
//! libc's mmap since cgo is linked) must be in the table. In the report these
//! mappings are labelled `go-runtime` and carry runtime frames.
//!
//! Go leaves through exit_group (no exit dump): the library dumps every
//! second (OFFHEAP_INTERVAL=1) and the last periodic dump is examined.

use std::sync::OnceLock;
use std::time::Duration;

use offheap_tests::*;

struct ChurnRun {
    dir: std::path::PathBuf,
    without: Outcome,
    with: Outcome,
}

/// One 10 s run with and one without the library, concurrently (the output
/// does not depend on timing), shared by the tests of this file.
fn churn() -> &'static Result<ChurnRun, String> {
    static RUN: OnceLock<Result<ChurnRun, String>> = OnceLock::new();
    RUN.get_or_init(|| {
        std::panic::catch_unwind(|| {
            let scratch = scratch_dir("cgochurn");
            assert!(
                GoToolchain::Machine.require(),
                "the machine's go is required"
            );
            let exe = go_build(GoToolchain::Machine, "cgochurn", &scratch, "cgochurn", &[]);
            let dir = scratch.join("dumps");
            std::fs::create_dir_all(&dir).unwrap();
            let plain = Running::start(
                &Cmd::new(&exe)
                    .args(["-duration", "10s"])
                    .timeout(Duration::from_secs(120)),
                false,
            );
            let traced = Running::start(
                &Cmd::new(&exe)
                    .args(["-duration", "10s"])
                    .offheap(&dir)
                    .env("OFFHEAP_INTERVAL", "1")
                    .env("OFFHEAP_KEEP", "1000")
                    .timeout(Duration::from_secs(120)),
                false,
            );
            let without = plain.wait();
            let with = traced.wait();
            ChurnRun { dir, without, with }
        })
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "cgochurn run panicked".into())
        })
    })
}

fn get() -> &'static ChurnRun {
    match churn() {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn cgochurn_identical_output_and_runtime_mmaps_tracked() {
    let r = get();
    r.without.assert_success("cgochurn without liboffheap");
    assert!(
        r.without
            .stdout_str()
            .starts_with("cgochurn: goroutines=100 mismatches=0 checksum="),
        "unexpected cgochurn output: {}",
        r.without.stdout_str()
    );
    assert_same_behaviour("cgochurn", &r.without, &r.with);

    let dump = last_dump(&r.dir, r.with.pid);
    let mmap_entries: Vec<_> = dump
        .outstanding()
        .iter()
        .filter(|o| o["kind"] == "mmap" && o["bytes"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert!(
        !mmap_entries.is_empty(),
        "{}: no committed anonymous mmap in the outstanding table (Go heap arenas must be tracked)",
        dump.path.display()
    );
    let reserved = dump.totals("mmap_reserved");
    assert!(
        reserved.0 > 0,
        "{}: no PROT_NONE reservation tracked (Go reserves its arenas): totals {}",
        dump.path.display(),
        dump.json["totals"]
    );
    assert!(dump.totals("mmap").0 > 0, "totals.mmap is zero");
}

/// Runtime functions that make the Go heap's mappings, on every version we cover.
const RUNTIME_MMAP_FUNCS: &[&str] = &[
    "runtime.sysReserve",
    "runtime.sysReserveOS",
    "runtime.sysAlloc",
    "runtime.sysAllocOS",
    "runtime.sysMap",
    "runtime.sysMapOS",
    "runtime.(*mheap).grow",
    "runtime.(*mheap).sysAlloc",
];

#[test]
fn go_runtime_mmaps_are_labelled_go_runtime_with_runtime_frames() {
    let r = get();
    let dump = last_dump(&r.dir, r.with.pid);
    let report = report_json(&[dump.path.as_path()]);
    let is_runtime_mmap = |s: &serde_json::Value| {
        let k = s["kind"].as_str().unwrap_or("");
        k.starts_with("mmap")
            && functions(s)
                .iter()
                .any(|f| RUNTIME_MMAP_FUNCS.contains(&f.as_str()))
    };
    let runtime: Vec<_> = report_stacks(&report)
        .iter()
        .filter(|s| is_runtime_mmap(s))
        .collect();
    assert!(
        !runtime.is_empty(),
        "no mmap stack with runtime frames ({RUNTIME_MMAP_FUNCS:?}) in the report of {}:\n{}",
        dump.path.display(),
        describe_report(&report)
    );
    for s in &runtime {
        assert_eq!(
            s["origin"],
            "go-runtime",
            "runtime heap mapping not labelled go-runtime:\n{}",
            describe_stack(s)
        );
    }
    // Heap arenas: at least one go-runtime stack of committed memory.
    assert!(
        runtime.iter().any(|s| s["kind"] == "mmap"),
        "no committed (kind mmap) go-runtime stack:\n{}",
        describe_report(&report)
    );
}
