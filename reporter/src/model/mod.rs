//! The analysis model: one process over its dumps, as verdicts and renderers consume it.
//!
//! [`fold::Accumulator`] receives the dumps one at a time ([`crate::read::DumpSink`]) and keeps,
//! per (stack, kind, via), only a run-length encoded series of outstanding bytes plus the
//! newest dump's row; [`build::finish`] then symbolizes each stack once, decides its origin
//! and culprit (the user's function it is charged to), and classifies every series. Rates and
//! aggregates are computed here (and in [`groups`]) so renderers only present them.

pub mod build;
pub mod culprit;
pub mod fold;
pub mod groups;
pub mod helpers;
pub mod ledger;
pub mod origin;
pub mod threads;

use crate::symbolize::SymFrame;
use crate::verdict::{Classification, Thresholds};
use culprit::Culprit;
use offheap_format::schema::{Cumulative, Detail, ExitInfo, GoInfo, ProcessMem, SelfStats, Totals};
use offheap_format::{End, Kind, Via};
use origin::Origin;
use std::collections::HashMap;
use std::sync::Arc;

/// Values over dump indices, stored as (first index, value) at every change: a stack whose
/// outstanding bytes do not move costs one entry however long the series.
#[derive(Debug, Clone, Default)]
pub struct Rle {
    points: Vec<(u32, f64)>,
}

impl Rle {
    /// Sets the value from dump `i` on (indices must not go backwards).
    pub fn set(&mut self, i: u32, v: f64) {
        match self.points.last_mut() {
            Some(last) if last.0 == i => last.1 = v,
            Some(last) if last.1 == v => {}
            _ => self.points.push((i, v)),
        }
    }

    /// Values at dumps `0..n`.
    pub fn dense(&self, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n];
        for (k, &(start, v)) in self.points.iter().enumerate() {
            let end = self.points.get(k + 1).map_or(n, |p| (p.0 as usize).min(n));
            for x in out.iter_mut().take(end).skip(start as usize) {
                *x = v;
            }
        }
        out
    }
}

/// The process-wide figures of one dump.
#[derive(Debug, Clone, Copy)]
pub struct DumpPoint {
    pub seq: u64,
    pub uptime_ms: u64,
    pub wall_ns: u64,
    pub epoch: u64,
    pub generation: u64,
    pub rss: u64,
    /// malloc + anonymous mmap bytes (requested / mapped, not resident).
    pub tracked: u64,
    /// Anonymous mappings no tracked call made: mapped bytes and resident bytes.
    pub untracked: u64,
    pub untracked_resident: u64,
}

/// The newest dump's row for a series: the per-row detail kept for one dump only.
#[derive(Debug, Clone, Default)]
pub struct LastRow {
    pub count: u64,
    pub bytes: u64,
    pub est_bytes: Option<f64>,
    pub oldest_ms: u64,
    pub newest_ms: u64,
    pub age_hist: [u64; 6],
    pub by_generation: Vec<Detail>,
    pub resident: Option<u64>,
}

/// One (stack, kind, via) over the series.
#[derive(Debug, Clone)]
pub struct Series {
    pub stack: u64,
    pub kind: Kind,
    pub via: Via,
    /// Outstanding bytes at each dump (estimates when sampling).
    pub bytes: Rle,
    /// Resident bytes under the series' mappings at each dump (the `resident` column; empty
    /// for malloc series, whose residency is in the ledger's arenas).
    pub resident: Rle,
    /// Under sampling, the sampled blocks live at each dump (what an estimate rests on);
    /// empty otherwise.
    pub samples: Rle,
    pub last_bytes: f64,
    pub last_count: f64,
    /// Uptime (ms) of the birth of the oldest allocation ever seen live, or of the first dump
    /// listing the series.
    pub first_seen_ms: u64,
    /// The oldest age any live allocation of the series reached in any dump (ms).
    pub max_age_ms: u64,
    /// The newest dump's row, if the series had one there.
    pub last: Option<LastRow>,
    pub class: Classification,
}

impl Series {
    pub fn is_reservation(&self) -> bool {
        self.kind == Kind::MmapReserved
    }
}

/// One stack: its frames and what they say.
#[derive(Debug, Clone)]
pub struct StackInfo {
    pub id: u64,
    pub end: Option<End>,
    /// Return addresses, innermost first (empty when the stack is unknown).
    pub addrs: Arc<[u64]>,
    /// Why the stack has no frames, when it has none.
    pub missing: Option<&'static str>,
    pub origin: Origin,
    /// A new thread's TLS (origin::is_thread_tls): it grows with the live threads, whose
    /// creators are judged instead.
    pub thread_tls: bool,
    pub culprit: Culprit,
    /// The suppression pattern that matched one of its functions.
    pub suppressed: Option<String>,
    /// Other patterns that match one of its functions but lost to `suppressed` (the pattern
    /// of the innermost matching frame wins).
    pub shadowed: Vec<String>,
    /// Counters since the process started, at the last dump and at the window's start.
    pub cumulative: Option<Cumulative>,
    pub cumulative_at_window: Option<Cumulative>,
}

impl StackInfo {
    /// Whether growth on this stack can make it a suspect: not the Go runtime's own, not a
    /// thread's TLS, not suppressed.
    pub fn may_suspect(&self) -> bool {
        self.origin != Origin::GoRuntime && !self.thread_tls && self.suppressed.is_none()
    }

    /// Allocations and frees made during the verdict window (None without counters).
    pub fn window_turnover(&self) -> Option<(u64, u64)> {
        let c = self.cumulative?;
        let (a0, f0) = self
            .cumulative_at_window
            .map_or((0, 0), |w| (w.allocs, w.frees));
        Some((c.allocs.saturating_sub(a0), c.frees.saturating_sub(f0)))
    }
}

/// A stack's allocations over the verdict window that were all freed again before any dump
/// saw one of them live (its counters moved; it has no series).
#[derive(Debug, Clone, Copy)]
pub struct BetweenDumps {
    pub stack: u64,
    pub allocs: u64,
    pub bytes: u64,
}

impl BetweenDumps {
    pub fn mean_block_bytes(&self) -> f64 {
        self.bytes as f64 / self.allocs.max(1) as f64
    }
}

/// The newest dump's process-wide sections.
#[derive(Debug, Clone, Default)]
pub struct LastDump {
    pub totals: Totals,
    pub self_: SelfStats,
    pub process: ProcessMem,
    pub threads_live: u64,
    pub threads_created: u64,
    pub exit: Option<ExitInfo>,
    pub untracked_count: u64,
    /// Stacks the library's store held (0: not recorded by that library version).
    pub max_stacks: u64,
    /// The finite RLIMIT_AS that sized the store, when OFFHEAP_MAX_STACKS did not.
    pub address_limit: Option<u64>,
}

/// What the executable says about itself (from the dump header or `.go.buildinfo`).
#[derive(Debug, Clone, Default)]
pub struct ExeFacts {
    pub go: Option<GoInfo>,
    /// Module paths of the dependencies (from `.go.buildinfo`).
    pub deps: Vec<String>,
    /// Where the facts came from, or why there are none.
    pub source: String,
}

/// Counts of what the suppressions did, for the report to say.
#[derive(Debug, Clone, Default)]
pub struct SuppressionUse {
    /// (pattern, stacks it suppressed, bytes at the last dump).
    pub used: Vec<(String, usize, f64)>,
    /// (pattern, the pattern that suppressed first) for patterns that suppressed nothing
    /// because every stack they match another pattern suppressed first.
    pub shadowed: Vec<(String, String)>,
}

/// Symbolized frames by return address, shared by every stack that passes through it.
pub type FrameTable = HashMap<u64, Arc<Vec<SymFrame>>>;

/// One process over its dumps.
#[derive(Debug, Default)]
pub struct ProcessModel {
    pub pid: u64,
    pub exe: String,
    pub exe_build_id: Option<String>,
    pub cmdline: Vec<String>,
    pub library_version: String,
    pub sample_bytes: u64,
    /// The median time between consecutive dumps.
    pub interval_s: f64,
    /// The shortest and longest time between consecutive dumps (snapshots and marks make
    /// them irregular).
    pub interval_range_s: (f64, f64),
    pub exe_facts: ExeFacts,
    pub points: Vec<DumpPoint>,
    /// Index of the first dump used for verdicts (the first with epoch > 0, if any).
    pub window_start: usize,
    pub last: LastDump,
    pub series: Vec<Series>,
    pub stacks: HashMap<u64, StackInfo>,
    pub frames: FrameTable,
    pub thresholds: Thresholds,
    pub rss_rate: f64,
    pub untracked_rate: f64,
    pub tracked_rate: f64,
    pub suppression: SuppressionUse,
    /// The RSS ledger over the series, when the dumps have one.
    pub ledger: Option<ledger::LedgerModel>,
    pub threads: threads::ThreadsModel,
    /// Periodic dumps that did not come on schedule, and why (see `late_dumps`).
    pub late_dumps: Option<LateDumps>,
    /// Stacks whose allocations came and went between dumps (never live in one), most bytes
    /// first: what a step of RSS may come from when no dump caught it.
    pub between_dumps: Vec<BetweenDumps>,
}

/// A single-threaded program under sampling has no thread of ours (OFFHEAP_THREAD=auto): a
/// periodic dump falls due in the next tracked call, and under sampling those are the
/// samples, so a program that allocates slowly gets few of its dumps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LateDumps {
    /// OFFHEAP_INTERVAL as the process ran with it.
    pub configured_interval_s: f64,
    pub dumps: usize,
    /// Dumps the interval asks for over the process's uptime.
    pub expected: usize,
    pub uptime_s: f64,
}

impl ProcessModel {
    pub fn dumps(&self) -> usize {
        self.points.len()
    }
    pub fn window_dumps(&self) -> usize {
        self.points.len().saturating_sub(self.window_start)
    }
    pub fn duration_s(&self) -> f64 {
        match (self.points.first(), self.points.last()) {
            (Some(a), Some(b)) => b.uptime_ms.saturating_sub(a.uptime_ms) as f64 / 1000.0,
            _ => 0.0,
        }
    }
    pub fn sampled(&self) -> bool {
        self.sample_bytes > 0
    }

    /// Under sampling, (estimated live malloc bytes, glibc's own count of them) when the two
    /// differ by more than `Thresholds::estimate_mismatch` either way: the estimates rest on
    /// too few samples to be read as figures.
    pub fn estimate_off(&self) -> Option<(f64, u64)> {
        let glibc = self.ledger.as_ref()?.mallinfo?;
        let exact = glibc.uordblks.saturating_add(glibc.hblkhd);
        let estimate = self.last.totals.malloc.bytes as f64;
        let ratio = self.thresholds.estimate_mismatch;
        let off = estimate > exact as f64 * ratio || estimate * ratio < exact as f64;
        (self.sampled() && exact > 0 && off).then_some((estimate, exact))
    }
    pub fn last_point(&self) -> Option<&DumpPoint> {
        self.points.last()
    }
    pub fn now_ms(&self) -> u64 {
        self.points.last().map_or(0, |p| p.uptime_ms)
    }
    pub fn stack(&self, id: u64) -> Option<&StackInfo> {
        self.stacks.get(&id)
    }
    /// The caller a stack is charged to (`??` when none could be named) and the entry point
    /// it went through.
    pub fn caller_of(&self, id: u64) -> (String, Option<String>) {
        let c = self.stack(id).map(|i| &i.culprit);
        (
            c.and_then(|c| c.caller.as_ref())
                .map_or_else(|| "??".to_string(), |f| f.display_name()),
            c.and_then(|c| c.via.clone()),
        )
    }
    pub fn origin(&self, s: &Series) -> Origin {
        self.stack(s.stack).map_or(Origin::C, |i| i.origin)
    }

    /// A stack's frames, innermost first (inlined frames expanded).
    /// How many innermost frames of `stack` (its `frames`, innermost first, inlined ones
    /// included) are cgo or syscall plumbing (`_cgo_…_Cfunc__Cmalloc`, `runtime.cgocall`,
    /// `_Cfunc_CString`, `syscall.RawSyscall6`): the views leave them out, as Go's heap
    /// profiles leave out the runtime's allocation frames, so a Go stack ends in the user's
    /// function. C stacks keep every frame (their innermost is the allocation site); at least
    /// one frame is kept.
    pub fn plumbing_leaves(&self, stack: u64, frames: &[SymFrame]) -> usize {
        let go = self
            .stack(stack)
            .is_some_and(|i| matches!(i.origin, Origin::Cgo | Origin::Go));
        if !go {
            return 0;
        }
        frames
            .iter()
            .take_while(|f| f.function.as_deref().is_some_and(origin::is_go_plumbing))
            .count()
            .min(frames.len().saturating_sub(1))
    }

    pub fn frames_of(&self, stack: u64) -> Vec<SymFrame> {
        let Some(info) = self.stacks.get(&stack) else {
            return Vec::new();
        };
        info.addrs
            .iter()
            .flat_map(|a| self.frames.get(a).map(|f| f.as_slice()).unwrap_or(&[]))
            .cloned()
            .collect()
    }

    /// A suspect: a growth verdict, not go-runtime, not a PROT_NONE reservation, not
    /// suppressed.
    pub fn is_suspect(&self, s: &Series) -> bool {
        let info = self.stack(s.stack);
        s.class.verdict.is_suspect()
            && !s.is_reservation()
            && info.is_none_or(StackInfo::may_suspect)
    }

    /// Series in report order: suspects worst first, then the rest by bytes, go-runtime last.
    pub fn ordered(&self) -> Vec<&Series> {
        let mut v: Vec<&Series> = self.series.iter().collect();
        v.sort_by(|a, b| {
            let rank = |s: &Series| {
                (
                    !self.is_suspect(s),
                    self.origin(s) == Origin::GoRuntime,
                    s.class.verdict,
                )
            };
            rank(a)
                .cmp(&rank(b))
                .then(b.class.rate.total_cmp(&a.class.rate))
                .then(b.last_bytes.total_cmp(&a.last_bytes))
                .then(a.stack.cmp(&b.stack))
        });
        v
    }

    /// Times (s) of the verdict window.
    pub fn window_times(&self) -> Vec<f64> {
        self.points[self.window_start..]
            .iter()
            .map(|p| p.uptime_ms as f64 / 1000.0)
            .collect()
    }

    /// Committed bytes, count and reserved bytes of the Go runtime's own series.
    pub fn go_runtime_totals(&self) -> GoRuntimeTotals {
        let mut t = GoRuntimeTotals::default();
        let mut stacks = std::collections::HashSet::new();
        for s in &self.series {
            if self.origin(s) != Origin::GoRuntime {
                continue;
            }
            stacks.insert(s.stack);
            if s.is_reservation() {
                t.reserved_bytes += s.last_bytes;
            } else {
                t.bytes += s.last_bytes;
                t.count += s.last_count;
                t.rate += s.class.rate;
            }
        }
        t.stacks = stacks.len();
        t
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct GoRuntimeTotals {
    pub bytes: f64,
    pub count: f64,
    pub reserved_bytes: f64,
    pub stacks: usize,
    pub rate: f64,
}

#[cfg(test)]
pub mod tests;
