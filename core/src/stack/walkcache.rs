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
//! Only what decides the walk counts. Code built without frame pointers keeps any value in
//! RBP (a loop counter, a pointer into an array), and its frames save and restore it like any
//! callee-saved register; the walk takes RBP and the saved copies along in case a frame's CFA
//! is RBP-based (or the walk hands over to frame pointers), and most walks never use them.
//! So the walker reports which it used (`Reads::used_entry_bp` for the frame pointer it started
//! with, a logged read for a saved one), and a value never used is not compared: with RBP in
//! the key, a caller that kept `&ring[i]` in RBP made every walk a new one (0 hits in 400,000
//! under a tcache loop that allocated from one depth).
//!
//! ```text
//!  entry: key (ra, sp, [bp if used], module generation, stack range top, interval generation)
//!         reads [(addr, value); ≤ MAX_READS]        stack id
//!  hit:   key equal  ∧  ∀ (addr, value): mem[addr] == value   ⇒  stack id
//! ```
//!
//! Reads outside the walk's own stack range (goroutine stacks in Go's arenas) were proven
//! readable through the interval table; an entry with such reads also keys on the table's
//! generation, which changes whenever a mapping goes away or changes protection, so every
//! word a hit verifies is still mapped.
//!
//! The cache is per thread and set-associative: one starting state often has several recorded
//! walks. `operator new` calls malloc from one return address at one stack depth for every
//! C++ caller at that depth, so (ra, sp, bp) is the same and only the words above differ; a
//! direct-mapped cache kept one of them and under librocksdb 48 % of lookups found the key
//! and then a word that differed within the first eighth of those recorded. A set keeps
//! `WAYS` such walks; the victim is random, as a cycle of WAYS + 1 walks through one set would
//! evict each walk just before its next use under round-robin or LRU.
//!
//! A lookup scans the set's heads (a tag of each way's start and its first word, three cache
//! lines for the set) and opens an entry only when both agree, so the ways of other callers
//! cost no misses on the entries' kilobyte. The first word is read before the entry's key
//! is compared only when it lies in the lookup's own proven range [sp, stack_hi): a tag can
//! collide, and only that range is known readable before the key matches.
//!
//! ```text
//!  slot(ra, sp) ─▶ set ─ heads:   [tag, first addr, first value] × WAYS   victim seed
//!                     └ entries: [key, reads, stack, words]      × WAYS
//!  hit: head tag equal ∧ first word holds ∧ entry key equal ∧ every word holds
//! ```

/// Sets per thread. A set takes the walks of starting states that hash to it, so a thread
/// whose hot walks outnumber its ways in one set misses there on most lookups (a miss is a
/// full walk, ~1,800 instructions). With 16 sets, rocksdbsvc's -bench missed 2.0–5.8 % of its
/// lookups (seven runs at 1 and 2 workers), with 64 0.01–0.02 % (seven runs). The cache is
/// ~560 KiB of address space per thread, backed only where ways fill: +0.9 MiB of RSS for
/// rocksdbsvc's nine threads.
pub const SETS: usize = 64;
/// Recorded walks per set.
pub const WAYS: usize = 8;
/// Most words one cached walk may have read (longer walks are not cached). A cgo call into a
/// C++ library reads ~20 C++ return addresses and two words per Go frame above it: with 40,
/// a tenth of rocksdbsvc's walks did not fit (hit rate 89.7 %; 97.4 % with 64, and 3 % more
/// of plain throughput under full tracking).
pub const MAX_READS: usize = 64;
/// Words a hit verifies at a time: an entry's words are padded to a multiple of this with
/// copies of its first word, so the verify loop is unrolled by this many with no remainder.
const VERIFY_GROUP: usize = 4;
const _: () = assert!(MAX_READS.is_multiple_of(VERIFY_GROUP));

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

/// In this order and line-aligned, so that the key a lookup compares, the counts and the first
/// words share the entry's first cache line (Rust's own layout put the key after the words).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Entry {
    key: Key,
    /// Words recorded, padded to a multiple of VERIFY_GROUP; 0: empty.
    reads: u16,
    /// The walk used the frame pointer it started with, so `key.bp` must match too (u16 with
    /// `reads`, so that the first word's address still shares the key's cache line).
    bp_used: u16,
    stack: u32,
    words: [(u64, u64); MAX_READS],
}

/// What a lookup reads of a way before opening its entry.
#[derive(Clone, Copy)]
struct Head {
    /// `tag(key)` of the entry's start; 0: empty.
    tag: u64,
    /// The first word the recorded walk read.
    first: (u64, u64),
}

#[derive(Clone, Copy)]
struct Set {
    heads: [Head; WAYS],
    entries: [Entry; WAYS],
    /// xorshift state choosing the next victim.
    victim: u32,
}

const EMPTY_SET: Set = Set {
    heads: [Head {
        tag: 0,
        first: (0, 0),
    }; WAYS],
    entries: [EMPTY; WAYS],
    victim: 0,
};

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
    bp_used: 0,
    words: [(0, 0); MAX_READS],
};

/// The words the current walk read, as it reads them.
pub struct Reads {
    words: [(u64, u64); MAX_READS],
    n: usize,
    /// The walk is not to be kept: it read more than MAX_READS words, or it ended on something
    /// the key does not capture (`not_cacheable`).
    overflow: bool,
    outside: bool,
    bp_used: bool,
}

impl Reads {
    pub const fn new() -> Self {
        Reads {
            words: [(0, 0); MAX_READS],
            n: 0,
            overflow: false,
            outside: false,
            bp_used: false,
        }
    }

    /// A walk begins.
    #[inline(always)]
    pub fn clear(&mut self) {
        self.n = 0;
        self.overflow = false;
        self.outside = false;
        self.bp_used = false;
    }

    /// The walk used the frame pointer it started with (the key's `bp`).
    #[inline(always)]
    pub fn used_entry_bp(&mut self) {
        self.bp_used = true;
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

    /// The walk's result depends on something neither the key nor its words capture (say a
    /// region the interval table did not know yet, which a later mapping may add without
    /// changing the table's generation): it is not kept.
    pub fn not_cacheable(&mut self) {
        self.overflow = true;
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
    sets: [Set; SETS],
    /// Hits so far, for the tests (the library counts its own, per thread, in batches).
    #[cfg(test)]
    pub hits: u64,
}

#[inline(always)]
fn slot(key: &Key) -> usize {
    // The stack pointer's varying bits are its low ones (frames are 16-byte multiples): keep
    // them low, where the multiply spreads them into the top bits the slot is taken from.
    let h = (key.ra ^ (key.sp >> 4)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - SETS.ilog2())) as usize % SETS
}

/// A never-zero digest of the key fields every entry compares (not `bp`, which only some do).
#[inline(always)]
fn tag(key: &Key) -> u64 {
    let mixed = key.ra
        ^ key.sp.rotate_left(16)
        ^ key.generation.rotate_left(48)
        ^ key.stack_hi.rotate_left(8);
    mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

/// Whether entry `e` starts where `key` does (`intervals` is compared separately).
#[inline(always)]
fn same_start(e: &Entry, key: &Key) -> bool {
    e.key.ra == key.ra
        && e.key.sp == key.sp
        && (e.bp_used == 0 || e.key.bp == key.bp)
        && e.key.generation == key.generation
        && e.key.stack_hi == key.stack_hi
}

impl WalkCache {
    pub const fn new() -> Self {
        WalkCache {
            sets: [EMPTY_SET; SETS],
            #[cfg(test)]
            hits: 0,
        }
    }

    /// An empty cache on the heap, built without a copy on the caller's stack (it is ~560 KiB)
    /// and, from an allocator that maps large blocks fresh, without touching its pages. None
    /// when there is no memory for it: `Box::new_zeroed` would run Rust's allocation-failure
    /// handler, which aborts the host (a threaded program under `ulimit -v` died in a new
    /// thread's first malloc).
    pub fn boxed() -> Option<Box<WalkCache>> {
        let layout = std::alloc::Layout::new::<WalkCache>();
        // SAFETY: WalkCache is not zero-sized; the result is checked for null below.
        let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut WalkCache;
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` is a fresh allocation of the global allocator with WalkCache's layout,
        // and all-zero is the empty cache (every field is an integer or an array of integers:
        // tag 0 marks an empty way, a zero victim state is seeded on first use).
        Some(unsafe { Box::from_raw(p) })
    }

    /// The stack id of a walk starting at `key`, if a recorded walk from the same state finds
    /// every word it read unchanged. `intervals_now` gives the interval table's generation, asked
    /// only when a candidate read outside its stack range; `read` loads a word the entry recorded
    /// (each was proven readable under this key: see the module docs).
    #[inline(always)]
    pub fn lookup(
        &mut self,
        key: &Key,
        intervals_now: impl FnOnce() -> u64,
        read: impl Fn(u64) -> u64,
    ) -> Option<u32> {
        let set = self.sets.get(slot(key))?;
        let tag = tag(key);
        // [sp, stack_hi) as one unsigned compare (an empty range when stack_hi <= sp).
        let span = key.stack_hi.saturating_sub(key.sp);
        let own_range = |addr: u64| addr.wrapping_sub(key.sp) < span && addr & 7 == 0;
        let mut intervals_now = Some(intervals_now);
        let mut intervals = 0u64;
        for (head, e) in set.heads.iter().zip(&set.entries) {
            if head.tag != tag {
                continue;
            }
            let (first_addr, first_value) = head.first;
            if own_range(first_addr) && read(first_addr) != first_value {
                continue;
            }
            if !same_start(e, key) {
                continue;
            }
            if e.key.intervals != 0 {
                if let Some(now) = intervals_now.take() {
                    intervals = now().wrapping_add(1);
                }
                if e.key.intervals != intervals {
                    continue;
                }
            }
            let Some(words) = e.words.get(..e.reads as usize) else {
                continue;
            };
            if all_hold(words, &read) {
                #[cfg(test)]
                {
                    self.hits += 1;
                }
                return Some(e.stack);
            }
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
        let Some(set) = self.sets.get_mut(slot(&key)) else {
            return;
        };
        let way = match set.heads.iter().position(|h| h.tag == 0) {
            Some(empty) => empty,
            None => {
                let mut x = if set.victim == 0 {
                    0x9E37_79B9
                } else {
                    set.victim
                };
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                set.victim = x;
                x as usize % WAYS
            }
        };
        let (Some(head), Some(e), Some(&first)) = (
            set.heads.get_mut(way),
            set.entries.get_mut(way),
            reads.words.first(),
        ) else {
            return;
        };
        *head = Head {
            tag: tag(&key),
            first,
        };
        let (Some(dst), Some(src)) = (e.words.get_mut(..reads.n), reads.words.get(..reads.n))
        else {
            return;
        };
        dst.copy_from_slice(src);
        let padded = reads.n.next_multiple_of(VERIFY_GROUP);
        for pad in e.words.iter_mut().take(padded).skip(reads.n) {
            *pad = first;
        }
        e.key = key;
        e.reads = padded as u16;
        e.stack = stack;
        e.bp_used = reads.bp_used as u16;
    }
}

/// Whether every recorded word still holds its value, a group at a time. Every address may be
/// read whatever the others hold (each was proven readable under the entry's key), so a group
/// need not stop at its first difference; written as one or-chain per group, it compiles to
/// four load-compares and one loop test per group (the compiler still branches per word),
/// where the word-by-word loop paid its loop test per word too.
#[inline(always)]
fn all_hold(words: &[(u64, u64)], read: &impl Fn(u64) -> u64) -> bool {
    debug_assert!(
        words.len().is_multiple_of(VERIFY_GROUP),
        "entries are padded"
    );
    words.chunks_exact(VERIFY_GROUP).all(|group| {
        group
            .iter()
            .fold(0, |differ, &(addr, value)| differ | (read(addr) ^ value))
            == 0
    })
}

#[cfg(test)]
mod tests;
