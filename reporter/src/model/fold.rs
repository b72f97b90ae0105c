//! Folding dumps into per-series accumulators, one dump at a time.
//!
//! Each dump's rows update their (stack, kind, via) series and are dropped; the per-row detail
//! (`by_generation`, ages, residency) is copied only from the final dump of the series. A
//! series absent from a dump is zero there, written only where it changes.

use super::ledger::LedgerAcc;
use super::threads::ThreadsAcc;
use super::{DumpPoint, LastDump, LastRow, Rle, Series};
use crate::read::{DumpSink, StackStore};
use crate::verdict::Classification;
use offheap_format::schema::{Cumulative, Dump, Header};
use offheap_format::{Kind, Via};
use std::collections::HashMap;

struct SeriesAcc {
    series: Series,
    last_seen: u32,
}

/// Everything kept from the dumps of one series.
#[derive(Default)]
pub struct Accumulator {
    index: HashMap<(u64, Kind, Via), usize>,
    series: Vec<SeriesAcc>,
    pub points: Vec<DumpPoint>,
    pub last_header: Option<Header>,
    pub last: LastDump,
    /// Whether the final file of the series was folded (it holds the per-row detail).
    pub final_folded: bool,
    cum_first: Vec<Cumulative>,
    cum_window: Option<Vec<Cumulative>>,
    cum_last: Vec<Cumulative>,
    ledger: LedgerAcc,
    threads: ThreadsAcc,
    seen_epoch: bool,
}

/// What the accumulator hands to [`super::build::finish`].
pub struct Folded {
    pub series: Vec<Series>,
    pub points: Vec<DumpPoint>,
    pub last_header: Option<Header>,
    pub last: LastDump,
    pub final_folded: bool,
    pub cum_last: HashMap<u64, Cumulative>,
    /// Counters at the start of the verdict window (the first dump with epoch > 0, else the
    /// first dump).
    pub cum_window: HashMap<u64, Cumulative>,
    pub ledger: LedgerAcc,
    pub threads: ThreadsAcc,
}

impl Accumulator {
    pub fn new() -> Accumulator {
        Accumulator::default()
    }

    fn point(d: &Dump) -> DumpPoint {
        DumpPoint {
            seq: d.header.seq,
            uptime_ms: d.header.uptime_ms,
            wall_ns: d.header.wall_ns,
            epoch: d.header.epoch,
            generation: d.header.generation.max(d.header.seq),
            rss: d.process.rss_bytes,
            tracked: d.totals.malloc.bytes.saturating_add(d.totals.mmap.bytes),
            untracked: d.untracked.bytes,
            untracked_resident: d.untracked.resident_bytes,
        }
    }

    fn fold_rows(&mut self, d: &Dump, i: u32, keep_detail: bool) {
        let sampled = d.header.config.sample_bytes > 0;
        let now = d.header.uptime_ms;
        for row in d.outstanding.rows() {
            let key = (row.stack, row.kind, row.via);
            let k = *self.index.entry(key).or_insert_with(|| {
                self.series.push(SeriesAcc {
                    series: Series {
                        stack: row.stack,
                        kind: row.kind,
                        via: row.via,
                        bytes: Rle::default(),
                        resident: Rle::default(),
                        samples: Rle::default(),
                        last_bytes: 0.0,
                        last_count: 0.0,
                        first_seen_ms: now,
                        max_age_ms: 0,
                        last: None,
                        class: Classification::default(),
                    },
                    last_seen: i,
                });
                self.series.len() - 1
            });
            let acc = &mut self.series[k];
            if acc.last_seen + 1 < i {
                acc.series.bytes.set(acc.last_seen + 1, 0.0);
                acc.series.resident.set(acc.last_seen + 1, 0.0);
                if sampled {
                    acc.series.samples.set(acc.last_seen + 1, 0.0);
                }
            }
            acc.last_seen = i;
            let (bytes, count) = if sampled {
                (
                    row.est_bytes.unwrap_or(row.bytes as f64),
                    row.est_count.unwrap_or(row.count as f64),
                )
            } else {
                (row.bytes as f64, row.count as f64)
            };
            let s = &mut acc.series;
            s.bytes.set(i, bytes);
            if sampled {
                s.samples.set(i, row.count as f64);
            }
            if let (Some(r), false) = (row.resident, row.kind == Kind::Malloc) {
                s.resident.set(i, r as f64);
            }
            s.last_bytes = bytes;
            s.last_count = count;
            if row.count > 0 {
                s.first_seen_ms = s.first_seen_ms.min(row.oldest_ms);
                s.max_age_ms = s.max_age_ms.max(now.saturating_sub(row.oldest_ms));
            }
            if keep_detail {
                s.last = Some(LastRow {
                    count: row.count,
                    bytes: row.bytes,
                    est_bytes: row.est_bytes,
                    oldest_ms: row.oldest_ms,
                    newest_ms: row.newest_ms,
                    age_hist: row.age_hist,
                    by_generation: row.by_generation.to_vec(),
                    resident: row.resident,
                });
            }
        }
    }

    fn fold_sections(&mut self, d: Dump) {
        let cum: Vec<Cumulative> = d.cumulative.rows().collect();
        if self.points.len() == 1 {
            self.cum_first = cum.clone();
        }
        if self.cum_window.is_none() && d.header.epoch > 0 {
            self.cum_window = Some(cum.clone());
        }
        self.cum_last = cum;
        self.last = LastDump {
            totals: d.totals,
            self_: d.self_,
            process: d.process,
            threads_live: d.threads.live,
            threads_created: d.threads.created,
            exit: d.header.exit.clone(),
            untracked_count: d.untracked.count,
            max_stacks: d.header.config.max_stacks,
            address_limit: d.header.config.address_limit,
        };
        if d.ledger.is_some() {
            self.ledger.last = d.ledger;
        }
        self.last_header = Some(d.header);
    }

    /// Ends the fold: series absent from the final dumps drop to zero there.
    pub fn finish(self) -> Folded {
        let n = self.points.len() as u32;
        let series = self
            .series
            .into_iter()
            .map(|mut acc| {
                if acc.last_seen + 1 < n {
                    acc.series.bytes.set(acc.last_seen + 1, 0.0);
                    acc.series.resident.set(acc.last_seen + 1, 0.0);
                    acc.series.last_bytes = 0.0;
                    acc.series.last_count = 0.0;
                    acc.series.last = None;
                }
                acc.series
            })
            .collect();
        let map = |v: Vec<Cumulative>| v.into_iter().map(|c| (c.stack, c)).collect();
        Folded {
            series,
            points: self.points,
            last_header: self.last_header,
            last: self.last,
            final_folded: self.final_folded,
            cum_last: map(self.cum_last),
            cum_window: map(self.cum_window.unwrap_or(self.cum_first)),
            ledger: self.ledger,
            threads: self.threads,
        }
    }
}

impl DumpSink for Accumulator {
    fn fold(&mut self, dump: Dump, last: bool, _stacks: &StackStore) {
        let i = self.points.len() as u32;
        self.points.push(Self::point(&dump));
        self.fold_rows(&dump, i, last);
        self.ledger.fold(i, dump.ledger.as_ref());
        let first_epoch = dump.header.epoch > 0 && !self.seen_epoch;
        self.seen_epoch |= dump.header.epoch > 0;
        self.threads.fold(i, &dump.threads, first_epoch);
        self.final_folded = last;
        self.fold_sections(dump);
    }
}
