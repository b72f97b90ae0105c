//! The offheap dump format, version 2, defined once for the writer (liboffheap) and the reader
//! (the `offheap` reporter), so the two cannot drift. docs/dump-format.md describes it for
//! people; a test in this crate checks the document names every field defined here.
//!
//! A process writes two kinds of files into its dump directory, both gzip-compressed JSON:
//!
//! ```text
//!   offheap.<pid>.<seq>.json.gz    one dump: header, live memory by stack, counters, ledger
//!   offheap.<pid>.stacks.gz        append-only: one gzip member per dump that met new stacks or
//!                                  modules; a dump refers to stacks by id only
//! ```
//!
//! Stacks are written once, the first time a dump refers to them, into the stacks file; dumps
//! stay small however many distinct stacks the process has, and retention may delete any dump
//! without losing a stack a later dump needs. Tables of many rows (`outstanding`, `cumulative`,
//! thread creators, stacks) are stored by column with ascending ids delta-encoded, so rows that
//! did not change between dumps cost almost nothing once compressed.
//!
//! - [`schema`]: the typed records (what a reader gets);
//! - [`write`]: the streaming writer (what the library calls, row source by row source);
//! - [`read`]: parsing with size limits and validation, for files from anywhere;
//! - [`stacks`]: the stack table's prefix-shared encoding.

pub mod bounded;
pub mod read;
pub mod schema;
pub mod stacks;
pub mod write;

use serde::{Deserialize, Serialize};

/// `format` of a dump; anything else is someone else's file.
pub const FORMAT: &str = "offheap-dump";
/// `format` of a stacks-file member.
pub const STACKS_FORMAT: &str = "offheap-stacks";
/// The version this crate writes and reads.
pub const VERSION: u64 = 2;

/// What kind of memory a row describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Kind {
    /// malloc family blocks (requested bytes).
    Malloc = 0,
    /// Anonymous committed mappings (page-rounded).
    Mmap = 1,
    /// File-backed mappings.
    MmapFile = 2,
    /// PROT_NONE reservations (address space, not memory).
    MmapReserved = 3,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Malloc, Kind::Mmap, Kind::MmapFile, Kind::MmapReserved];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Malloc => "malloc",
            Kind::Mmap => "mmap",
            Kind::MmapFile => "mmap_file",
            Kind::MmapReserved => "mmap_reserved",
        }
    }

    pub fn from_u8(v: u8) -> Kind {
        match v {
            0 => Kind::Malloc,
            1 => Kind::Mmap,
            2 => Kind::MmapFile,
            _ => Kind::MmapReserved,
        }
    }
}

/// How a mapping reached the kernel: through libc's entry points (interposed), or through a
/// raw system call made by Go code (`syscall.Mmap`, `x/sys/unix`), seen by the Go probes.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Via {
    #[default]
    Libc = 0,
    Syscall = 1,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Libc => "libc",
            Via::Syscall => "syscall",
        }
    }
}

/// How a stack walk ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum End {
    /// Reached the outermost frame (`_start`, thread start, a goroutine's end).
    #[default]
    Complete = 0,
    /// Stopped at OFFHEAP_MAX_FRAMES.
    Truncated = 1,
    /// Stopped on memory not proven readable or an address in no known module.
    Broken = 2,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::Truncated => "truncated",
            End::Broken => "broken",
        }
    }

    pub fn from_u8(v: u8) -> End {
        match v {
            0 => End::Complete,
            1 => End::Truncated,
            _ => End::Broken,
        }
    }
}

/// Why a dump was written.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// OFFHEAP_INTERVAL elapsed.
    Interval,
    /// `offheap snapshot <pid>`.
    Demand,
    /// The process is ending (exit, `_exit`, Go's exit, a fatal signal): the last dump.
    Exit,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Interval => "interval",
            Trigger::Demand => "demand",
            Trigger::Exit => "exit",
        }
    }
}

/// Dump ids reserved in every stack table.
pub mod stack_id {
    /// No stack captured (stacks off, or an allocation made before tracking could walk).
    pub const NONE: u32 = 0;
    /// The stack store was full when this stack was met.
    pub const STORE_FULL: u32 = 1;
    /// The first id of a real stack.
    pub const FIRST: u32 = 2;
}

/// File names of a process's files. A stem is `offheap.<pid>`, or `offheap.<pid>_<n>` when an
/// earlier process with the same pid (exec, pid reuse in containers) already wrote into the
/// directory.
pub mod names {
    /// `offheap.<pid>` or `offheap.<pid>_<n>` (n ≥ 2).
    /// Where dumps go without OFFHEAP_DIR (per user, so users never share one), and where
    /// `offheap report` looks when given nothing.
    pub fn default_dir(uid: u32) -> String {
        format!("/tmp/offheap-{uid}")
    }

    pub fn stem(pid: u32, n: u32) -> String {
        if n <= 1 {
            format!("offheap.{pid}")
        } else {
            format!("offheap.{pid}_{n}")
        }
    }

    /// The dump with sequence number `seq`.
    pub fn dump(stem: &str, seq: u64) -> String {
        format!("{stem}.{seq:06}.json.gz")
    }

    /// The stacks file of a series.
    pub fn stacks(stem: &str) -> String {
        format!("{stem}.stacks.gz")
    }

    /// Temporary name a dump is written under before it is renamed into place.
    pub fn temporary(final_name: &str, attempt: u32) -> String {
        format!(".{final_name}.{attempt}.tmp")
    }

    /// Whether `name` is any file of the series `stem` (dumps, stacks file, temporaries).
    pub fn belongs_to(name: &str, stem: &str) -> bool {
        let tail = name.strip_prefix('.').unwrap_or(name);
        tail.strip_prefix(stem)
            .is_some_and(|rest| rest.starts_with('.'))
    }

    /// `offheap.<pid>[_<n>].<seq>.json.gz` → (stem, pid, seq).
    pub fn parse_dump(name: &str) -> Option<(&str, u64, u64)> {
        let rest = name.strip_suffix(".json.gz")?;
        let (stem, seq) = rest.rsplit_once('.')?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let pid = stem_pid(stem)?;
        Some((stem, pid, seq.parse().ok()?))
    }

    /// `offheap.<pid>[_<n>].stacks.gz` → stem.
    pub fn parse_stacks(name: &str) -> Option<&str> {
        let stem = name.strip_suffix(".stacks.gz")?;
        stem_pid(stem).map(|_| stem)
    }

    fn stem_pid(stem: &str) -> Option<u64> {
        let id = stem.strip_prefix("offheap.")?;
        let pid = match id.split_once('_') {
            Some((pid, n)) => {
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                pid
            }
            None => id,
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        pid.parse().ok()
    }
}

#[cfg(test)]
mod tests;
