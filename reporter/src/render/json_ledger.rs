//! The JSON report's `ledger` (docs/report-json.md): resident bytes and growth per category,
//! the explained fraction of the RSS growth, the arenas, the causes that are not leaks, and
//! the threads by creator. Every number comes from the model.

use crate::model::ledger::{ArenaFigures, Category, LedgerModel, RetainedFacts};
use crate::model::threads::{self, CreatorGroup};
use crate::model::ProcessModel;
use offheap_format::schema::{FileResident, MallInfo};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
pub struct CategoryOut {
    pub bytes: u64,
    pub growth_bytes_per_sec: f64,
}

#[derive(Serialize)]
pub struct ArenaOut {
    pub kind: &'static str,
    pub start: u64,
    pub end: u64,
    pub resident_bytes: u64,
    pub live_bytes: u64,
    pub retained_bytes: u64,
    pub retained_growth_bytes_per_sec: f64,
}

#[derive(Serialize)]
pub struct RetainedOut {
    pub arenas: usize,
    pub thread_arenas: usize,
    pub retained_bytes: u64,
    pub thread_retained_bytes: u64,
    pub live_bytes: u64,
    pub growth_bytes_per_sec: f64,
    pub share_of_rss_growth: f64,
    /// Whether its growth is a cause of the RSS growth (false: stated for its size).
    pub growing: bool,
    pub share_of_rss: f64,
}

#[derive(Serialize)]
pub struct CreatorOut {
    pub function: String,
    pub location: Option<String>,
    pub via: Option<String>,
    pub verdict: &'static str,
    pub confidence: f64,
    pub suspect: bool,
    pub live: u64,
    pub created: u64,
    pub growth_threads_per_sec: f64,
    pub stack_ids: Vec<u64>,
}

#[derive(Serialize)]
pub struct LedgerThreadsOut {
    pub live: u64,
    pub created: u64,
    pub growth_threads_per_sec: f64,
    pub stacks_resident_bytes: u64,
    /// Thread stacks the ledger found (live and cached by glibc).
    pub stacks_count: u64,
    pub creators: Vec<CreatorOut>,
}

#[derive(Serialize)]
pub struct LedgerOut<'a> {
    pub rss_bytes: u64,
    pub growth_bytes_per_sec: f64,
    pub categories: BTreeMap<&'static str, CategoryOut>,
    pub explained_fraction: Option<f64>,
    pub named_growth_bytes_per_sec: f64,
    pub causes: Vec<&'static str>,
    pub remainder_bytes: i64,
    pub arenas: Vec<ArenaOut>,
    pub retained: Option<RetainedOut>,
    pub files: &'a [FileResident],
    pub mallinfo: Option<MallInfo>,
    pub threads: LedgerThreadsOut,
    /// Under sampling, live malloc memory growing while no sampled stack does.
    pub unsampled_growth: Option<UnsampledGrowthOut>,
}

#[derive(Serialize)]
pub struct UnsampledGrowthOut {
    pub growth_bytes_per_sec: f64,
    pub sample_bytes: u64,
    pub seconds_per_sample: f64,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn arena(a: &ArenaFigures) -> ArenaOut {
    ArenaOut {
        kind: if a.main { "main" } else { "thread" },
        start: a.start,
        end: a.end,
        resident_bytes: a.resident,
        live_bytes: a.live,
        retained_bytes: a.retained,
        retained_growth_bytes_per_sec: round1(a.retained_rate),
    }
}

fn retained(r: &RetainedFacts) -> RetainedOut {
    RetainedOut {
        arenas: r.arenas,
        thread_arenas: r.thread_arenas,
        retained_bytes: r.retained,
        thread_retained_bytes: r.thread_retained,
        live_bytes: r.live,
        growth_bytes_per_sec: round1(r.rate),
        share_of_rss_growth: round3(r.share),
        growing: r.growing,
        share_of_rss: round3(r.rss_share),
    }
}

fn creator(m: &ProcessModel, g: &CreatorGroup) -> CreatorOut {
    CreatorOut {
        function: g.name.clone(),
        location: g.location.clone(),
        via: g.via.clone(),
        verdict: g.verdict.as_str(),
        confidence: g.confidence,
        suspect: g.suspect,
        live: g.live,
        created: g.created,
        growth_threads_per_sec: round3(g.rate),
        stack_ids: g
            .creators
            .iter()
            .map(|&i| m.threads.creators[i].stack)
            .collect(),
    }
}

pub fn threads_out(m: &ProcessModel, l: Option<&LedgerModel>) -> LedgerThreadsOut {
    LedgerThreadsOut {
        live: m.threads.live.last().copied().unwrap_or(0),
        created: m.threads.created,
        growth_threads_per_sec: round3(m.threads.live_rate),
        stacks_resident_bytes: l.map_or(0, |l| l.category(Category::ThreadStacks).bytes),
        stacks_count: l.map_or(0, |l| l.thread_stacks.count),
        creators: threads::groups(m).iter().map(|g| creator(m, g)).collect(),
    }
}

pub fn ledger_out(m: &ProcessModel) -> Option<LedgerOut<'_>> {
    let l = m.ledger.as_ref()?;
    Some(LedgerOut {
        rss_bytes: l.rss_bytes,
        growth_bytes_per_sec: round1(l.rss_rate),
        categories: l
            .categories
            .iter()
            .map(|c| {
                (
                    c.category.name(),
                    CategoryOut {
                        bytes: c.bytes,
                        growth_bytes_per_sec: round1(c.rate),
                    },
                )
            })
            .collect(),
        explained_fraction: l.explained.map(round3),
        named_growth_bytes_per_sec: round1(l.named_rate),
        causes: l.causes.iter().map(|c| c.name()).collect(),
        remainder_bytes: l.remainder_bytes,
        arenas: l.arenas.iter().map(arena).collect(),
        retained: l.retained.as_ref().map(retained),
        files: &l.files,
        mallinfo: l.mallinfo,
        threads: threads_out(m, Some(l)),
        unsampled_growth: l.unsampled_growth.map(|u| UnsampledGrowthOut {
            growth_bytes_per_sec: round1(u.rate),
            sample_bytes: u.sample_bytes,
            seconds_per_sample: round1(u.seconds_per_sample),
        }),
    })
}

/// Per category, bytes at every dump (null where a dump had no ledger), for plotting.
pub fn series_out(m: &ProcessModel) -> Option<BTreeMap<&'static str, Vec<Option<u64>>>> {
    let l = m.ledger.as_ref()?;
    let mut out: BTreeMap<&'static str, Vec<Option<u64>>> = Category::ALL
        .iter()
        .map(|c| {
            (
                c.name(),
                l.points.iter().map(|p| p.map(|p| p.get(*c))).collect(),
            )
        })
        .collect();
    out.insert("rss", l.points.iter().map(|p| p.map(|p| p.rss)).collect());
    Some(out)
}
