//! `offheap diff <a> <b>`: what grew between two dumps, by stack, with rates.
//!
//! The two dumps may come from different processes (two runs of the same binary): stacks are
//! matched by their frames as (module path, offset in module), which ASLR does not change,
//! not by stack id or raw address. Rates (bytes per second) are given when both dumps are of
//! one process, whose uptime then measures the time between them.

use super::report::{load_model, write_out, LoadOptions};
use crate::model::origin::is_go_plumbing;
use crate::model::ProcessModel;
use crate::read::{self, Cut, Diagnostics, SeriesFiles};
use crate::render::{human_bytes, human_rate};
use crate::verdict::policy::Suppressions;
use crate::{DiffFormat, EXIT_OK};
use anyhow::{bail, Context, Result};
use offheap_format::Kind;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

type Key = (Vec<(String, u64)>, Kind);

struct Side {
    path: PathBuf,
    model: ProcessModel,
    start_wall_ns: u64,
    /// key → (bytes, count, stack id)
    stacks: HashMap<Key, (f64, f64, u64)>,
}

/// The one dump a diff input names: the file itself, or a directory's newest dump — of the
/// process `prefer` (the other input's) when the directory holds it, else of the series with
/// the most dumps, said aloud when there was a choice.
fn one_dump(p: &Path, prefer: Option<u64>) -> Result<SeriesFiles> {
    let mut diag = Diagnostics::default();
    let series = read::discover(&[p.to_path_buf()], &mut diag).map_err(anyhow::Error::new)?;
    if let Some(e) = diag.errors.first() {
        bail!("{e}");
    }
    let several = series.len() > 1;
    let preferred = series
        .iter()
        .position(|s| prefer.is_some() && s.pid == prefer);
    let most_dumps = series
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| s.dumps.len())
        .map(|(i, _)| i);
    let chosen = preferred.or(most_dumps);
    let Some(mut s) = chosen.and_then(|i| series.into_iter().nth(i)) else {
        bail!("{}: no dump files", p.display())
    };
    if several && preferred.is_none() {
        eprintln!(
            "offheap: {} holds dumps of several processes: comparing with {} (the most dumps)",
            p.display(),
            s.stem
        );
    }
    s.dumps = s.dumps.split_off(s.dumps.len() - 1);
    Ok(s)
}

fn load_side(p: &Path, binary: &[PathBuf], prefer: Option<u64>) -> Result<Side> {
    let not_a_dump = || {
        format!(
            "diff compares two dumps (offheap.<pid>.<seq>.json.gz files, or directories of \
             them: their newest dump), and {} is not one",
            p.display()
        )
    };
    let files = one_dump(p, prefer).with_context(not_a_dump)?;
    let mut diag = Diagnostics::default();
    let opts = LoadOptions {
        cut: Cut::Last,
        binary,
        min_dumps: None,
    };
    let (model, sym) =
        load_model(&files, &opts, &Suppressions::default(), &mut diag).with_context(not_a_dump)?;
    for e in &diag.errors {
        eprintln!("offheap: warning: {e}");
    }
    for w in &diag.warnings {
        eprintln!("offheap: warning: {w}");
    }
    let mut stacks: HashMap<Key, (f64, f64, u64)> = HashMap::new();
    for s in &model.series {
        let addrs = model
            .stack(s.stack)
            .map(|i| i.addrs.clone())
            .unwrap_or_default();
        let norm: Vec<(String, u64)> = addrs
            .iter()
            .map(|&a| match sym.module_index(a) {
                Some(i) => {
                    let m = &sym.modules()[i];
                    (m.path.clone(), a.wrapping_sub(m.base))
                }
                None => (String::new(), a),
            })
            .collect();
        let e = stacks.entry((norm, s.kind)).or_insert((0.0, 0.0, s.stack));
        e.0 += s.last_bytes;
        e.1 += s.last_count;
    }
    let path = files.dumps[0].1.clone();
    let start_wall_ns = crate::read::peek_header(&path)
        .map(|h| h.start_wall_ns)
        .unwrap_or(0);
    Ok(Side {
        path,
        model,
        start_wall_ns,
        stacks,
    })
}

#[derive(Serialize)]
struct DiffStack {
    kind: &'static str,
    origin: &'static str,
    bytes_a: u64,
    bytes_b: u64,
    delta_bytes: i64,
    count_a: u64,
    count_b: u64,
    delta_count: i64,
    bytes_per_sec: Option<f64>,
    go_caller: Option<String>,
    via: Option<String>,
    frames: Vec<crate::render::json::FrameOut>,
}

#[derive(Serialize)]
struct SideOut {
    path: String,
    pid: u64,
    seq: u64,
    uptime_ms: u64,
}

#[derive(Serialize)]
struct DiffOut {
    schema: &'static str,
    a: SideOut,
    b: SideOut,
    /// Seconds between the dumps when both are of one process, else null.
    elapsed_s: Option<f64>,
    delta: BTreeMap<&'static str, i64>,
    rates: Option<BTreeMap<&'static str, f64>>,
    /// Either dump was sampled (OFFHEAP_SAMPLE_BYTES): the stacks' figures are estimates.
    estimates: bool,
    stacks: Vec<DiffStack>,
    left_out: LeftOut,
}

/// Stacks a diff leaves out by default, as the report does: the Go runtime's own (its heap
/// arenas, reserved and mapped as the Go heap grows, and thread creation), which the Go heap
/// profile already explains and which would otherwise top the list blamed on whatever Go code
/// happened to grow the heap.
#[derive(Serialize, Default)]
struct LeftOut {
    go_runtime_stacks: usize,
    /// What the left-out stacks that grew grew by, and those that shrank shrank by (an arena
    /// moving from reserved to mapped shows as one of each).
    go_runtime_grew_bytes: i64,
    go_runtime_shrank_bytes: i64,
}

/// Splits off the go-runtime rows unless they are asked for.
fn leave_out_runtime(rows: Vec<DiffStack>, include_runtime: bool) -> (Vec<DiffStack>, LeftOut) {
    if include_runtime {
        return (rows, LeftOut::default());
    }
    let (runtime, kept): (Vec<DiffStack>, Vec<DiffStack>) =
        rows.into_iter().partition(|r| r.origin == "go-runtime");
    let left_out = LeftOut {
        go_runtime_stacks: runtime.len(),
        go_runtime_grew_bytes: runtime.iter().map(|r| r.delta_bytes.max(0)).sum(),
        go_runtime_shrank_bytes: runtime.iter().map(|r| r.delta_bytes.min(0)).sum(),
    };
    (kept, left_out)
}

fn side_out(s: &Side) -> SideOut {
    let p = s.model.last_point();
    SideOut {
        path: s.path.display().to_string(),
        pid: s.model.pid,
        seq: p.map_or(0, |p| p.seq),
        uptime_ms: p.map_or(0, |p| p.uptime_ms),
    }
}

/// Seconds between the dumps when both belong to one process.
fn elapsed(a: &Side, b: &Side) -> Option<f64> {
    let same = a.model.pid == b.model.pid && a.start_wall_ns == b.start_wall_ns;
    let (ta, tb) = (a.model.now_ms(), b.model.now_ms());
    (same && tb > ta).then(|| (tb - ta) as f64 / 1000.0)
}

fn rows(sa: &Side, sb: &Side, secs: Option<f64>) -> Vec<DiffStack> {
    let mut keys: Vec<&Key> = sa.stacks.keys().chain(sb.stacks.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut rows: Vec<DiffStack> = keys
        .into_iter()
        .map(|k| {
            let (ba, ca, ia) = sa.stacks.get(k).copied().unwrap_or((0.0, 0.0, 0));
            let (bb, cb, ib) = sb.stacks.get(k).copied().unwrap_or((0.0, 0.0, 0));
            let (side, id) = if sb.stacks.contains_key(k) {
                (sb, ib)
            } else {
                (sa, ia)
            };
            let info = side.model.stack(id);
            let delta = bb - ba;
            DiffStack {
                kind: k.1.as_str(),
                origin: info.map_or("c", |i| i.origin.as_str()),
                bytes_a: ba.round() as u64,
                bytes_b: bb.round() as u64,
                delta_bytes: delta.round() as i64,
                count_a: ca.round() as u64,
                count_b: cb.round() as u64,
                delta_count: (cb - ca).round() as i64,
                bytes_per_sec: secs.map(|s| (delta / s * 10.0).round() / 10.0),
                go_caller: info
                    .and_then(|i| i.culprit.caller.as_ref())
                    .map(|f| f.display_name()),
                via: info.and_then(|i| i.culprit.via.clone()),
                frames: side
                    .model
                    .frames_of(id)
                    .iter()
                    .map(crate::render::json::frame)
                    .collect(),
            }
        })
        // Reserved address space is not memory (the header leaves it out too).
        .filter(|r| r.kind != Kind::MmapReserved.as_str())
        .filter(|r| r.delta_bytes != 0 || r.delta_count != 0)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.delta_bytes));
    rows
}

fn deltas(sa: &Side, sb: &Side) -> BTreeMap<&'static str, i64> {
    let d = |x: u64, y: u64| y as i64 - x as i64;
    let (ta, tb) = (&sa.model.last.totals, &sb.model.last.totals);
    let (pa, pb) = (sa.model.last_point(), sb.model.last_point());
    let point = |p: Option<&crate::model::DumpPoint>, f: fn(&crate::model::DumpPoint) -> u64| {
        p.map_or(0, f)
    };
    BTreeMap::from([
        ("malloc_bytes", d(ta.malloc.bytes, tb.malloc.bytes)),
        ("mmap_bytes", d(ta.mmap.bytes, tb.mmap.bytes)),
        (
            "untracked_bytes",
            d(point(pa, |p| p.untracked), point(pb, |p| p.untracked)),
        ),
        ("rss_bytes", d(point(pa, |p| p.rss), point(pb, |p| p.rss))),
    ])
}

pub fn run(
    a: &Path,
    b: &Path,
    format: DiffFormat,
    binary: &[PathBuf],
    include_runtime: bool,
) -> Result<u8> {
    let sa = load_side(a, binary, None)?;
    let sb = load_side(b, binary, Some(sa.model.pid))?;
    let secs = elapsed(&sa, &sb);
    let (rows, left_out) = leave_out_runtime(rows(&sa, &sb, secs), include_runtime);
    let delta = deltas(&sa, &sb);
    let rates = secs.map(|s| {
        delta
            .iter()
            .map(|(k, v)| (*k, (*v as f64 / s * 10.0).round() / 10.0))
            .collect()
    });
    let out = DiffOut {
        schema: "offheap-diff/3",
        a: side_out(&sa),
        b: side_out(&sb),
        elapsed_s: secs,
        delta,
        rates,
        estimates: sa.model.sampled() || sb.model.sampled(),
        stacks: rows,
        left_out,
    };
    let bytes = match format {
        DiffFormat::Json => {
            let mut s = serde_json::to_vec_pretty(&out)?;
            s.push(b'\n');
            s
        }
        DiffFormat::Text => text(&out)?.into_bytes(),
    };
    write_out(None, &bytes)?;
    Ok(EXIT_OK)
}

fn signed(v: i64) -> String {
    if v >= 0 {
        format!("+{}", human_bytes(v as f64))
    } else {
        format!("-{}", human_bytes(-v as f64))
    }
}

/// Frames printed per grown stack, after folding Go runtime and cgo plumbing.
const FRAMES_SHOWN: usize = 12;
/// Grown stacks printed.
const STACKS_SHOWN: usize = 30;

/// `n` and the noun, singular for one.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn text(d: &DiffOut) -> Result<String> {
    let mut o = String::new();
    heading(&mut o, d)?;
    timing_note(&mut o, d)?;
    stack_changes(&mut o, d)?;
    left_out_note(&mut o, &d.left_out)?;
    Ok(o)
}

/// The two dumps named, and how malloc, mmap, untracked and RSS changed between them.
fn heading(o: &mut String, d: &DiffOut) -> std::fmt::Result {
    use std::fmt::Write as _;
    let (a, b) = (&d.a, &d.b);
    writeln!(
        o,
        "offheap diff: {} (pid {} seq {}, {:.1} s) → {} (pid {} seq {}, {:.1} s)",
        a.path,
        a.pid,
        a.seq,
        a.uptime_ms as f64 / 1000.0,
        b.path,
        b.pid,
        b.seq,
        b.uptime_ms as f64 / 1000.0
    )?;
    writeln!(
        o,
        "  malloc {}  mmap {}  untracked {}  RSS {}",
        change(d, "malloc_bytes"),
        change(d, "mmap_bytes"),
        change(d, "untracked_bytes"),
        change(d, "rss_bytes"),
    )
}

/// One total's change, signed, with its rate when the dumps are of one process.
fn change(d: &DiffOut, key: &str) -> String {
    let v = d.delta.get(key).copied().unwrap_or(0);
    let rate = d.elapsed_s.map_or(String::new(), |s| {
        format!(" ({})", human_rate(v as f64 / s))
    });
    format!("{}{}", signed(v), rate)
}

/// What the time between the dumps means for rates, and whether the figures are estimates.
fn timing_note(o: &mut String, d: &DiffOut) -> std::fmt::Result {
    use std::fmt::Write as _;
    let (a, b) = (&d.a, &d.b);
    match d.elapsed_s {
        Some(s) => writeln!(
            o,
            "  {s:.1} s apart in one process: rates are the change over that time, per second \
             (the report's rates are fitted over every dump, so they differ)"
        )?,
        None if a.pid == b.pid && b.uptime_ms < a.uptime_ms => writeln!(
            o,
            "  the second dump is the older one: give the older first for rates; differences \
             below are second minus first"
        )?,
        None => writeln!(
            o,
            "  different processes (or the same dump): no rates, only differences"
        )?,
    }
    if d.estimates {
        writeln!(
            o,
            "  sampled dumps (OFFHEAP_SAMPLE_BYTES): the stacks' figures are estimates"
        )?;
    }
    Ok(())
}

/// The stacks that grew, one by one, then what the shrunk ones shrank by in all.
fn stack_changes(o: &mut String, d: &DiffOut) -> std::fmt::Result {
    use std::fmt::Write as _;
    let grew: Vec<&DiffStack> = d.stacks.iter().filter(|r| r.delta_bytes > 0).collect();
    let shrank: Vec<&DiffStack> = d.stacks.iter().filter(|r| r.delta_bytes < 0).collect();
    if grew.is_empty() {
        writeln!(o, "\nNothing grew.")?;
    } else {
        writeln!(o, "\nGrew ({}):", count(grew.len(), "stack", "stacks"))?;
    }
    for r in grew.iter().take(STACKS_SHOWN) {
        grown_stack(o, r)?;
    }
    if grew.len() > STACKS_SHOWN {
        writeln!(
            o,
            "  ({} more; --format json lists them all)",
            grew.len() - STACKS_SHOWN
        )?;
    }
    if !shrank.is_empty() {
        writeln!(
            o,
            "\nShrank: {}, {} in total",
            count(shrank.len(), "stack", "stacks"),
            signed(shrank.iter().map(|r| r.delta_bytes).sum())
        )?;
    }
    Ok(())
}

/// The closing note on the Go runtime's own stacks, when any were left out.
fn left_out_note(o: &mut String, left: &LeftOut) -> std::fmt::Result {
    use std::fmt::Write as _;
    if left.go_runtime_stacks > 0 {
        writeln!(
            o,
            "\nLeft out: {} of the Go runtime's own ({}: Go heap arenas and threads, which go \
             tool pprof explains); --include go-runtime lists them",
            count(left.go_runtime_stacks, "stack", "stacks"),
            runtime_change(left)
        )?;
    }
    Ok(())
}

/// `grew +4.0 MiB`, `shrank -1.0 MiB`, or both: the parts that are not zero.
fn runtime_change(left: &LeftOut) -> String {
    let mut parts = Vec::new();
    if left.go_runtime_grew_bytes != 0 {
        parts.push(format!("grew {}", signed(left.go_runtime_grew_bytes)));
    }
    if left.go_runtime_shrank_bytes != 0 {
        parts.push(format!("shrank {}", signed(left.go_runtime_shrank_bytes)));
    }
    if parts.is_empty() {
        parts.push("counts changed, bytes did not".to_string());
    }
    parts.join(", ")
}

/// One grown stack: its change, who made it, and its frames with the plumbing folded.
fn grown_stack(o: &mut String, r: &DiffStack) -> std::fmt::Result {
    use std::fmt::Write as _;
    writeln!(
        o,
        "  {:>12}{}  {:+} {}  {} {}  {}{}",
        signed(r.delta_bytes),
        r.bytes_per_sec
            .map_or(String::new(), |x| format!(" ({})", human_rate(x))),
        r.delta_count,
        if r.delta_count.abs() == 1 {
            "allocation"
        } else {
            "allocations"
        },
        r.origin,
        r.kind,
        r.go_caller.clone().unwrap_or_default(),
        r.via
            .as_ref()
            .map_or(String::new(), |v| format!(" via {v}"))
    )?;
    let shown: Vec<_> = r
        .frames
        .iter()
        .filter(|f| r.origin == "go-runtime" || !is_go_plumbing(&f.function))
        .collect();
    for f in shown.iter().take(FRAMES_SHOWN) {
        let loc = match (&f.file, f.line) {
            (Some(file), Some(l)) => format!("{file}:{l}"),
            _ => String::new(),
        };
        writeln!(o, "      {} {}", f.function, loc)?;
    }
    let folded = r.frames.len() - shown.len();
    let more = shown.len().saturating_sub(FRAMES_SHOWN);
    let mut parts = Vec::new();
    if more > 0 {
        parts.push(format!("{} more", count(more, "frame", "frames")));
    }
    if folded > 0 {
        parts.push(format!(
            "{} of Go runtime/cgo plumbing folded",
            count(folded, "frame", "frames")
        ));
    }
    if !parts.is_empty() {
        writeln!(
            o,
            "      ({}; --format json has every frame)",
            parts.join(", ")
        )?;
    }
    Ok(())
}
