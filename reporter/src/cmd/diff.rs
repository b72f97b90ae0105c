//! `offheap diff <a> <b>`: what grew between two dumps, by stack.
//!
//! The two dumps may come from different processes (two runs of the same binary): stacks are
//! matched by their frames as (module path, offset in module), which ASLR does not change,
//! not by stack id or raw address.

use crate::model::origin::{self, Origin};
use crate::read::{self, format::Dump, ProcessDumps};
use crate::render::human_bytes;
use crate::symbolize::{SymFrame, Symbolizer};
use crate::{Format, EXIT_OK};
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

type Key = (Vec<(String, u64)>, String);

struct Side {
    path: PathBuf,
    pid: u64,
    seq: u64,
    uptime_ms: u64,
    dump: Dump,
    /// key → (bytes, count, frames, origin)
    stacks: HashMap<Key, (f64, f64, Vec<SymFrame>, Origin)>,
}

fn load_side(p: &Path) -> Result<Side> {
    let files = read::discover(&[p.to_path_buf()]).map_err(anyhow::Error::new)?;
    let Some(file) = files.last() else {
        bail!("{}: no dump files", p.display())
    };
    // For a directory: the newest dump of the process with the most dumps.
    let file = if files.len() > 1 {
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for f in &files {
            if let Some((pid, _)) = f
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(read::parse_dump_name)
            {
                *counts.entry(pid).or_default() += 1;
            }
        }
        let best = counts
            .iter()
            .max_by_key(|(pid, n)| (**n, **pid))
            .map(|(p, _)| *p);
        files
            .iter()
            .rev()
            .find(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(read::parse_dump_name)
                    .map(|(pid, _)| Some(pid) == best)
                    .unwrap_or(false)
            })
            .unwrap_or(file)
            .clone()
    } else {
        file.clone()
    };
    let mut dump = read::read_dump_file(&file).map_err(anyhow::Error::new)?;
    let stacks_raw: HashMap<u64, Vec<u64>> = std::mem::take(&mut dump.stacks)
        .into_iter()
        .map(|s| (s.id, s.frames))
        .collect();
    let pd = ProcessDumps {
        pid: dump.header.pid,
        modules: dump.modules.clone(),
        ..Default::default()
    };
    let mut sym = Symbolizer::new(&pd.modules);
    let sampled = dump.header.config.sample_bytes > 0;
    let mut stacks: HashMap<Key, (f64, f64, Vec<SymFrame>, Origin)> = HashMap::new();
    for o in &dump.outstanding {
        let raw = stacks_raw.get(&o.stack).cloned().unwrap_or_default();
        let norm: Vec<(String, u64)> = raw
            .iter()
            .map(|&a| match sym.module_index(a) {
                Some(i) => {
                    let m = &sym.modules()[i];
                    (m.path.clone(), a.wrapping_sub(m.base))
                }
                None => (String::new(), a),
            })
            .collect();
        let key = (norm, o.kind.clone());
        let (b, c) = if sampled {
            (
                o.est_bytes.unwrap_or(o.bytes as f64),
                o.est_count.unwrap_or(o.count as f64),
            )
        } else {
            (o.bytes as f64, o.count as f64)
        };
        let e = stacks.entry(key).or_insert_with(|| {
            let frames: Vec<SymFrame> = raw
                .iter()
                .flat_map(|&a| sym.symbolize(a).as_ref().clone())
                .collect();
            let org = origin::classify(&frames);
            (0.0, 0.0, frames, org)
        });
        e.0 += b;
        e.1 += c;
    }
    for w in sym.warnings.drain(..) {
        eprintln!("offheap: warning: {w}");
    }
    Ok(Side {
        path: file,
        pid: dump.header.pid,
        seq: dump.header.seq,
        uptime_ms: dump.header.uptime_ms,
        dump,
        stacks,
    })
}

#[derive(Serialize)]
struct DiffStack {
    kind: String,
    origin: &'static str,
    bytes_a: u64,
    bytes_b: u64,
    delta_bytes: i64,
    count_a: u64,
    count_b: u64,
    delta_count: i64,
    go_caller: Option<String>,
    frames: Vec<DiffFrame>,
}

#[derive(Serialize)]
struct DiffFrame {
    function: String,
    file: Option<String>,
    line: Option<u32>,
    module: Option<String>,
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
    delta: HashMap<&'static str, i64>,
    stacks: Vec<DiffStack>,
}

pub fn run(a: &Path, b: &Path, format: Format) -> Result<u8> {
    if !matches!(format, Format::Text | Format::Json) {
        bail!("diff writes text or json");
    }
    let (sa, sb) = (load_side(a)?, load_side(b)?);
    let mut keys: Vec<&Key> = sa.stacks.keys().chain(sb.stacks.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut rows: Vec<DiffStack> = keys
        .into_iter()
        .map(|k| {
            let ea = sa.stacks.get(k);
            let eb = sb.stacks.get(k);
            let (ba, ca) = ea.map(|e| (e.0, e.1)).unwrap_or((0.0, 0.0));
            let (bb, cb) = eb.map(|e| (e.0, e.1)).unwrap_or((0.0, 0.0));
            let (frames, org) = eb
                .or(ea)
                .map(|e| (e.2.clone(), e.3))
                .unwrap_or((Vec::new(), Origin::C));
            DiffStack {
                kind: k.1.clone(),
                origin: org.as_str(),
                bytes_a: ba.round() as u64,
                bytes_b: bb.round() as u64,
                delta_bytes: (bb - ba).round() as i64,
                count_a: ca.round() as u64,
                count_b: cb.round() as u64,
                delta_count: (cb - ca).round() as i64,
                go_caller: origin::go_caller(&frames).map(|f| f.display_name()),
                frames: frames
                    .iter()
                    .map(|f| DiffFrame {
                        function: f.display_name(),
                        file: f.file.clone(),
                        line: f.line,
                        module: f.module.clone(),
                    })
                    .collect(),
            }
        })
        .filter(|r| r.delta_bytes != 0 || r.delta_count != 0)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.delta_bytes));
    let d = |x: u64, y: u64| y as i64 - x as i64;
    let (ta, tb) = (&sa.dump.totals, &sb.dump.totals);
    let mut delta = HashMap::new();
    delta.insert("malloc_bytes", d(ta.malloc.bytes, tb.malloc.bytes));
    delta.insert("mmap_bytes", d(ta.mmap.bytes, tb.mmap.bytes));
    delta.insert(
        "untracked_bytes",
        d(sa.dump.untracked.bytes, sb.dump.untracked.bytes),
    );
    delta.insert(
        "rss_bytes",
        d(sa.dump.process.rss_bytes, sb.dump.process.rss_bytes),
    );
    if format == Format::Json {
        let side = |s: &Side| SideOut {
            path: s.path.display().to_string(),
            pid: s.pid,
            seq: s.seq,
            uptime_ms: s.uptime_ms,
        };
        let out = DiffOut {
            schema: "offheap-diff/1",
            a: side(&sa),
            b: side(&sb),
            delta,
            stacks: rows,
        };
        let mut s = serde_json::to_vec_pretty(&out)?;
        s.push(b'\n');
        super::report::write_out(None, &s)?;
        return Ok(EXIT_OK);
    }
    let mut o = String::new();
    use std::fmt::Write as _;
    writeln!(
        o,
        "offheap diff: {} (pid {} seq {}, {:.1} s) → {} (pid {} seq {}, {:.1} s)",
        sa.path.display(),
        sa.pid,
        sa.seq,
        sa.uptime_ms as f64 / 1000.0,
        sb.path.display(),
        sb.pid,
        sb.seq,
        sb.uptime_ms as f64 / 1000.0
    )?;
    let signed = |v: i64| {
        if v >= 0 {
            format!("+{}", human_bytes(v as f64))
        } else {
            format!("-{}", human_bytes(-v as f64))
        }
    };
    writeln!(
        o,
        "  malloc {}  mmap {}  untracked {}  RSS {}",
        signed(delta["malloc_bytes"]),
        signed(delta["mmap_bytes"]),
        signed(delta["untracked_bytes"]),
        signed(delta["rss_bytes"])
    )?;
    let grew: Vec<&DiffStack> = rows.iter().filter(|r| r.delta_bytes > 0).collect();
    let shrank: Vec<&DiffStack> = rows.iter().filter(|r| r.delta_bytes < 0).collect();
    writeln!(o, "\nGrew ({} stacks):", grew.len())?;
    for r in grew.iter().take(30) {
        writeln!(
            o,
            "  {:>12}  {:+} allocations  {} {}  {}",
            signed(r.delta_bytes),
            r.delta_count,
            r.origin,
            r.kind,
            r.go_caller.clone().unwrap_or_default()
        )?;
        for f in r.frames.iter().take(12) {
            let loc = match (&f.file, f.line) {
                (Some(file), Some(l)) => format!("{file}:{l}"),
                _ => String::new(),
            };
            writeln!(o, "      {} {}", f.function, loc)?;
        }
    }
    if !shrank.is_empty() {
        writeln!(
            o,
            "\nShrank: {} stacks, {} in total",
            shrank.len(),
            signed(shrank.iter().map(|r| r.delta_bytes).sum())
        )?;
    }
    super::report::write_out(None, o.as_bytes())?;
    Ok(EXIT_OK)
}
