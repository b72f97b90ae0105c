//! The live tables: what is outstanding right now.
//!
//! `live` holds malloc-family blocks keyed by address (hot, sharded, lock-light); `intervals`
//! holds mmap ranges with exact interval arithmetic (rare calls, one lock); `young` holds a
//! young forked child's blocks until it grows up.

pub mod intervals;
pub mod live;
pub mod young;

/// What kind of memory a record describes: the dump format's own definition.
pub use offheap_format::Kind;

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
