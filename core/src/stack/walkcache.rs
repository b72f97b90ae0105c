//! Walk cache: a thread that allocates again from where it allocated before gets the stack id
//! without walking.
//!
//! A stack walk is a pure function of where it starts — the return address, stack pointer and
//! frame pointer at the hooked call — the unwind tables (fixed for a module-set generation),
//! and the stack words it reads on the way. So a walk that starts in the same state as a
//! recorded one, under the same generation, and finds every word the recorded walk read still
//! holding the value it read, would produce the same frames and the same end: the recorded
//! stack id is its answer. Checking a word is one load and one compare, with no rule lookup,
//! no hashing of frames and no search of the stack store.
//!
//! ```text
//!  entry: key (ra, sp, bp, module generation, top of the stack range, interval generation)
//!         reads [(addr, value); ≤ MAX_READS]        stack id
//!  hit:   key equal  ∧  ∀ (addr, value): mem[addr] == value   ⇒  stack id
//! ```
//!
//! Reads outside the walk's own stack range (goroutine stacks in Go's arenas) were proven
//! readable through the interval table; an entry with such reads also keys on the table's
//! generation, which changes whenever a mapping goes away or changes protection, so every
//! word a hit verifies is still mapped. The cache is per thread, direct-mapped.

/// Entries per thread.
pub const ENTRIES: usize = 32;
/// Most words one cached walk may have read (longer walks are not cached).
pub const MAX_READS: usize = 40;

/// Where a walk starts and what it depends on besides the words it reads.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Key {
    pub ra: u64,
    pub sp: u64,
    pub bp: u64,
    pub generation: u64,
    pub stack_hi: u64,
    /// 1 + the interval table's generation when the walk read outside its stack range; 0 when
    /// it did not.
    pub intervals: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    key: Key,
    /// 0: empty.
    reads: u32,
    stack: u32,
    words: [(u64, u64); MAX_READS],
}

const EMPTY: Entry = Entry {
    key: Key {
        ra: 0,
        sp: 0,
        bp: 0,
        generation: 0,
        stack_hi: 0,
        intervals: 0,
    },
    reads: 0,
    stack: 0,
    words: [(0, 0); MAX_READS],
};

/// The words the current walk read, as it reads them.
pub struct Reads {
    words: [(u64, u64); MAX_READS],
    n: usize,
    overflow: bool,
    outside: bool,
}

impl Reads {
    pub const fn new() -> Self {
        Reads {
            words: [(0, 0); MAX_READS],
            n: 0,
            overflow: false,
            outside: false,
        }
    }

    /// A walk begins.
    #[inline(always)]
    pub fn clear(&mut self) {
        self.n = 0;
        self.overflow = false;
        self.outside = false;
    }

    /// The walk read `value` at `addr`.
    #[inline(always)]
    pub fn log(&mut self, addr: u64, value: u64) {
        match self.words.get_mut(self.n) {
            Some(w) => {
                *w = (addr, value);
                self.n += 1;
            }
            None => self.overflow = true,
        }
    }

    /// The walk read outside its stack range (through the interval table).
    #[inline(always)]
    pub fn outside(&mut self) {
        self.outside = true;
    }

    pub fn read_outside(&self) -> bool {
        self.outside
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

pub struct WalkCache {
    entries: [Entry; ENTRIES],
    pub hits: u64,
    pub lookups: u64,
}

#[inline(always)]
fn slot(key: &Key) -> usize {
    // The stack pointer's varying bits are its low ones (frames are 16-byte multiples): keep
    // them low, where the multiply spreads them into the top bits the slot is taken from.
    let h = (key.ra ^ (key.sp >> 4)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 59) as usize % ENTRIES
}

impl WalkCache {
    pub const fn new() -> Self {
        WalkCache {
            entries: [EMPTY; ENTRIES],
            hits: 0,
            lookups: 0,
        }
    }

    /// The stack id of a walk starting at `key`, if a recorded walk from the same state finds
    /// every word it read unchanged. `read` loads a word the entry recorded (each was proven
    /// readable under this key: see the module docs).
    #[inline(always)]
    pub fn lookup(&mut self, key: &Key, read: impl Fn(u64) -> u64) -> Option<u32> {
        self.lookups += 1;
        let e = self.entries.get(slot(key))?;
        if e.reads == 0 || e.key != *key {
            return None;
        }
        let words = e.words.get(..e.reads as usize)?;
        if words.iter().all(|&(addr, value)| read(addr) == value) {
            self.hits += 1;
            return Some(e.stack);
        }
        None
    }

    /// Records the walk that just ran from `key`, which read `reads` and interned as `stack`.
    /// `intervals`: the interval table's generation now (kept when the walk read outside its
    /// stack range). Walks that read nothing or too much are not kept.
    #[inline]
    pub fn insert(&mut self, key: Key, reads: &Reads, intervals: u64, stack: u32) {
        if reads.overflow || reads.n == 0 {
            return;
        }
        let key = Key {
            intervals: if reads.outside {
                intervals.wrapping_add(1)
            } else {
                0
            },
            ..key
        };
        let Some(e) = self.entries.get_mut(slot(&key)) else {
            return;
        };
        let (Some(dst), Some(src)) = (e.words.get_mut(..reads.n), reads.words.get(..reads.n))
        else {
            return;
        };
        dst.copy_from_slice(src);
        e.key = key;
        e.reads = reads.n as u32;
        e.stack = stack;
    }

    /// The key a lookup uses: `intervals` set when the recorded walk in its slot read outside
    /// its stack range (so a lookup compares against the table's generation now).
    #[inline(always)]
    pub fn key_for(&self, key: Key, intervals_now: impl FnOnce() -> u64) -> Key {
        match self.entries.get(slot(&key)) {
            Some(e) if e.key.intervals != 0 => Key {
                intervals: intervals_now().wrapping_add(1),
                ..key
            },
            _ => key,
        }
    }
}

#[cfg(test)]
mod tests;
