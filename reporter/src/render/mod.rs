//! Renderers: turn a [`ProcessModel`] into text, JSON, pprof, a flamegraph or a chart.
//!
//! Renderers only present; every number they show was computed in `model`/`verdict`, so the
//! formats cannot disagree with each other.

pub mod chart;
pub mod flamegraph;
pub mod json;
pub mod json_ledger;
pub mod pprof;
pub mod text;
pub mod text_ledger;

use crate::model::ProcessModel;
use crate::read::Diagnostics;

/// Groups per table in text and JSON without `--all` (documented in reporter/README.md).
pub const DEFAULT_TOP: usize = 10;
/// Stacks listed beneath each suspect group in JSON without `--all`.
pub const STACKS_PER_GROUP: usize = 5;

/// One process seen in the input (the report covers one of them).
#[derive(Debug, Clone)]
pub struct ProcSummary {
    pub pid: u64,
    pub stem: String,
    pub exe: String,
    pub dumps: usize,
    pub selected: bool,
}

/// Result of evaluating a `--fail-on` policy.
#[derive(Debug, Clone)]
pub struct FailResult {
    pub policy: String,
    /// What tripped it, one line per culprit.
    pub reasons: Vec<String>,
    /// Growth that did not count, and why (insufficient dumps, low confidence).
    pub not_counted: Vec<String>,
}

/// What the views show beyond their defaults.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Every group and stack instead of the top ones.
    pub all: bool,
    pub top: usize,
    /// The Go runtime's own memory in tables, flamegraph and pprof.
    pub include_runtime: bool,
}

impl Default for View {
    fn default() -> Self {
        View {
            all: false,
            top: DEFAULT_TOP,
            include_runtime: false,
        }
    }
}

impl View {
    /// How many of `n` rows a table lists.
    pub fn limit(&self, n: usize) -> usize {
        if self.all {
            n
        } else {
            n.min(self.top)
        }
    }
}

/// Everything a renderer may show.
pub struct Context<'a> {
    pub model: &'a ProcessModel,
    pub processes: &'a [ProcSummary],
    pub diag: &'a Diagnostics,
    pub fail: Option<FailResult>,
    pub colour: bool,
    pub view: View,
    /// Suppression patterns that matched no stack.
    pub unmatched_suppressions: Vec<String>,
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(b: f64) -> String {
    let a = b.abs();
    let (v, u) = if a >= 1024.0 * 1024.0 * 1024.0 {
        (b / (1024.0 * 1024.0 * 1024.0), "GiB")
    } else if a >= 1024.0 * 1024.0 {
        (b / (1024.0 * 1024.0), "MiB")
    } else if a >= 1024.0 {
        (b / 1024.0, "KiB")
    } else {
        return format!("{} B", b.round() as i64);
    };
    format!("{v:.1} {u}")
}

/// `+1.2 KiB/s`.
pub fn human_rate(r: f64) -> String {
    let s = human_bytes(r);
    if r > 0.0 {
        format!("+{s}/s")
    } else {
        format!("{s}/s")
    }
}

/// `17 s`, `4.2 min`, `3.1 h`: a duration to the precision a person plans with.
pub fn human_seconds(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 90.0 * 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
pub mod tests;
