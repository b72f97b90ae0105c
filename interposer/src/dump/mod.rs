//! Dumps: copy the live tables (`snapshot`), add the kernel's view (`procfs`), serialise and
//! write atomically (`writer`); the `dumper` thread decides when, and `control` lets
//! `offheap snapshot|mark <pid>` ask for it. Format: docs/dump-format.md.

pub mod control;
pub mod dumper;
pub mod procfs;
pub mod snapshot;
pub mod writer;

/// Version of docs/dump-format.md this library writes.
pub const FORMAT_VERSION: u64 = 1;
