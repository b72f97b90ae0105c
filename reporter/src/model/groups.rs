//! Aggregates: one row per culprit, with the stacks beneath.
//!
//! Every Go call path into C is its own stack, so one leak can be hundreds of stacks (or
//! 131,072 call paths into one allocation site). Reports list groups: suspects by (caller,
//! kind), and all memory by allocation site (function and line, kind) or by caller.

use super::origin::Origin;
use super::{ProcessModel, Series};
use crate::verdict::Verdict;
use offheap_format::Kind;
use std::collections::HashMap;

/// How series are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The user's function the allocation is charged to (see `culprit`).
    Caller,
    /// The innermost frame that is neither an allocator nor runtime plumbing, with its line.
    Site,
}

/// Series that share a culprit.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// `file:line` of the representative frame (the largest series').
    pub location: Option<String>,
    pub kind: Kind,
    /// Entry points the caller went through, most bytes first.
    pub vias: Vec<String>,
    /// Indices into `ProcessModel::series`, worst first.
    pub series: Vec<usize>,
    pub bytes: f64,
    pub count: f64,
    /// Sum of the members' rates (bytes per second).
    pub rate: f64,
    /// The most severe member verdict, and the confidence of its most confident member.
    pub verdict: Verdict,
    pub confidence: f64,
}

impl Group {
    pub fn via(&self) -> Option<&str> {
        self.vias.first().map(String::as_str)
    }
    /// The members' outstanding bytes summed at every dump.
    pub fn bytes_over_time(&self, m: &ProcessModel) -> Vec<f64> {
        let n = m.points.len();
        let mut sum = vec![0.0; n];
        for &i in &self.series {
            for (a, b) in sum.iter_mut().zip(m.series[i].bytes.dense(n)) {
                *a += b;
            }
        }
        sum
    }

    /// Distinct stacks beneath (a stack has one series per kind and via).
    pub fn stacks(&self, m: &ProcessModel) -> usize {
        let mut ids: Vec<u64> = self.series.iter().map(|&i| m.series[i].stack).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

/// The caller named for a stack without frames. A stack id the stacks file does not define
/// (it was damaged or cut short) keeps its id, so that unrelated stacks are not merged into one
/// row under the worst verdict among them; "no stack captured" and "stack store full" are one
/// id each already.
pub fn missing_name(why: &str, stack: u64) -> String {
    if why == MISSING_STACK {
        format!("(stack {stack} not found)")
    } else {
        format!("({why})")
    }
}

/// `StackInfo::missing` for an id the stacks file does not define.
pub const MISSING_STACK: &str = "stack not found";

fn key_of(m: &ProcessModel, s: &Series, by: GroupBy) -> (String, Option<String>) {
    let Some(info) = m.stack(s.stack) else {
        return (missing_name(MISSING_STACK, s.stack), None);
    };
    if let Some(why) = info.missing {
        return (missing_name(why, s.stack), None);
    }
    let frame = match by {
        GroupBy::Caller => info.culprit.caller.as_ref(),
        GroupBy::Site => info.culprit.site.as_ref(),
    };
    match frame {
        Some(f) => (
            f.display_name(),
            match by {
                GroupBy::Site => f.location(),
                GroupBy::Caller => None,
            },
        ),
        None => ("??".into(), None),
    }
}

/// Groups the series `keep` accepts; groups ordered by `order`.
fn group(
    m: &ProcessModel,
    by: GroupBy,
    keep: impl Fn(&Series) -> bool,
    order: impl Fn(&Group, &Group) -> std::cmp::Ordering,
) -> Vec<Group> {
    let mut index: HashMap<(String, Option<String>, Kind), usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut vias: Vec<HashMap<String, f64>> = Vec::new();
    for (i, s) in m.series.iter().enumerate() {
        if !keep(s) {
            continue;
        }
        let (name, location) = key_of(m, s, by);
        let k = *index
            .entry((name.clone(), location.clone(), s.kind))
            .or_insert_with(|| {
                groups.push(Group {
                    name,
                    location,
                    kind: s.kind,
                    vias: Vec::new(),
                    series: Vec::new(),
                    bytes: 0.0,
                    count: 0.0,
                    rate: 0.0,
                    verdict: Verdict::Unknown,
                    confidence: 0.0,
                });
                vias.push(HashMap::new());
                groups.len() - 1
            });
        let g = &mut groups[k];
        g.series.push(i);
        g.bytes += s.last_bytes;
        g.count += s.last_count;
        g.rate += s.class.rate;
        // A stack that calls the allocator directly votes for no entry point (the empty
        // name): `main via __printf` named the stdio buffer's entry for a row whose bytes
        // were main's own mallocs.
        let via = m.stack(s.stack).and_then(|i| i.culprit.via.clone());
        *vias[k].entry(via.unwrap_or_default()).or_default() += s.last_bytes.max(1.0);
    }
    for (g, v) in groups.iter_mut().zip(vias) {
        finish_group(m, g, v, by);
    }
    groups.sort_by(order);
    groups
}

fn finish_group(m: &ProcessModel, g: &mut Group, vias: HashMap<String, f64>, by: GroupBy) {
    let series = |i: usize| &m.series[i];
    g.series.sort_by(|&a, &b| {
        let (a, b) = (series(a), series(b));
        a.class
            .verdict
            .cmp(&b.class.verdict)
            .then(b.class.rate.total_cmp(&a.class.rate))
            .then(b.last_bytes.total_cmp(&a.last_bytes))
    });
    g.verdict = g
        .series
        .iter()
        .map(|&i| series(i).class.verdict)
        .min()
        .unwrap_or(Verdict::Unknown);
    g.confidence = g
        .series
        .iter()
        .filter(|&&i| series(i).class.verdict == g.verdict)
        .map(|&i| series(i).class.confidence)
        .fold(0.0, f64::max);
    // A caller's line differs between its stacks: show the largest one's. A site without a
    // line (a library without debug information) keeps none rather than borrow another's.
    if by == GroupBy::Caller {
        g.location = g
            .series
            .iter()
            .max_by(|&&a, &&b| series(a).last_bytes.total_cmp(&series(b).last_bytes))
            .and_then(|&i| m.stack(series(i).stack))
            .and_then(|info| info.culprit.caller.as_ref())
            .and_then(|f| f.location());
    }
    let mut v: Vec<(String, f64)> = vias.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    // Entry points in order of bytes; none when most of the bytes went through none.
    g.vias = match v.first() {
        Some((direct, _)) if direct.is_empty() => Vec::new(),
        _ => v
            .into_iter()
            .map(|x| x.0)
            .filter(|n| !n.is_empty())
            .collect(),
    };
}

/// Suspects (and growth too short to judge), one row per (caller, kind), worst first.
pub fn suspects(m: &ProcessModel) -> Vec<Group> {
    group(
        m,
        GroupBy::Caller,
        |s| {
            s.class.verdict.is_listed()
                && !s.is_reservation()
                && m.stack(s.stack)
                    .is_none_or(crate::model::StackInfo::may_suspect)
        },
        |a, b| {
            a.verdict
                .cmp(&b.verdict)
                .then(b.rate.total_cmp(&a.rate))
                .then(b.bytes.total_cmp(&a.bytes))
                .then(a.name.cmp(&b.name))
        },
    )
}

/// A caller whose memory came and went (a `transient` verdict): not a leak, but what a spike
/// of RSS may have been.
#[derive(Debug, Clone)]
pub struct Transient {
    pub group: Group,
    /// The members' outstanding bytes summed at the dump where that sum was largest.
    pub peak_bytes: f64,
    /// The process's uptime at that dump, in seconds.
    pub peak_at_s: f64,
    /// Bytes per allocation since the process started, over the group's stacks (None without
    /// counters): whether glibc could have served them from an arena.
    pub mean_block_bytes: Option<f64>,
}

/// The largest block glibc's malloc may serve from an arena on 64-bit (its mmap threshold
/// rises up to this as mapped chunks are freed; larger ones are always mapped on their own and
/// unmapped when freed, so no arena keeps them).
pub const GLIBC_ARENA_BLOCK_MAX: f64 = (32u64 << 20) as f64;

/// Bytes per allocation over the stacks of `g`, from their lifetime counters.
fn mean_block_bytes(m: &ProcessModel, g: &Group) -> Option<f64> {
    let mut stacks: Vec<u64> = g.series.iter().map(|&i| m.series[i].stack).collect();
    stacks.sort_unstable();
    stacks.dedup();
    let (bytes, allocs) = stacks
        .iter()
        .filter_map(|&id| m.stack(id)?.cumulative)
        .fold((0u64, 0u64), |(b, n), c| {
            (b.saturating_add(c.alloc_bytes), n.saturating_add(c.allocs))
        });
    (allocs > 0).then(|| bytes as f64 / allocs as f64)
}

/// Memory that came and went, by caller, largest peak first. Reservations and the Go
/// runtime's own memory are left out, as in `live`.
pub fn transients(m: &ProcessModel) -> Vec<Transient> {
    let groups = group(
        m,
        GroupBy::Caller,
        |s| {
            s.class.verdict == Verdict::Transient
                && !s.is_reservation()
                && m.origin(s) != Origin::GoRuntime
        },
        |a, b| a.name.cmp(&b.name),
    );
    let mut v: Vec<Transient> = groups
        .into_iter()
        .map(|g| {
            let (at, peak) = largest(&g.bytes_over_time(m));
            let peak_at_s = m
                .points
                .get(at)
                .map_or(0.0, |p| p.uptime_ms as f64 / 1000.0);
            Transient {
                mean_block_bytes: mean_block_bytes(m, &g),
                group: g,
                peak_bytes: peak,
                peak_at_s,
            }
        })
        .collect();
    v.sort_by(|a, b| {
        b.peak_bytes
            .total_cmp(&a.peak_bytes)
            .then(a.group.name.cmp(&b.group.name))
    });
    v
}

/// The index and value of the largest of `values` (the first, on ties; (0, 0) when empty).
fn largest(values: &[f64]) -> (usize, f64) {
    values.iter().enumerate().fold(
        (0, 0.0),
        |best, (i, &v)| if v > best.1 { (i, v) } else { best },
    )
}

/// All live memory grouped by caller or site, largest first. Reservations (address space)
/// and, unless `include_runtime`, the Go runtime's own memory are left out.
pub fn live(m: &ProcessModel, by: GroupBy, include_runtime: bool) -> Vec<Group> {
    group(
        m,
        by,
        |s| {
            s.last_bytes > 0.0
                && !s.is_reservation()
                && (include_runtime || m.origin(s) != Origin::GoRuntime)
        },
        |a, b| b.bytes.total_cmp(&a.bytes).then(a.name.cmp(&b.name)),
    )
}
