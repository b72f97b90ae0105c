//! Renderers: turn a [`ProcessModel`] into text, JSON, pprof, a flamegraph or a chart.
//!
//! Renderers only present; every number they show was computed in `model`/`verdict`, so the
//! formats cannot disagree with each other.

pub mod chart;
pub mod flamegraph;
pub mod json;
pub mod pprof;
pub mod text;

use crate::model::ProcessModel;
use crate::read::ReadError;

/// One process seen in the input (the report covers one of them).
#[derive(Debug, Clone)]
pub struct ProcSummary {
    pub pid: u64,
    pub exe: String,
    pub dumps: usize,
}

/// Result of evaluating a `--fail-on` policy.
#[derive(Debug, Clone)]
pub struct FailResult {
    pub policy: String,
    pub reasons: Vec<String>,
}

/// Everything a renderer may show.
pub struct Context<'a> {
    pub model: &'a ProcessModel,
    pub processes: &'a [ProcSummary],
    pub warnings: &'a [String],
    pub errors: &'a [ReadError],
    pub fail: Option<FailResult>,
    pub colour: bool,
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
