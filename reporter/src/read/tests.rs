//! The reader on good, bad, mutated and hostile input: every failure must be a clean message
//! naming the file, never a panic (the release profile aborts on panic, so a panic would kill
//! the whole report), and nothing may be dropped silently.

use super::*;
use crate::model::fold::Accumulator;
use flate2::write::GzEncoder;
use proptest::prelude::*;
use std::io::{Read as _, Write as _};

const STEM: &str = "offheap.16190";

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/leakyservice")
}

fn dump_name(seq: u64) -> String {
    offheap_format::names::dump(STEM, seq)
}

/// The JSON text of a recorded dump.
fn dump_text(seq: u64) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(testdata().join(dump_name(seq))).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    s
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A copy of the recorded series in a temporary directory.
fn copy_series() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(testdata()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

struct Read {
    diag: Diagnostics,
    folded: crate::model::fold::Folded,
    store: StackStore,
}

fn read_dir(dir: &Path) -> Read {
    let mut diag = Diagnostics::default();
    let series = discover(&[dir.to_path_buf()], &mut diag).unwrap();
    assert_eq!(series.len(), 1, "{series:?}");
    let mut acc = Accumulator::new();
    let store = read_series(&series[0], Cut::Last, &mut acc, &mut diag, &|_, _| {}).unwrap();
    Read {
        diag,
        folded: acc.finish(),
        store,
    }
}

fn all_text(d: &Diagnostics) -> String {
    d.errors
        .iter()
        .map(|e| e.to_string())
        .chain(d.warnings.iter().cloned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn reads_the_recorded_series_in_order() {
    let r = read_dir(&testdata());
    assert!(
        r.diag.errors.is_empty() && r.diag.warnings.is_empty(),
        "{}",
        all_text(&r.diag)
    );
    let seqs: Vec<u64> = r.folded.points.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, (0..13).collect::<Vec<_>>());
    assert!(r.folded.final_folded);
    assert!(r.store.stacks.len() >= 30, "{}", r.store.stacks.len());
    assert!(r
        .store
        .modules
        .iter()
        .any(|m| m.path.ends_with("leakyservice")));
    // Per-row detail comes from the final dump only.
    assert!(r
        .folded
        .series
        .iter()
        .any(|s| s.last.as_ref().is_some_and(|l| !l.by_generation.is_empty())));
}

#[test]
fn a_dump_cat_style_file_with_inline_stacks_reads_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = read_dump_file(&testdata().join(dump_name(12))).unwrap();
    let store = StackStore::load(&testdata().join(format!("{STEM}.stacks.gz")));
    let rows: Vec<_> = store
        .stacks
        .iter()
        .map(|(id, r)| (*id, r.end, &r.frames[..]))
        .collect();
    d.stacks = offheap_format::stacks::encode(rows);
    d.modules = store.modules.clone().into();
    d.header.stacks_file = None;
    let plain = dir.path().join("saved.json");
    std::fs::write(&plain, serde_json::to_vec(&d).unwrap()).unwrap();
    let mut diag = Diagnostics::default();
    let series = discover(&[plain], &mut diag).unwrap();
    assert!(series[0].loose);
    let mut acc = Accumulator::new();
    let store = read_series(&series[0], Cut::Last, &mut acc, &mut diag, &|_, _| {}).unwrap();
    assert!(diag.warnings.is_empty(), "{}", all_text(&diag));
    assert!(store.stacks.len() >= 30);
    assert_eq!(acc.finish().points.len(), 1);
}

#[test]
fn bad_files_get_clear_messages_naming_them() {
    let dir = copy_series();
    let p = |seq| dir.path().join(dump_name(seq));
    let full = gzip(dump_text(3).as_bytes());
    std::fs::write(p(3), &full[..full.len() / 2]).unwrap();
    std::fs::write(p(4), b"").unwrap();
    std::fs::write(p(5), gzip(b"hello world")).unwrap();
    std::fs::write(p(6), gzip(br#"{"name": "package.json"}"#)).unwrap();
    let v1 = dump_text(7).replacen("\"version\":2", "\"version\":1", 1);
    std::fs::write(p(7), gzip(v1.as_bytes())).unwrap();
    std::fs::write(p(8), [0x57, 0x5e, 0x39, 0x3b, 0x00, 0xff]).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    std::fs::write(dir.path().join("offheap.77.000000.json"), b"{}").unwrap();
    let r = read_dir(dir.path());
    assert!(
        all_text(&r.diag).contains("1 file(s) named like version 1 dumps"),
        "old dumps are named, not skipped silently: {}",
        all_text(&r.diag)
    );
    let msg = |seq: u64| {
        r.diag
            .errors
            .iter()
            .find(|e| e.path == p(seq))
            .map(|e| e.what.clone())
            .unwrap_or_else(|| panic!("no error for seq {seq}: {}", all_text(&r.diag)))
    };
    assert!(msg(3).contains("truncated"), "{}", msg(3));
    assert!(msg(4).contains("empty"), "{}", msg(4));
    assert!(msg(5).contains("JSON"), "{}", msg(5));
    assert!(msg(6).contains("no \"format\""), "{}", msg(6));
    assert!(msg(7).contains("version 1"), "{}", msg(7));
    assert!(
        msg(8).contains("neither gzip nor JSON") && msg(8).contains("57 5e 39 3b"),
        "{}",
        msg(8)
    );
    assert_eq!(
        r.folded.points.len(),
        13 - 6,
        "the good dumps are still used"
    );
    let mut diag = Diagnostics::default();
    let e = discover(&[dir.path().join("nope")], &mut diag).unwrap_err();
    assert!(e.to_string().contains("nope"));
}

#[test]
fn a_missing_stacks_file_is_named_and_the_memory_kept() {
    let dir = copy_series();
    std::fs::remove_file(dir.path().join(format!("{STEM}.stacks.gz"))).unwrap();
    let r = read_dir(dir.path());
    let t = all_text(&r.diag);
    assert!(
        t.contains("stacks file is missing") && t.contains("stacks.gz"),
        "{t}"
    );
    assert!(t.contains("(stack N not found)"), "{t}");
    assert_eq!(r.folded.points.len(), 13);
    let bytes: f64 = r.folded.series.iter().map(|s| s.last_bytes).sum();
    assert!(
        bytes > 1_000_000.0,
        "rows are kept without their stacks: {bytes}"
    );
}

#[test]
fn a_stacks_file_cut_short_is_reported() {
    let dir = copy_series();
    let path = dir.path().join(format!("{STEM}.stacks.gz"));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    let r = read_dir(dir.path());
    let t = all_text(&r.diag);
    assert!(t.contains("stopped"), "{t}");
    assert_eq!(r.folded.points.len(), 13);
}

#[test]
fn ids_beyond_stack_ids_below_and_gaps_are_reported() {
    let dir = copy_series();
    let text = dump_text(9).replacen("\"stack_ids_below\":38", "\"stack_ids_below\":3", 1);
    assert!(text.contains("\"stack_ids_below\":3"), "fixture changed");
    std::fs::write(dir.path().join(dump_name(9)), gzip(text.as_bytes())).unwrap();
    std::fs::remove_file(dir.path().join(dump_name(5))).unwrap();
    std::fs::remove_file(dir.path().join(dump_name(6))).unwrap();
    let r = read_dir(dir.path());
    let t = all_text(&r.diag);
    assert!(t.contains("stack_ids_below"), "{t}");
    assert!(t.contains(&dump_name(9)), "{t}");
    assert!(
        t.contains("2 dump(s) missing in 1 gap(s)") && t.contains("5..6"),
        "{t}"
    );
}

#[test]
fn a_file_whose_header_contradicts_its_name_is_skipped_with_a_reason() {
    let dir = copy_series();
    std::fs::rename(
        dir.path().join(dump_name(12)),
        dir.path().join(dump_name(20)),
    )
    .unwrap();
    let r = read_dir(dir.path());
    let t = all_text(&r.diag);
    assert!(
        t.contains("header.seq is 12 but the file name says 20"),
        "{t}"
    );
    // The warning printed for an error adds "; skipped" itself.
    assert!(!t.contains("skipped"), "{t}");
}

/// Mutations of a text: byte flips, truncation, insertions, number swaps, splices.
fn mutate(base: &[u8], ops: &[(u8, usize, u8)]) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(op, pos, byte) in ops {
        if v.is_empty() {
            break;
        }
        let i = pos % v.len();
        match op % 6 {
            0 => v[i] = byte,
            1 => v.truncate(i),
            2 => {
                v.remove(i);
            }
            3 => v.insert(i, byte),
            4 => {
                let rep: &[u8] = match byte % 4 {
                    0 => b"18446744073709551615",
                    1 => b"-1",
                    2 => b"1e308",
                    _ => b"99999999999999999999999",
                };
                if v[i].is_ascii_digit() {
                    let mut j = i;
                    while j < v.len() && v[j].is_ascii_digit() {
                        j += 1;
                    }
                    v.splice(i..j, rep.iter().copied());
                }
            }
            _ => {
                let j = (i + byte as usize * 7) % v.len();
                let (a, b) = (i.min(j), i.max(j));
                let chunk: Vec<u8> = v[a..b.min(a + 64)].to_vec();
                v.splice(a..a, chunk);
            }
        }
    }
    v
}

/// The whole pipeline on a directory: read, model, text and JSON; errors are fine, panics
/// are not, and every message is short and names something.
fn pipeline(dir: &Path) -> Result<(), TestCaseError> {
    let mut diag = Diagnostics::default();
    let Ok(series) = discover(&[dir.to_path_buf()], &mut diag) else {
        return Ok(());
    };
    for s in &series {
        let mut acc = Accumulator::new();
        let Ok(store) = read_series(s, Cut::Last, &mut acc, &mut diag, &|_, _| {}) else {
            continue;
        };
        let folded = acc.finish();
        if folded.points.is_empty() {
            continue;
        }
        let mut sym = crate::symbolize::Symbolizer::new(&store.modules, &Default::default());
        let m = crate::model::build::finish(
            folded,
            crate::model::build::BuildInputs {
                store: &store,
                sym: &mut sym,
                suppressions: &Default::default(),
                thresholds: Default::default(),
                exe_facts: Default::default(),
            },
        );
        crate::render::tests::render_all(&m, &diag);
    }
    for e in &diag.errors {
        prop_assert!(!e.what.is_empty());
        prop_assert!(e.what.len() < 2000, "message too long: {}", e.what.len());
    }
    Ok(())
}

proptest! {
    // PROPTEST_CASES raises the count for a longer fuzzing session.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// One dump of the series mutated (as text, then gzip'd or left plain).
    #[test]
    fn mutated_dumps_never_panic(
        seq in 0u64..13,
        plain in any::<bool>(),
        ops in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..8),
    ) {
        let dir = copy_series();
        let m = mutate(dump_text(seq).as_bytes(), &ops);
        std::fs::write(dir.path().join(dump_name(seq)), if plain { m } else { gzip(&m) }).unwrap();
        pipeline(dir.path())?;
    }

    /// Hostile incremental series: stacks file missing, mutated or cut (members truncated),
    /// dumps deleted (gaps, or the first and last), `stack_ids_below` lowered (ids out of
    /// range).
    #[test]
    fn hostile_series_never_panic(
        drop_stacks in proptest::bool::weighted(0.1),
        cut_stacks in proptest::option::of(0usize..2000),
        stack_ops in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..3),
        deleted in proptest::collection::vec(0u64..13, 0..5),
        lowered in proptest::option::of((0u64..13, 0u64..45)),
    ) {
        let dir = copy_series();
        let stacks = dir.path().join(format!("{STEM}.stacks.gz"));
        if let Some(n) = cut_stacks {
            let b = std::fs::read(&stacks).unwrap();
            std::fs::write(&stacks, &b[..n.min(b.len())]).unwrap();
        }
        if !stack_ops.is_empty() {
            let mut text = Vec::new();
            flate2::read::MultiGzDecoder::new(&std::fs::read(&stacks).unwrap()[..])
                .read_to_end(&mut text)
                .ok();
            std::fs::write(&stacks, gzip(&mutate(&text, &stack_ops))).unwrap();
        }
        for seq in deleted {
            let _ = std::fs::remove_file(dir.path().join(dump_name(seq)));
        }
        if drop_stacks {
            std::fs::remove_file(&stacks).unwrap();
        }
        if let Some((seq, below)) = lowered {
            let t = dump_text(seq).replacen("\"stack_ids_below\":38", &format!("\"stack_ids_below\":{below}"), 1);
            if dir.path().join(dump_name(seq)).exists() {
                std::fs::write(dir.path().join(dump_name(seq)), gzip(t.as_bytes())).unwrap();
            }
        }
        pipeline(dir.path())?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(dump_name(0));
        std::fs::write(&p, &bytes).unwrap();
        std::fs::write(dir.path().join(format!("{STEM}.stacks.gz")), &bytes).unwrap();
        pipeline(dir.path())?;
    }
}
