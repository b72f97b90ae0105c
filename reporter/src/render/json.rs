//! The versioned JSON report (`offheap-report/2`, documented in docs/report-json.md).
//!
//! Field names are a contract with pipelines: add fields freely, never rename or remove them
//! without bumping the schema. By default the report is aggregated (suspects, live memory by
//! caller and by site, top N each) and lists only the stacks beneath the suspects it shows,
//! so its size follows the number of culprits, not of stacks; `--all` lists everything.

use super::json_ledger::{self, LedgerOut};
use super::{Context, STACKS_PER_GROUP};
use crate::model::groups::{self, Group, GroupBy};
use crate::model::{ProcessModel, Series};
use crate::symbolize::SymFrame;
use offheap_format::schema::{BytesCount, ExitInfo, GoInfo, ProcessMem};
use serde::Serialize;
use std::collections::BTreeSet;

pub const SCHEMA: &str = "offheap-report/2";

#[derive(Serialize)]
pub struct Report<'a> {
    pub schema: &'static str,
    pub process: ProcessInfo<'a>,
    pub dumps: DumpsInfo,
    pub estimates: bool,
    /// Under sampling, when the estimate of live malloc bytes and glibc's own count differ by
    /// more than 2× either way.
    pub estimates_off: Option<EstimatesOff>,
    pub totals: TotalsOut,
    pub rss: Series1,
    /// The kernel's figures at the last dump (`/proc/self/status`).
    pub memory: &'a ProcessMem,
    pub tracked: Series1,
    pub untracked: UntrackedOut,
    pub go_runtime: GoRuntimeOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerOut<'a>>,
    pub threads: ThreadsOut,
    pub suspects: Table,
    pub callers: Table,
    pub sites: Table,
    /// Memory that came and went (transient verdicts), largest peak first.
    pub came_and_went: Vec<TransientOut>,
    /// Allocations that came and went between dumps (none live when one was taken), most
    /// bytes first.
    pub between_dumps: Vec<BetweenDumpsOut>,
    pub stacks: StacksOut<'a>,
    pub stacks_omitted: usize,
    pub series: SeriesOut,
    pub processes: Vec<ProcessSummary<'a>>,
    pub suppressions: SuppressionsOut<'a>,
    pub warnings: &'a [String],
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_on: Option<FailOut>,
}

#[derive(Serialize)]
pub struct EstimatesOff {
    pub estimated_live_bytes: u64,
    /// glibc's `uordblks + hblkhd` at the last dump.
    pub glibc_live_bytes: u64,
}

#[derive(Serialize)]
pub struct ProcessInfo<'a> {
    pub pid: u64,
    pub exe: &'a str,
    pub exe_build_id: Option<&'a str>,
    pub cmdline: &'a [String],
    pub library_version: &'a str,
    pub go: Option<&'a GoInfo>,
    pub go_source: &'a str,
    /// Module paths of the Go dependencies (`.go.buildinfo`).
    pub go_deps: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<&'a ExitInfo>,
}

#[derive(Serialize)]
pub struct DumpsInfo {
    pub count: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub duration_s: f64,
    pub interval_s: f64,
    /// The shortest and longest time between dumps (the exit dump's gap left out).
    pub interval_range_s: [f64; 2],
    /// seq of the first dump used for verdicts (the first with epoch > 0, if any).
    pub verdict_from_seq: Option<u64>,
    pub verdict_dumps: usize,
    pub min_dumps: usize,
    pub sample_bytes: u64,
    pub late: Option<LateDumpsOut>,
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
    pub resident_bytes: u64,
    pub count: u64,
    pub growth_bytes_per_sec: f64,
}

#[derive(Serialize)]
pub struct ThreadsOut {
    pub live: u64,
    pub created: u64,
    pub growth_threads_per_sec: f64,
}

#[derive(Serialize)]
pub struct GoRuntimeOut {
    pub bytes: u64,
    pub count: u64,
    pub reserved_bytes: u64,
    pub stacks: usize,
    pub growth_bytes_per_sec: f64,
}

#[derive(Serialize, Clone)]
pub struct FrameOut {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    pub addr: u64,
    pub inlined: bool,
}

/// A table of groups: the listed ones and how many were left out.
#[derive(Serialize)]
pub struct Table {
    pub total: usize,
    pub omitted: usize,
    pub groups: Vec<GroupOut>,
}

#[derive(Serialize)]
pub struct GroupOut {
    pub function: String,
    pub location: Option<String>,
    pub kind: &'static str,
    pub verdict: &'static str,
    pub confidence: f64,
    pub via: Option<String>,
    pub vias: Vec<String>,
    pub bytes: u64,
    pub count: u64,
    pub growth_bytes_per_sec: f64,
    pub stacks: usize,
    /// Ids of the stacks beneath, worst first (the first few without `--all`).
    pub stack_ids: Vec<u64>,
}

#[derive(Serialize)]
pub struct TransientOut {
    pub function: String,
    pub kind: &'static str,
    pub via: Option<String>,
    pub peak_bytes: u64,
    pub peak_at_s: f64,
    pub bytes: u64,
    pub stack_ids: Vec<u64>,
}

#[derive(Serialize)]
pub struct BetweenDumpsOut {
    pub function: String,
    pub via: Option<String>,
    pub allocs: u64,
    pub bytes: u64,
    pub stack_id: u64,
}

fn between_dumps(m: &ProcessModel) -> Vec<BetweenDumpsOut> {
    m.between_dumps
        .iter()
        .map(|b| {
            let (function, via) = m.caller_of(b.stack);
            BetweenDumpsOut {
                function,
                via,
                allocs: b.allocs,
                bytes: b.bytes,
                stack_id: b.stack,
            }
        })
        .collect()
}

fn came_and_went(ctx: &Context) -> Vec<TransientOut> {
    let m = ctx.model;
    let rows = groups::transients(m);
    let shown = ctx.view.limit(rows.len());
    rows.into_iter()
        .take(shown)
        .map(|t| {
            let g = group_out(m, &t.group, ctx.view.all);
            TransientOut {
                function: g.function,
                kind: g.kind,
                via: g.via,
                peak_bytes: t.peak_bytes.round() as u64,
                peak_at_s: round1(t.peak_at_s),
                bytes: g.bytes,
                stack_ids: g.stack_ids,
            }
        })
        .collect()
}

#[derive(Serialize)]
pub struct StackOut {
    pub id: u64,
    pub kind: &'static str,
    pub via_syscall: bool,
    pub origin: &'static str,
    pub verdict: &'static str,
    pub reason: &'static str,
    pub suspect: bool,
    /// A new thread's TLS: counted with the threads, never a suspect.
    pub thread_tls: bool,
    pub suppressed: Option<String>,
    pub bytes: u64,
    pub count: u64,
    /// Under sampling, the sampled blocks the last dump's estimates rest on (malloc only).
    pub sampled_count: Option<u64>,
    pub growth_bytes_per_sec: f64,
    pub confidence: f64,
    pub first_seen: u64,
    pub oldest_ms: Option<u64>,
    pub newest_ms: Option<u64>,
    pub max_age_ms: u64,
    pub age_hist: Option<[u64; 6]>,
    pub resident_bytes: Option<u64>,
    pub end: Option<&'static str>,
    pub go_caller: Option<FrameOut>,
    pub caller_rule: &'static str,
    pub via: Option<String>,
    pub site: Option<FrameOut>,
    pub cumulative: Option<CumOut>,
    pub frames: Vec<FrameOut>,
}

/// The listed stacks, each built while it is written: a report of every stack of a big
/// service (`--all`) is mostly frames, and need not exist in memory all at once.
pub struct StacksOut<'a> {
    model: &'a ProcessModel,
    series: Vec<&'a Series>,
}

impl StacksOut<'_> {
    pub fn len(&self) -> usize {
        self.series.len()
    }
}

impl Serialize for StacksOut<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = ser.serialize_seq(Some(self.series.len()))?;
        for s in &self.series {
            seq.serialize_element(&stack(self.model, s))?;
        }
        seq.end()
    }
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
    /// Ledger bytes per category at each dump (null where a dump had none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<std::collections::BTreeMap<&'static str, Vec<Option<u64>>>>,
}

#[derive(Serialize)]
pub struct ProcessSummary<'a> {
    pub pid: u64,
    pub stem: &'a str,
    pub exe: &'a str,
    pub dumps: usize,
    pub selected: bool,
}

#[derive(Serialize)]
pub struct SuppressionsOut<'a> {
    pub used: Vec<SuppressionUsed<'a>>,
    pub unmatched: &'a [String],
    pub shadowed: Vec<SuppressionShadowed<'a>>,
}

/// A pattern that matches stacks but suppressed none: another suppressed each first.
#[derive(Serialize)]
pub struct SuppressionShadowed<'a> {
    pub pattern: &'a str,
    pub suppressed_first_by: &'a str,
}

#[derive(Serialize)]
pub struct SuppressionUsed<'a> {
    pub pattern: &'a str,
    pub stacks: usize,
    pub bytes: u64,
}

#[derive(Serialize)]
pub struct FailOut {
    pub policy: String,
    pub tripped: bool,
    pub reasons: Vec<String>,
    pub not_counted: Vec<String>,
}

pub fn frame(f: &SymFrame) -> FrameOut {
    FrameOut {
        function: f.display_name(),
        file: f.file.clone(),
        line: f.line,
        module: f.module.clone(),
        addr: f.addr,
        inlined: f.inlined,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn stack(m: &ProcessModel, s: &Series) -> StackOut {
    let info = m.stack(s.stack);
    let culprit = info.map(|i| &i.culprit);
    StackOut {
        id: s.stack,
        kind: s.kind.as_str(),
        via_syscall: s.via == offheap_format::Via::Syscall,
        origin: m.origin(s).as_str(),
        verdict: s.class.verdict.as_str(),
        reason: s.class.reason,
        suspect: m.is_suspect(s),
        thread_tls: info.is_some_and(|i| i.thread_tls),
        suppressed: info.and_then(|i| i.suppressed.clone()),
        bytes: s.last_bytes.round() as u64,
        count: s.last_count.round() as u64,
        sampled_count: s
            .last
            .as_ref()
            .filter(|_| m.sampled() && s.kind == offheap_format::Kind::Malloc)
            .map(|r| r.count),
        growth_bytes_per_sec: round1(s.class.rate),
        confidence: s.class.confidence,
        first_seen: s.first_seen_ms,
        oldest_ms: s.last.as_ref().filter(|r| r.count > 0).map(|r| r.oldest_ms),
        newest_ms: s.last.as_ref().filter(|r| r.count > 0).map(|r| r.newest_ms),
        max_age_ms: s.max_age_ms,
        age_hist: s.last.as_ref().map(|r| r.age_hist),
        resident_bytes: s.last.as_ref().and_then(|r| r.resident),
        end: info.and_then(|i| i.end).map(|e| e.as_str()),
        go_caller: culprit.and_then(|c| c.caller.as_ref()).map(frame),
        caller_rule: match culprit.map(|c| c.rule) {
            Some(crate::model::culprit::CallerRule::MainModule) => "main-module",
            Some(crate::model::culprit::CallerRule::Executable) => "executable",
            _ => "first-non-runtime",
        },
        via: culprit.and_then(|c| c.via.clone()),
        site: culprit.and_then(|c| c.site.as_ref()).map(frame),
        cumulative: info.and_then(|i| i.cumulative).map(|c| CumOut {
            allocs: c.allocs,
            frees: c.frees,
            alloc_bytes: c.alloc_bytes,
            free_bytes: c.free_bytes,
        }),
        frames: m.frames_of(s.stack).iter().map(frame).collect(),
    }
}

fn group_out(m: &ProcessModel, g: &Group, all: bool) -> GroupOut {
    let ids: Vec<u64> = g.series.iter().map(|&i| m.series[i].stack).collect();
    let mut seen = BTreeSet::new();
    let ids: Vec<u64> = ids.into_iter().filter(|id| seen.insert(*id)).collect();
    GroupOut {
        function: g.name.clone(),
        location: g.location.clone(),
        kind: g.kind.as_str(),
        verdict: g.verdict.as_str(),
        confidence: g.confidence,
        via: g.via().map(str::to_string),
        vias: g.vias.clone(),
        bytes: g.bytes.round() as u64,
        count: g.count.round() as u64,
        growth_bytes_per_sec: round1(g.rate),
        stacks: ids.len(),
        stack_ids: if all {
            ids
        } else {
            ids.into_iter().take(STACKS_PER_GROUP).collect()
        },
    }
}

fn table(ctx: &Context, groups: &[Group]) -> Table {
    let shown = ctx.view.limit(groups.len());
    Table {
        total: groups.len(),
        omitted: groups.len() - shown,
        groups: groups[..shown]
            .iter()
            .map(|g| group_out(ctx.model, g, ctx.view.all))
            .collect(),
    }
}

/// The series whose stacks the report lists: all with `--all`, else those beneath the listed
/// suspect groups (a few each).
fn listed_series<'m>(ctx: &Context<'m>, suspects: &[Group]) -> Vec<&'m Series> {
    let m = ctx.model;
    if ctx.view.all {
        return m.ordered();
    }
    let mut out = Vec::new();
    for g in suspects.iter().take(ctx.view.limit(suspects.len())) {
        let mut ids = BTreeSet::new();
        for &i in &g.series {
            let s = &m.series[i];
            if ids.len() < STACKS_PER_GROUP || ids.contains(&s.stack) {
                ids.insert(s.stack);
                out.push(s);
            }
        }
    }
    out
}

fn process_info(m: &ProcessModel) -> ProcessInfo<'_> {
    ProcessInfo {
        pid: m.pid,
        exe: &m.exe,
        exe_build_id: m.exe_build_id.as_deref(),
        cmdline: &m.cmdline,
        library_version: &m.library_version,
        go: m.exe_facts.go.as_ref(),
        go_source: &m.exe_facts.source,
        go_deps: &m.exe_facts.deps,
        exit: m.last.exit.as_ref(),
    }
}

fn dumps_info(m: &ProcessModel) -> DumpsInfo {
    DumpsInfo {
        count: m.dumps(),
        first_seq: m.points.first().map(|p| p.seq),
        last_seq: m.last_point().map(|p| p.seq),
        duration_s: m.duration_s(),
        interval_s: m.interval_s,
        interval_range_s: [m.interval_range_s.0, m.interval_range_s.1],
        verdict_from_seq: m.points.get(m.window_start).map(|p| p.seq),
        verdict_dumps: m.window_dumps(),
        min_dumps: m.thresholds.min_dumps,
        sample_bytes: m.sample_bytes,
        late: m.late_dumps.map(|l| LateDumpsOut {
            configured_interval_s: l.configured_interval_s,
            expected: l.expected,
            uptime_s: l.uptime_s,
        }),
    }
}

/// Periodic dumps that did not come on schedule (model::LateDumps).
#[derive(Serialize)]
pub struct LateDumpsOut {
    pub configured_interval_s: f64,
    pub expected: usize,
    pub uptime_s: f64,
}

fn series_out(m: &ProcessModel) -> SeriesOut {
    let col = |f: fn(&crate::model::DumpPoint) -> u64| m.points.iter().map(f).collect();
    SeriesOut {
        t_ms: col(|p| p.uptime_ms),
        seq: col(|p| p.seq),
        epoch: col(|p| p.epoch),
        rss: col(|p| p.rss),
        tracked: col(|p| p.tracked),
        untracked: col(|p| p.untracked),
        ledger: json_ledger::series_out(m),
    }
}

fn go_runtime_out(m: &ProcessModel) -> GoRuntimeOut {
    let rt = m.go_runtime_totals();
    GoRuntimeOut {
        bytes: rt.bytes.round() as u64,
        count: rt.count.round() as u64,
        reserved_bytes: rt.reserved_bytes.round() as u64,
        stacks: rt.stacks,
        growth_bytes_per_sec: round1(rt.rate),
    }
}

fn suppressions_out<'a>(ctx: &'a Context<'a>) -> SuppressionsOut<'a> {
    SuppressionsOut {
        used: ctx
            .model
            .suppression
            .used
            .iter()
            .map(|(p, n, b)| SuppressionUsed {
                pattern: p,
                stacks: *n,
                bytes: b.round() as u64,
            })
            .collect(),
        unmatched: &ctx.unmatched_suppressions,
        shadowed: ctx
            .model
            .suppression
            .shadowed
            .iter()
            .map(|(pattern, first)| SuppressionShadowed {
                pattern,
                suppressed_first_by: first,
            })
            .collect(),
    }
}

fn processes_out<'a>(ctx: &'a Context<'a>) -> Vec<ProcessSummary<'a>> {
    ctx.processes
        .iter()
        .map(|p| ProcessSummary {
            pid: p.pid,
            stem: &p.stem,
            exe: &p.exe,
            dumps: p.dumps,
            selected: p.selected,
        })
        .collect()
}

pub fn build<'a>(ctx: &'a Context<'a>) -> Report<'a> {
    let m = ctx.model;
    let t = &m.last.totals;
    let last = m.last_point();
    let suspects = groups::suspects(m);
    let listed = listed_series(ctx, &suspects);
    let callers = groups::live(m, GroupBy::Caller, ctx.view.include_runtime);
    let sites = groups::live(m, GroupBy::Site, ctx.view.include_runtime);
    Report {
        schema: SCHEMA,
        process: process_info(m),
        dumps: dumps_info(m),
        estimates: m.sampled(),
        estimates_off: m.estimate_off().map(|(estimate, glibc)| EstimatesOff {
            estimated_live_bytes: estimate.round() as u64,
            glibc_live_bytes: glibc,
        }),
        totals: TotalsOut {
            malloc: t.malloc,
            mmap: t.mmap,
            mmap_file: t.mmap_file,
            mmap_reserved: t.mmap_reserved,
        },
        rss: Series1 {
            bytes: last.map_or(0, |p| p.rss),
            growth_bytes_per_sec: round1(m.rss_rate),
        },
        memory: &m.last.process,
        tracked: Series1 {
            bytes: last.map_or(0, |p| p.tracked),
            growth_bytes_per_sec: round1(m.tracked_rate),
        },
        untracked: UntrackedOut {
            bytes: last.map_or(0, |p| p.untracked),
            resident_bytes: last.map_or(0, |p| p.untracked_resident),
            count: m.last.untracked_count,
            growth_bytes_per_sec: round1(m.untracked_rate),
        },
        go_runtime: go_runtime_out(m),
        ledger: json_ledger::ledger_out(m),
        threads: ThreadsOut {
            live: m.last.threads_live,
            created: m.last.threads_created,
            growth_threads_per_sec: (m.threads.live_rate * 1000.0).round() / 1000.0,
        },
        suspects: table(ctx, &suspects),
        callers: table(ctx, &callers),
        sites: table(ctx, &sites),
        came_and_went: came_and_went(ctx),
        between_dumps: between_dumps(m),
        stacks_omitted: m.series.len() - listed.len(),
        stacks: StacksOut {
            model: m,
            series: listed,
        },
        series: series_out(m),
        processes: processes_out(ctx),
        suppressions: suppressions_out(ctx),
        warnings: &ctx.diag.warnings,
        errors: ctx.diag.errors.iter().map(|e| e.to_string()).collect(),
        fail_on: ctx.fail.as_ref().map(|f| FailOut {
            policy: f.policy.clone(),
            tripped: !f.reasons.is_empty(),
            reasons: f.reasons.clone(),
            not_counted: f.not_counted.clone(),
        }),
    }
}

pub fn render(ctx: &Context, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    // Compact when large: a full --all report of a big service is mostly frames.
    let r = build(ctx);
    if ctx.view.all && r.stacks.len() > 1000 {
        serde_json::to_writer(&mut *out, &r)?;
    } else {
        serde_json::to_writer_pretty(&mut *out, &r)?;
    }
    writeln!(out)?;
    Ok(())
}
