//! The dump's tables as sources for the streaming writer of `offheap-format`.
//!
//! `Outstanding` walks the sorted snapshot group by group (malloc runs and mapping runs merged
//! in (stack, kind, via) order) and computes each row when the writer asks for it; the
//! per-row lists are only computed in the column that writes them. `Cumulative` writes the
//! stack store's counters as the snapshot read them; `NewStacks` lists the stacks the stacks
//! file has not seen yet, in the order that lets neighbours share their outer frames.

use super::snapshot::{Cumulative, Mapping, Snapshot};
use crate::state::State;
use core::cell::RefCell;
use offheap_core::aggregate::{self, runs, Group, Live};
use offheap_core::stack::store::Store;
use offheap_core::table::live::Record;
use offheap_format::schema::{BytesCount, Detail, Totals};
use offheap_format::write::{
    CountersSource, Lists, OutstandingOut, OutstandingSource, StackSource,
};
use offheap_format::{End, Kind, Via};

pub struct Outstanding<'a> {
    pub snap: &'a Snapshot,
    pub sample_mean: u64,
    /// Resident bytes of each mapping in `snap.mappings` order, when the ledger measured them.
    pub resident: Option<&'a [u64]>,
    scratch: RefCell<Vec<Detail>>,
}

/// One group of the snapshot: a malloc run or a mapping run.
enum Run<'a> {
    Malloc(&'a [Record]),
    /// The run and its index in `mappings` (for the resident figures).
    Maps(&'a [Mapping], usize),
}

impl<'a> Outstanding<'a> {
    pub fn new(snap: &'a Snapshot, sample_mean: u64, resident: Option<&'a [u64]>) -> Self {
        Outstanding {
            snap,
            sample_mean,
            resident,
            scratch: RefCell::new(Vec::new()),
        }
    }

    /// Every group in (stack, kind, via) order.
    fn each_run(&self, mut f: impl FnMut((u32, Kind, Via), Run<'a>)) {
        let g = self.snap.generation;
        let mut mallocs = runs(&self.snap.records, |r: &Record| r.stack()).peekable();
        let mut mapping_index = 0usize;
        let mut maps = runs(&self.snap.mappings, move |m: &Mapping| {
            let k = m.key(g);
            (k.0, k.1, k.2)
        })
        .peekable();
        loop {
            let mk = mallocs
                .peek()
                .and_then(|r| r.first())
                .map(|r| (r.stack(), Kind::Malloc, Via::Libc));
            let pk = maps.peek().and_then(|r| r.first()).map(|m| {
                let k = m.key(g);
                (k.0, k.1, k.2)
            });
            match (mk, pk) {
                (None, None) => return,
                (Some(a), Some(b)) if b < a => {
                    if let Some(run) = maps.next() {
                        let at = mapping_index;
                        mapping_index += run.len();
                        f(b, Run::Maps(run, at));
                    }
                }
                (Some(a), _) => {
                    if let Some(run) = mallocs.next() {
                        f(a, Run::Malloc(run));
                    }
                }
                (None, Some(b)) => {
                    if let Some(run) = maps.next() {
                        let at = mapping_index;
                        mapping_index += run.len();
                        f(b, Run::Maps(run, at));
                    }
                }
            }
        }
    }

    fn fixed(&self, run: &Run<'_>) -> Group {
        let now = self.snap.uptime_ms;
        match run {
            Run::Malloc(r) => aggregate::fixed(r, now, self.sample_mean),
            Run::Maps(m, _) => aggregate::fixed(m, now, 0),
        }
    }

    fn lists(&self, run: &Run<'_>, lists: Lists, out: &mut Vec<Detail>) {
        fn go<L: Live>(run: &[L], lists: Lists, generation: u32, out: &mut Vec<Detail>) {
            match lists {
                Lists::None => out.clear(),
                Lists::Generations => aggregate::generations(run, generation, out),
                Lists::Epochs => aggregate::epochs(run, out),
            }
        }
        let g = self.snap.generation;
        match run {
            Run::Malloc(r) => go(r, lists, g, out),
            Run::Maps(m, _) => go(m, lists, g, out),
        }
    }

    fn resident_of(&self, run: &Run<'_>) -> u64 {
        match (run, self.resident) {
            (Run::Maps(m, at), Some(res)) => {
                res.get(*at..*at + m.len()).map_or(0, |s| s.iter().sum())
            }
            _ => 0,
        }
    }

    /// Live totals by kind (estimates rounded when sampling).
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let sampled = self.sample_mean > 0;
        self.each_run(|(_, kind, _), run| {
            let g = self.fixed(&run);
            let slot: &mut BytesCount = t.get_mut(kind);
            if sampled && kind == Kind::Malloc {
                slot.count += g.est_count.round() as u64;
                slot.bytes += g.est_bytes.round() as u64;
            } else {
                slot.count += g.count;
                slot.bytes += g.bytes;
            }
        });
        t
    }
}

impl OutstandingSource for Outstanding<'_> {
    fn sampled(&self) -> bool {
        self.sample_mean > 0
    }

    fn with_resident(&self) -> bool {
        self.resident.is_some()
    }

    fn for_each(&self, lists: Lists, f: &mut dyn FnMut(&OutstandingOut<'_>)) {
        let mut scratch = self.scratch.borrow_mut();
        self.each_run(|(stack, kind, via), run| {
            let g = self.fixed(&run);
            self.lists(&run, lists, &mut scratch);
            let (by_generation, by_epoch): (&[Detail], &[Detail]) = match lists {
                Lists::Generations => (&scratch, &[]),
                Lists::Epochs => (&[], &scratch),
                Lists::None => (&[], &[]),
            };
            f(&OutstandingOut {
                stack: stack as u64,
                kind,
                via,
                count: g.count,
                bytes: g.bytes,
                est_count: g.est_count,
                est_bytes: g.est_bytes,
                oldest_ms: g.oldest_ms,
                newest_ms: g.newest_ms,
                age_hist: g.age_hist,
                by_generation,
                by_epoch,
                resident: self.resident_of(&run),
            });
        });
    }
}

impl CountersSource<4> for Cumulative {
    fn for_each(&self, f: &mut dyn FnMut(u64, [u64; 4])) {
        for &(id, c) in &self.rows {
            f(id as u64, c);
        }
    }
}

/// Threads by creating stack: (stack, [live, created, oldest_ms]).
pub struct Creators(pub Vec<(u32, offheap_core::threads::CreatorCounts)>);

impl CountersSource<3> for Creators {
    fn for_each(&self, f: &mut dyn FnMut(u64, [u64; 3])) {
        for (s, c) in &self.0 {
            f(*s as u64, [c.live, c.created, c.oldest_ms]);
        }
    }
}

/// Stacks with ids in `[from, to)`, ordered so that neighbours share their outer frames.
pub struct NewStacks<'a> {
    store: &'a Store,
    ids: Vec<u32>,
}

impl<'a> NewStacks<'a> {
    pub fn new(st: &'a State, from: u32, to: u32) -> Self {
        let store = &st.store;
        let mut ids: Vec<u32> = (from.max(offheap_format::stack_id::FIRST)..to).collect();
        ids.sort_unstable_by(|&a, &b| {
            offheap_format::stacks::outermost_first(store.frames(a), store.frames(b))
        });
        NewStacks { store, ids }
    }
}

impl StackSource for NewStacks<'_> {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn get(&self, i: usize) -> (u64, End, &[u64]) {
        match self.ids.get(i) {
            Some(&id) => (
                id as u64,
                End::from_u8(self.store.entry(id).end),
                self.store.frames(id),
            ),
            None => (0, End::Broken, &[]),
        }
    }
}
