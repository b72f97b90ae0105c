//! Live mmap intervals with exact interval arithmetic.
//!
//! The kernel's rules are mirrored: a partial munmap trims or splits, MAP_FIXED (or any new
//! mapping over a stale record) replaces the overlapped part, mprotect re-labels the covered
//! part (a PROT_NONE reservation becomes committed memory), mremap moves, grows and shrinks.
//! mmap calls are rare, so one lock and an ordered map are enough. The hooks never hold the
//! lock across the real system call: they remove a range before the call that may unmap or
//! re-protect it and insert one after the call that mapped it (see the interposer's
//! track/mapping.rs), so a range in the table is always mapped.

use super::{Birth, Kind};
use crate::sync::{SpinGuard, SpinLock};
use offheap_format::Via;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug)]
pub struct Interval {
    pub end: u64,
    pub prot: i32,
    pub file: bool,
    /// Made through libc's entry points or by a raw system call of Go code (the probes).
    pub via: Via,
    pub birth: Birth,
}

impl Interval {
    pub fn kind(&self) -> Kind {
        if self.file {
            Kind::MmapFile
        } else if self.prot == libc::PROT_NONE {
            Kind::MmapReserved
        } else {
            Kind::Mmap
        }
    }
}

pub struct Intervals {
    map: SpinLock<BTreeMap<u64, Interval>>,
    /// Bumped (under the lock) by every change that can make tracked memory unreadable
    /// (munmap, mremap, mprotect, MAP_FIXED): a region proven readable under generation g stays
    /// readable while the generation is still g, so walkers may cache it without the lock.
    generation: core::sync::atomic::AtomicU64,
}

pub type IntervalsGuard<'a> = SpinGuard<'a, BTreeMap<u64, Interval>>;

impl Intervals {
    pub const fn new() -> Self {
        Intervals {
            map: SpinLock::new(BTreeMap::new()),
            generation: core::sync::atomic::AtomicU64::new(1),
        }
    }

    pub fn lock(&self) -> IntervalsGuard<'_> {
        self.map.lock()
    }

    /// The lock, or None when the wait policy says it will never come free (see `sync`).
    pub fn lock_or_give_up(&self) -> Option<IntervalsGuard<'_>> {
        self.map.lock_or_give_up()
    }

    pub fn fork_prepare(&self) {
        self.map.lock_forever();
    }

    /// Call with the lock held, before the change that can remove readability.
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, core::sync::atomic::Ordering::AcqRel);
    }

    /// Read by every walk-cache hit that verifies words outside its stack (a Go program's
    /// goroutine frames): inlined across the crate boundary, one load.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(core::sync::atomic::Ordering::Acquire)
    }

    /// # Safety
    /// Pairs with `fork_prepare`.
    pub unsafe fn fork_release(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.map.force_unlock() };
    }
}

/// Cut `[start, end)` out of the map, keeping the parts of overlapping intervals outside it.
/// Returns the removed pieces (start, interval clipped to the range).
pub fn cut(map: &mut BTreeMap<u64, Interval>, start: u64, end: u64) -> Vec<(u64, Interval)> {
    let mut removed = Vec::new();
    if start >= end {
        return removed;
    }
    // The interval starting before `start` may reach into the range.
    let first = map
        .range(..start)
        .next_back()
        .filter(|(_, iv)| iv.end > start)
        .map(|(s, _)| *s);
    let keys: Vec<u64> = first
        .into_iter()
        .chain(map.range(start..end).map(|(s, _)| *s))
        .collect();
    for s in keys {
        let Some(iv) = map.remove(&s) else { continue };
        if s < start {
            map.insert(s, Interval { end: start, ..iv });
        }
        if iv.end > end {
            map.insert(end, iv);
        }
        let lo = s.max(start);
        let hi = iv.end.min(end);
        removed.push((lo, Interval { end: hi, ..iv }));
    }
    removed
}

/// Insert a new mapping, replacing whatever the table believed was there.
pub fn insert(map: &mut BTreeMap<u64, Interval>, start: u64, iv: Interval) {
    cut(map, start, iv.end);
    map.insert(start, iv);
}

/// Apply a protection change to the covered parts of tracked intervals.
pub fn protect(map: &mut BTreeMap<u64, Interval>, start: u64, end: u64, prot: i32) {
    for (s, iv) in cut(map, start, end) {
        map.insert(s, Interval { prot, ..iv });
    }
}

/// The readable range around `addr` made of contiguous tracked intervals that are readable,
/// or None when `addr` is not inside one. Used to prove goroutine-stack reads safe.
pub fn readable_region(map: &BTreeMap<u64, Interval>, addr: u64) -> Option<(u64, u64)> {
    let (&s, iv) = map.range(..=addr).next_back()?;
    if iv.end <= addr || iv.prot & libc::PROT_READ == 0 {
        return None;
    }
    let lo = s;
    let mut hi = iv.end;
    for (&s2, iv2) in map.range(hi..) {
        if s2 != hi || iv2.prot & libc::PROT_READ == 0 {
            break;
        }
        hi = iv2.end;
    }
    Some((lo, hi))
}

#[cfg(test)]
mod tests;
