//! examples/c/stress.c under liboffheap, 100 times (issue 2 "Done when 4").
//!
//! Each run: 3 rounds of 8 worker threads (created and joined per round)
//! doing random malloc/calloc/realloc/posix_memalign/free/mmap/partial
//! munmap/mremap, 6 fork+exec of /bin/true from worker threads, dlopen/
//! dlclose of an allocating plugin. Every run must exit 0 within its
//! timeout (a hang is killed and fails), write its exit dump, and show
//! exactly the known leftover: 2 × 54321 malloc bytes, 1 mapping of 7 pages,
//! plus glibc's own blocks that any exit leaves (counted from valgrind
//! `--run-libc-freeres=no` on the same binary and identified by stack). Each exec'd /bin/true is tracked as its own process and
//! writes its own exit dump.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use offheap_tests::*;

const RUNS: usize = 100;
const LEFT_MALLOC: (u64, u64) = (2 * 54321, 2);
const LEFT_MMAP_PAGES: u64 = 7;
/// 3 rounds × 2 workers that spawn /bin/true (see stress.c).
const EXECS_PER_RUN: usize = 6;

#[test]
fn stress_100_runs_exact_totals() {
    let tmp = TempDir::new("stress");
    let (stress, plugin) = build_stress(tmp.path());
    let page = page_size();

    // The exact heap figure, from valgrind on the same binary and arguments:
    // with freeres it is the stated leftover; without, glibc's own blocks
    // left at exit (DTVs of cached thread stacks, dlopen's _dl_find_object
    // segments) are added, and those are what a real exit leaves too.
    let args = [plugin.to_str().unwrap(), "3000", "3", "1"];
    assert_eq!(
        valgrind_in_use(&stress, &args),
        LEFT_MALLOC,
        "valgrind in use at exit (freeres)"
    );
    let vg = memcheck_buckets(&memcheck(&stress, &args, false));
    assert_eq!(
        vg.get(""),
        Some(&LEFT_MALLOC),
        "valgrind (no freeres): the program's own blocks"
    );
    let expected = expected_under_offheap(&vg);
    let expected_malloc = bucket_total(&expected);
    eprintln!("[stress] expected malloc buckets {expected:?}");

    let started = Instant::now();
    for run_no in 0..RUNS {
        let dir = tmp.subdir(&format!("run{run_no}"));
        let seed = (run_no + 1).to_string();
        let cmd = Cmd::new(&stress)
            .arg(&plugin)
            .args(["3000", "3", seed.as_str()])
            .offheap(&dir)
            .env("OFFHEAP_INTERVAL", "0")
            .timeout(Duration::from_secs(30));
        let what = format!("stress run {run_no} ({})", cmd.describe());
        let out = run(cmd);
        out.assert_success(&what);
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{what}: unexpected output:\n{}{}",
            out.stdout_str(),
            out.stderr_str()
        );

        let dump = exit_dump(&dir, out.pid);
        assert_eq!(
            dump.totals("malloc"),
            expected_malloc,
            "{what}: totals.malloc (bytes, count) vs valgrind's {vg:?} (DTVs adjusted)"
        );
        assert_eq!(
            dump.totals("mmap"),
            (LEFT_MMAP_PAGES * page, 1),
            "{what}: totals.mmap (bytes, count)"
        );
        assert_eq!(
            dump.totals("mmap_reserved"),
            (0, 0),
            "{what}: totals.mmap_reserved"
        );
        assert_eq!(dump.totals("mmap_file"), (0, 0), "{what}: totals.mmap_file");

        // The exec'd children: one exit dump each, of /bin/true (coreutils' true).
        let others: BTreeSet<u32> = read_dumps(&dir)
            .into_iter()
            .filter(|d| d.pid != out.pid)
            .map(|d| d.pid)
            .collect();
        assert_eq!(
            others.len(),
            EXECS_PER_RUN,
            "{what}: processes other than the parent that wrote dumps"
        );
        for pid in others {
            let d = exit_dump(&dir, pid);
            let exe = d.header()["exe"].as_str().unwrap_or("");
            assert!(
                exe.ends_with("/true"),
                "{what}: child dump {} has exe {exe:?}",
                d.path.display()
            );
            assert_eq!(
                d.header()["ppid"].as_u64(),
                Some(out.pid as u64),
                "{what}: child's ppid"
            );
        }
        if run_no == RUNS - 1 {
            // Once, by stack: the leftover site and glibc's blocks, exactly.
            let report = report_json(&[dump.path.as_path()]);
            assert_eq!(
                report_buckets(&report),
                expected,
                "{what}: malloc by owner\n{}",
                describe_report(&report)
            );
            let left: Vec<_> = report_stacks(&report)
                .iter()
                .filter(|s| {
                    frame_index(s, "stress_leftover_malloc").is_some()
                        || frame_index(s, "stress_leftover_mmap").is_some()
                })
                .collect();
            let sum = |kind: &str| {
                left.iter()
                    .filter(|s| s["kind"] == kind)
                    .fold((0, 0), |(b, c), s| {
                        (
                            b + s["bytes"].as_u64().unwrap(),
                            c + s["count"].as_u64().unwrap(),
                        )
                    })
            };
            assert_eq!(sum("malloc"), LEFT_MALLOC, "{what}: stress_leftover_malloc");
            assert_eq!(
                sum("mmap"),
                (LEFT_MMAP_PAGES * page, 1),
                "{what}: stress_leftover_mmap"
            );
        }
        // Keep disk use flat across 100 runs.
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!("[stress] {RUNS} runs in {:?}", started.elapsed());
}
