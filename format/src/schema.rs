//! The typed records of a dump and of a stacks-file member, as a reader sees them.
//!
//! Field names here are the file's field names (docs/dump-format.md describes each). Fields a
//! reader needs are required, so a dump missing them is reported as corrupt instead of
//! silently producing zeros; fields that only add detail default, so a dump from a library
//! that omits an optional one still reads.
//!
//! Tables are stored by column (`OutstandingTable` and friends): every column of a table has
//! one entry per row, ids ascend and are written as differences from the previous row
//! ([`Ids`]). [`crate::read`] checks the lengths; the `row` accessors give a row at a time.

use crate::bounded::List;
use crate::{End, Kind, Trigger, Via};
use serde::de::Deserializer;
use serde::{Deserialize, Serialize, Serializer};

/// Rows of one table.
pub const MAX_ROWS: usize = 4_000_000;
/// Frames of one stack: far above what the library writes (its cap is 256).
pub const MAX_FRAMES: usize = 4_096;
/// Rows of one `by_generation`/`by_epoch` list (the library writes at most 64).
pub const MAX_DETAIL_ROWS: usize = 4_096;
/// Modules, files, arenas and other small lists.
pub const MAX_SMALL: usize = 65_536;

/// A `[key, count, bytes]` detail row (`by_generation`, `by_epoch`).
pub type Detail = (u64, u64, u64);

/// Ascending ids, written as differences from the previous one (the first from 0), so a
/// column of consecutive ids compresses to almost nothing. Held decoded.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct Ids(pub Vec<u64>);

impl Serialize for Ids {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut prev = 0u64;
        s.collect_seq(self.0.iter().map(|&id| {
            let d = id.wrapping_sub(prev);
            prev = id;
            d
        }))
    }
}

impl<'de> Deserialize<'de> for Ids {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let deltas = List::<u64, MAX_ROWS>::deserialize(de)?;
        let mut out = Vec::with_capacity(deltas.len());
        let mut acc = 0u64;
        for d in deltas.0 {
            acc = acc
                .checked_add(d)
                .ok_or_else(|| serde::de::Error::custom("id deltas overflow (corrupt column)"))?;
            out.push(acc);
        }
        Ok(Ids(out))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dump {
    pub format: String,
    pub version: u64,
    pub header: Header,
    /// Loaded images; normally in the stacks file, inline in `offheap dump cat` output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: List<Module, MAX_SMALL>,
    /// Stacks; normally in the stacks file, inline in `offheap dump cat` output.
    #[serde(default, skip_serializing_if = "StackTable::is_empty")]
    pub stacks: StackTable,
    pub outstanding: OutstandingTable,
    #[serde(default)]
    pub cumulative: CumulativeTable,
    #[serde(default)]
    pub threads: Threads,
    #[serde(default)]
    pub totals: Totals,
    #[serde(default)]
    pub process: ProcessMem,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Ledger>,
    #[serde(default, rename = "self")]
    pub self_: SelfStats,
    #[serde(default)]
    pub untracked: Untracked,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub pid: u64,
    #[serde(default)]
    pub ppid: u64,
    #[serde(default)]
    pub uid: u64,
    #[serde(default)]
    pub exe: String,
    #[serde(default)]
    pub exe_build_id: Option<String>,
    #[serde(default)]
    pub cmdline: List<String, MAX_SMALL>,
    pub seq: u64,
    pub trigger: Trigger,
    #[serde(default)]
    pub start_wall_ns: u64,
    #[serde(default)]
    pub wall_ns: u64,
    pub uptime_ms: u64,
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub config: Config,
    #[serde(default)]
    pub library_version: String,
    /// The series' stacks file (a name in the same directory), or null when every stack this
    /// dump refers to is inline.
    #[serde(default)]
    pub stacks_file: Option<String>,
    /// Every stack id below this is defined, in the stacks file or inline.
    #[serde(default)]
    pub stack_ids_below: u64,
    /// How the process ended, in an exit dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    /// Go facts of the executable and the state of the probes; null for other programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<GoInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub interval_s: f64,
    #[serde(default)]
    pub keep: u64,
    #[serde(default)]
    pub warmup_s: f64,
    #[serde(default)]
    pub max_frames: u64,
    #[serde(default)]
    pub sample_bytes: u64,
    #[serde(default)]
    pub dir: String,
    /// Stacks the library's store holds; later new stacks count under "stack store full"
    /// (0 in dumps written before it was recorded).
    #[serde(default)]
    pub max_stacks: u64,
    /// The soft RLIMIT_AS at start-up in bytes, when finite: without OFFHEAP_MAX_STACKS it
    /// sizes the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_limit: Option<u64>,
}

/// How the process ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitInfo {
    /// `exit`, `_exit`, `go-exit`, `signal`.
    pub path: String,
    /// The exit status, when it ended by exiting.
    #[serde(default)]
    pub status: Option<i64>,
    /// The signal it is dying of, when it ended by a signal.
    #[serde(default)]
    pub signal: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GoInfo {
    /// `go1.26.8`, from `.go.buildinfo`.
    #[serde(default)]
    pub version: String,
    /// The main module's path, from `.go.buildinfo` (empty when built without module info).
    #[serde(default)]
    pub main_module: String,
    /// Each probe by name (`syscall`, `exit`, `signal`).
    #[serde(default)]
    pub probes: List<ProbeState, 16>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProbeState {
    pub name: String,
    /// `on` or `off`.
    pub state: String,
    /// Why it is off (unknown version, unexpected bytes, mprotect refused, turned off).
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Module {
    pub path: String,
    #[serde(default)]
    pub build_id: Option<String>,
    pub base: u64,
    #[serde(default)]
    pub ranges: List<(u64, u64), 4_096>,
}

/// Stacks by column. Rows are in the writer's order (chosen so that neighbours share their
/// outermost frames); `keep[i]` outermost frames of row i equal those of row i-1 and are not
/// repeated in `frames[i]`, which holds the rest, innermost first. [`crate::stacks`] encodes
/// and decodes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackTable {
    pub id: List<u64, MAX_ROWS>,
    pub end: List<End, MAX_ROWS>,
    pub keep: List<u64, MAX_ROWS>,
    pub frames: List<List<u64, MAX_FRAMES>, MAX_ROWS>,
}

impl StackTable {
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
}

/// Live memory by (stack, kind, via), ascending in that order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OutstandingTable {
    pub stack: Ids,
    pub kind: List<Kind, MAX_ROWS>,
    #[serde(default)]
    pub via: List<Via, MAX_ROWS>,
    pub count: List<u64, MAX_ROWS>,
    pub bytes: List<u64, MAX_ROWS>,
    /// Only with sampling: unbiased estimates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub est_count: Option<List<f64, MAX_ROWS>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub est_bytes: Option<List<f64, MAX_ROWS>>,
    pub oldest_ms: List<u64, MAX_ROWS>,
    pub newest_ms: List<u64, MAX_ROWS>,
    pub age_hist: List<[u64; 6], MAX_ROWS>,
    pub by_generation: List<List<Detail, MAX_DETAIL_ROWS>, MAX_ROWS>,
    pub by_epoch: List<List<Detail, MAX_DETAIL_ROWS>, MAX_ROWS>,
    /// Resident bytes under the row's mappings (mmap kinds; 0 for malloc rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident: Option<List<u64, MAX_ROWS>>,
}

/// One row of [`OutstandingTable`].
#[derive(Debug, Clone, PartialEq)]
pub struct OutstandingRow<'a> {
    pub stack: u64,
    pub kind: Kind,
    pub via: Via,
    pub count: u64,
    pub bytes: u64,
    pub est_count: Option<f64>,
    pub est_bytes: Option<f64>,
    pub oldest_ms: u64,
    pub newest_ms: u64,
    pub age_hist: [u64; 6],
    pub by_generation: &'a [Detail],
    pub by_epoch: &'a [Detail],
    pub resident: Option<u64>,
}

impl OutstandingTable {
    pub fn len(&self) -> usize {
        self.stack.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`; `crate::read` has checked every column has `len()` entries.
    pub fn row(&self, i: usize) -> Option<OutstandingRow<'_>> {
        Some(OutstandingRow {
            stack: *self.stack.0.get(i)?,
            kind: *self.kind.get(i)?,
            via: self.via.get(i).copied().unwrap_or_default(),
            count: *self.count.get(i)?,
            bytes: *self.bytes.get(i)?,
            est_count: self.est_count.as_ref().and_then(|c| c.get(i).copied()),
            est_bytes: self.est_bytes.as_ref().and_then(|c| c.get(i).copied()),
            oldest_ms: *self.oldest_ms.get(i)?,
            newest_ms: *self.newest_ms.get(i)?,
            age_hist: *self.age_hist.get(i)?,
            by_generation: self.by_generation.get(i)?,
            by_epoch: self.by_epoch.get(i)?,
            resident: self.resident.as_ref().and_then(|c| c.get(i).copied()),
        })
    }

    pub fn rows(&self) -> impl Iterator<Item = OutstandingRow<'_>> {
        (0..self.len()).map_while(|i| self.row(i))
    }
}

/// Per-stack counters since the process started, ascending by stack (for sampled
/// allocations only when sampling).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CumulativeTable {
    pub stack: Ids,
    pub allocs: List<u64, MAX_ROWS>,
    pub frees: List<u64, MAX_ROWS>,
    pub alloc_bytes: List<u64, MAX_ROWS>,
    pub free_bytes: List<u64, MAX_ROWS>,
}

/// One row of [`CumulativeTable`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cumulative {
    pub stack: u64,
    pub allocs: u64,
    pub frees: u64,
    pub alloc_bytes: u64,
    pub free_bytes: u64,
}

impl CumulativeTable {
    pub fn len(&self) -> usize {
        self.stack.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn row(&self, i: usize) -> Option<Cumulative> {
        Some(Cumulative {
            stack: *self.stack.0.get(i)?,
            allocs: *self.allocs.get(i)?,
            frees: *self.frees.get(i)?,
            alloc_bytes: *self.alloc_bytes.get(i)?,
            free_bytes: *self.free_bytes.get(i)?,
        })
    }

    pub fn rows(&self) -> impl Iterator<Item = Cumulative> + '_ {
        (0..self.len()).map_while(|i| self.row(i))
    }
}

/// Threads of the process: how many are alive, and the stacks that created them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Threads {
    /// Threads alive now (the kernel's count).
    #[serde(default)]
    pub live: u64,
    /// Threads created through pthread_create since the process started.
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub by_stack: ThreadTable,
}

/// Thread creators, ascending by the creating stack.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ThreadTable {
    pub stack: Ids,
    /// Threads from this stack still alive.
    pub live: List<u64, MAX_ROWS>,
    /// Threads this stack created since the process started.
    pub created: List<u64, MAX_ROWS>,
    /// Uptime at which the oldest still-live thread of this stack started.
    pub oldest_ms: List<u64, MAX_ROWS>,
}

/// One row of [`ThreadTable`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadRow {
    pub stack: u64,
    pub live: u64,
    pub created: u64,
    pub oldest_ms: u64,
}

impl ThreadTable {
    pub fn len(&self) -> usize {
        self.stack.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn row(&self, i: usize) -> Option<ThreadRow> {
        Some(ThreadRow {
            stack: *self.stack.0.get(i)?,
            live: *self.live.get(i)?,
            created: *self.created.get(i)?,
            oldest_ms: *self.oldest_ms.get(i)?,
        })
    }

    pub fn rows(&self) -> impl Iterator<Item = ThreadRow> + '_ {
        (0..self.len()).map_while(|i| self.row(i))
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BytesCount {
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub count: u64,
}

/// Live totals by kind (estimates rounded to integers when sampling).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    #[serde(default)]
    pub malloc: BytesCount,
    #[serde(default)]
    pub mmap: BytesCount,
    #[serde(default)]
    pub mmap_file: BytesCount,
    #[serde(default)]
    pub mmap_reserved: BytesCount,
}

impl Totals {
    pub fn get(&self, kind: Kind) -> BytesCount {
        match kind {
            Kind::Malloc => self.malloc,
            Kind::Mmap => self.mmap,
            Kind::MmapFile => self.mmap_file,
            Kind::MmapReserved => self.mmap_reserved,
        }
    }

    pub fn get_mut(&mut self, kind: Kind) -> &mut BytesCount {
        match kind {
            Kind::Malloc => &mut self.malloc,
            Kind::Mmap => &mut self.mmap,
            Kind::MmapFile => &mut self.mmap_file,
            Kind::MmapReserved => &mut self.mmap_reserved,
        }
    }
}

/// The kernel's figures (`/proc/self/status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessMem {
    #[serde(default)]
    pub rss_bytes: u64,
    #[serde(default)]
    pub anon_bytes: u64,
    #[serde(default)]
    pub file_bytes: u64,
    #[serde(default)]
    pub shmem_bytes: u64,
    #[serde(default)]
    pub vm_bytes: u64,
}

/// Where every resident byte is (docs/dump-format.md, "ledger"). The categories add up to
/// `rss_bytes` up to `remainder_bytes`, which is what moved between the two readings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Ledger {
    pub rss_bytes: u64,
    pub categories: LedgerCategories,
    /// `rss_bytes` − the sum of the categories (signed).
    #[serde(default)]
    pub remainder_bytes: i64,
    #[serde(default)]
    pub arenas: List<Arena, MAX_SMALL>,
    /// File-backed resident memory by path, largest first (at most 64 listed).
    #[serde(default)]
    pub files: List<FileResident, MAX_SMALL>,
    /// glibc's `mallinfo2()`, when the program uses glibc's allocator.
    #[serde(default)]
    pub mallinfo: Option<MallInfo>,
    /// Thread stacks: how many, and their resident bytes.
    #[serde(default)]
    pub thread_stacks: ThreadStacks,
    /// Time the ledger took on the dumper thread.
    #[serde(default)]
    pub ms: f64,
}

/// Resident bytes per category.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LedgerCategories {
    /// Resident memory under live tracked malloc blocks.
    #[serde(default)]
    pub malloc_live: u64,
    /// Resident glibc arena memory holding no live block (freed, fragmented, top pad).
    #[serde(default)]
    pub malloc_retained: u64,
    /// Resident memory of tracked anonymous mappings (the Go runtime's heap included: the
    /// report splits it off by stack origin; see the `resident` column of `outstanding`).
    #[serde(default)]
    pub mmap: u64,
    /// File-backed resident memory (executable, libraries, mapped files).
    #[serde(default)]
    pub file: u64,
    #[serde(default)]
    pub thread_stacks: u64,
    /// Anonymous resident memory nobody we know made.
    #[serde(default)]
    pub untracked: u64,
    /// The library's own memory.
    #[serde(default)]
    pub offheap_self: u64,
    /// Everything else (vdso, shared memory that is not a file, page tables are not RSS).
    #[serde(default)]
    pub other: u64,
}

impl LedgerCategories {
    pub fn sum(&self) -> u64 {
        self.malloc_live
            + self.malloc_retained
            + self.mmap
            + self.file
            + self.thread_stacks
            + self.untracked
            + self.offheap_self
            + self.other
    }
}

/// One glibc arena.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Arena {
    /// `main` (the brk heap) or `thread` (a 64 MiB-aligned heap).
    pub kind: String,
    pub start: u64,
    pub end: u64,
    pub resident_bytes: u64,
    /// Resident bytes under live blocks.
    pub live_bytes: u64,
    /// Resident bytes holding no live block.
    pub retained_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileResident {
    pub path: String,
    pub resident_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MallInfo {
    pub arena: u64,
    pub hblkhd: u64,
    pub uordblks: u64,
    pub fordblks: u64,
    pub keepcost: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ThreadStacks {
    pub count: u64,
    pub resident_bytes: u64,
}

/// The library's own footprint and health counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SelfStats {
    /// Bytes mapped for our own use.
    #[serde(default)]
    pub footprint_bytes: u64,
    #[serde(default)]
    pub resident_bytes: u64,
    #[serde(default)]
    pub table_bytes: u64,
    #[serde(default)]
    pub live_records: u64,
    #[serde(default)]
    pub stacks: u64,
    #[serde(default)]
    pub stack_store_bytes: u64,
    #[serde(default)]
    pub stacks_dropped: u64,
    /// Allocations not recorded because our own table could not grow.
    #[serde(default)]
    pub lost_records: u64,
    /// Distinct stacks whose walk stopped on memory not proven readable (`end: broken`).
    #[serde(default)]
    pub broken_stacks: u64,
    /// Stacks asked for on the hot path, and how many of them the thread's walk cache answered
    /// without walking (counted in batches, so a few per thread may be missing).
    #[serde(default)]
    pub walks: u64,
    #[serde(default)]
    pub walk_cache_hits: u64,
    #[serde(default)]
    pub snapshot_ms: f64,
    #[serde(default)]
    pub max_shard_hold_us: f64,
    #[serde(default)]
    pub previous_dump_ms: f64,
    /// Largest extra memory the previous dump needed beyond its snapshot copy.
    #[serde(default)]
    pub previous_dump_peak_bytes: u64,
}

/// Anonymous mappings no tracked call created.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Untracked {
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub bytes: u64,
    /// Resident bytes of those mappings.
    #[serde(default)]
    pub resident_bytes: u64,
    /// `[start, end, "perms"]`, largest first; at most 256 are listed.
    #[serde(default)]
    pub ranges: List<(u64, u64, String), MAX_SMALL>,
}

/// One member of a stacks file: the stacks and modules a dump met first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StacksMember {
    pub format: String,
    pub version: u64,
    /// The dump that wrote this member.
    pub seq: u64,
    #[serde(default)]
    pub modules: List<Module, MAX_SMALL>,
    #[serde(default)]
    pub stacks: StackTable,
}
