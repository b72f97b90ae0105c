//! The per-thread mappings an exited thread leaves for the next ones.
//!
//! Each thread that allocates gets its own unwinding caches (`unwind::ThreadCache`, with its
//! walk cache) and side stack (`sidestack`), each in mappings of their own. Made and unmapped
//! per thread, they cost a program that starts and ends threads at a high rate more than all
//! its allocations: every munmap in a multi-threaded process sends a TLB shootdown to the
//! other cores and takes the mmap lock for writing (a loop of 8 threads at a time, each making
//! 64 mallocs, ran 4.6× as long as without the library, most of it in the kernel). So a thread
//! gives them back here, and the next thread takes them: a few are kept, the rest unmapped,
//! so a burst of threads does not leave its high-water mark behind (at most `KEPT` of each,
//! with only the pages their threads touched resident).

use offheap_core::sync::IdlePool;

/// Idle sets kept.
const KEPT: usize = 8;

/// Idle `unwind::ThreadCache`s (their addresses).
pub static CACHES: IdlePool<KEPT> = IdlePool::new();
/// Idle side stacks (their mappings' base addresses, guard page included).
pub static SIDE_STACKS: IdlePool<KEPT> = IdlePool::new();
