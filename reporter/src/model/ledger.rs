//! The RSS ledger over the series: where the resident bytes are at each dump, by category,
//! how fast each category grows, and how much of the RSS growth the categories that name a
//! cause explain.
//!
//! The library measures each dump's ledger (docs/dump-format.md, `ledger`). Here the resident
//! pages of tracked mappings are split by their stacks' origin into the Go runtime's own
//! (`go_runtime`: its heap, goroutine stacks, metadata; `go tool pprof` explains those) and
//! the rest (`mmap`), and every rate is the robust (Theil–Sen) slope over the verdict window,
//! as for the process-wide rates.
//!
//! **Explained**: the slope of the sum of the categories that name a cause, divided by the
//! slope of RSS (both over the dumps of the verdict window that have a ledger), clamped to
//! 0..1. A category names a cause when the report can say who holds it: a stack (malloc_live,
//! mmap, go_runtime, thread_stacks through the threads' creators), an arena (malloc_retained),
//! a path (file) or this library (offheap_self). `untracked` and `other` name none. It is only
//! computed when RSS grew by at least [`Thresholds::ledger_min_growth_bytes`] and
//! [`Thresholds::ledger_min_growth_fraction`] of its level over the window.

use super::origin::Origin;
use super::{ProcessModel, Rle};
use crate::verdict::{robust_slope, Thresholds};
use offheap_format::schema::{FileResident, Ledger, MallInfo, ThreadStacks};
use offheap_format::Kind;
use std::collections::BTreeMap;

/// A ledger category, in the order the report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    MallocLive,
    MallocRetained,
    Mmap,
    GoRuntime,
    ThreadStacks,
    File,
    Untracked,
    OffheapSelf,
    Other,
}

impl Category {
    pub const ALL: [Category; 9] = [
        Category::MallocLive,
        Category::MallocRetained,
        Category::Mmap,
        Category::GoRuntime,
        Category::ThreadStacks,
        Category::File,
        Category::Untracked,
        Category::OffheapSelf,
        Category::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::MallocLive => "malloc_live",
            Category::MallocRetained => "malloc_retained",
            Category::Mmap => "mmap",
            Category::GoRuntime => "go_runtime",
            Category::ThreadStacks => "thread_stacks",
            Category::File => "file",
            Category::Untracked => "untracked",
            Category::OffheapSelf => "offheap_self",
            Category::Other => "other",
        }
    }

    /// What the category holds, in a few words.
    pub fn what(self) -> &'static str {
        match self {
            Category::MallocLive => "live malloc blocks",
            Category::MallocRetained => "glibc arenas: freed memory kept resident",
            Category::Mmap => "tracked mappings (mmap, raw syscalls)",
            Category::GoRuntime => "Go heap, goroutine stacks, metadata: see go tool pprof",
            Category::ThreadStacks => "thread stacks",
            Category::File => "files: executable, libraries, mapped files",
            Category::Untracked => "anonymous memory nothing tracked made",
            Category::OffheapSelf => "offheap's own memory",
            Category::Other => "vdso, shared anonymous memory",
        }
    }

    /// Whether growth in the category names who holds it (see the module documentation).
    pub fn names_cause(self) -> bool {
        !matches!(self, Category::Untracked | Category::Other)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One dump's ledger as the model keeps it: bytes per category (`Category::ALL` order).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LedgerPoint {
    pub rss: u64,
    pub bytes: [u64; 9],
    pub remainder: i64,
}

impl LedgerPoint {
    /// The dump's ledger; tracked mappings all under `mmap` until [`split_go_runtime`].
    pub fn of(l: &Ledger) -> LedgerPoint {
        let c = &l.categories;
        let mut bytes = [0u64; 9];
        for (cat, v) in [
            (Category::MallocLive, c.malloc_live),
            (Category::MallocRetained, c.malloc_retained),
            (Category::Mmap, c.mmap),
            (Category::ThreadStacks, c.thread_stacks),
            (Category::File, c.file),
            (Category::Untracked, c.untracked),
            (Category::OffheapSelf, c.offheap_self),
            (Category::Other, c.other),
        ] {
            bytes[cat.index()] = v;
        }
        LedgerPoint {
            rss: l.rss_bytes,
            bytes,
            remainder: l.remainder_bytes,
        }
    }

    pub fn get(&self, c: Category) -> u64 {
        self.bytes[c.index()]
    }

    /// Bytes of the categories that name a cause.
    pub fn named(&self) -> u64 {
        Category::ALL
            .iter()
            .filter(|c| c.names_cause())
            .map(|&c| self.get(c))
            .sum()
    }
}

/// What the fold keeps of the ledgers: one point per dump, and each arena's retained bytes
/// over the dumps (by start address).
#[derive(Debug, Clone, Default)]
pub struct LedgerAcc {
    pub points: Vec<Option<LedgerPoint>>,
    pub arenas: BTreeMap<u64, Rle>,
    pub last: Option<Ledger>,
}

impl LedgerAcc {
    /// Adds dump `i`'s ledger (dumps without one keep a gap).
    pub fn fold(&mut self, i: u32, ledger: Option<&Ledger>) {
        self.points.push(ledger.map(LedgerPoint::of));
        let Some(l) = ledger else { return };
        for a in l.arenas.iter() {
            self.arenas
                .entry(a.start)
                .or_default()
                .set(i, a.retained_bytes as f64);
        }
        // Arenas gone since the previous dump hold nothing now.
        for (start, rle) in self.arenas.iter_mut() {
            if !l.arenas.iter().any(|a| a.start == *start) {
                rle.set(i, 0.0);
            }
        }
    }
}

/// A category at the last dump and its growth.
#[derive(Debug, Clone, Copy)]
pub struct CategoryFigures {
    pub category: Category,
    pub bytes: u64,
    pub rate: f64,
}

/// One glibc arena at the last dump, with the growth of its retained bytes.
#[derive(Debug, Clone)]
pub struct ArenaFigures {
    pub main: bool,
    pub start: u64,
    pub end: u64,
    pub resident: u64,
    pub live: u64,
    pub retained: u64,
    pub retained_rate: f64,
}

/// The retained-memory facts the report states when `malloc_retained` is a cause.
#[derive(Debug, Clone, Default)]
pub struct RetainedFacts {
    pub arenas: usize,
    pub thread_arenas: usize,
    pub retained: u64,
    pub live: u64,
    /// Retained bytes in thread arenas (what fewer arenas, `MALLOC_ARENA_MAX`, would share).
    pub thread_retained: u64,
    pub rate: f64,
    /// Share of the RSS growth (0..1).
    pub share: f64,
    /// Whether its growth is a cause of the RSS growth (else it is stated for its size:
    /// `Thresholds::large_retained_share` of RSS or more, grown in a step the slopes miss).
    pub growing: bool,
    /// Share of RSS it holds at the last dump (0..1).
    pub rss_share: f64,
    /// The arenas holding the most retained memory, largest first (at most 3).
    pub top: Vec<ArenaFigures>,
}

/// Under sampling: live malloc memory that grows while no sampled stack does (a leak of
/// small blocks slower than the sampling rate, in a short window), and how long such a leak
/// takes to be sampled once on average.
#[derive(Debug, Clone, Copy)]
pub struct UnsampledGrowth {
    /// Growth of `malloc_live` (bytes/s).
    pub rate: f64,
    pub sample_bytes: u64,
    /// `sample_bytes / rate`: seconds between samples of a leak that fast.
    pub seconds_per_sample: f64,
}

/// The ledger over the series.
#[derive(Debug, Clone)]
pub struct LedgerModel {
    /// Per dump (as `ProcessModel::points`), None where the dump had no ledger.
    pub points: Vec<Option<LedgerPoint>>,
    pub rss_bytes: u64,
    pub rss_rate: f64,
    /// `Category::ALL` order.
    pub categories: Vec<CategoryFigures>,
    /// Growth of the categories that name a cause (bytes/s).
    pub named_rate: f64,
    /// `named_rate / rss_rate` in 0..1; None when RSS did not grow enough to ask.
    pub explained: Option<f64>,
    /// Categories whose growth is at least `ledger_cause_share` of the RSS growth, fastest
    /// first.
    pub causes: Vec<Category>,
    /// Arenas at the last dump, most retained first.
    pub arenas: Vec<ArenaFigures>,
    pub retained: Option<RetainedFacts>,
    pub remainder_bytes: i64,
    pub files: Vec<FileResident>,
    pub mallinfo: Option<MallInfo>,
    pub thread_stacks: ThreadStacks,
    /// Under sampling, when `malloc_live` grew by more than noise over the window.
    pub unsampled_growth: Option<UnsampledGrowth>,
}

impl LedgerModel {
    pub fn category(&self, c: Category) -> CategoryFigures {
        self.categories[c.index()]
    }
    /// Growth (bytes/s) of the categories the report explains as causes that are not the
    /// user's code (glibc retention, the Go heap, untracked memory). A Go heap still below
    /// `SMALL_GO_HEAP` is left out: before its first collections a Go heap grows with what
    /// the program allocates, garbage included, not with what it keeps.
    pub fn causes_rate(&self) -> f64 {
        self.causes
            .iter()
            .filter(|&&c| match c {
                Category::MallocRetained | Category::Untracked => true,
                Category::GoRuntime => !self.young_go_heap(),
                _ => false,
            })
            .map(|&c| self.category(c).rate.max(0.0))
            .sum()
    }

    /// Whether go_runtime is small enough to be a young heap (see `SMALL_GO_HEAP`).
    pub fn young_go_heap(&self) -> bool {
        self.category(Category::GoRuntime).bytes < SMALL_GO_HEAP
    }

    /// A category's share of the RSS growth (0..1; 0 when RSS does not grow).
    pub fn share(&self, c: Category) -> f64 {
        if self.rss_rate > 0.0 {
            (self.category(c).rate / self.rss_rate).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// Moves the resident pages of the Go runtime's own mappings from `mmap` to `go_runtime` at
/// every dump: the sum of the `resident` column over go-runtime stacks' mapping rows.
fn split_go_runtime(m: &ProcessModel, points: &mut [Option<LedgerPoint>]) {
    let n = points.len();
    let mut go = vec![0.0f64; n];
    for s in &m.series {
        if s.kind == Kind::Malloc || m.origin(s) != Origin::GoRuntime {
            continue;
        }
        for (g, r) in go.iter_mut().zip(s.resident.dense(n)) {
            *g += r;
        }
    }
    for (p, g) in points.iter_mut().zip(go) {
        if let Some(p) = p {
            let mmap = p.get(Category::Mmap);
            let g = (g as u64).min(mmap);
            p.bytes[Category::Mmap.index()] = mmap - g;
            p.bytes[Category::GoRuntime.index()] = g;
        }
    }
}

/// Times (s) and points of the verdict window's dumps that have a ledger.
fn window(m: &ProcessModel, points: &[Option<LedgerPoint>]) -> (Vec<f64>, Vec<LedgerPoint>) {
    m.points
        .iter()
        .zip(points)
        .skip(m.window_start)
        .filter_map(|(d, l)| l.map(|l| (d.uptime_ms as f64 / 1000.0, l)))
        .unzip()
}

fn slope_of(ts: &[f64], pts: &[LedgerPoint], f: impl Fn(&LedgerPoint) -> u64) -> f64 {
    let ys: Vec<f64> = pts.iter().map(|p| f(p) as f64).collect();
    robust_slope(ts, &ys)
}

/// Whether RSS grew enough over the window for "explained" to mean something.
fn rss_grew(ts: &[f64], pts: &[LedgerPoint], rate: f64, th: &Thresholds) -> bool {
    let (Some(t0), Some(t1)) = (ts.first(), ts.last()) else {
        return false;
    };
    let growth = rate * (t1 - t0);
    let level = pts.first().map_or(0, |p| p.rss) as f64;
    growth >= th.ledger_min_growth_bytes && growth >= th.ledger_min_growth_fraction * level
}

fn arenas_of(acc: &LedgerAcc, last: &Ledger, ts: &[f64], m: &ProcessModel) -> Vec<ArenaFigures> {
    let n = acc.points.len();
    let mut v: Vec<ArenaFigures> = last
        .arenas
        .iter()
        .map(|a| {
            let ys = acc.arenas.get(&a.start).map(|r| r.dense(n));
            let window: Vec<f64> = ys
                .map(|ys| {
                    ys.into_iter()
                        .zip(&acc.points)
                        .skip(m.window_start)
                        .filter(|(_, p)| p.is_some())
                        .map(|(y, _)| y)
                        .collect()
                })
                .unwrap_or_default();
            ArenaFigures {
                main: a.kind == "main",
                start: a.start,
                end: a.end,
                resident: a.resident_bytes,
                live: a.live_bytes,
                retained: a.retained_bytes,
                retained_rate: robust_slope(ts, &window),
            }
        })
        .collect();
    v.sort_by(|a, b| b.retained.cmp(&a.retained).then(a.start.cmp(&b.start)));
    v
}

fn retained_facts(
    arenas: &[ArenaFigures],
    rate: f64,
    rss_rate: f64,
    growing: bool,
    rss: u64,
) -> RetainedFacts {
    let thread: Vec<&ArenaFigures> = arenas.iter().filter(|a| !a.main).collect();
    let retained: u64 = arenas.iter().map(|a| a.retained).sum();
    RetainedFacts {
        growing,
        rss_share: if rss > 0 {
            (retained as f64 / rss as f64).clamp(0.0, 1.0)
        } else {
            0.0
        },
        arenas: arenas.len(),
        thread_arenas: thread.len(),
        retained: arenas.iter().map(|a| a.retained).sum(),
        live: arenas.iter().map(|a| a.live).sum(),
        thread_retained: thread.iter().map(|a| a.retained).sum(),
        rate,
        share: if rss_rate > 0.0 {
            (rate / rss_rate).clamp(0.0, 1.0)
        } else {
            0.0
        },
        top: arenas.iter().take(3).cloned().collect(),
    }
}

/// The ledger model, when any dump had a ledger.
/// Below this, a growing go_runtime may be a young heap before its first collection (Go's
/// initial heap goal is 4 MiB, and stacks and metadata come on top).
pub const SMALL_GO_HEAP: u64 = 8 << 20;

pub fn build(m: &ProcessModel, acc: &LedgerAcc) -> Option<LedgerModel> {
    let last = acc.last.as_ref()?;
    let th = &m.thresholds;
    let mut points = acc.points.clone();
    split_go_runtime(m, &mut points);
    let (ts, pts) = window(m, &points);
    let last_point = points.iter().rev().find_map(|p| *p)?;
    let rss_rate = slope_of(&ts, &pts, |p| p.rss);
    let categories: Vec<CategoryFigures> = Category::ALL
        .iter()
        .map(|&c| CategoryFigures {
            category: c,
            bytes: last_point.get(c),
            rate: slope_of(&ts, &pts, |p| p.get(c)),
        })
        .collect();
    let named_rate = slope_of(&ts, &pts, LedgerPoint::named);
    let grew = rss_grew(&ts, &pts, rss_rate, th);
    let explained = grew.then(|| (named_rate / rss_rate).clamp(0.0, 1.0));
    let mut causes: Vec<&CategoryFigures> = categories
        .iter()
        .filter(|c| grew && c.rate > 0.0 && c.rate >= th.ledger_cause_share * rss_rate)
        .collect();
    causes.sort_by(|a, b| b.rate.total_cmp(&a.rate));
    let causes: Vec<Category> = causes.into_iter().map(|c| c.category).collect();
    let arenas = arenas_of(acc, last, &ts, m);
    let retained_rate = categories[Category::MallocRetained.index()].rate;
    let growing = causes.contains(&Category::MallocRetained);
    // Retention that came in a step (a burst freed early in the window) has a small slope,
    // and the RSS it holds went unexplained: said for its size as well.
    let retained_now = last_point.get(Category::MallocRetained);
    let large = retained_now >= th.ledger_min_growth_bytes as u64
        && retained_now as f64 >= th.large_retained_share * last_point.rss as f64;
    let retained = (growing || large)
        .then(|| retained_facts(&arenas, retained_rate, rss_rate, growing, last_point.rss));
    let live_rate = categories[Category::MallocLive.index()].rate;
    let unsampled_growth = unsampled_growth(m, &ts, live_rate);
    Some(LedgerModel {
        points,
        rss_bytes: last_point.rss,
        rss_rate,
        categories,
        named_rate,
        explained,
        causes,
        arenas,
        retained,
        remainder_bytes: last.remainder_bytes,
        files: last.files.to_vec(),
        mallinfo: last.mallinfo,
        thread_stacks: last.thread_stacks,
        unsampled_growth,
    })
}

/// `malloc_live`'s growth under sampling, when it is more than noise over the window.
fn unsampled_growth(m: &ProcessModel, ts: &[f64], live_rate: f64) -> Option<UnsampledGrowth> {
    let span = ts.last()? - ts.first()?;
    let grew = live_rate > 0.0 && live_rate * span >= m.thresholds.noise_floor_bytes;
    (m.sampled() && grew).then(|| UnsampledGrowth {
        rate: live_rate,
        sample_bytes: m.sample_bytes,
        seconds_per_sample: m.sample_bytes as f64 / live_rate,
    })
}
