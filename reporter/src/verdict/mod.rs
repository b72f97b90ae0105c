//! Verdicts: what a per-stack series of outstanding bytes says about that stack.
//!
//! heaptrack calls a bounded C cache "leaked" because it sees only the end state. With a series
//! we can separate four shapes: `leak` (keeps growing and the old allocations survive), `bounded`
//! (grew, then plateaued: caches and pools), `transient` (rose and was released) and `startup`
//! (allocated early, constant since). A stack that keeps growing while its old allocations are
//! freed is a backlog, not a leak: it is called `growing`. One dump cannot show a shape:
//! `single-dump`.
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
            Verdict::Bounded => "bounded",
            Verdict::Transient => "transient",
            Verdict::Startup => "startup",
            Verdict::SingleDump => "single-dump",
            Verdict::Unknown => "unknown",
        }
    }

    /// Verdicts that make a stack a suspect.
    pub fn is_suspect(self) -> bool {
        matches!(self, Verdict::Leak | Verdict::Growing)
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

/// Classifies one series. `ts` are seconds, `bytes` the outstanding bytes at each time;
/// `survival` is the fraction of the bytes outstanding early in the series (at the end of its
/// first third) that are still alive in the last dump, when known.
pub fn classify(ts: &[f64], bytes: &[f64], survival: Option<f64>) -> Classification {
    let n = ts.len().min(bytes.len());
    let none = |verdict| Classification {
        verdict,
        rate: 0.0,
        confidence: 0.0,
    };
    if n == 0 {
        return none(Verdict::Unknown);
    }
    if n == 1 {
        return none(Verdict::SingleDump);
    }
    let (ts, bytes) = (&ts[..n], &bytes[..n]);
    let max = bytes.iter().cloned().fold(f64::MIN, f64::max);
    let min = bytes.iter().cloned().fold(f64::MAX, f64::min);
    let (first, last) = (bytes[0], bytes[n - 1]);
    let (rate, r2) = fit(ts, bytes);
    let points = ((n - 1) as f64 / 6.0).min(1.0);
    if max <= 0.0 {
        // Seen only as zero in the window: everything it allocated was released.
        return Classification {
            verdict: Verdict::Transient,
            rate: 0.0,
            confidence: points,
        };
    }
    // Differences below 2% of the peak (or a page) are noise, not shape.
    let tol = (0.02 * max).max(64.0);
    if max - min <= tol {
        return Classification {
            verdict: Verdict::Startup,
            rate,
            confidence: round2(points),
        };
    }
    if last <= 0.1 * max {
        return Classification {
            verdict: Verdict::Transient,
            rate,
            confidence: round2(points * (1.0 - last / max)),
        };
    }
    if last - first <= tol {
        // Went up and came (mostly) back: released, or a cache that churns at a level.
        let verdict = if last < 0.5 * max {
            Verdict::Transient
        } else {
            Verdict::Bounded
        };
        return Classification {
            verdict,
            rate,
            confidence: round2(points * 0.7),
        };
    }
    // It grew. Does it still grow at the end? Compare the slope of the last third with the
    // overall slope: a cache that filled up has a flat tail.
    let tail_start = if n >= 4 { n - n.div_ceil(3) } else { n - 2 };
    let tail_start = tail_start.min(n - 2);
    let (tail_rate, _) = fit(&ts[tail_start..], &bytes[tail_start..]);
    let tail_dur = ts[n - 1] - ts[tail_start];
    let tail_growth = tail_rate * tail_dur;
    let still_growing = rate > 0.0 && tail_rate >= 0.3 * rate && tail_growth > tol;
    if !still_growing {
        let flatness = if rate > 0.0 {
            (1.0 - (tail_rate / rate).max(0.0)).clamp(0.0, 1.0)
        } else {
            1.0
        };
        return Classification {
            verdict: Verdict::Bounded,
            rate,
            confidence: round2(points * (0.5 + 0.5 * flatness)),
        };
    }
    let survive = survival.unwrap_or(1.0).clamp(0.0, 1.0);
    if survive < 0.5 {
        return Classification {
            verdict: Verdict::Growing,
            rate,
            confidence: round2(points * r2 * (1.0 - survive)),
        };
    }
    // Fit quality, enough points, and survival all raise confidence; 2 points never give
    // much more than a hint.
    let known = if survival.is_some() { 1.0 } else { 0.8 };
    Classification {
        verdict: Verdict::Leak,
        rate,
        confidence: round2(points * r2 * (0.5 + 0.5 * survive) * known),
    }
}

fn round2(x: f64) -> f64 {
    (x.clamp(0.0, 1.0) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests;
