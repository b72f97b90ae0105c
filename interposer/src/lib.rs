//! liboffheap.so — preload it into a process to track every live off-heap allocation.
//!
//! Data flows one way through the modules:
//! `hooks` (interposed libc symbols) → `track` (the tracking core) → `table` (live blocks
//! and mmap intervals) with `stack` (capture, interning) → `dump` (snapshot, serialise,
//! write). `lifecycle` sets it up and follows fork/exit; `config` reads OFFHEAP_*; `ownalloc`,
//! `sync` and `sys` keep our own memory, locks and system calls out of the host's way.
//!
//! The hot path (hooks, tables, unwinder) allocates nothing, takes no global lock and does no
//! I/O; everything slow happens on the dumper thread or, offline, in the `offheap` reporter.

#![allow(clippy::missing_safety_doc)]
// Tables and locks are const-constructed statics; a Default impl would invite building them
// on the stack by accident.
#![allow(clippy::new_without_default)]

pub mod config;
pub mod dump;
pub mod hooks;
pub mod lifecycle;
pub mod ownalloc;
pub mod stack;
pub mod state;
pub mod sync;
#[macro_use]
pub mod sys;
pub mod table;
pub mod track;

use core::sync::atomic::AtomicUsize;

/// Bytes of memory mapped for our own use (tables, stack store, our allocator's chunks).
pub static FOOTPRINT: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
pub static OWN_ALLOCATOR: ownalloc::OwnAllocator = ownalloc::OwnAllocator::new();
