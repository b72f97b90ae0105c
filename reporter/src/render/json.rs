//! The versioned JSON report (`offheap-report/1`, documented in docs/report-json.md).
//!
//! Field names are a contract with pipelines: add fields freely, never rename or remove them
//! without bumping the schema.

use super::Context;
use crate::model::{ProcessModel, StackSeries};
use crate::read::format::BytesCount;
use crate::symbolize::SymFrame;
use serde::Serialize;

pub const SCHEMA: &str = "offheap-report/1";

#[derive(Serialize)]
pub struct Report<'a> {
    pub schema: &'static str,
    pub process: ProcessInfo<'a>,
    pub dumps: DumpsInfo,
    pub estimates: bool,
    pub totals: TotalsOut,
    pub rss: Series1,
    pub tracked: Series1,
    pub untracked: UntrackedOut,
    pub go_runtime: GoRuntimeOut,
    pub stacks: Vec<StackOut<'a>>,
    pub series: SeriesOut,
    pub processes: Vec<ProcessSummary<'a>>,
    pub warnings: &'a [String],
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_on: Option<FailOut>,
}

#[derive(Serialize)]
pub struct ProcessInfo<'a> {
    pub pid: u64,
    pub exe: &'a str,
    pub exe_build_id: Option<&'a str>,
    pub cmdline: &'a [String],
    pub library_version: &'a str,
}

#[derive(Serialize)]
pub struct DumpsInfo {
    pub count: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub duration_s: f64,
    /// seq of the first dump used for verdicts (the first with epoch > 0, if any).
    pub verdict_from_seq: Option<u64>,
    pub sample_bytes: u64,
}

#[derive(Serialize)]
pub struct TotalsOut {
    pub malloc: BytesCount,
    pub mmap: BytesCount,
    pub mmap_file: BytesCount,
    pub mmap_reserved: BytesCount,
}

#[derive(Serialize)]
pub struct Series1 {
    pub bytes: u64,
    pub growth_bytes_per_sec: f64,
}

#[derive(Serialize)]
pub struct UntrackedOut {
    pub bytes: u64,
    pub growth_bytes_per_sec: f64,
}

#[derive(Serialize)]
pub struct GoRuntimeOut {
    /// Committed bytes (malloc, mmap, mmap_file) of go-runtime stacks.
    pub bytes: u64,
    pub count: u64,
    /// PROT_NONE reservations (address space, not memory).
    pub reserved_bytes: u64,
    pub stacks: usize,
    pub growth_bytes_per_sec: f64,
}

#[derive(Serialize)]
pub struct FrameOut<'a> {
    pub function: String,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
    pub module: Option<&'a str>,
    pub addr: u64,
    pub inlined: bool,
}

#[derive(Serialize)]
pub struct StackOut<'a> {
    pub id: u64,
    pub kind: &'a str,
    pub origin: &'static str,
    pub verdict: &'static str,
    pub suspect: bool,
    pub suppressed: Option<&'a str>,
    pub bytes: u64,
    pub count: u64,
    pub growth_bytes_per_sec: f64,
    pub confidence: f64,
    /// Uptime (ms) when this stack's oldest allocation was born.
    pub first_seen: u64,
    pub oldest_ms: Option<u64>,
    pub age_hist: Option<&'a [u64]>,
    pub end: &'a str,
    pub go_caller: Option<FrameOut<'a>>,
    pub cumulative: Option<CumOut>,
    pub frames: Vec<FrameOut<'a>>,
}

#[derive(Serialize)]
pub struct CumOut {
    pub allocs: u64,
    pub frees: u64,
    pub alloc_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Serialize)]
pub struct SeriesOut {
    pub t_ms: Vec<u64>,
    pub seq: Vec<u64>,
    pub epoch: Vec<u64>,
    pub rss: Vec<u64>,
    pub tracked: Vec<u64>,
    pub untracked: Vec<u64>,
}

#[derive(Serialize)]
pub struct ProcessSummary<'a> {
    pub pid: u64,
    pub exe: &'a str,
    pub dumps: usize,
    pub selected: bool,
}

#[derive(Serialize)]
pub struct FailOut {
    pub policy: String,
    pub tripped: bool,
    pub reasons: Vec<String>,
}

fn frame(f: &SymFrame) -> FrameOut<'_> {
    FrameOut {
        function: f.display_name(),
        file: f.file.as_deref(),
        line: f.line,
        module: f.module.as_deref(),
        addr: f.addr,
        inlined: f.inlined,
    }
}

fn stack(s: &StackSeries) -> StackOut<'_> {
    StackOut {
        id: s.stack,
        kind: &s.kind,
        origin: s.origin.as_str(),
        verdict: s.class.verdict.as_str(),
        suspect: s.is_suspect(),
        suppressed: s.suppressed.as_deref(),
        bytes: s.last_bytes().round() as u64,
        count: s.last_count().round() as u64,
        growth_bytes_per_sec: round1(s.class.rate),
        confidence: s.class.confidence,
        first_seen: s.first_seen_ms,
        oldest_ms: s.last.as_ref().and_then(|o| o.oldest_ms),
        age_hist: s.last.as_ref().map(|o| o.age_hist.as_slice()),
        end: &s.end,
        go_caller: s.go_caller().map(frame),
        cumulative: s.cumulative.as_ref().map(|c| CumOut {
            allocs: c.allocs,
            frees: c.frees,
            alloc_bytes: c.alloc_bytes,
            free_bytes: c.free_bytes,
        }),
        frames: s.frames.iter().map(frame).collect(),
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Stacks in report order: suspects (worst first), other non-runtime stacks by bytes, then
/// go-runtime stacks by bytes.
pub fn ordered(m: &ProcessModel) -> Vec<&StackSeries> {
    let mut out = m.suspects();
    let mut rest: Vec<&StackSeries> = m.stacks.iter().filter(|s| !s.is_suspect()).collect();
    rest.sort_by(|a, b| {
        (a.origin == crate::model::origin::Origin::GoRuntime)
            .cmp(&(b.origin == crate::model::origin::Origin::GoRuntime))
            .then(b.last_bytes().total_cmp(&a.last_bytes()))
    });
    out.extend(rest);
    out
}

pub fn build<'a>(ctx: &'a Context<'a>) -> Report<'a> {
    let m = ctx.model;
    let t = &m.last_totals;
    let rt: Vec<&StackSeries> = m
        .stacks
        .iter()
        .filter(|s| s.origin == crate::model::origin::Origin::GoRuntime)
        .collect();
    Report {
        schema: SCHEMA,
        process: ProcessInfo {
            pid: m.pid,
            exe: &m.exe,
            exe_build_id: m.exe_build_id.as_deref(),
            cmdline: &m.cmdline,
            library_version: &m.library_version,
        },
        dumps: DumpsInfo {
            count: m.dumps(),
            first_seq: m.seqs.first().copied(),
            last_seq: m.seqs.last().copied(),
            duration_s: m.duration_s(),
            verdict_from_seq: m.seqs.get(m.window_start).copied(),
            sample_bytes: m.sample_bytes,
        },
        estimates: m.sampled(),
        totals: TotalsOut {
            malloc: t.malloc,
            mmap: t.mmap,
            mmap_file: t.mmap_file,
            mmap_reserved: t.mmap_reserved,
        },
        rss: Series1 {
            bytes: m.rss.last().copied().unwrap_or(0),
            growth_bytes_per_sec: round1(m.rss_rate),
        },
        tracked: Series1 {
            bytes: m.tracked.last().copied().unwrap_or(0),
            growth_bytes_per_sec: {
                let ts = m.window_times();
                let ys: Vec<f64> = m.tracked[m.window_start..]
                    .iter()
                    .map(|&x| x as f64)
                    .collect();
                round1(crate::verdict::fit(&ts, &ys).0)
            },
        },
        untracked: UntrackedOut {
            bytes: m.untracked.last().copied().unwrap_or(0),
            growth_bytes_per_sec: round1(m.untracked_rate),
        },
        go_runtime: {
            let committed = || rt.iter().filter(|s| s.kind != "mmap_reserved");
            GoRuntimeOut {
                bytes: committed().map(|s| s.last_bytes()).sum::<f64>().round() as u64,
                count: committed().map(|s| s.last_count()).sum::<f64>().round() as u64,
                reserved_bytes: rt
                    .iter()
                    .filter(|s| s.kind == "mmap_reserved")
                    .map(|s| s.last_bytes())
                    .sum::<f64>()
                    .round() as u64,
                stacks: rt.len(),
                growth_bytes_per_sec: round1(committed().map(|s| s.class.rate).sum()),
            }
        },
        stacks: ordered(m).into_iter().map(stack).collect(),
        series: SeriesOut {
            t_ms: m.times_ms.clone(),
            seq: m.seqs.clone(),
            epoch: m.epochs.clone(),
            rss: m.rss.clone(),
            tracked: m.tracked.clone(),
            untracked: m.untracked.clone(),
        },
        processes: ctx
            .processes
            .iter()
            .map(|p| ProcessSummary {
                pid: p.pid,
                exe: &p.exe,
                dumps: p.dumps,
                selected: p.pid == m.pid,
            })
            .collect(),
        warnings: ctx.warnings,
        errors: ctx.errors.iter().map(|e| e.to_string()).collect(),
        fail_on: ctx.fail.as_ref().map(|f| FailOut {
            policy: f.policy.clone(),
            tripped: !f.reasons.is_empty(),
            reasons: f.reasons.clone(),
        }),
    }
}

pub fn render(ctx: &Context, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &build(ctx))?;
    writeln!(out)?;
    Ok(())
}
