//! The young log: where a forked child keeps the blocks it allocates while it is young.
//!
//! A forked child inherits the live table's slot arrays wiped (`MADV_WIPEONFORK`: the parent's
//! records are the parent's), and every record it then writes lands on a fresh page of them:
//! a subshell that allocates 30 blocks takes ~30 page faults for it, more than the rest of
//! what we add to its life. So until it is `OFFHEAP_CHILD_MIN` old, a child appends its
//! records here instead — a few contiguous pages — and frees look here first. When the child
//! grows up (or a dump is due, or the log fills) the log is closed: its records move into the
//! table, and from then on this costs a free one relaxed load.
//!
//! ```text
//!  open ──record/take──▶ open ──close(drain into table)──▶ closed ──(fork)──▶ open again
//! ```
//!
//! Closing drains under the log's lock and only then clears `open`, so a free that finds the
//! log closed finds its record in the table; a free that races with the drain waits for the
//! lock and then looks in the table.

use super::live::{Record, Slot};
use crate::sync::SpinLock;
use core::sync::atomic::{AtomicBool, Ordering};

/// Records the log holds (24 B each: 6 KiB, two pages).
pub const ENTRIES: usize = 256;

struct Log {
    len: usize,
    records: [Record; ENTRIES],
}

pub struct YoungLog {
    open: AtomicBool,
    log: SpinLock<Log>,
}

impl Default for YoungLog {
    fn default() -> Self {
        Self::new()
    }
}

impl YoungLog {
    /// A closed log (a process that is nobody's young child).
    pub const fn new() -> Self {
        YoungLog {
            open: AtomicBool::new(false),
            log: SpinLock::new(Log {
                len: 0,
                records: [Record([0; 3]); ENTRIES],
            }),
        }
    }

    /// Whether records go here now.
    #[inline(always)]
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// In a forked child that will be young: an empty, open log, whatever the parent left.
    ///
    /// # Safety
    /// Only in a forked child that has a single thread, before anything else uses the log.
    pub unsafe fn open_in_child(&self) {
        // SAFETY: forwarded contract: no other thread can hold or use the log.
        unsafe {
            self.log.replace_forgetting(Log {
                len: 0,
                records: [Record([0; 3]); ENTRIES],
            })
        };
        self.open.store(true, Ordering::Release);
    }

    /// Keep a new block's record; false when the log is closed or full (the caller puts it in
    /// the table).
    pub fn record(&self, slot: &Slot) -> bool {
        if !self.is_open() {
            return false;
        }
        let Some(mut log) = self.log.lock_or_give_up() else {
            return false;
        };
        // Checked again under the lock: a close may have drained the log meanwhile.
        if !self.is_open() || log.len == ENTRIES {
            return false;
        }
        let n = log.len;
        if let Some(r) = log.records.get_mut(n) {
            *r = Record::pack(slot);
            log.len = n + 1;
            return true;
        }
        false
    }

    /// The record of the block at `addr`, removed; None when the log is closed or does not
    /// hold it (the caller looks in the table).
    pub fn take(&self, addr: u64) -> Option<Slot> {
        if !self.is_open() {
            return None;
        }
        let mut log = self.log.lock_or_give_up()?;
        let n = log.len;
        let low = addr & Record::ADDR_MASK;
        // Newest first: a young program frees what it just allocated.
        let i = log
            .records
            .get(..n)?
            .iter()
            .rposition(|r| r.addr() == low)?;
        let found = log.records.get(i)?.unpack();
        log.records.swap(i, n - 1);
        log.len = n - 1;
        Some(found)
    }

    /// Close the log, handing each record to `into_table` (under the log's lock, so no free
    /// can miss a record between the log and the table). Returns how many moved.
    pub fn close(&self, mut into_table: impl FnMut(&Slot)) -> usize {
        if !self.is_open() {
            return 0;
        }
        let Some(mut log) = self.log.lock_or_give_up() else {
            return 0;
        };
        if !self.is_open() {
            return 0;
        }
        let n = log.len;
        for r in log.records.get(..n).unwrap_or(&[]) {
            into_table(&r.unpack());
        }
        log.len = 0;
        self.open.store(false, Ordering::Release);
        n
    }
}

#[cfg(test)]
mod tests;
