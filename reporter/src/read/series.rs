//! Reading the series reported on: its stacks file once, its dumps in parallel, folded in seq
//! order into a [`DumpSink`] and dropped.

use super::parallel::{default_threads, ordered_map};
use super::stackstore::StackStore;
use super::{Diagnostics, ReadError, SeriesFiles};
use offheap_format::schema::Dump;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where the series is cut: the state "as of" that dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Last,
    First,
    Seq(u64),
}

/// Receives the dumps of a series one at a time, in seq order.
pub trait DumpSink {
    /// `last` is true for the final file of the (cut) series.
    fn fold(&mut self, dump: Dump, last: bool, stacks: &StackStore);
}

/// The dump files a cut selects, or why the cut is impossible.
pub fn cut_files(files: &SeriesFiles, cut: Cut) -> Result<Vec<(u64, PathBuf)>, String> {
    let all = &files.dumps;
    Ok(match cut {
        Cut::Last => all.clone(),
        Cut::First => all.iter().take(1).cloned().collect(),
        Cut::Seq(seq) => {
            if !all.iter().any(|d| d.0 == seq) {
                return Err(format!(
                    "series {} has no dump with seq {seq} (on disk: {})",
                    files.stem,
                    describe_seqs(all)
                ));
            }
            all.iter().take_while(|d| d.0 <= seq).cloned().collect()
        }
    })
}

fn describe_seqs(all: &[(u64, PathBuf)]) -> String {
    match (all.first(), all.last()) {
        (Some(a), Some(b)) if all.len() == 1 + (b.0 - a.0) as usize => format!("{}..{}", a.0, b.0),
        (Some(a), Some(b)) => format!("{} dumps between {} and {}", all.len(), a.0, b.0),
        _ => "none".into(),
    }
}

/// Stack ids a series could not resolve, by what is wrong.
#[derive(Default)]
struct MissingStacks {
    by_problem: BTreeMap<String, (usize, BTreeSet<u64>, PathBuf)>,
}

impl MissingStacks {
    fn check(&mut self, dump: &Dump, path: &Path, store: &StackStore) {
        let below = dump.header.stack_ids_below;
        let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        let ids = dump
            .outstanding
            .stack
            .0
            .iter()
            .chain(&dump.cumulative.stack.0)
            .chain(&dump.threads.by_stack.stack.0);
        for &id in ids {
            if let Some(p) = store.check(id, below) {
                seen.entry(store.explain(p, below)).or_default().insert(id);
            }
        }
        for (what, ids) in seen {
            let e = self
                .by_problem
                .entry(what)
                .or_insert_with(|| (0, BTreeSet::new(), path.to_path_buf()));
            e.0 += 1;
            e.1.extend(ids.into_iter().take(1000));
        }
    }

    fn warnings(self, diag: &mut Diagnostics) {
        for (what, (dumps, ids, first)) in self.by_problem {
            let sample: Vec<String> = ids.iter().take(5).map(u64::to_string).collect();
            diag.warn(format!(
                "{}{}: {} stack id(s) ({}{}) {what}; memory of a stack not \
                 found is still reported, under \"(stack N not found)\"",
                first.display(),
                if dumps > 1 {
                    format!(" and {} later dump(s)", dumps - 1)
                } else {
                    String::new()
                },
                ids.len(),
                sample.join(", "),
                if ids.len() > 5 { ", …" } else { "" },
            ));
        }
    }
}

/// Reads the series, folding every dump into `sink`; returns the stack store. Unreadable
/// files and lost information are recorded in `diag`.
pub fn read_series(
    files: &SeriesFiles,
    cut: Cut,
    sink: &mut dyn DumpSink,
    diag: &mut Diagnostics,
    progress: &dyn Fn(usize, usize),
) -> Result<StackStore, String> {
    let chosen = cut_files(files, cut)?;
    warn_about_gaps(files, diag);
    let mut store = open_store(files, diag);
    let mut missing = MissingStacks::default();
    let threads = default_threads();
    let total = chosen.len();
    ordered_map(
        &chosen,
        threads,
        2 * threads,
        |(_, path)| super::read_dump_file(path),
        |i, parsed| {
            progress(i + 1, total);
            let (seq, path) = &chosen[i];
            let Some(mut dump) = checked_dump(parsed, *seq, path, files, diag) else {
                return;
            };
            add_inline_stacks(&mut dump, path, &mut store, diag);
            missing.check(&dump, path, &store);
            sink.fold(dump, i + 1 == total, &store);
        },
    );
    warn_about_conflict(&store, files, diag);
    missing.warnings(diag);
    Ok(store)
}

/// The series' stacks file read (none for loose dumps, whose stacks are inline); a file
/// missing or unreadable is warned about.
fn open_store(files: &SeriesFiles, diag: &mut Diagnostics) -> StackStore {
    let store = if files.loose {
        StackStore::default()
    } else {
        match &files.stacks_file {
            Some(p) => StackStore::load(p),
            None => StackStore::missing(&files.expected_stacks_file()),
        }
    };
    if let Some(why) = &store.problem {
        diag.warn(why.clone());
    }
    store
}

/// The dump if it may be folded: an unreadable file, or one whose header.seq is not the
/// file name's, is recorded as an error and skipped; a pid that differs is only warned about.
fn checked_dump(
    parsed: Result<Dump, ReadError>,
    seq: u64,
    path: &Path,
    files: &SeriesFiles,
    diag: &mut Diagnostics,
) -> Option<Dump> {
    let dump = match parsed {
        Ok(d) => d,
        Err(e) => {
            diag.errors.push(e);
            return None;
        }
    };
    if !files.loose && dump.header.seq != seq {
        diag.error(
            path,
            format!(
                "header.seq is {} but the file name says {seq}",
                dump.header.seq
            ),
        );
        return None;
    }
    if let Some(pid) = files.pid.filter(|&p| p != dump.header.pid) {
        diag.warn(format!(
            "{}: header.pid is {} but the file name says {pid}",
            path.display(),
            dump.header.pid
        ));
    }
    Some(dump)
}

/// Moves the stacks and modules a dump carries inline into the store.
fn add_inline_stacks(dump: &mut Dump, path: &Path, store: &mut StackStore, diag: &mut Diagnostics) {
    if !dump.stacks.is_empty() || !dump.modules.is_empty() {
        let table = std::mem::take(&mut dump.stacks);
        let modules = std::mem::take(&mut dump.modules.0);
        if let Err(e) = store.add(&table, modules) {
            diag.warn(format!("{}: inline stacks: {e}", path.display()));
        }
    }
}

/// Says once that a stack id was defined twice, naming the stacks file (or the series).
fn warn_about_conflict(store: &StackStore, files: &SeriesFiles, diag: &mut Diagnostics) {
    if let Some(id) = store.conflict {
        diag.warn(format!(
            "{}: stack id {id} is defined twice with different frames; the first definition is used",
            store
                .file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| files.stem.clone())
        ));
    }
}

/// Retention (OFFHEAP_KEEP) thins a long series evenly, so gaps are normal there; a gap is
/// still information lost, so it is stated once per series.
fn warn_about_gaps(files: &SeriesFiles, diag: &mut Diagnostics) {
    let gaps = files.gaps();
    if gaps.is_empty() {
        return;
    }
    let missing: u64 = gaps.iter().map(|g| g.1 - g.0 + 1).sum();
    let first = gaps[0];
    diag.warn(format!(
        "series {} in {}: {missing} dump(s) missing in {} gap(s) of seq (first: {}..{}); \
         OFFHEAP_KEEP retention removes an even spread of old dumps, otherwise files were deleted",
        files.stem,
        files.dir.display(),
        gaps.len(),
        first.0,
        first.1
    ));
}
