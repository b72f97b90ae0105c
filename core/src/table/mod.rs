//! The live tables: what is outstanding right now.
//!
//! `live` holds malloc-family blocks keyed by address (hot, sharded, lock-light); `intervals`
//! holds mmap ranges with exact interval arithmetic (rare calls, one lock).

pub mod intervals;
pub mod live;

/// What kind of memory a record describes; the dump names them (see docs/dump-format.md).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    Malloc = 0,
    MmapAnon = 1,
    MmapFile = 2,
    MmapReserved = 3,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Malloc => "malloc",
            Kind::MmapAnon => "mmap",
            Kind::MmapFile => "mmap_file",
            Kind::MmapReserved => "mmap_reserved",
        }
    }
}

/// Facts recorded at allocation time, shared by both tables.
#[derive(Clone, Copy, Debug, Default)]
pub struct Birth {
    pub stack: u32,
    pub generation: u16,
    pub epoch: u8,
    /// Milliseconds since library start (wraps after 49 days).
    pub ms: u32,
    /// The allocation was chosen by the sampler (only meaningful when sampling).
    pub sampled: bool,
}
