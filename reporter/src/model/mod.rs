//! The analysis model: per process, the time series that verdicts and renderers consume.
//!
//! Built once from the ordered dumps of a process: per (stack, kind) the outstanding bytes and
//! counts at every dump (zero where the stack had nothing live), the process-wide RSS, tracked
//! and untracked series, and the newest dump's cumulative counters and per-generation rows.
//! Stacks are symbolized here, once, so every renderer sees the same frames and origins.

pub mod origin;

use crate::read::format::{Cumulative, Dump, Outstanding, Totals};
use crate::read::ProcessDumps;
use crate::symbolize::{SymFrame, Symbolizer};
use crate::verdict::{self, Classification, Verdict};
use origin::Origin;
use std::collections::HashMap;

/// One (stack, kind) over the series.
#[derive(Debug, Clone)]
pub struct StackSeries {
    pub stack: u64,
    pub kind: String,
    /// Raw return addresses, innermost first.
    pub raw: Vec<u64>,
    /// `complete`, `truncated` or `broken`.
    pub end: String,
    /// Symbolized frames, innermost first (inlined frames expanded).
    pub frames: Vec<SymFrame>,
    pub origin: Origin,
    /// Outstanding bytes / counts at each dump (estimates when sampling).
    pub bytes: Vec<f64>,
    pub counts: Vec<f64>,
    /// Uptime (ms) of the birth of the oldest live allocation ever seen for this stack, or of
    /// the first dump it appeared in.
    pub first_seen_ms: u64,
    /// The newest dump's entry for this stack (with per-generation rows), if it had one.
    pub last: Option<Outstanding>,
    pub cumulative: Option<Cumulative>,
    pub class: Classification,
    /// The suppression pattern that matched, if any.
    pub suppressed: Option<String>,
}

impl StackSeries {
    pub fn last_bytes(&self) -> f64 {
        self.bytes.last().copied().unwrap_or(0.0)
    }
    pub fn last_count(&self) -> f64 {
        self.counts.last().copied().unwrap_or(0.0)
    }
    pub fn go_caller(&self) -> Option<&SymFrame> {
        origin::go_caller(&self.frames)
    }
    /// A suspect: a growth verdict, not go-runtime, not a PROT_NONE reservation, not suppressed.
    pub fn is_suspect(&self) -> bool {
        self.class.verdict.is_suspect()
            && self.origin != Origin::GoRuntime
            && self.kind != "mmap_reserved"
            && self.suppressed.is_none()
    }
}

/// One process over its dumps.
#[derive(Debug)]
pub struct ProcessModel {
    pub pid: u64,
    pub exe: String,
    pub exe_build_id: Option<String>,
    pub cmdline: Vec<String>,
    pub library_version: String,
    pub seqs: Vec<u64>,
    pub times_ms: Vec<u64>,
    pub epochs: Vec<u64>,
    /// Index of the first dump used for verdicts (the first with epoch > 0, if any).
    pub window_start: usize,
    pub rss: Vec<u64>,
    /// malloc + mmap (anonymous committed) bytes from each dump's totals.
    pub tracked: Vec<u64>,
    pub untracked: Vec<u64>,
    pub last_totals: Totals,
    pub last_self: crate::read::format::SelfStats,
    /// `config.sample_bytes` of the newest dump: figures are estimates when > 0.
    pub sample_bytes: u64,
    pub stacks: Vec<StackSeries>,
    pub untracked_rate: f64,
    pub rss_rate: f64,
    /// Stacks whose dumps referenced an id that was never listed.
    pub missing_stacks: usize,
}

impl ProcessModel {
    pub fn dumps(&self) -> usize {
        self.times_ms.len()
    }
    pub fn duration_s(&self) -> f64 {
        match (self.times_ms.first(), self.times_ms.last()) {
            (Some(a), Some(b)) => b.saturating_sub(*a) as f64 / 1000.0,
            _ => 0.0,
        }
    }
    pub fn sampled(&self) -> bool {
        self.sample_bytes > 0
    }
    /// Times (s) of the verdict window.
    pub fn window_times(&self) -> Vec<f64> {
        self.times_ms[self.window_start..]
            .iter()
            .map(|&t| t as f64 / 1000.0)
            .collect()
    }
    /// Suspects, worst first (leaks before growing; then by rate, then bytes).
    pub fn suspects(&self) -> Vec<&StackSeries> {
        let mut v: Vec<&StackSeries> = self.stacks.iter().filter(|s| s.is_suspect()).collect();
        v.sort_by(|a, b| {
            a.class
                .verdict
                .cmp(&b.class.verdict)
                .then(b.class.rate.total_cmp(&a.class.rate))
                .then(b.last_bytes().total_cmp(&a.last_bytes()))
        });
        v
    }
}

fn value(o: &Outstanding, sampled: bool) -> (f64, f64) {
    if sampled {
        (
            o.est_bytes.unwrap_or(o.bytes as f64),
            o.est_count.unwrap_or(o.count as f64),
        )
    } else {
        (o.bytes as f64, o.count as f64)
    }
}

/// Builds the model of one process. Symbolization warnings are appended to `warnings`.
pub fn build(
    pd: &ProcessDumps,
    sym: &mut Symbolizer,
    supp: &crate::verdict::policy::Suppressions,
    warnings: &mut Vec<String>,
) -> ProcessModel {
    let dumps: &[Dump] = &pd.dumps;
    let n = dumps.len();
    let last = dumps.last();
    let sample_bytes = last.map(|d| d.header.config.sample_bytes).unwrap_or(0);
    let sampled = sample_bytes > 0;
    // Verdicts look at the post-warm-up part when the run marked one.
    let window_start = dumps.iter().position(|d| d.header.epoch > 0).unwrap_or(0);

    // Keyed by (stack, kind index): no String allocation per entry, which matters when a
    // thousand dumps of a busy service hold millions of entries.
    let mut kinds: Vec<String> = Vec::new();
    let mut index: HashMap<(u64, usize), usize> = HashMap::new();
    let mut stacks: Vec<StackSeries> = Vec::new();
    let mut missing = 0usize;
    let mut frames_cache: HashMap<u64, (Vec<SymFrame>, Origin)> = HashMap::new();
    for (i, d) in dumps.iter().enumerate() {
        for o in &d.outstanding {
            let kind_idx = match kinds.iter().position(|k| *k == o.kind) {
                Some(i) => i,
                None => {
                    kinds.push(o.kind.clone());
                    kinds.len() - 1
                }
            };
            let key = (o.stack, kind_idx);
            let idx = match index.get(&key) {
                Some(&k) => k,
                None => {
                    let (raw, end) = match pd.stacks.get(&o.stack) {
                        Some(s) => (s.frames.clone(), s.end.clone()),
                        None => {
                            if o.stack > 1 {
                                missing += 1;
                            }
                            (Vec::new(), String::new())
                        }
                    };
                    let (frames, origin) = frames_cache
                        .entry(o.stack)
                        .or_insert_with(|| {
                            let frames: Vec<SymFrame> = raw
                                .iter()
                                .flat_map(|&a| sym.symbolize(a).as_ref().clone())
                                .collect();
                            let origin = origin::classify(&frames);
                            (frames, origin)
                        })
                        .clone();
                    let suppressed = supp
                        .matches(frames.iter().flat_map(|f| {
                            [
                                f.function.as_deref(),
                                f.file.as_deref(),
                                f.module.as_deref(),
                            ]
                            .into_iter()
                            .flatten()
                        }))
                        .map(str::to_string);
                    stacks.push(StackSeries {
                        stack: o.stack,
                        kind: o.kind.clone(),
                        raw,
                        end,
                        frames,
                        origin,
                        bytes: vec![0.0; n],
                        counts: vec![0.0; n],
                        first_seen_ms: d.header.uptime_ms,
                        last: None,
                        cumulative: None,
                        class: Classification {
                            verdict: Verdict::Unknown,
                            rate: 0.0,
                            confidence: 0.0,
                        },
                        suppressed,
                    });
                    index.insert(key, stacks.len() - 1);
                    stacks.len() - 1
                }
            };
            let s = &mut stacks[idx];
            let (b, c) = value(o, sampled);
            s.bytes[i] += b;
            s.counts[i] += c;
            if let Some(old) = o.oldest_ms {
                s.first_seen_ms = s.first_seen_ms.min(old);
            }
            if i + 1 == n {
                s.last = Some(o.clone());
            }
        }
    }
    if let Some(d) = last {
        let cum: HashMap<u64, &Cumulative> = d.cumulative.iter().map(|c| (c.stack, c)).collect();
        for s in &mut stacks {
            s.cumulative = cum.get(&s.stack).map(|c| (*c).clone());
        }
    }
    for w in sym.warnings.drain(..) {
        warnings.push(w);
    }

    let ts: Vec<f64> = dumps[window_start..]
        .iter()
        .map(|d| d.header.uptime_ms as f64 / 1000.0)
        .collect();
    // The dump at the end of the window's first third: what was alive then should still be
    // alive at the end if the stack leaks.
    let early_idx = window_start + (n - window_start).saturating_sub(1) / 3;
    let early_gen = dumps
        .get(early_idx)
        .map(|d| d.header.generation.max(d.header.seq));
    let early_ms = dumps.get(early_idx).map(|d| d.header.uptime_ms);
    for s in &mut stacks {
        let ys = &s.bytes[window_start..];
        let survival = survival(s, early_idx, early_gen, early_ms, sampled);
        s.class = verdict::classify(&ts, ys, survival);
    }
    stacks.sort_by(|a, b| b.last_bytes().total_cmp(&a.last_bytes()));

    let untracked: Vec<u64> = dumps.iter().map(|d| d.untracked.bytes).collect();
    let rss: Vec<u64> = dumps.iter().map(|d| d.process.rss_bytes).collect();
    // Process-wide series carry start-up noise (mappings that come and go): a robust slope.
    let slope = |v: &[u64]| {
        let ys: Vec<f64> = v[window_start..].iter().map(|&x| x as f64).collect();
        verdict::robust_slope(&ts, &ys)
    };
    ProcessModel {
        pid: pd.pid,
        exe: last.map(|d| d.header.exe.clone()).unwrap_or_default(),
        exe_build_id: last.and_then(|d| d.header.exe_build_id.clone()),
        cmdline: last.map(|d| d.header.cmdline.clone()).unwrap_or_default(),
        library_version: last
            .map(|d| d.header.library_version.clone())
            .unwrap_or_default(),
        seqs: dumps.iter().map(|d| d.header.seq).collect(),
        times_ms: dumps.iter().map(|d| d.header.uptime_ms).collect(),
        epochs: dumps.iter().map(|d| d.header.epoch).collect(),
        window_start,
        tracked: dumps
            .iter()
            .map(|d| d.totals.malloc.bytes.saturating_add(d.totals.mmap.bytes))
            .collect(),
        untracked_rate: slope(&untracked),
        rss_rate: slope(&rss),
        untracked,
        rss,
        last_totals: last.map(|d| d.totals.clone()).unwrap_or_default(),
        last_self: last.map(|d| d.self_.clone()).unwrap_or_default(),
        sample_bytes,
        stacks,
        missing_stacks: missing,
    }
}

/// Fraction of the bytes outstanding at the early dump that are still alive at the end.
fn survival(
    s: &StackSeries,
    early_idx: usize,
    early_gen: Option<u64>,
    early_ms: Option<u64>,
    sampled: bool,
) -> Option<f64> {
    let last = s.last.as_ref()?;
    let early_bytes = *s.bytes.get(early_idx)?;
    if early_bytes <= 0.0 {
        return None;
    }
    if !last.by_generation.is_empty() {
        let g = early_gen?;
        // A row stands for the generations after the previous row's up to its own (merged
        // rows in long series): count the part of a straddling row that lies at or before g.
        let mut born_early = 0.0f64;
        let mut previous: Option<u64> = None;
        for r in &last.by_generation {
            let (gen, bytes) = (r.0, r.2 as f64);
            let first = previous.map_or(gen, |p| p + 1);
            if gen <= g {
                born_early += bytes;
            } else if first <= g {
                born_early += bytes * (g + 1 - first) as f64 / (gen + 1 - first) as f64;
            }
            previous = Some(gen);
        }
        // With sampling, by_generation holds sampled bytes; scale like the estimate.
        let scale = if sampled && last.bytes > 0 {
            last.est_bytes.unwrap_or(last.bytes as f64) / last.bytes as f64
        } else {
            1.0
        };
        return Some((born_early * scale / early_bytes).min(1.0));
    }
    // Without per-generation rows, the oldest live allocation tells whether anything from
    // back then survived, not how much: a weak yes/no.
    let (oldest, t) = (last.oldest_ms?, early_ms?);
    Some(if oldest <= t { 1.0 } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read;

    /// The recorded leakyservice series (testdata): stack 35 is the C.CString leak in
    /// main.handleRequest (50 requests/s × 1000 bytes), stack 34 the bounded C cache.
    /// The binary is not shipped, so this checks the series logic, not symbols.
    #[test]
    fn recorded_leakyservice_series() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/leakyservice");
        let files = read::discover(&[dir]).unwrap();
        let input = read::load(&files, &|_, _| {});
        let pd = &input.processes[0];
        let mut sym = Symbolizer::new(&pd.modules);
        let mut w = Vec::new();
        let m = build(pd, &mut sym, &Default::default(), &mut w);
        let by_id = |id: u64| {
            m.stacks
                .iter()
                .find(|s| s.stack == id && s.kind == "malloc")
                .unwrap()
        };
        let leak = by_id(35);
        assert_eq!(leak.class.verdict, Verdict::Leak);
        assert!(
            (leak.class.rate - 50_000.0).abs() < 0.2 * 50_000.0,
            "{}",
            leak.class.rate
        );
        assert_eq!(by_id(34).class.verdict, Verdict::Bounded);
        assert!(
            (m.untracked_rate - 65_536.0).abs() < 0.2 * 65_536.0,
            "{}",
            m.untracked_rate
        );
        assert_eq!(m.dumps(), 14);
        assert_eq!(m.last_totals.malloc.count, 1806);
        // The series are aligned with the dumps and start at zero before the stack existed.
        assert_eq!(leak.bytes.len(), 14);
        assert_eq!(leak.last_bytes(), 1_402_000.0);
    }

    /// A dump built in code: one stack (id 2) of `bytes` with per-generation rows.
    fn synth(
        seq: u64,
        epoch: u64,
        bytes: u64,
        gens: &[(u64, u64)],
        sample: u64,
    ) -> read::format::Dump {
        let by_gen: Vec<serde_json::Value> = gens
            .iter()
            .map(|&(g, b)| serde_json::json!([g, 1, b]))
            .collect();
        let mut o = serde_json::json!({
            "stack": 2, "kind": "malloc", "count": 1, "bytes": bytes,
            "oldest_ms": 0, "newest_ms": seq * 1000,
            "age_hist": [0, 0, 0, 0, 0, 0], "by_generation": by_gen, "by_epoch": []
        });
        if sample > 0 {
            o["est_bytes"] = serde_json::json!(bytes as f64 * 10.0);
            o["est_count"] = serde_json::json!(10.0);
        }
        let v = serde_json::json!({
            "format": "offheap-dump", "version": 1,
            "header": {"pid": 7, "seq": seq, "generation": seq, "uptime_ms": seq * 1000,
                       "epoch": epoch, "config": {"sample_bytes": sample}},
            "modules": [], "stacks": [{"id": 2, "frames": [4096], "end": "complete"}],
            "outstanding": [o]
        });
        read::parse_dump(v.to_string().as_bytes()).unwrap()
    }

    fn model_of(dumps: Vec<read::format::Dump>) -> ProcessModel {
        let mut stacks = HashMap::new();
        for d in &dumps {
            for s in &d.stacks {
                stacks.insert(s.id, s.clone());
            }
        }
        let pd = ProcessDumps {
            pid: 7,
            dumps,
            stacks,
            ..Default::default()
        };
        let mut sym = Symbolizer::new(&[]);
        build(&pd, &mut sym, &Default::default(), &mut Vec::new())
    }

    #[test]
    fn warm_up_growth_before_the_mark_is_not_a_leak() {
        // Grows during warm-up (epoch 0, seq 0..5), flat after `offheap mark` (epoch 1).
        let dumps = (0..12)
            .map(|s| {
                let b = if s < 6 { 1000 * s } else { 5000 };
                synth(s, u64::from(s >= 6), b, &[(1, b)], 0)
            })
            .collect();
        let m = model_of(dumps);
        assert_eq!(m.window_start, 6);
        assert_eq!(m.stacks[0].class.verdict, Verdict::Startup);
        // Without the mark, the same series is a cache that filled up.
        let dumps = (0..12)
            .map(|s| {
                let b = if s < 6 { 1000 * s } else { 5000 };
                synth(s, 0, b, &[(1, b)], 0)
            })
            .collect();
        assert_eq!(model_of(dumps).stacks[0].class.verdict, Verdict::Bounded);
    }

    #[test]
    fn survivors_decide_leak_versus_growing() {
        // Leak: everything born since generation 0 is still alive.
        let leak = (0..10)
            .map(|s| synth(s, 0, 1000 * (s + 1), &[(0, 1000 * (s + 1))], 0))
            .collect();
        assert_eq!(model_of(leak).stacks[0].class.verdict, Verdict::Leak);
        // Same totals, but only allocations born in the last two generations are alive.
        let churn = (0..10)
            .map(|s| {
                let b = 1000 * (s + 1);
                synth(s, 0, b, &[(s.saturating_sub(1), b)], 0)
            })
            .collect();
        assert_eq!(model_of(churn).stacks[0].class.verdict, Verdict::Growing);
    }

    #[test]
    fn sampled_dumps_use_estimates() {
        let dumps = (0..5)
            .map(|s| synth(s, 0, 100 * (s + 1), &[(0, 100 * (s + 1))], 4096))
            .collect();
        let m = model_of(dumps);
        assert!(m.sampled());
        assert_eq!(m.stacks[0].last_bytes(), 5000.0);
        assert!((m.stacks[0].class.rate - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn single_dump_still_reports_bytes() {
        let m = model_of(vec![synth(0, 0, 4096, &[(0, 4096)], 0)]);
        assert_eq!(m.stacks[0].class.verdict, Verdict::SingleDump);
        assert_eq!(m.stacks[0].last_bytes(), 4096.0);
    }
}
