//! Verdicts: what a per-stack series of outstanding bytes says about that stack.
//!
//! heaptrack calls a bounded C cache "leaked" because it sees only the end state. With a series
//! we can separate four shapes: `leak` (keeps growing and the old allocations survive), `bounded`
//! (grew, then plateaued: caches and pools), `transient` (rose and was released) and `startup`
//! (allocated early, constant since). A stack that keeps growing while its old allocations are
//! freed is a backlog, not a leak: it is called `growing`. One dump cannot show a shape:
//! `single-dump`.
//!
//! Growth whose old allocations are freed (churn) is `bounded` when the floor of the series
//! stopped rising: dumps that catch a round of allocations in flight make peaks, not a trend.
//!
//! Two more verdicts come from facts beyond the shape: a series that stopped growing is still
//! a `leak` when nothing it allocated was ever freed and its old allocations all survive, and
//! allocations that never outlive a short horizon and are released between bursts are
//! `transient` whatever dump happened to catch a burst. Growth seen over fewer than
//! [`Thresholds::min_dumps`] dumps is `insufficient`: a filling cache looks like a leak until
//! it is full.
//!
//! The logic is deliberately plain arithmetic on the series (least squares, head/tail
//! comparison) so that the synthetic-series tests can pin exact verdicts.

pub mod policy;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Leak,
    Growing,
    Insufficient,
    Bounded,
    Transient,
    Startup,
    SingleDump,
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Leak => "leak",
            Verdict::Growing => "growing",
            Verdict::Insufficient => "insufficient",
            Verdict::Bounded => "bounded",
            Verdict::Transient => "transient",
            Verdict::Startup => "startup",
            Verdict::SingleDump => "single-dump",
            Verdict::Unknown => "unknown",
        }
    }

    /// Verdicts that make a stack a suspect (what `--fail-on` acts on).
    pub fn is_suspect(self) -> bool {
        matches!(self, Verdict::Leak | Verdict::Growing)
    }

    /// Verdicts the suspects table lists: suspects, and growth too short to judge.
    pub fn is_listed(self) -> bool {
        self.is_suspect() || self == Verdict::Insufficient
    }
}

/// The outcome for one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Classification {
    pub verdict: Verdict,
    /// Least-squares slope over the series, bytes per second.
    pub rate: f64,
    /// 0..1: how sure the verdict is (fit quality, number of points, survival).
    pub confidence: f64,
    /// Why, in a few words.
    pub reason: &'static str,
}

impl Classification {
    pub fn new(verdict: Verdict, rate: f64, confidence: f64, reason: &'static str) -> Self {
        Classification {
            verdict,
            rate,
            confidence: round2(confidence),
            reason,
        }
    }
}

impl Default for Classification {
    fn default() -> Self {
        Classification::new(Verdict::Unknown, 0.0, 0.0, "no data")
    }
}

/// Theil–Sen slope: the median of the slopes between every pair of points. One odd dump
/// (a start-up mapping that goes away, a transient) cannot tilt it the way it tilts a least-
/// squares fit. Long series are thinned evenly to 200 points first (40,000 pairs at most).
pub fn robust_slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return 0.0;
    }
    let step = n.div_ceil(200);
    let idx: Vec<usize> = (0..n).step_by(step).collect();
    let mut slopes = Vec::with_capacity(idx.len() * idx.len() / 2);
    for (a, &i) in idx.iter().enumerate() {
        for &j in &idx[a + 1..] {
            let dx = xs[j] - xs[i];
            if dx > 0.0 {
                slopes.push((ys[j] - ys[i]) / dx);
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(|a, b| a.total_cmp(b));
    let m = slopes.len() / 2;
    if slopes.len() % 2 == 1 {
        slopes[m]
    } else {
        (slopes[m - 1] + slopes[m]) / 2.0
    }
}

/// Least-squares slope and coefficient of determination of `ys` over `xs`.
pub fn fit(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return (0.0, 0.0);
    }
    let nf = n as f64;
    let mx = xs[..n].iter().sum::<f64>() / nf;
    let my = ys[..n].iter().sum::<f64>() / nf;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let dx = xs[i] - mx;
        let dy = ys[i] - my;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx <= 0.0 {
        return (0.0, 0.0);
    }
    let slope = sxy / sxx;
    let r2 = if syy <= 0.0 {
        1.0
    } else {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    };
    (slope, r2)
}

/// Every number the verdicts depend on, in one place (documented in reporter/README.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Fewer dumps than this in the verdict window: growth is `insufficient` (a cache that is
    /// still filling looks exactly like a leak until it stops). `--min-dumps` sets it.
    pub min_dumps: usize,
    /// Dumps in the window at which the "enough points" factor of confidence reaches 1.
    pub dumps_for_full_confidence: usize,
    /// Changes below this fraction of the peak (or `noise_floor_bytes`) are noise, not shape.
    pub noise_fraction: f64,
    pub noise_floor_bytes: f64,
    /// At or below this fraction of its peak a series counts as released.
    pub released_fraction: f64,
    /// Still growing at the end: the last third's slope is at least this share of the whole.
    pub tail_growth_ratio: f64,
    /// Growth whose early allocations survive below this share is `growing`, not `leak`.
    pub leak_survival: f64,
    /// A series that stopped growing is still a `leak` when at most this share of what it
    /// allocated in the window was freed, at least `stopped_leak_survival` of its early
    /// allocations survive, and it made at least `stopped_leak_min_allocs` allocations.
    pub stopped_leak_free_ratio: f64,
    pub stopped_leak_survival: f64,
    pub stopped_leak_min_allocs: u64,
    /// Growth made of fewer allocations than this in the window (a thread started, one
    /// buffer grown) is `insufficient`: too little turnover to tell anything.
    pub min_growth_allocs: u64,
    /// Allocations that never outlive this horizon (the larger of so many dump intervals and
    /// a floor in seconds) and that are released between bursts are `transient`.
    pub transient_horizon_intervals: f64,
    pub transient_horizon_min_s: f64,
    /// A thread creator's live count changing by less than this many threads is noise.
    pub thread_noise_floor: f64,
    /// "RSS growth explained" is computed only when RSS grew over the window by at least
    /// this many bytes and this fraction of its level at the window's start.
    pub ledger_min_growth_bytes: f64,
    pub ledger_min_growth_fraction: f64,
    /// A ledger category whose growth is at least this share of the RSS growth is a cause
    /// the report explains (glibc retention, the Go heap).
    pub ledger_cause_share: f64,
    /// glibc's retained memory that holds at least this share of RSS at the end is explained
    /// (arenas, what came and went, remedies) even when it is not growing: it stepped up
    /// early, and the slopes that find causes do not see a step.
    pub large_retained_share: f64,
    /// Under sampling, a malloc series whose estimates rest on fewer sampled blocks than this
    /// (the most live in any dump of the window) cannot be called `leak` or `growing`: it is
    /// `insufficient`, and other verdicts lose confidence in proportion. Four samples where
    /// one was expected are a 1-in-50 chance, and a report reads many series.
    pub min_samples: u64,
    /// Under sampling, a flat last third says "stopped" only if growth at the window's rate
    /// would have drawn at least this many samples in it (none drawn by chance when 3 were
    /// expected: 1 in 20).
    pub min_tail_samples: f64,
    /// Under sampling, estimated live malloc bytes more than this many times glibc's own
    /// count of them (or less than its inverse) are called out as resting on few samples.
    pub estimate_mismatch: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_dumps: 4,
            dumps_for_full_confidence: 7,
            noise_fraction: 0.02,
            noise_floor_bytes: 64.0,
            released_fraction: 0.1,
            tail_growth_ratio: 0.3,
            leak_survival: 0.5,
            stopped_leak_free_ratio: 0.02,
            stopped_leak_survival: 0.9,
            stopped_leak_min_allocs: 10,
            min_growth_allocs: 3,
            transient_horizon_intervals: 3.0,
            transient_horizon_min_s: 5.0,
            thread_noise_floor: 0.5,
            ledger_min_growth_bytes: 1024.0 * 1024.0,
            ledger_min_growth_fraction: 0.02,
            ledger_cause_share: 0.25,
            large_retained_share: 0.25,
            min_samples: 8,
            min_tail_samples: 3.0,
            estimate_mismatch: 2.0,
        }
    }
}

/// What is known about a series besides its shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    /// Share of the bytes outstanding early in the window (end of its first third) that are
    /// still alive in the last dump.
    pub survival: Option<f64>,
    /// Allocations and frees made by the stack during the window.
    pub turnover: Option<(u64, u64)>,
    /// The oldest age a live allocation of the series reached in any dump (s).
    pub max_age_s: Option<f64>,
    /// Typical time between dumps (s).
    pub interval_s: f64,
    /// Under sampling, the most sampled blocks live in any dump of the window (None: every
    /// block counted). An estimate from n samples moves by about 1/√n of itself by chance,
    /// so changes smaller than that are not shape.
    pub samples: Option<u64>,
    /// Under sampling, the mean bytes between samples (OFFHEAP_SAMPLE_BYTES).
    pub sample_mean_bytes: Option<f64>,
}

/// Classifies one series. `ts` are seconds, `bytes` the outstanding bytes at each time.
pub fn classify(ts: &[f64], bytes: &[f64], facts: &Facts, th: &Thresholds) -> Classification {
    let n = ts.len().min(bytes.len());
    if n == 0 {
        return Classification::new(Verdict::Unknown, 0.0, 0.0, "no data");
    }
    if n == 1 {
        return Classification::new(Verdict::SingleDump, 0.0, 0.0, "one dump: no shape");
    }
    let mut shape = Shape::of(&ts[..n], &bytes[..n], th);
    // Below `min_samples` the shape is read as if exact, and `with_samples` then refuses to
    // call it growth: a noise allowance that large would flatten any leak into a plateau.
    if let Some(samples) = facts.samples.filter(|&s| s >= th.min_samples) {
        shape.tol = shape.tol.max(shape.max / (samples as f64).sqrt());
    }
    let points = ((n - 1) as f64 / (th.dumps_for_full_confidence.max(2) - 1) as f64).min(1.0);
    if shape.max <= 0.0 {
        return Classification::new(
            Verdict::Transient,
            0.0,
            points,
            "nothing live in the window",
        );
    }
    if shape.max - shape.min <= shape.tol {
        return constant(&shape, facts, th, points);
    }
    if let Some(c) = released(&shape, facts, th, points) {
        return c;
    }
    if !shape.still_growing(th) && !shape.tail_too_thin(facts, th) {
        return stopped(&shape, facts, th, points, n);
    }
    let survive = facts.survival.unwrap_or(1.0).clamp(0.0, 1.0);
    if survive < th.leak_survival && shape.floor_flat() {
        return Classification::new(
            Verdict::Bounded,
            shape.rate,
            points * 0.7,
            "churns at a level: its old allocations are freed and its floor stopped rising (the peaks are work in flight)",
        );
    }
    if survive < th.leak_survival {
        let c = Classification::new(
            Verdict::Growing,
            shape.rate,
            points * shape.r2 * (1.0 - survive),
            "grows, but its old allocations are freed",
        );
        return insufficient_if_short(c, n, facts, th);
    }
    let known = if facts.survival.is_some() { 1.0 } else { 0.8 };
    let c = Classification::new(
        Verdict::Leak,
        shape.rate,
        points * shape.r2 * (0.5 + 0.5 * survive) * known,
        "grows to the end and its old allocations survive",
    );
    insufficient_if_short(c, n, facts, th)
}

/// A level that does not move over the window: `startup` when its blocks are the same ones
/// throughout, `bounded` when they are replaced as it goes (a cache or pool that filled before
/// the window began and churns at its size: its old allocations are freed and new ones take
/// their place). The level alone cannot tell them apart; survival can.
fn constant(shape: &Shape<'_>, facts: &Facts, th: &Thresholds, points: f64) -> Classification {
    let replaced = facts.survival.is_some_and(|s| s < th.leak_survival)
        && facts.turnover.is_none_or(|(_, frees)| frees > 0);
    if replaced {
        return Classification::new(
            Verdict::Bounded,
            shape.rate,
            points * 0.7,
            "holds a constant level while its old allocations are freed and replaced (a full cache or pool)",
        );
    }
    Classification::new(Verdict::Startup, shape.rate, points, "constant")
}

/// Why a sampled series is `insufficient` when `with_samples` made it so.
pub const TOO_FEW_SAMPLES: &str =
    "too few sampled blocks to tell growth from chance: sample more often (a smaller OFFHEAP_SAMPLE_BYTES)";

/// A series' verdict given the sampled blocks its estimates rest on (None: not sampled, every
/// block counted), and whether anything is estimated live at the end. A shape read from a
/// handful of samples is chance as much as memory: growth, a plateau (`bounded`,
/// `startup`: a sampled cache of 2 blocks "levelled off while freeing" with 0 frees) and
/// comings and goings of what is still live (an LRU's sampled entries, evicted in turn, read
/// `transient` while 1 MiB of it was live) are all `insufficient`. Only "nothing live at the
/// end" is still said with so few.
pub fn with_samples(
    c: Classification,
    samples: Option<u64>,
    live_at_end: bool,
    th: &Thresholds,
) -> Classification {
    let Some(samples) = samples.filter(|&n| n < th.min_samples) else {
        return c;
    };
    let share = samples as f64 / th.min_samples as f64;
    let shape_claimed = match c.verdict {
        Verdict::Bounded | Verdict::Startup => true,
        Verdict::Transient => live_at_end,
        v => v.is_suspect(),
    };
    if shape_claimed {
        return Classification::new(
            Verdict::Insufficient,
            c.rate,
            c.confidence * share,
            TOO_FEW_SAMPLES,
        );
    }
    Classification {
        confidence: c.confidence * share,
        ..c
    }
}

/// The numbers of a series' shape.
struct Shape<'a> {
    ts: &'a [f64],
    ys: &'a [f64],
    max: f64,
    min: f64,
    first: f64,
    last: f64,
    rate: f64,
    r2: f64,
    tol: f64,
}

impl<'a> Shape<'a> {
    fn of(ts: &'a [f64], ys: &'a [f64], th: &Thresholds) -> Shape<'a> {
        let max = ys.iter().cloned().fold(f64::MIN, f64::max);
        let min = ys.iter().cloned().fold(f64::MAX, f64::min);
        let (rate, r2) = fit(ts, ys);
        Shape {
            ts,
            ys,
            max,
            min,
            first: ys[0],
            last: ys[ys.len() - 1],
            rate,
            r2,
            tol: (th.noise_fraction * max).max(th.noise_floor_bytes),
        }
    }

    /// Does it still grow at the end? A cache that filled up has a flat last third.
    fn still_growing(&self, th: &Thresholds) -> bool {
        let n = self.ys.len();
        let tail_start = if n >= 4 { n - n.div_ceil(3) } else { n - 2 };
        let tail_start = tail_start.min(n - 2);
        let (tail_rate, _) = fit(&self.ts[tail_start..], &self.ys[tail_start..]);
        let tail_growth = tail_rate * (self.ts[n - 1] - self.ts[tail_start]);
        self.rate > 0.0 && tail_rate >= th.tail_growth_ratio * self.rate && tail_growth > self.tol
    }

    /// Under sampling, for a series that freed none of its sampled blocks: whether the last
    /// third is too short, at the rate the whole window grew, to expect `min_tail_samples`
    /// new samples in it. Then a flat tail is chance, not a stop (a leak of 215 blocks
    /// resting on 9 samples read as "levelled off" when the last dumps happened to draw
    /// none). A series whose samples are freed and replaced (a full cache) draws samples
    /// whatever its level, so its flat tail is read as it is.
    fn tail_too_thin(&self, f: &Facts, th: &Thresholds) -> bool {
        let Some(mean) = f.sample_mean_bytes.filter(|&m| m > 0.0) else {
            return false;
        };
        if f.turnover.is_none_or(|(_, frees)| frees > 0) {
            return false;
        }
        let n = self.ys.len();
        let tail_start = if n >= 4 { n - n.div_ceil(3) } else { n - 2 };
        let tail_s = self.ts[n - 1] - self.ts[tail_start.min(n - 2)];
        self.rate > 0.0 && self.rate * tail_s / mean < th.min_tail_samples
    }

    /// Whether the floor (lowest value) of the last third is no higher than that of the third
    /// before it. A dump that catches a round of allocations in flight only adds a peak; a
    /// backlog raises the floor as well.
    fn floor_flat(&self) -> bool {
        let n = self.ys.len();
        if n < 4 {
            return false;
        }
        let tail_start = n - n.div_ceil(3);
        let middle_start = tail_start.saturating_sub(n - tail_start);
        let floor = |ys: &[f64]| ys.iter().cloned().fold(f64::MAX, f64::min);
        floor(&self.ys[tail_start..]) <= floor(&self.ys[middle_start..tail_start]) + self.tol
    }

    fn tail_rate(&self) -> f64 {
        let n = self.ys.len();
        let tail_start = if n >= 4 { n - n.div_ceil(3) } else { n - 2 };
        fit(
            &self.ts[tail_start.min(n - 2)..],
            &self.ys[tail_start.min(n - 2)..],
        )
        .0
    }

    /// Whether the series fell back to (almost) nothing after having been high.
    fn dipped(&self, th: &Thresholds) -> bool {
        let Some(high) = self.ys.iter().position(|&y| y >= 0.5 * self.max) else {
            return false;
        };
        self.ys[high..]
            .iter()
            .any(|&y| y <= th.released_fraction * self.max)
    }
}

/// Released memory: gone at the end, or recurring short-lived bursts.
fn released(s: &Shape, f: &Facts, th: &Thresholds, points: f64) -> Option<Classification> {
    let horizon = (th.transient_horizon_intervals * f.interval_s).max(th.transient_horizon_min_s);
    let short_lived = f.max_age_s.is_some_and(|a| a <= horizon);
    if s.dipped(th) && short_lived {
        return Some(Classification::new(
            Verdict::Transient,
            s.rate,
            points * 0.9,
            "recurring allocations released each time, none older than the horizon",
        ));
    }
    if s.last <= th.released_fraction * s.max {
        return Some(Classification::new(
            Verdict::Transient,
            s.rate,
            points * (1.0 - s.last / s.max),
            "rose and was released",
        ));
    }
    if s.last - s.first <= s.tol {
        // Went up and came (mostly) back: released, or a cache that churns at a level.
        let verdict = if s.last < 0.5 * s.max {
            Verdict::Transient
        } else {
            Verdict::Bounded
        };
        return Some(Classification::new(
            verdict,
            s.rate,
            points * 0.7,
            "came back to where it started",
        ));
    }
    None
}

/// Grew, then stopped: a cache that filled up, or a leak whose traffic stopped (nothing it
/// allocated was ever freed).
fn stopped(s: &Shape, f: &Facts, th: &Thresholds, points: f64, n: usize) -> Classification {
    // Under sampling the counts are of sampled blocks, each standing for many.
    let min_allocs = if f.samples.is_some() {
        th.min_samples
    } else {
        th.stopped_leak_min_allocs
    };
    let never_freed = f.turnover.is_some_and(|(allocs, frees)| {
        allocs >= min_allocs && (frees as f64) <= th.stopped_leak_free_ratio * allocs as f64
    });
    let survived = f.survival.is_some_and(|x| x >= th.stopped_leak_survival);
    if never_freed && survived {
        let c = Classification::new(
            Verdict::Leak,
            s.rate,
            points * f.survival.unwrap_or(1.0) * 0.9,
            "stopped growing, but nothing it allocated was freed",
        );
        return insufficient_if_short(c, n, f, th);
    }
    let flatness = if s.rate > 0.0 {
        (1.0 - (s.tail_rate() / s.rate).max(0.0)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let freed = f.turnover.is_none_or(|(_, frees)| frees > 0);
    Classification::new(
        Verdict::Bounded,
        s.rate,
        points * (0.5 + 0.5 * flatness),
        if freed {
            "grew, then levelled off while freeing"
        } else {
            "grew, then levelled off; nothing it allocated was freed (a filled cache, or a leak whose traffic stopped)"
        },
    )
}

/// Growth seen over too few dumps cannot be told from a cache that is still filling, and
/// growth of a couple of allocations says nothing either way.
fn insufficient_if_short(
    c: Classification,
    n: usize,
    f: &Facts,
    th: &Thresholds,
) -> Classification {
    let reason = if n < th.min_dumps {
        "grows, but too few dumps to tell a filling cache from a leak"
    } else if f
        .turnover
        .is_some_and(|(allocs, _)| allocs < th.min_growth_allocs)
    {
        "grows by too few allocations to tell anything"
    } else {
        return c;
    };
    Classification {
        verdict: Verdict::Insufficient,
        reason,
        ..c
    }
}

fn round2(x: f64) -> f64 {
    (x.clamp(0.0, 1.0) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests;
