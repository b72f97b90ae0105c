//! The RSS ledger: every resident byte in a named place.
//!
//! Users come because RSS grows; the question is where it is. The kernel says how much of
//! each mapping is resident (`/proc/self/smaps`, `Rss`); we know what every part of every
//! anonymous mapping is: our own memory, a tracked mapping (whose stack made it), a glibc
//! arena (and, inside it, which pages hold a live block: the rest is memory glibc keeps
//! after `free`, the most common "leak that is not a leak"), a glibc-mmapped big block, a
//! thread stack. Page by page (`mincore`) each resident page of an anonymous mapping goes to
//! one category; file-backed mappings count whole, by path. The categories therefore add up
//! to the sum of `Rss`, which is what `VmRSS` counts.
//!
//! Inside an arena, "live" is the bytes of the live blocks' chunks (as far as the heap is
//! resident) and "retained" the rest: freed chunks, fragmentation between survivors, the top
//! pad — what glibc keeps resident for no block, which `MALLOC_ARENA_MAX`, `malloc_trim` or
//! another allocator would give back.
//!
//! Runs where dumps run (our own thread, or the exiting one), never on the hot path. Memory:
//! one byte per page of one 64 MiB window at a time.

use super::snapshot::Snapshot;
use offheap_format::schema::{
    Arena, FileResident, Ledger, LedgerCategories, MallInfo, ThreadStacks, Untracked,
};
use offheap_format::Kind;
use std::collections::BTreeMap;

const PAGE: u64 = offheap_core::sys::PAGE as u64;
const HEAP_MAX: u64 = 64 << 20;
/// Pages asked of `mincore` at once.
const WINDOW_PAGES: usize = 16 * 1024;

/// One mapping of /proc/self/smaps.
pub struct Vma {
    lo: u64,
    hi: u64,
    readable: bool,
    writable: bool,
    inode: u64,
    name: String,
    rss: u64,
    anonymous: u64,
}

/// Bytes of smaps text held at once: the read must not itself grow RSS by the size of the
/// whole text (1 KiB per mapping: 150 KiB for a service with 50 threads, which showed as the
/// ledger falling short of VmRSS), so it is parsed as it streams through a fixed buffer.
const SMAPS_BUF: usize = 16 << 10;

/// Parses /proc/self/smaps as it is read. Bytes, not text: of ~25 lines per mapping only the
/// header and two keys matter, and the others are skipped on their first bytes (as `String`
/// lines split into words, the parse was 2.6 M instructions of a 7 M-instruction exit dump of
/// /bin/true).
fn read_smaps() -> Option<Vec<Vma>> {
    use std::io::BufRead;
    let f = std::fs::File::open("/proc/self/smaps").ok()?;
    let mut r = std::io::BufReader::with_capacity(SMAPS_BUF, f);
    let mut out: Vec<Vma> = Vec::new();
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return Some(out);
        }
        parse_smaps_line(&line, &mut out);
    }
}

/// Resident bytes of our own mappings (`own`, sorted ranges), from the smaps read the ledger
/// already made: a VMA the kernel merged with a neighbour counts in proportion to our share
/// of it. (Read again on its own, smaps was a second pass and a whole-text copy per dump.)
pub fn own_resident(vmas: &[Vma], own: &[(u64, u64)]) -> u64 {
    let mut total = 0.0f64;
    for v in vmas.iter().filter(|v| v.hi > v.lo && v.rss > 0) {
        let covered: u64 = own
            .iter()
            .map(|&(a, b)| b.min(v.hi).saturating_sub(a.max(v.lo)))
            .sum();
        total += v.rss as f64 * covered as f64 / (v.hi - v.lo) as f64;
    }
    total as u64
}

/// How far VmRSS may move while smaps is read, and the sum of smaps' `Rss` may stand from
/// VmRSS, for the two to count as one moment: a burst of page faults during the read would
/// otherwise show as a ledger that does not add up to VmRSS (arenachurn's rounds fault in
/// ~1 MiB in the few ms a read takes, and with one arena give it back as fast: VmRSS agreed
/// before and after while smaps caught the peak).
const STEADY_FRACTION: u64 = 500; // 1/500 = 0.2 %
/// ... and at least this much: the read itself faults in a page or two of its own (buffer,
/// mapping list), which in a small process is more than 0.2 % (a 1.8 MiB /bin/true read
/// smaps three times at every exit). 4 pages: within 1 % of any VmRSS over 1.6 MiB.
const STEADY_FLOOR: u64 = 16 << 10;
/// Reads tried before taking the steadiest one.
const STEADY_TRIES: usize = 4;

/// What [`read_steady`] read: the mappings, the status read after them, the live thread
/// count and the time it all took (ms).
pub struct SteadyRead {
    pub vmas: Option<Vec<Vma>>,
    pub process: offheap_format::schema::ProcessMem,
    pub threads_live: u64,
    pub ms: f64,
}

/// /proc/self/smaps read between two reads of /proc/self/status whose VmRSS agree with each
/// other and with the sum of smaps' `Rss` within [`STEADY_FRACTION`] (else, after
/// [`STEADY_TRIES`], the read that came closest).
pub fn read_steady() -> SteadyRead {
    let started = offheap_core::sys::monotonic_ns();
    let (mut moved, mut best) = read_once();
    for _ in 1..STEADY_TRIES {
        if moved <= (best.process.rss_bytes / STEADY_FRACTION).max(STEADY_FLOOR) {
            break;
        }
        let (m, r) = read_once();
        if m < moved {
            (moved, best) = (m, r);
        }
    }
    best.ms = (offheap_core::sys::monotonic_ns() - started) as f64 / 1e6;
    best
}

/// One read of smaps between two of VmRSS, and how far the three disagree (bytes).
fn read_once() -> (u64, SteadyRead) {
    let (before, _) = super::procfs::process_memory();
    let vmas = read_smaps();
    let (after, threads_live) = super::procfs::process_memory();
    let sum: u64 = vmas.iter().flatten().map(|v| v.rss).sum();
    let moved = after
        .rss_bytes
        .abs_diff(before.rss_bytes)
        .max(after.rss_bytes.abs_diff(sum));
    let read = SteadyRead {
        vmas,
        process: after,
        threads_live,
        ms: 0.0,
    };
    (moved, read)
}

fn parse_smaps_line(line: &[u8], out: &mut Vec<Vma>) {
    match line.first() {
        Some(b'0'..=b'9' | b'a'..=b'f') => parse_smaps_header(line, out),
        Some(b'R') => set_kb(line, b"Rss:", out, |v, kb| v.rss = kb),
        Some(b'A') => set_kb(line, b"Anonymous:", out, |v, kb| v.anonymous = kb),
        _ => {}
    }
}

/// `Key:   123 kB` for the mapping being read, when the line is that key.
fn set_kb(line: &[u8], key: &[u8], out: &mut [Vma], set: fn(&mut Vma, u64)) {
    let Some(rest) = line.strip_prefix(key) else {
        return;
    };
    let kb = rest
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
    if let Some(v) = out.last_mut() {
        set(v, kb.saturating_mul(1024));
    }
}

/// `lo-hi perms offset dev inode   name`: a new mapping.
fn parse_smaps_header(line: &[u8], out: &mut Vec<Vma>) {
    let text = String::from_utf8_lossy(line);
    let mut f = text.split_ascii_whitespace();
    let Some((lo, hi)) = f.next().and_then(|r| r.split_once('-')) else {
        return;
    };
    let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
        return;
    };
    let perms = f.next().unwrap_or("");
    let _offset = f.next();
    let _dev = f.next();
    let inode = f.next().and_then(|i| i.parse().ok()).unwrap_or(0);
    let name = f.collect::<Vec<_>>().join(" ");
    out.push(Vma {
        lo,
        hi,
        readable: perms.starts_with('r'),
        writable: perms.get(1..2) == Some("w"),
        inode,
        name,
        rss: 0,
        anonymous: 0,
    });
}

/// A sorted set of ranges, for "which one holds this address".
struct Ranges<T>(Vec<(u64, u64, T)>);

impl<T: Copy> Ranges<T> {
    fn new(mut v: Vec<(u64, u64, T)>) -> Self {
        v.sort_unstable_by_key(|r| r.0);
        Ranges(v)
    }
    fn find(&self, addr: u64) -> Option<(usize, T)> {
        let i = self.0.partition_point(|r| r.0 <= addr).checked_sub(1)?;
        let &(lo, hi, t) = self.0.get(i)?;
        (lo <= addr && addr < hi).then_some((i, t))
    }

    /// The parts of `[lo, hi)` no range covers, in address order.
    fn uncovered(&self, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut cursor = lo;
        let first = self.0.partition_point(|r| r.0 <= lo).saturating_sub(1);
        for &(r_lo, r_hi, _) in self.0.get(first..).unwrap_or(&[]) {
            if r_lo >= hi {
                break;
            }
            if r_hi <= cursor {
                continue;
            }
            if r_lo > cursor {
                gaps.push((cursor, r_lo));
            }
            cursor = cursor.max(r_hi);
        }
        if cursor < hi {
            gaps.push((cursor, hi));
        }
        gaps
    }
}

/// A glibc arena heap: its resident pages and the bytes of live blocks in it.
struct ArenaPages {
    lo: u64,
    hi: u64,
    main: bool,
    resident: u64,
    /// Chunk bytes (header included) of the live blocks in this heap.
    live: u64,
}

impl ArenaPages {
    fn new(lo: u64, hi: u64, main: bool) -> Self {
        ArenaPages {
            lo,
            hi,
            main,
            resident: 0,
            live: 0,
        }
    }

    /// Resident bytes holding live blocks: the live chunks, as far as the heap is resident.
    /// As the dump carries it.
    fn reported(&self) -> Arena {
        Arena {
            kind: if self.main { "main" } else { "thread" }.into(),
            start: self.lo,
            end: self.hi,
            resident_bytes: self.resident,
            live_bytes: self.live_resident(),
            retained_bytes: self.resident - self.live_resident(),
        }
    }

    fn live_resident(&self) -> u64 {
        self.live.min(self.resident)
    }
}

/// Reads `len` bytes of our own memory at `addr`, or None if it is not mapped (a mapping
/// that went away since smaps was read must not crash the host).
fn read_own(addr: u64, buf: &mut [u8]) -> bool {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let n = offheap_core::raw_syscall!(
        libc::SYS_process_vm_readv,
        crate::process::own_pid(),
        &local as *const libc::iovec,
        1usize,
        &remote as *const libc::iovec,
        1usize,
        0usize
    );
    n == buf.len() as isize
}

/// glibc's mapped chunks (its blocks of at least the mmap threshold, each a mapping of its
/// own), whether a record names them or not: under sampling most big blocks are not sampled,
/// and their pages showed as untracked memory. glibc writes a chunk header at the start of
/// each mapping: `prev_size` 0 and a size of whole pages with IS_MMAPPED (bit 1) alone among
/// the flag bits (for `memalign` it writes a second header inside, and the first stays). A
/// header is looked for where an anonymous mapping's part that `known` (everything but big
/// blocks) does not cover begins, and right after each chunk found: the kernel merges
/// adjacent anonymous mappings into one.
fn glibc_big_chunks(vmas: &[Vma], known: &Ranges<Place>) -> Vec<(u64, u64, Place)> {
    const IS_MMAPPED: u64 = 2;
    const FLAG_BITS: u64 = 7;
    let mut found = Vec::new();
    let candidates = vmas
        .iter()
        .filter(|v| v.rss > 0 && v.inode == 0 && v.name.is_empty() && v.readable && v.writable);
    for v in candidates {
        for (lo, hi) in known.uncovered(v.lo, v.hi) {
            let mut at = lo;
            let mut header = [0u8; 16];
            while at.is_multiple_of(PAGE) && at + 16 <= hi && read_own(at, &mut header) {
                let word = |i: usize| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(header.get(i * 8..i * 8 + 8).unwrap_or(&[0; 8]));
                    u64::from_ne_bytes(w)
                };
                let (prev_size, head) = (word(0), word(1));
                let len = head & !FLAG_BITS;
                let chunk = prev_size == 0
                    && head & FLAG_BITS == IS_MMAPPED
                    && len > 0
                    && len.is_multiple_of(PAGE)
                    && len <= hi - at;
                if !chunk {
                    break;
                }
                found.push((at, at + len, Place::BigBlock));
                at += len;
            }
        }
    }
    found
}

/// The glibc thread heaps in the writable anonymous mapping `[lo, hi)`: one may start at
/// any 64 MiB boundary inside it, not only at its start, because the kernel merges a heap's
/// read-write part with an anonymous read-write mapping that ends right below it (arenachurn
/// lost one of 13 arenas that way now and then).
fn thread_heaps_in(lo: u64, hi: u64) -> impl Iterator<Item = ArenaPages> {
    let first = lo.next_multiple_of(HEAP_MAX);
    (first..hi)
        .step_by(HEAP_MAX as usize)
        .map(move |c| (c, hi.min(c + HEAP_MAX)))
        .filter(|&(c, end)| is_thread_heap(c, end))
        .map(|(c, end)| ArenaPages::new(c, end, false))
}

/// Whether `[lo, hi)` is a glibc thread-arena heap: 64 MiB aligned, starting with a
/// heap_info whose size and mprotect_size fit the heap and whose arena pointer lies right
/// after a heap_info at the start of a 64 MiB-aligned heap (this one, for an arena's first
/// heap, or the arena's first heap).
fn is_thread_heap(lo: u64, hi: u64) -> bool {
    if !lo.is_multiple_of(HEAP_MAX) || hi - lo > HEAP_MAX {
        return false;
    }
    let mut b = [0u8; 32];
    if !read_own(lo, &mut b) {
        return false;
    }
    let word = |i: usize| {
        b.get(i * 8..i * 8 + 8)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let (ar_ptr, size, mprotect_size) = (word(0), word(2), word(3));
    let arena_offset = ar_ptr % HEAP_MAX;
    size > 0
        && size <= HEAP_MAX
        && size.is_multiple_of(PAGE)
        && mprotect_size >= size
        && (8..PAGE).contains(&arena_offset)
        && ar_ptr.is_multiple_of(8)
}

/// Under sampling: the arenas' live bytes from glibc's own count of the bytes its arenas have
/// in use (`in_use`, mallinfo2's `uordblks`), shared out over the arenas as the sampled
/// estimates are (or as their resident bytes, when no sampled block is in any). The estimate
/// alone is as good as the samples: a short window, or a leak of small blocks slower than
/// the sampling rate, has few or none, and a service leaking 50 KB/s in 512-byte blocks
/// showed 12.5 MiB of arena memory growing as "retained", freed memory glibc keeps, where
/// it was live.
fn live_from_mallinfo(arenas: &mut [ArenaPages], in_use: u64) {
    let resident: u64 = arenas.iter().map(|a| a.resident).sum();
    let estimated: u64 = arenas.iter().map(|a| a.live_resident()).sum();
    let target = in_use.min(resident);
    for a in arenas.iter_mut() {
        let (part, whole) = if estimated > 0 {
            (a.live_resident(), estimated)
        } else {
            (a.resident, resident.max(1))
        };
        a.live = (target as u128 * part as u128 / whole as u128) as u64;
    }
}

/// glibc's `mallinfo2()` (only when glibc is the program's allocator).
fn mallinfo() -> Option<MallInfo> {
    if crate::hooks::real::is_foreign() {
        return None;
    }
    // SAFETY: mallinfo2 takes glibc's arena locks and fills a plain struct; we are on a
    // thread that holds none of them.
    let m = unsafe { libc::mallinfo2() };
    Some(MallInfo {
        arena: m.arena as u64,
        hblkhd: m.hblkhd as u64,
        uordblks: m.uordblks as u64,
        fordblks: m.fordblks as u64,
        keepcost: m.keepcost as u64,
    })
}

/// Which pages of `[lo, hi)` are resident, a window at a time.
fn for_each_resident_page(lo: u64, hi: u64, mut f: impl FnMut(u64)) -> u64 {
    let mut vec = vec![0u8; WINDOW_PAGES];
    let mut count = 0;
    let mut at = lo;
    while at < hi {
        let len = (hi - at).min(WINDOW_PAGES as u64 * PAGE);
        let r = offheap_core::raw_syscall!(libc::SYS_mincore, at, len, vec.as_mut_ptr());
        if offheap_core::sys::raw::error(r).is_none() {
            for (i, &v) in vec.iter().take((len / PAGE) as usize).enumerate() {
                if v & 1 != 0 {
                    f(at + i as u64 * PAGE);
                    count += 1;
                }
            }
        }
        at += len;
    }
    count
}

/// What the ledger knows before it looks at smaps.
pub struct Known<'a> {
    pub snap: &'a Snapshot,
    /// `/proc/self/smaps`, read next to the dump's VmRSS ([`read_steady`]).
    pub vmas: &'a [Vma],
    /// Time that read took (ms), counted in the ledger's `ms`.
    pub read_ms: f64,
    pub own: &'a [(u64, u64)],
    pub thread_stacks: &'a [(u64, u64)],
    pub threads_live: u64,
    /// OFFHEAP_SAMPLE_BYTES (0: every block has a record).
    pub sample_bytes: u64,
}

/// The ledger, the resident bytes of each mapping in `snap.mappings` order, and the
/// untracked mappings.
pub struct Measured {
    pub ledger: Ledger,
    pub resident: Vec<u64>,
    pub untracked: Untracked,
}

/// One anonymous mapping's resident pages, by where they belong (arena pages are counted
/// on the arena).
#[derive(Default)]
struct VmaCounts {
    counted: u64,
    own: u64,
    mmap: u64,
    big: u64,
    stacks: u64,
    /// An image's `.bss`: anonymous memory right after its file-backed data.
    image_bss: u64,
    unknown: u64,
    /// Pages of arenas: (arena, bytes) in the order first seen.
    arena_parts: Vec<(usize, u64)>,
}

impl VmaCounts {
    fn add_arena_page(&mut self, arena: usize) {
        match self.arena_parts.last_mut() {
            Some((a, bytes)) if *a == arena => *bytes += PAGE,
            _ => self.arena_parts.push((arena, PAGE)),
        }
    }

    /// Makes the parts add up to the mapping's `Rss`. mincore also reports pages that are
    /// mapped but not counted in Rss (the shared zero page a read of untouched memory maps,
    /// mostly in our own tables when a dump reads them; pages the program faulted in after
    /// smaps was read, mostly in its arenas): that excess comes off our own share first, the
    /// arenas' last. Pages Rss counts and mincore missed (released meanwhile) are unknown ones.
    fn settle(&mut self, rss: u64) {
        if self.counted < rss {
            self.unknown += rss - self.counted;
            return;
        }
        let mut excess = self.counted - rss;
        for part in [
            &mut self.own,
            &mut self.unknown,
            &mut self.mmap,
            &mut self.stacks,
            &mut self.image_bss,
            &mut self.big,
        ]
        .into_iter()
        .chain(self.arena_parts.iter_mut().rev().map(|(_, bytes)| bytes))
        {
            let cut = excess.min(*part);
            *part -= cut;
            excess -= cut;
        }
    }
}

#[derive(Clone, Copy)]
enum Place {
    Own,
    Mapping(usize),
    Arena(usize),
    BigBlock,
    ThreadStack,
}

/// The live chunk bytes a record stands for: its own with full tracking; under sampling, its
/// own times the inverse of the chance a block of its size had to be sampled (each sampled
/// block stands for the unsampled ones like it, as in the dump's `est_bytes`: counting only
/// the sampled chunks put nearly all of an arena under "retained").
fn chunk_estimate(chunk: u64, r: &offheap_core::table::live::Record, sample_bytes: u64) -> u64 {
    if r.flags() & offheap_core::table::live::FLAG_SAMPLED == 0 {
        return chunk;
    }
    let weight = offheap_core::aggregate::sample_weight(r.size(), sample_bytes);
    (chunk as f64 * weight) as u64
}

pub fn measure(k: &Known<'_>) -> Option<Measured> {
    let started = offheap_core::sys::monotonic_ns();
    let mut arenas = arenas_in(k.vmas);
    let big_records = live_into_arenas(k, &mut arenas);
    let places = places_of(k, &arenas, big_records);
    let mut tally = Tally::new(k.snap.mappings.len());
    let probe_pages = crate::probes::facts::patched_pages();
    for i in 0..k.vmas.len() {
        tally.vma(k.vmas, i, &places, &mut arenas, &probe_pages);
    }
    let mallinfo = mallinfo();
    if k.sample_bytes > 0 {
        if let Some(mi) = &mallinfo {
            live_from_mallinfo(&mut arenas, mi.uordblks);
        }
    }
    for a in &arenas {
        tally.c.malloc_live += a.live_resident();
        tally.c.malloc_retained += a.resident - a.live_resident();
    }
    let ms = k.read_ms + (offheap_core::sys::monotonic_ns() - started) as f64 / 1e6;
    Some(tally.finish(k, &arenas, mallinfo, ms))
}

/// The malloc arenas among the mappings: the brk heap, and thread heaps recognised by their
/// heap_info; in address order.
fn arenas_in(vmas: &[Vma]) -> Vec<ArenaPages> {
    let mut arenas: Vec<ArenaPages> = Vec::new();
    for v in vmas {
        if v.name == "[heap]" {
            arenas.push(ArenaPages::new(v.lo, v.hi, true));
        } else if v.inode == 0 && v.name.is_empty() && v.writable {
            arenas.extend(thread_heaps_in(v.lo, v.hi));
        }
    }
    arenas.sort_unstable_by_key(|a| a.lo);
    arenas
}

/// Adds each record's chunk to the live bytes of the arena it lies in; returns the pages of
/// the big blocks that lie in none (glibc maps each of those on its own).
fn live_into_arenas(k: &Known<'_>, arenas: &mut [ArenaPages]) -> Ranges<()> {
    let arena_ranges = Ranges::new(
        arenas
            .iter()
            .enumerate()
            .map(|(i, a)| (a.lo, a.hi, i))
            .collect(),
    );
    let mut big: Vec<(u64, u64, ())> = Vec::new();
    for r in &k.snap.records {
        // A block occupies its chunk from 16 bytes before the pointer, rounded to 16.
        let (lo, hi) = (r.addr().saturating_sub(16), r.addr() + r.size());
        match arena_ranges.find(r.addr()) {
            Some((_, i)) => {
                if let Some(a) = arenas.get_mut(i) {
                    a.live += chunk_estimate((hi - lo + 15) & !15, r, k.sample_bytes);
                }
            }
            None if r.size() >= 64 * 1024 => {
                big.push((lo & !(PAGE - 1), (hi + PAGE - 1) & !(PAGE - 1), ()))
            }
            None => {}
        }
    }
    Ranges::new(big)
}

/// Where every address we can name belongs: our own mappings, the program's tracked
/// mappings, thread stacks, arenas and glibc's big blocks.
fn places_of(k: &Known<'_>, arenas: &[ArenaPages], big_records: Ranges<()>) -> Ranges<Place> {
    let mut places: Vec<(u64, u64, Place)> = Vec::new();
    places.extend(k.own.iter().map(|&(lo, hi)| (lo, hi, Place::Own)));
    places.extend(
        k.snap
            .mappings
            .iter()
            .enumerate()
            .filter(|(_, m)| m.iv.kind() != Kind::MmapReserved)
            .map(|(i, m)| (m.start, m.iv.end, Place::Mapping(i))),
    );
    places.extend(
        k.thread_stacks
            .iter()
            .map(|&(lo, hi)| (lo, hi, Place::ThreadStack)),
    );
    places.extend(
        arenas
            .iter()
            .enumerate()
            .map(|(i, a)| (a.lo, a.hi, Place::Arena(i))),
    );
    // Under sampling, glibc's big blocks by their headers, over whole mappings (a system call
    // each); the blocks records name besides, where no header was found (ranges must not
    // overlap for `find`). Under full tracking records name them all.
    let chunks = Ranges::new(if k.sample_bytes > 0 {
        glibc_big_chunks(k.vmas, &Ranges::new(places.clone()))
    } else {
        Vec::new()
    });
    places.extend(
        big_records
            .0
            .iter()
            .filter(|&&(lo, _, ())| chunks.find(lo).is_none())
            .map(|&(lo, hi, ())| (lo, hi, Place::BigBlock)),
    );
    places.extend(chunks.0);
    Ranges::new(places)
}

/// The ledger's sums as the mappings are walked.
struct Tally {
    c: LedgerCategories,
    /// Resident bytes of each tracked mapping, in `snap.mappings` order.
    resident: Vec<u64>,
    files: BTreeMap<String, u64>,
    /// (start, end, perms): the parts of anonymous mappings with untracked resident pages
    /// that nothing we know covers.
    untracked: Vec<(u64, u64, String)>,
    untracked_resident: u64,
}

impl Tally {
    fn new(mappings: usize) -> Self {
        Tally {
            c: LedgerCategories::default(),
            resident: vec![0; mappings],
            files: BTreeMap::new(),
            untracked: Vec::new(),
            untracked_resident: 0,
        }
    }

    /// Counts the resident bytes of `vmas[i]` where they belong.
    fn vma(
        &mut self,
        vmas: &[Vma],
        i: usize,
        places: &Ranges<Place>,
        arenas: &mut [ArenaPages],
        probe_pages: &[u64],
    ) {
        let Some(v) = vmas.get(i) else { return };
        if v.rss == 0 {
            return;
        }
        if v.inode != 0 {
            self.file_backed(v, probe_pages);
            return;
        }
        match v.name.as_str() {
            "[vdso]" | "[vvar]" | "[vsyscall]" | "[vvar_vclock]" => self.c.other += v.rss,
            "[stack]" => self.c.thread_stacks += v.rss,
            n if n.starts_with("/") || n.starts_with("[anon_shmem") => self.c.other += v.rss,
            _ => self.anonymous(vmas, i, places, arenas),
        }
    }

    fn file_backed(&mut self, v: &Vma, probe_pages: &[u64]) {
        // Code pages we patched became private copies: ours, not the file's.
        let patched = probe_pages
            .iter()
            .filter(|&&p| v.lo <= p && p < v.hi)
            .count() as u64;
        let ours = (patched * PAGE).min(v.anonymous);
        self.c.offheap_self += ours;
        self.c.file += v.rss - ours;
        *self.files.entry(v.name.clone()).or_default() += v.rss - ours;
    }

    /// An anonymous mapping, page by page (arena pages are counted on their arena).
    fn anonymous(
        &mut self,
        vmas: &[Vma],
        i: usize,
        places: &Ranges<Place>,
        arenas: &mut [ArenaPages],
    ) {
        let Some(v) = vmas.get(i) else { return };
        let before = i.checked_sub(1).and_then(|j| vmas.get(j));
        // A thread stack glibc keeps (cached or live): read-write right above a guard.
        let guard_below = before.is_some_and(|p| p.hi == v.lo && !p.readable && p.inode == 0);
        // An image's .bss: anonymous, right after the image's file-backed data (the loader
        // maps it there; the Go runtime's globals live in the executable's).
        let bss_of_image = before.is_some_and(|p| p.hi == v.lo && p.inode != 0 && p.writable);
        let mut here = VmaCounts::default();
        for_each_resident_page(v.lo, v.hi, |page| {
            here.counted += PAGE;
            match places.find(page).map(|(_, p)| p) {
                Some(Place::Own) => here.own += PAGE,
                Some(Place::Mapping(m)) => {
                    here.mmap += PAGE;
                    if let Some(r) = self.resident.get_mut(m) {
                        *r += PAGE;
                    }
                }
                Some(Place::Arena(a)) => here.add_arena_page(a),
                Some(Place::BigBlock) => here.big += PAGE,
                Some(Place::ThreadStack) => here.stacks += PAGE,
                None if guard_below => here.stacks += PAGE,
                None if bss_of_image => here.image_bss += PAGE,
                None => here.unknown += PAGE,
            }
        });
        here.settle(v.rss);
        for &(a, bytes) in &here.arena_parts {
            if let Some(a) = arenas.get_mut(a) {
                a.resident += bytes;
            }
        }
        self.add(v, places, &here);
    }

    fn add(&mut self, v: &Vma, places: &Ranges<Place>, here: &VmaCounts) {
        if here.unknown > 0 {
            self.untracked_resident += here.unknown;
            let perms = perms_of(v);
            self.untracked.extend(
                places
                    .uncovered(v.lo, v.hi)
                    .into_iter()
                    .map(|(lo, hi)| (lo, hi, perms.clone())),
            );
        }
        let c = &mut self.c;
        c.offheap_self += here.own;
        c.mmap += here.mmap;
        c.malloc_live += here.big;
        c.thread_stacks += here.stacks;
        if (v.lo..v.hi).contains(&own_bss_marker()) {
            c.offheap_self += here.image_bss;
        } else {
            c.other += here.image_bss;
        }
        c.untracked += here.unknown;
    }

    /// The ledger as the dump carries it.
    fn finish(
        self,
        k: &Known<'_>,
        arenas: &[ArenaPages],
        mallinfo: Option<MallInfo>,
        ms: f64,
    ) -> Measured {
        let rss: u64 = k.vmas.iter().map(|v| v.rss).sum();
        let c = self.c;
        let ledger = Ledger {
            rss_bytes: rss,
            categories: c,
            remainder_bytes: rss as i64 - c.sum() as i64,
            arenas: arenas.iter().map(ArenaPages::reported).collect(),
            files: largest_files(self.files).into(),
            mallinfo,
            thread_stacks: ThreadStacks {
                count: k.threads_live,
                resident_bytes: c.thread_stacks,
            },
            ms,
        };
        Measured {
            ledger,
            resident: self.resident,
            untracked: untracked_largest_first(self.untracked, self.untracked_resident),
        }
    }
}

/// The 64 files with the most resident bytes, most first.
fn largest_files(files: BTreeMap<String, u64>) -> Vec<FileResident> {
    let mut files: Vec<FileResident> = files
        .into_iter()
        .map(|(path, resident_bytes)| FileResident {
            path,
            resident_bytes,
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.resident_bytes));
    files.truncate(64);
    files
}

/// All untracked ranges counted, the 256 largest listed.
fn untracked_largest_first(mut ranges: Vec<(u64, u64, String)>, resident: u64) -> Untracked {
    ranges.sort_by_key(|u| std::cmp::Reverse(u.1 - u.0));
    Untracked {
        count: ranges.len() as u64,
        bytes: ranges.iter().map(|u| u.1 - u.0).sum(),
        resident_bytes: resident,
        ranges: ranges.into_iter().take(256).collect(),
    }
}

/// An address in our own `.bss` (a zero-initialised static), to tell our image's bss apart.
fn own_bss_marker() -> u64 {
    static MARKER: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    &MARKER as *const core::sync::atomic::AtomicU64 as u64
}

fn perms_of(v: &Vma) -> String {
    format!(
        "{}{}",
        if v.readable { 'r' } else { '-' },
        if v.writable { 'w' } else { '-' }
    )
}
