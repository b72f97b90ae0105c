//! Threads over the series: the process's live thread count, and per creating stack (the
//! stack that called `pthread_create`; a cgo call that starts a thread has its Go caller in
//! it) how many of its threads are alive at each dump.
//!
//! A creator whose live threads keep growing while its early threads stay alive is a thread
//! leak: each creator's live count is classified like a memory series, on counts, with
//! [`Thresholds::thread_noise_floor`] as the smallest change that is not noise.

use super::{ProcessModel, Rle};
use crate::verdict::{self, Classification, Facts, Thresholds};
use offheap_format::schema::{ThreadRow, Threads};
use std::collections::HashMap;

/// One creating stack over the series.
#[derive(Debug, Clone)]
pub struct Creator {
    pub stack: u64,
    /// Its live threads at each dump.
    pub live: Rle,
    pub last: ThreadRow,
    /// Its row at the first dump and at the first dump with epoch > 0 (where a marked
    /// verdict window starts); None where it had created no thread yet.
    pub at_first: Option<ThreadRow>,
    pub at_epoch: Option<ThreadRow>,
    pub class: Classification,
}

/// What the fold keeps of the threads sections.
#[derive(Debug, Default)]
pub struct ThreadsAcc {
    index: HashMap<u64, usize>,
    pub creators: Vec<Creator>,
    last_seen: Vec<u32>,
    /// The kernel's live thread count at each dump.
    pub live: Vec<u64>,
    pub created: u64,
}

impl ThreadsAcc {
    /// Adds dump `i`'s threads section; `first_epoch` when it is the first dump with
    /// epoch > 0.
    pub fn fold(&mut self, i: u32, t: &Threads, first_epoch: bool) {
        self.live.push(t.live);
        self.created = t.created;
        for row in t.by_stack.rows() {
            let k = *self.index.entry(row.stack).or_insert_with(|| {
                self.creators.push(Creator {
                    stack: row.stack,
                    live: Rle::default(),
                    last: row,
                    at_first: None,
                    at_epoch: None,
                    class: Classification::default(),
                });
                self.last_seen.push(i);
                self.creators.len() - 1
            });
            let c = &mut self.creators[k];
            if self.last_seen[k] + 1 < i {
                c.live.set(self.last_seen[k] + 1, 0.0);
            }
            self.last_seen[k] = i;
            c.live.set(i, row.live as f64);
            c.last = row;
            if i == 0 {
                c.at_first = Some(row);
            }
            if first_epoch {
                c.at_epoch = Some(row);
            }
        }
    }

    /// Ends the fold: creators absent from the final dumps have no live threads there.
    pub fn finish(mut self, dumps: usize) -> ThreadsAcc {
        for (c, &seen) in self.creators.iter_mut().zip(&self.last_seen) {
            if (seen as usize) + 1 < dumps {
                c.live.set(seen + 1, 0.0);
                c.last.live = 0;
            }
        }
        self
    }
}

/// Threads in the model.
#[derive(Debug, Clone, Default)]
pub struct ThreadsModel {
    pub live: Vec<u64>,
    pub created: u64,
    /// Robust slope of the live thread count over the verdict window (threads/s).
    pub live_rate: f64,
    pub creators: Vec<Creator>,
}

/// Facts for one creator, as for a memory series: its early threads surviving (from the
/// oldest live thread's start), threads created and exited during the window, the oldest
/// live thread's age.
fn facts(m: &ProcessModel, c: &Creator, early_ms: Option<u64>) -> Facts {
    let now = m.now_ms();
    let at_window = if m.window_start > 0 {
        c.at_epoch
    } else {
        c.at_first
    };
    let (created0, exited0) =
        at_window.map_or((0, 0), |w| (w.created, w.created.saturating_sub(w.live)));
    let exited = c.last.created.saturating_sub(c.last.live);
    Facts {
        survival: early_ms.map(|t| {
            if c.last.live > 0 && c.last.oldest_ms <= t {
                1.0
            } else {
                0.0
            }
        }),
        turnover: Some((
            c.last.created.saturating_sub(created0),
            exited.saturating_sub(exited0),
        )),
        max_age_s: (c.last.live > 0).then(|| now.saturating_sub(c.last.oldest_ms) as f64 / 1000.0),
        interval_s: m.interval_s,
        samples: None,
        sample_mean_bytes: None,
    }
}

/// Classifies every creator's live count and computes the process-wide thread rate.
pub fn build(m: &ProcessModel, acc: ThreadsAcc) -> ThreadsModel {
    let n = m.points.len();
    let ts = m.window_times();
    let th = Thresholds {
        noise_floor_bytes: m.thresholds.thread_noise_floor,
        ..m.thresholds
    };
    let early = m.window_start + (n - m.window_start).saturating_sub(1) / 3;
    let early_ms = m.points.get(early).map(|p| p.uptime_ms);
    let acc = acc.finish(n);
    let mut creators = acc.creators;
    for c in creators.iter_mut() {
        let ys = c.live.dense(n);
        let f = facts(m, c, early_ms);
        c.class = verdict::classify(&ts, &ys[m.window_start..], &f, &th);
    }
    let live: Vec<f64> = acc.live[m.window_start.min(acc.live.len())..]
        .iter()
        .map(|&x| x as f64)
        .collect();
    ThreadsModel {
        live_rate: verdict::robust_slope(&ts, &live),
        live: acc.live,
        created: acc.created,
        creators,
    }
}

/// Creators that share a caller (the user's function that started the threads).
#[derive(Debug, Clone)]
pub struct CreatorGroup {
    pub name: String,
    pub location: Option<String>,
    pub via: Option<String>,
    /// Indices into `ThreadsModel::creators`, worst first.
    pub creators: Vec<usize>,
    pub live: u64,
    pub created: u64,
    /// Sum of the members' rates (threads per second).
    pub rate: f64,
    pub verdict: verdict::Verdict,
    pub confidence: f64,
    /// A growth verdict on a creator that is neither the Go runtime's nor suppressed.
    pub suspect: bool,
}

/// Whether a creator's growth makes it a suspect (as `ProcessModel::is_suspect`).
pub fn is_suspect(m: &ProcessModel, c: &Creator) -> bool {
    c.class.verdict.is_suspect()
        && m.stack(c.stack)
            .is_none_or(|i| i.origin != super::origin::Origin::GoRuntime && i.suppressed.is_none())
}

fn caller_of(m: &ProcessModel, stack: u64) -> (String, Option<String>, Option<String>) {
    let Some(info) = m.stack(stack) else {
        return (
            super::groups::missing_name(super::groups::MISSING_STACK, stack),
            None,
            None,
        );
    };
    if let Some(why) = info.missing {
        return (super::groups::missing_name(why, stack), None, None);
    }
    let c = &info.culprit;
    (
        c.caller
            .as_ref()
            .map_or_else(|| "??".into(), |f| f.display_name()),
        c.caller.as_ref().and_then(|f| f.location()),
        c.via.clone(),
    )
}

/// Creators with live threads or growth, grouped by caller; suspects first, then by live
/// threads.
pub fn groups(m: &ProcessModel) -> Vec<CreatorGroup> {
    let mut out: Vec<CreatorGroup> = Vec::new();
    for (i, c) in m.threads.creators.iter().enumerate() {
        if c.last.live == 0 && !c.class.verdict.is_listed() {
            continue;
        }
        let (name, location, via) = caller_of(m, c.stack);
        let suspect = is_suspect(m, c);
        let k = match out
            .iter()
            .position(|g| g.name == name && g.suspect == suspect)
        {
            Some(k) => k,
            None => {
                out.push(CreatorGroup {
                    name,
                    location,
                    via,
                    creators: Vec::new(),
                    live: 0,
                    created: 0,
                    rate: 0.0,
                    verdict: verdict::Verdict::Unknown,
                    confidence: 0.0,
                    suspect,
                });
                out.len() - 1
            }
        };
        let g = &mut out[k];
        g.creators.push(i);
        g.live += c.last.live;
        g.created += c.last.created;
        g.rate += c.class.rate;
        if c.class.verdict < g.verdict
            || (c.class.verdict == g.verdict && c.class.confidence > g.confidence)
        {
            g.verdict = c.class.verdict;
            g.confidence = c.class.confidence;
        }
    }
    out.sort_by(|a, b| {
        b.suspect
            .cmp(&a.suspect)
            .then(a.verdict.cmp(&b.verdict))
            .then(b.live.cmp(&a.live))
            .then(a.name.cmp(&b.name))
    });
    out
}
