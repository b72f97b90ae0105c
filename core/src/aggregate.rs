//! From live records to the rows of a dump: grouping, ages, generations, sampling weights.
//!
//! A snapshot is a flat copy of the live records, sorted by (stack, generation). A group is a
//! run of records with the same stack; everything a dump row says about it is computed from
//! that run alone, in passes that need no memory beyond a small scratch list, so a dump costs
//! the same memory whatever the number of stacks.

use crate::table::live::Record;
use crate::table::Birth;
use offheap_format::schema::Detail;

/// Upper bounds of the age buckets, in ms: `[<1s, <10s, <60s, <10min, <1h, >=1h]`.
pub const AGE_BUCKETS_MS: [u64; 5] = [1_000, 10_000, 60_000, 600_000, 3_600_000];
/// Most `by_generation` rows a dump row carries.
pub const MAX_GENERATION_ROWS: usize = 64;

/// What aggregation needs to know about one live allocation or mapping.
pub trait Live {
    fn size(&self) -> u64;
    fn birth_ms(&self) -> u32;
    fn generation(&self) -> u16;
    fn epoch(&self) -> u8;
    fn sampled(&self) -> bool;
}

impl Live for Record {
    fn size(&self) -> u64 {
        Record::size(self)
    }
    fn birth_ms(&self) -> u32 {
        Record::birth_ms(self)
    }
    fn generation(&self) -> u16 {
        Record::generation(self)
    }
    fn epoch(&self) -> u8 {
        Record::epoch(self)
    }
    fn sampled(&self) -> bool {
        self.flags() & crate::table::live::FLAG_SAMPLED != 0
    }
}

/// A mapping: its length and its birth.
impl Live for (u64, Birth) {
    fn size(&self) -> u64 {
        self.0
    }
    fn birth_ms(&self) -> u32 {
        self.1.ms
    }
    fn generation(&self) -> u16 {
        self.1.generation
    }
    fn epoch(&self) -> u8 {
        self.1.epoch
    }
    fn sampled(&self) -> bool {
        self.1.sampled
    }
}

/// The fixed-size part of a dump row.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Group {
    pub count: u64,
    pub bytes: u64,
    pub est_count: f64,
    pub est_bytes: f64,
    pub oldest_ms: u64,
    pub newest_ms: u64,
    pub age_hist: [u64; 6],
}

/// Weight of a sampled allocation of `size` bytes under a Poisson sampler with mean `mean`:
/// it was chosen with probability 1 − exp(−size/mean), so it stands for 1/p allocations.
pub fn sample_weight(size: u64, mean: u64) -> f64 {
    if mean == 0 {
        return 1.0;
    }
    let p = 1.0 - (-(size as f64) / mean as f64).exp();
    if p <= 0.0 {
        1.0
    } else {
        1.0 / p
    }
}

fn age_bucket(age_ms: u64) -> usize {
    AGE_BUCKETS_MS
        .iter()
        .position(|&b| age_ms < b)
        .unwrap_or(AGE_BUCKETS_MS.len())
}

/// Count, bytes, estimates, birth range and age histogram of a run.
pub fn fixed<L: Live>(run: &[L], now_ms: u64, sample_mean: u64) -> Group {
    let mut g = Group::default();
    for (i, r) in run.iter().enumerate() {
        let birth = r.birth_ms() as u64;
        if i == 0 {
            g.oldest_ms = birth;
            g.newest_ms = birth;
        }
        g.oldest_ms = g.oldest_ms.min(birth);
        g.newest_ms = g.newest_ms.max(birth);
        g.count += 1;
        g.bytes += r.size();
        let w = if r.sampled() {
            sample_weight(r.size(), sample_mean)
        } else {
            1.0
        };
        g.est_count += w;
        g.est_bytes += w * r.size() as f64;
        if let Some(h) = g.age_hist.get_mut(age_bucket(now_ms.saturating_sub(birth))) {
            *h += 1;
        }
    }
    g
}

/// Records keep 16 bits of generation; the full number is the latest one at or below
/// `current` with those low bits.
pub fn widen_generation(g: u16, current: u32) -> u32 {
    let delta = (current as u16).wrapping_sub(g) as u32;
    current.saturating_sub(delta)
}

/// The sort key of a snapshot: by stack, then by (widened) generation.
pub fn snapshot_key(r: &Record, current_generation: u32) -> u64 {
    (r.stack() as u64) << 32 | widen_generation(r.generation(), current_generation) as u64
}

/// `[generation, count, bytes]` rows of a run sorted by generation, merged to at most
/// [`MAX_GENERATION_ROWS`] into `out` (cleared first).
pub fn generations<L: Live>(run: &[L], current: u32, out: &mut Vec<Detail>) {
    out.clear();
    for r in run {
        let g = widen_generation(r.generation(), current) as u64;
        match out.last_mut() {
            Some(last) if last.0 == g => {
                last.1 += 1;
                last.2 += r.size();
            }
            _ => out.push((g, 1, r.size())),
        }
    }
    merge_rows(out, MAX_GENERATION_ROWS);
}

/// Merges ascending rows to at most `max`: the first row stays exact (what survives from
/// start-up); the others are pooled into `max − 1` ranges of equal width in generation
/// number, each row keyed by its youngest generation, so the rows stay evenly spread over
/// the run however many there were.
pub fn merge_rows(rows: &mut Vec<Detail>, max: usize) {
    if rows.len() <= max || max < 2 {
        return;
    }
    let (Some(&(first_rest, _, _)), Some(&(last, _, _))) = (rows.get(1), rows.last()) else {
        return;
    };
    let buckets = (max - 1) as u64;
    let span = last - first_rest + 1;
    let mut write = 1usize;
    let mut current_bucket = u64::MAX;
    for read in 1..rows.len() {
        let Some(&(g, c, b)) = rows.get(read) else {
            break;
        };
        let bucket = (g - first_rest) * buckets / span;
        if bucket == current_bucket {
            if let Some(w) = rows.get_mut(write - 1) {
                w.0 = g;
                w.1 += c;
                w.2 += b;
            }
        } else {
            if let Some(w) = rows.get_mut(write) {
                *w = (g, c, b);
            }
            write += 1;
            current_bucket = bucket;
        }
    }
    rows.truncate(write);
}

/// `[epoch, count, bytes]` rows of a run, ascending, into `out` (cleared first).
pub fn epochs<L: Live>(run: &[L], out: &mut Vec<Detail>) {
    let mut by = [(0u64, 0u64); 256];
    for r in run {
        if let Some(e) = by.get_mut(r.epoch() as usize) {
            e.0 += 1;
            e.1 += r.size();
        }
    }
    out.clear();
    out.extend(
        by.iter()
            .enumerate()
            .filter(|(_, (c, _))| *c > 0)
            .map(|(e, &(c, b))| (e as u64, c, b)),
    );
}

/// Splits a slice sorted by `key` into runs of equal keys.
pub fn runs<'a, T, K: PartialEq>(
    items: &'a [T],
    key: impl Fn(&T) -> K + 'a,
) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = items;
    core::iter::from_fn(move || {
        let first = rest.first()?;
        let k = key(first);
        let n = rest.iter().take_while(|x| key(x) == k).count();
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

#[cfg(test)]
mod tests;
