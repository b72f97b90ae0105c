//! Stacks: interning (`store`) and the compact unwind rules with their per-thread cache
//! (`rules`). The walk itself lives in the cdylib, which knows the loaded images.

pub mod rules;
pub mod store;
pub mod walkcache;

/// Hard upper bound for OFFHEAP_MAX_FRAMES; capture buffers are this size.
pub const MAX_FRAMES_LIMIT: usize = 256;

/// How a walk ended; recorded with the interned stack (the dump format's own definition).
pub use offheap_format::End;
