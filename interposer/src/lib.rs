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

// Code here runs inside the host: a panic (panic=abort) is the host's crash. Every fallible
// step is handled; indexing goes through `get`.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing,
        clippy::disallowed_types,
        clippy::disallowed_methods
    )
)]
#![allow(clippy::missing_safety_doc)]
// Tables and locks are const-constructed statics; a Default impl would invite building them
// on the stack by accident.
#![allow(clippy::new_without_default)]

pub mod config;
#[macro_use]
pub mod diag;
pub mod dump;
pub mod hooks;
pub mod lifecycle;
pub mod probes;
pub mod process;
pub mod room;
pub mod stack;
pub mod state;
pub mod text;
pub mod tls;
pub mod track;

#[global_allocator]
pub static OWN_ALLOCATOR: offheap_core::ownalloc::OwnAllocator =
    offheap_core::ownalloc::OwnAllocator::new();
