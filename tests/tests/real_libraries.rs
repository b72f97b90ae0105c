//! Issue 13 DW1: cgo services on real C libraries from the Go module proxy, each with one
//! known leak and a correct path beside it (examples/go-real): row 1 of the suspects names the
//! user's `main.*` function (not the binding), its rate is within 15 % of the program's own
//! truth, and the correct path is not a suspect.
//!
//! - zstdsvc (github.com/DataDog/zstd, zstd's C sources built into the binary): a Writer never
//!   Closed in `main.compressForArchive` leaks its C compression context; `main.compressReply`
//!   closes its writers.
//! - rocksdbsvc (github.com/linxGnu/grocksdb over Debian's librocksdb): a Slice never Freed in
//!   `main.lookupSession`; `main.lookupUser` frees its slices.
//!
//! The truth is what each program prints on stderr ("<name>: truth {json}" at start, "done
//! {json}" at the end: calls made and bytes leaked, measured by the program itself).
//! examples/go-real/build.sh builds them (installing librocksdb-dev if missing) and keeps a
//! binary newer than its sources, so only the first run pays the C builds.

use std::path::PathBuf;
use std::time::Duration;

use offheap_tests::*;
use serde_json::Value;

fn build_services() -> PathBuf {
    let out = workspace_root().join("target/go-real");
    let res = run(Cmd::new(workspace_root().join("examples/go-real/build.sh"))
        .arg(&out)
        .env("GOTOOLCHAIN", "local")
        .timeout(Duration::from_secs(900)));
    res.assert_success("examples/go-real/build.sh");
    out
}

/// The JSON a service printed after `<name>: <tag> ` on stderr.
fn printed(stderr: &str, name: &str, tag: &str) -> Value {
    let prefix = format!("{name}: {tag} ");
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} printed no '{tag}' line:\n{stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{name} {tag}: {e}: {line}"))
}

struct Case {
    name: &'static str,
    leak: &'static str,
    correct: &'static str,
    /// The leak's true rate in B/s, from the program's own figures.
    truth: fn(&Value, &Value) -> f64,
}

fn zstd_truth(truth: &Value, done: &Value) -> f64 {
    // Each leaked writer holds `leaked_bytes_per_writer` of C memory (mallinfo2 around one
    // writer's life, measured by the program before the load starts).
    truth["leaked_bytes_per_writer"].as_f64().unwrap()
        * done["compressForArchive_per_s"].as_f64().unwrap()
}

fn rocksdb_truth(truth: &Value, done: &Value) -> f64 {
    // Each leaked slice holds one stored value.
    truth["value_bytes"].as_f64().unwrap() * done["lookupSession_per_s"].as_f64().unwrap()
}

fn hunt(bin: &std::path::Path, case: &Case, tmp: &TempDir) {
    let dir = tmp.subdir(case.name);
    let out = run(Cmd::new(offheap_bin())
        .args(["run", "--interval", "1", "--format", "json", "--dir"])
        .arg(&dir)
        .arg("--")
        .arg(bin.join(case.name))
        .args(["-duration", "12s"])
        .timeout(Duration::from_secs(120)));
    out.assert_success(case.name);
    let truth = printed(&out.stderr_str(), case.name, "truth");
    let done = printed(&out.stderr_str(), case.name, "done");
    let want = (case.truth)(&truth, &done);
    let report: Value = serde_json::from_str(&out.stdout_str())
        .unwrap_or_else(|e| panic!("{}: report is not JSON: {e}", case.name));
    let groups = report["suspects"]["groups"]
        .as_array()
        .expect("suspect groups");
    let first = groups
        .first()
        .unwrap_or_else(|| panic!("{}: no suspect", case.name));
    assert_eq!(
        first["function"], case.leak,
        "{}: row 1 is {first}",
        case.name
    );
    assert_eq!(first["verdict"], "leak", "{}: row 1 is {first}", case.name);
    let rate = first["growth_bytes_per_sec"].as_f64().unwrap_or(0.0);
    assert!(
        (rate - want).abs() <= want * 0.15,
        "{}: rate {rate:.0} B/s, the program's truth {want:.0} B/s",
        case.name
    );
    assert!(
        groups.iter().all(|g| g["function"] != case.correct),
        "{}: the correct path {} is a suspect: {groups:?}",
        case.name,
        case.correct
    );
    eprintln!(
        "[real_libraries] {}: {} at {rate:.0} B/s (truth {want:.0})",
        case.name, case.leak
    );
}

#[test]
fn row_one_names_the_users_function_on_zstd_and_rocksdb() {
    assert!(
        GoToolchain::Machine.require(),
        "the machine's go is required"
    );
    let bin = build_services();
    let tmp = TempDir::new("real-libraries");
    let cases = [
        Case {
            name: "zstdsvc",
            leak: "main.compressForArchive",
            correct: "main.compressReply",
            truth: zstd_truth,
        },
        Case {
            name: "rocksdbsvc",
            leak: "main.lookupSession",
            correct: "main.lookupUser",
            truth: rocksdb_truth,
        },
    ];
    // Side by side: each is paced against the clock, far below what two cores can do.
    std::thread::scope(|s| {
        for case in &cases {
            let (bin, tmp) = (&bin, &tmp);
            s.spawn(move || hunt(bin, case, tmp));
        }
    });
}
