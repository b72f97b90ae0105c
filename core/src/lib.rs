//! The tracking core of liboffheap, as an ordinary library.
//!
//! Everything here runs inside the host process (the `interposer` cdylib links it), but none
//! of it exports a symbol or hooks anything, so it can be unit-tested like any crate:
//! `cargo test -p offheap-core`. The cdylib is a thin layer of hooks over it.
//!
//! - `sync`: the spin lock every table uses (no allocation, no futex through libc);
//! - `sys`: raw system calls, errno, clocks, our own mappings;
//! - `ownalloc`: the allocator the cdylib installs as its `#[global_allocator]`;
//! - `table`: live malloc blocks (`live`) and mmap intervals (`intervals`);
//! - `stack`: the stack store (`store`) and the compact unwind-rule cache (`rules`);
//! - `aggregate`: live records → dump rows (ages, generations, sampling weights);
//! - `retention`: which dumps to delete when there are too many;
//! - `sampling`: sampling gaps, and the filter of addresses that may be sampled blocks;
//! - `threads`: the threads the program created, by creating stack;
//! - `epoch`: when a value lock-free readers use may be freed (the module set);
//! - `early`: blocks glibc handed out before the program's own allocator took over.

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

pub mod aggregate;
pub mod early;
pub mod epoch;
pub mod ownalloc;
pub mod retention;
pub mod sampling;
pub mod stack;
pub mod sync;
pub mod sys;
pub mod table;
pub mod threads;
