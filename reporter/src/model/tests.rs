//! The model over the recorded leakyservice series and over synthetic series built in code.
//!
//! Two kinds of expected values appear below, and each is labelled:
//! - **truth**: what the program does, from its own `truth` line (testdata/leakyservice/
//!   truth.txt): 50 requests/s × 1000 bytes leaked in main.handleRequest, 10 calls/s × 512
//!   bytes leaked in leaky_c_helper, a 400 × 2048 byte C cache, one 64 KiB syscall.Mmap per
//!   second. Rates are checked against these within a tolerance.
//! - **regression**: a value copied from the tool's output on the recorded series (dump
//!   counts, exact byte totals, stack ids). It guards against unnoticed changes, not for
//!   correctness; when the recording is regenerated these change and must be re-copied.
//!
//! The recorded binary ran as /tmp/ls-stripped/leakyservice; a copy of it (built with
//! `-ldflags=-s -w`, so symbols come from `.gopclntab`) sits next to the dumps and is found
//! by build id through the binary search path, as `--binary` would.

use super::build::{finish, BuildInputs};
use super::fold::Accumulator;
use super::*;
use crate::read::{self, Cut, Diagnostics, DumpSink, StackStore};
use crate::symbolize::{BinarySearch, Symbolizer};
use crate::verdict::policy::FailOn;
use crate::verdict::Verdict;
use offheap_format::schema::Dump;

pub fn recorded() -> ProcessModel {
    let dir = dir_of_recording();
    let mut diag = Diagnostics::default();
    let series = read::discover(&[dir], &mut diag).unwrap();
    let mut acc = Accumulator::new();
    let store = read::read_series(&series[0], Cut::Last, &mut acc, &mut diag, &|_, _| {}).unwrap();
    let search = BinarySearch {
        paths: vec![dir_of_recording()],
    };
    let mut sym = Symbolizer::new(&store.modules, &search);
    let exe = "/tmp/ls-stripped/leakyservice";
    let exe_facts = crate::cmd::report::exe_facts(None, exe, &mut sym);
    finish(
        acc.finish(),
        BuildInputs {
            store: &store,
            sym: &mut sym,
            suppressions: &Default::default(),
            thresholds: Default::default(),
            exe_facts,
        },
    )
}

fn dir_of_recording() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/leakyservice")
}

/// The malloc series whose blocks are `size` bytes.
fn by_block(m: &ProcessModel, size: f64) -> &Series {
    m.series
        .iter()
        .find(|s| {
            s.kind == Kind::Malloc && s.last_count > 0.0 && s.last_bytes / s.last_count == size
        })
        .unwrap_or_else(|| panic!("no malloc series of {size}-byte blocks"))
}

#[test]
fn recorded_leakyservice_series() {
    let m = recorded();
    // regression: 13 dumps (seq 0..12) at 2 s, 1,968 live malloc blocks at the last one.
    assert_eq!(m.dumps(), 13);
    assert_eq!(m.last.totals.malloc.count, 1968);
    let leak = by_block(&m, 1000.0);
    assert_eq!(leak.class.verdict, Verdict::Leak);
    // truth: 50 requests/s × 1000 bytes.
    assert!(
        (leak.class.rate - 50_000.0).abs() < 0.1 * 50_000.0,
        "{}",
        leak.class.rate
    );
    // regression: 1,303 strings live at the last dump (26.1 s of requests).
    assert_eq!(leak.last_bytes, 1_303_000.0);
    let helper = by_block(&m, 512.0);
    assert_eq!(helper.class.verdict, Verdict::Leak);
    // truth: 10 calls/s × 512 bytes.
    assert!(
        (helper.class.rate - 5120.0).abs() < 0.1 * 5120.0,
        "{}",
        helper.class.rate
    );
    let cache = by_block(&m, 2048.0);
    assert_eq!(cache.class.verdict, Verdict::Bounded);
    // truth: the cache holds 400 entries of 2048 bytes once full.
    assert_eq!(cache.last_bytes, 819_200.0);
    // truth: one 64 KiB mapping per second by raw syscall.
    assert!(
        (m.untracked_rate - 65_536.0).abs() < 0.1 * 65_536.0,
        "{}",
        m.untracked_rate
    );
    // The series is dense over the dumps and zero before a stack existed.
    assert_eq!(leak.bytes.dense(m.dumps()).len(), 13);
    // truth: the two leaks, charged to the functions the program names, nothing else.
    let suspects = groups::suspects(&m);
    let names: Vec<(&str, Option<&str>)> = suspects
        .iter()
        .map(|g| (g.name.as_str(), g.via()))
        .collect();
    assert_eq!(
        names,
        [
            ("main.handleRequest", Some("C.CString")),
            ("main.callCHelper", Some("C.leaky_c_helper"))
        ]
    );
    // truth: the main module of examples/go (.go.buildinfo), and Go's arenas are the runtime's.
    assert_eq!(
        m.exe_facts.go.as_ref().map(|g| g.main_module.as_str()),
        Some("offheap.example/examples")
    );
    assert!(m.go_runtime_totals().bytes > 10_000_000.0);
}

/// A store with stacks 2.. of one frame each.
fn store(ids: &[u64]) -> StackStore {
    let mut s = StackStore::default();
    for &id in ids {
        s.stacks.insert(
            id,
            read::stackstore::StackRec {
                end: offheap_format::End::Complete,
                frames: vec![0x1000 + id].into(),
            },
        );
    }
    s
}

/// One row of a synthetic dump.
#[derive(Clone, Copy)]
struct Row {
    stack: u64,
    bytes: u64,
    count: u64,
    oldest_ms: u64,
    /// Generation the live bytes were born in (one by_generation row).
    born: u64,
    allocs: u64,
    frees: u64,
}

fn row(stack: u64, bytes: u64, born: u64) -> Row {
    Row {
        stack,
        bytes,
        count: (bytes / 100).max(1),
        oldest_ms: born * 1000,
        born,
        allocs: bytes / 100,
        frees: 0,
    }
}

/// A version-2 dump built in code and parsed by the real reader.
fn synth(seq: u64, epoch: u64, rows: &[Row], sample: u64) -> Dump {
    synth_json(seq, epoch, rows, sample, |_| {})
}

/// [`synth`] at epoch 0 without sampling, its JSON changed by `edit` before it is parsed.
fn synth_with(seq: u64, rows: &[Row], edit: impl FnOnce(&mut serde_json::Value)) -> Dump {
    synth_json(seq, 0, rows, 0, edit)
}

fn synth_json(
    seq: u64,
    epoch: u64,
    rows: &[Row],
    sample: u64,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Dump {
    let col = |f: &dyn Fn(&Row) -> serde_json::Value| -> Vec<serde_json::Value> {
        rows.iter().map(f).collect()
    };
    let mut deltas = Vec::new();
    let mut prev = 0;
    for r in rows {
        deltas.push(r.stack - prev);
        prev = r.stack;
    }
    let mut outstanding = serde_json::json!({
        "stack": deltas, "kind": col(&|_| "malloc".into()), "via": col(&|_| "libc".into()),
        "count": col(&|r| r.count.into()), "bytes": col(&|r| r.bytes.into()),
        "oldest_ms": col(&|r| r.oldest_ms.into()), "newest_ms": col(&|_| (seq * 1000).into()),
        "age_hist": col(&|_| serde_json::json!([0, 0, 0, 0, 0, 0])),
        "by_generation": col(&|r| serde_json::json!([[r.born, r.count, r.bytes]])),
        "by_epoch": col(&|_| serde_json::json!([])),
    });
    if sample > 0 {
        outstanding["est_bytes"] = col(&|r| (r.bytes as f64 * 10.0).into()).into();
        outstanding["est_count"] = col(&|r| (r.count as f64 * 10.0).into()).into();
    }
    let mut v = serde_json::json!({
        "format": "offheap-dump", "version": 2,
        "header": {"pid": 7, "seq": seq, "generation": seq, "uptime_ms": seq * 1000,
                   "trigger": "interval", "epoch": epoch, "stack_ids_below": 100,
                   "config": {"sample_bytes": sample, "interval_s": 1.0}},
        "outstanding": outstanding,
        "cumulative": {"stack": deltas, "allocs": col(&|r| r.allocs.into()),
                       "frees": col(&|r| r.frees.into()),
                       "alloc_bytes": col(&|r| (r.allocs * 100).into()),
                       "free_bytes": col(&|r| (r.frees * 100).into())},
    });
    edit(&mut v);
    let text = v.to_string();
    offheap_format::read::dump(|| Ok(std::io::Cursor::new(text.as_bytes()))).unwrap()
}

fn model_with(dumps: Vec<Dump>, thresholds: crate::verdict::Thresholds) -> ProcessModel {
    model_built(dumps, thresholds).0
}

/// The model, and the ledgers it was built from (to rebuild its ledger after a change).
fn model_and_ledger(dumps: Vec<Dump>) -> (ProcessModel, super::ledger::LedgerAcc) {
    model_built(dumps, Default::default())
}

fn model_built(
    dumps: Vec<Dump>,
    thresholds: crate::verdict::Thresholds,
) -> (ProcessModel, super::ledger::LedgerAcc) {
    let mut ids: Vec<u64> = dumps
        .iter()
        .flat_map(|d| {
            let creators = d.threads.by_stack.stack.0.iter();
            d.outstanding.stack.0.iter().chain(creators).copied()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let st = store(&ids);
    let mut acc = Accumulator::new();
    let n = dumps.len();
    for (i, d) in dumps.into_iter().enumerate() {
        acc.fold(d, i + 1 == n, &st);
    }
    let mut sym = Symbolizer::new(&[], &BinarySearch::default());
    let folded = acc.finish();
    let ledger = folded.ledger.clone();
    let m = finish(
        folded,
        BuildInputs {
            store: &st,
            sym: &mut sym,
            suppressions: &Default::default(),
            thresholds,
            exe_facts: Default::default(),
        },
    );
    (m, ledger)
}

fn model_of(dumps: Vec<Dump>) -> ProcessModel {
    model_with(dumps, Default::default())
}

fn verdict_of(m: &ProcessModel, stack: u64) -> Verdict {
    m.series
        .iter()
        .find(|s| s.stack == stack)
        .unwrap()
        .class
        .verdict
}

#[test]
fn warm_up_growth_before_the_mark_is_not_a_leak() {
    // Grows during warm-up (epoch 0, seq 0..5), flat after `offheap mark` (epoch 1).
    let level = |s: u64| if s < 6 { 1000 * s } else { 5000 };
    let dumps = (0..12)
        .map(|s| synth(s, u64::from(s >= 6), &[row(2, level(s), 1)], 0))
        .collect();
    let m = model_of(dumps);
    assert_eq!(m.window_start, 6);
    assert_eq!(verdict_of(&m, 2), Verdict::Startup);
}

#[test]
fn survivors_decide_leak_versus_growing() {
    let leak = (0..10)
        .map(|s| synth(s, 0, &[row(2, 1000 * (s + 1), 0)], 0))
        .collect();
    assert_eq!(verdict_of(&model_of(leak), 2), Verdict::Leak);
    // Same totals, but only allocations born in the last generation are alive.
    let churn = (0..10)
        .map(|s| {
            let mut r = row(2, 1000 * (s + 1), s.saturating_sub(1));
            r.frees = r.allocs;
            synth(s, 0, &[r], 0)
        })
        .collect();
    assert_eq!(verdict_of(&model_of(churn), 2), Verdict::Growing);
}

#[test]
fn a_leak_that_stops_a_recurring_burst_and_an_lru() {
    let dumps = (0..20)
        .map(|s| {
            // Stack 2: leaks 1000 B/s for 8 s, then the traffic stops; nothing is freed.
            let mut leak = row(2, 1000 * s.min(8) + 100, 0);
            leak.allocs = 10 * s.min(8) + 1;
            // Stack 3: 50 KB for one second out of every four, freed each time.
            let on = s % 4 == 1;
            let burst = Row {
                stack: 3,
                bytes: if on { 50_000 } else { 0 },
                count: if on { 50 } else { 0 },
                oldest_ms: s * 1000,
                born: s,
                allocs: 50 * (s / 4 + 1),
                frees: 50 * (s / 4),
            };
            // Stack 4: an LRU of 40 KB filled in 4 s, evicting ever since.
            let mut lru = row(4, 10_000 * s.min(4) + 100, s.saturating_sub(4));
            lru.allocs = 100 * s + 1;
            lru.frees = 100 * s.saturating_sub(4);
            let rows: Vec<Row> = [leak, burst, lru]
                .into_iter()
                .filter(|r| r.count > 0)
                .collect();
            synth(s, 0, &rows, 0)
        })
        .collect();
    let m = model_of(dumps);
    assert_eq!(verdict_of(&m, 2), Verdict::Leak);
    assert_eq!(verdict_of(&m, 3), Verdict::Transient);
    assert_eq!(verdict_of(&m, 4), Verdict::Bounded);
}

#[test]
fn a_filling_cache_over_two_dumps_is_insufficient_and_does_not_trip_fail_on() {
    let dumps = (0..2)
        .map(|s| synth(s, 0, &[row(2, 100_000 * (s + 1), 0)], 0))
        .collect();
    let m = model_of(dumps);
    assert_eq!(verdict_of(&m, 2), Verdict::Insufficient);
    let f = crate::cmd::report::evaluate(&m, FailOn::Leak, None);
    assert!(f.reasons.is_empty(), "{:?}", f.reasons);
    assert!(
        f.not_counted[0].contains("insufficient") && f.not_counted[0].contains("--min-dumps"),
        "{:?}",
        f.not_counted
    );
    // Asked for, it counts: by confidence, or by judging from two dumps.
    let f = crate::cmd::report::evaluate(&m, FailOn::Leak, Some(0.0));
    assert_eq!(f.reasons.len(), 1);
    let dumps = (0..2)
        .map(|s| synth(s, 0, &[row(2, 100_000 * (s + 1), 0)], 0))
        .collect();
    let two = crate::verdict::Thresholds {
        min_dumps: 2,
        ..Default::default()
    };
    assert_eq!(verdict_of(&model_with(dumps, two), 2), Verdict::Leak);
}

#[test]
fn sampled_dumps_use_estimates() {
    let dumps = (0..5)
        .map(|s| synth(s, 0, &[row(2, 100 * (s + 1), 0)], 4096))
        .collect();
    let m = model_of(dumps);
    assert!(m.sampled());
    assert_eq!(m.series[0].last_bytes, 5000.0);
    assert!((m.series[0].class.rate - 1000.0).abs() < 1e-6);
}

#[test]
fn a_sampled_leak_read_from_a_handful_of_samples_is_insufficient() {
    // One more sampled block every two dumps, all surviving: the shape of a leak, but from
    // at most 4 samples (row() makes one block per 100 bytes).
    let few = (0..8)
        .map(|s| synth(s, 0, &[row(2, 100 * (s / 2 + 1), 0)], 524_288))
        .collect();
    let m = model_of(few);
    assert_eq!(verdict_of(&m, 2), Verdict::Insufficient);
    assert_eq!(m.series[0].class.reason, crate::verdict::TOO_FEW_SAMPLES);
    // Ten times the samples: the same shape is a leak.
    let many = (0..8)
        .map(|s| synth(s, 0, &[row(2, 1000 * (s / 2 + 1), 0)], 524_288))
        .collect();
    assert_eq!(verdict_of(&model_of(many), 2), Verdict::Leak);
}

#[test]
fn single_dump_still_reports_bytes_and_absent_series_drop_to_zero() {
    let m = model_of(vec![synth(0, 0, &[row(2, 4096, 0)], 0)]);
    assert_eq!(verdict_of(&m, 2), Verdict::SingleDump);
    assert_eq!(m.series[0].last_bytes, 4096.0);
    // Stack 3 lives in dumps 1 and 2 only.
    let dumps = (0..5)
        .map(|s| {
            let mut rows = vec![row(2, 500, 0)];
            if (1..3).contains(&s) {
                rows.push(row(3, 700, 1));
            }
            synth(s, 0, &rows, 0)
        })
        .collect();
    let m = model_of(dumps);
    let s3 = m.series.iter().find(|s| s.stack == 3).unwrap();
    assert_eq!(s3.bytes.dense(5), vec![0.0, 700.0, 700.0, 0.0, 0.0]);
    assert_eq!(s3.last_bytes, 0.0);
    assert!(s3.last.is_none());
}

/// Dumps with ledger and threads sections, built in code. Every expected value below is a
/// **truth** of the construction (the series are exact lines, so Theil–Sen gives their
/// slopes exactly):
/// - stack 2: a malloc leak of 1000 B per second;
/// - stack 3: a mapping whose resident pages grow 4096 B/s (made the Go runtime's below);
/// - stack 4: a mapping of two resident pages;
/// - the ledger: malloc_retained grows 1 MiB/s in one thread arena, untracked 100,000 B/s,
///   everything else is constant;
/// - threads: stack 5 starts one thread per second that never ends, stack 6 ten a second
///   that are all joined.
fn ledger_dump(s: u64) -> Dump {
    let mib = 1u64 << 20;
    let cats = serde_json::json!({
        "malloc_live": 1000 * s, "malloc_retained": mib * s, "mmap": 4096 * s + 8192,
        "file": 5 * mib, "thread_stacks": 65536, "untracked": 4096 + 100_000 * s,
        "offheap_self": 100_000, "other": 0,
    });
    let rss: u64 = cats
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let arena = |start: u64, retained: u64| {
        serde_json::json!({"kind": "thread", "start": start, "end": start + 64 * mib,
            "resident_bytes": retained + 1000 * s, "live_bytes": 1000 * s,
            "retained_bytes": retained})
    };
    let extra = serde_json::json!({
        "ledger": {"rss_bytes": rss, "categories": cats, "remainder_bytes": 0,
                   "arenas": [arena(64 * mib, mib * s), arena(128 * mib, 0)],
                   "thread_stacks": {"count": s + 1, "resident_bytes": 65536}},
        "threads": {"live": s + 1, "created": 11 * s,
                    "by_stack": {"stack": [5, 1], "live": [s, 0], "created": [s, 10 * s],
                                 "oldest_ms": [1000, 0]}},
    });
    let mut r3 = row(3, 4096 * s + 4096, 0);
    let mut r4 = row(4, 8192, 0);
    r3.count = 1;
    r4.count = 1;
    let mut rows = vec![row(2, 1000 * s + 1000, 0), r3, r4];
    let mut kinds = vec!["malloc", "mmap", "mmap"];
    let mut resident = vec![0, 4096 * s, 8192];
    // Stack 7: a 2 MiB burst live in dumps 3 to 5 only, then freed (a transient).
    if (3..=5).contains(&s) {
        rows.push(row(7, 2 * mib, 3));
        kinds.push("malloc");
        resident.push(0);
    }
    synth_with(s, &rows, |v| {
        v["outstanding"]["kind"] = serde_json::json!(kinds);
        v["outstanding"]["resident"] = serde_json::json!(resident);
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
    })
}

/// The model of [`ledger_dump`]s 0..10, stack 3 made the Go runtime's (its frames would say
/// so; the synthetic stacks have none).
/// The model of [`ledger_dump`] 3 alone (one dump: no rates).
pub fn ledger_model_one_dump() -> ProcessModel {
    let (mut m, acc) = model_and_ledger(vec![ledger_dump(3)]);
    m.ledger = super::ledger::build(&m, &acc);
    m
}

pub fn ledger_model() -> ProcessModel {
    let dumps: Vec<Dump> = (0..10).map(ledger_dump).collect();
    let (mut m, acc) = model_and_ledger(dumps);
    m.stacks.get_mut(&3).unwrap().origin = super::origin::Origin::GoRuntime;
    m.ledger = super::ledger::build(&m, &acc);
    m
}

#[test]
fn the_ledger_splits_the_go_runtime_off_and_explains_the_rss_growth() {
    let m = ledger_model();
    let l = m.ledger.as_ref().expect("a ledger");
    use super::ledger::Category as C;
    let (mib, rate) = (1u64 << 20, |c| l.category(c).rate);
    assert_eq!(l.category(C::GoRuntime).bytes, 4096 * 9);
    assert_eq!(l.category(C::Mmap).bytes, 8192);
    assert_eq!(l.category(C::MallocRetained).bytes, 9 * mib);
    assert!((rate(C::MallocRetained) - mib as f64).abs() < 1e-6);
    assert!((rate(C::GoRuntime) - 4096.0).abs() < 1e-6);
    assert!(rate(C::Mmap).abs() < 1e-6);
    let rss_rate = 1000.0 + mib as f64 + 4096.0 + 100_000.0;
    assert!((l.rss_rate - rss_rate).abs() < 1e-6, "{}", l.rss_rate);
    // Explained: all but the untracked growth.
    let want = (rss_rate - 100_000.0) / rss_rate;
    assert!(
        (l.explained.unwrap() - want).abs() < 1e-9,
        "{:?}",
        l.explained
    );
    // Retention is the cause; untracked (9 % of the growth) is not.
    assert_eq!(l.causes, vec![C::MallocRetained]);
    let r = l.retained.as_ref().unwrap();
    assert_eq!((r.arenas, r.thread_arenas, r.retained), (2, 2, 9 * mib));
    assert_eq!(r.top[0].start, 64 * mib);
    assert!((r.top[0].retained_rate - mib as f64).abs() < 1e-6);
    // Threads: stack 5's never end (a leak), stack 6's are all joined.
    let t = &m.threads;
    assert!((t.live_rate - 1.0).abs() < 1e-9);
    let class = |id| t.creators.iter().find(|c| c.stack == id).unwrap().class;
    assert_eq!(class(5).verdict, Verdict::Leak, "{}", class(5).reason);
    assert!((class(5).rate - 1.0).abs() < 1e-9);
    assert!(!class(6).verdict.is_suspect());
    let g = super::threads::groups(&m);
    assert!(g[0].suspect && g[0].live == 9 && g[0].created == 9);
    let f = crate::cmd::report::evaluate(&m, FailOn::Leak, None);
    assert!(
        f.reasons.iter().any(|r| r.contains("(threads)")),
        "{:?}",
        f.reasons
    );
}

#[test]
fn flat_rss_is_not_explained_and_names_no_cause() {
    let dumps: Vec<Dump> = (0..10).map(|_| ledger_dump(3)).collect();
    let dumps = dumps
        .into_iter()
        .enumerate()
        .map(|(i, mut d)| {
            d.header.seq = i as u64;
            d.header.generation = i as u64;
            d.header.uptime_ms = i as u64 * 1000;
            d
        })
        .collect();
    let m = model_of(dumps);
    let l = m.ledger.as_ref().unwrap();
    assert_eq!(l.explained, None);
    assert!(l.causes.is_empty());
    // Its retained memory is over a quarter of RSS: stated for its size, not as growth.
    let r = l.retained.as_ref().expect("a large retention is stated");
    assert!(!r.growing && r.rss_share > 0.25, "{r:?}");
}
