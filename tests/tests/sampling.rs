//! Sampling mode (issue 6): with OFFHEAP_SAMPLE_BYTES=524288 the leak rate the report
//! estimates for examples/go/leakyservice is within ±25 % of full tracking's, and the report
//! says its figures are estimates.
//!
//! At 512 KiB between samples the default leak (50 KB/s) would give only a handful of samples
//! in a test-sized run, so the service leaks faster here: 2,000 requests/s × 4,000 bytes =
//! 8,000,000 B/s, about 15 samples a second. Both runs go side by side (2 cores, 20 s each).

use std::time::Duration;

use offheap_tests::*;

const TRUE_RATE: f64 = 2000.0 * 4000.0;

fn handler_rate(report: &serde_json::Value) -> f64 {
    report_stacks(report)
        .iter()
        .filter(|s| s["origin"] != "go-runtime" && frame_index(s, "main.handleRequest").is_some())
        .filter(|s| s["verdict"] == "leak")
        .map(|s| s["growth_bytes_per_sec"].as_f64().unwrap_or(0.0))
        .sum()
}

#[test]
fn sampled_leak_rate_is_within_25_percent_of_full_tracking() {
    assert!(
        GoToolchain::Machine.require(),
        "the machine's go is required"
    );
    let tmp = TempDir::new("sampling");
    let exe = go_build(
        GoToolchain::Machine,
        "leakyservice",
        tmp.path(),
        "leakyservice",
        &[],
    );
    let args = [
        "-duration",
        "20s",
        "-rate",
        "2000",
        "-leak-bytes",
        "4000",
        "-chelper-rate",
        "0",
        "-burst-count",
        "0",
    ];
    let full_dir = tmp.subdir("full");
    let sampled_dir = tmp.subdir("sampled");
    let full = Running::start(
        &Cmd::new(&exe)
            .args(args)
            .offheap(&full_dir)
            .env("OFFHEAP_INTERVAL", "2")
            .timeout(Duration::from_secs(120)),
        false,
    );
    let sampled = Running::start(
        &Cmd::new(&exe)
            .args(args)
            .offheap(&sampled_dir)
            .env("OFFHEAP_INTERVAL", "2")
            .env("OFFHEAP_SAMPLE_BYTES", "524288")
            .timeout(Duration::from_secs(120)),
        false,
    );
    let full = full.wait();
    full.assert_success("leakyservice, full tracking");
    let sampled = sampled.wait();
    sampled.assert_success("leakyservice, sampled");

    let full_dumps = dumps_of(&full_dir, full.pid);
    let sampled_dumps = dumps_of(&sampled_dir, sampled.pid);
    assert!(
        full_dumps.len() >= 8 && sampled_dumps.len() >= 8,
        "too few dumps"
    );
    assert_eq!(
        sampled_dumps[0].header()["config"]["sample_bytes"],
        524288,
        "the sampled run's dumps must say they are sampled"
    );
    // Sampled dumps carry the unbiased estimates next to the raw sampled counts.
    let last = sampled_dumps.last().unwrap();
    assert!(
        last.outstanding()
            .iter()
            .any(|o| o["est_bytes"].as_f64().is_some()),
        "sampled dump without est_bytes"
    );

    let paths = |d: &[Dump]| d.iter().map(|d| d.path.clone()).collect::<Vec<_>>();
    let full_paths = paths(&full_dumps);
    let sampled_paths = paths(&sampled_dumps);
    let full_report = report_json(&full_paths.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    let sampled_report = report_json(
        &sampled_paths
            .iter()
            .map(|p| p.as_path())
            .collect::<Vec<_>>(),
    );

    let full_rate = handler_rate(&full_report);
    let sampled_rate = handler_rate(&sampled_report);
    assert!(
        (full_rate - TRUE_RATE).abs() <= TRUE_RATE * 0.2,
        "full tracking rate {full_rate} B/s is not within 20% of the true {TRUE_RATE} B/s:\n{}",
        describe_report(&full_report)
    );
    assert!(
        (sampled_rate - full_rate).abs() <= full_rate * 0.25,
        "sampled rate {sampled_rate} B/s is not within 25% of full tracking's {full_rate} B/s:\n{}",
        describe_report(&sampled_report)
    );
    // The report tells the reader the figures are estimates.
    let text = run(Cmd::new(offheap_bin())
        .arg("report")
        .args(&sampled_paths)
        .timeout(Duration::from_secs(60)));
    text.assert_success("offheap report (text) on sampled dumps");
    assert!(
        text.stdout_str().to_lowercase().contains("estimate"),
        "the text report of a sampled run must say its figures are estimates:\n{}",
        text.stdout_str()
    );
    eprintln!(
        "[sampling] true {TRUE_RATE} B/s, full {full_rate:.0} B/s, sampled {sampled_rate:.0} B/s"
    );
}

/// Issue 14 DW4: 3,000,000 live blocks sampled with `OFFHEAP_SAMPLE_BYTES=16` (every block of
/// the program is at least 16 B, so nearly all are sampled: hundreds per slot of the library's
/// sampled-block filter), then all freed. Truth from the program: churn_block() keeps
/// nothing, keep_block() keeps 1000 blocks of 4096 B. A filter counter that wrapped or forgot
/// would leave some of the churned blocks outstanding (their frees skipped as "certainly
/// not sampled").
#[test]
fn millions_of_sampled_blocks_freed_leave_none_outstanding() {
    churn_and_check(None);
}

/// The same blocks made by four threads, each freeing another's while it makes and frees more
/// of its own: every group of the filter sees births and frees from two threads at once, and
/// every block made on one thread is freed on another.
#[test]
fn sampled_blocks_freed_by_other_threads_leave_none_outstanding() {
    churn_and_check(Some("cross"));
}

/// The same four threads at 64 KiB between samples, where the live table keeps one shard per
/// address group (interposer `lifecycle::ONE_SHARD_PER_GROUP_FROM`): thousands of sampled
/// blocks born on one thread and freed on another through one shard a group, none left over.
#[test]
fn sampled_blocks_in_one_shard_per_group_leave_none_outstanding() {
    churn_and_check_at(Some("cross"), "65536");
}

fn churn_and_check(mode: Option<&str>) {
    churn_and_check_at(mode, "16");
}

fn churn_and_check_at(mode: Option<&str>, sample_bytes: &str) {
    let tmp = TempDir::new("sampled-churn");
    let exe = cc(
        tmp.path(),
        "sampled_churn",
        &[test_program("sampled_churn.c")],
        &["-O2", "-g", "-fno-omit-frame-pointer", "-pthread"],
    );
    let dir = tmp.subdir("dumps");
    let out = run(Cmd::new(&exe)
        .args(mode)
        .offheap(&dir)
        .env("OFFHEAP_INTERVAL", "0")
        .env("OFFHEAP_SAMPLE_BYTES", sample_bytes)
        .timeout(Duration::from_secs(120)));
    out.assert_success("sampled_churn");
    assert_eq!(
        out.stdout_str(),
        "sampled_churn: live=3000000 freed=3000000 kept=1000\n"
    );
    let dump = exit_dump(&dir, out.pid);
    assert_eq!(
        dump.header()["config"]["sample_bytes"].to_string(),
        sample_bytes
    );
    let every_block = sample_bytes == "16";
    // The sampler really saw the churn: millions of sampled allocations, and every one of
    // them that is not outstanding now was freed (allocs - frees = live, stack by stack).
    let cumulative = dump.json["cumulative"].as_array().expect("cumulative rows");
    let allocs: u64 = cumulative
        .iter()
        .map(|r| r["allocs"].as_u64().unwrap_or(0))
        .sum();
    // At 16 B nearly every block is sampled; at 64 KiB about one in a few hundred of these
    // small blocks is, still thousands.
    let least = if every_block { 2_900_000 } else { 2_000 };
    assert!(allocs >= least, "only {allocs} allocations sampled");
    let outstanding = dump.outstanding();
    for r in cumulative {
        let live: u64 = outstanding
            .iter()
            .filter(|o| o["stack"] == r["stack"] && o["kind"] == "malloc")
            .map(|o| o["count"].as_u64().unwrap_or(0))
            .sum();
        let (a, f) = (
            r["allocs"].as_u64().unwrap_or(0),
            r["frees"].as_u64().unwrap_or(0),
        );
        assert_eq!(
            a - f,
            live,
            "stack {}: {a} allocs, {f} frees, {live} live",
            r["stack"]
        );
    }
    assert_eq!(attributed(&dir, out.pid, "churn_block"), (0, 0));
    if every_block {
        assert_eq!(attributed(&dir, out.pid, "keep_block"), (4_096_000, 1000));
    }
}
