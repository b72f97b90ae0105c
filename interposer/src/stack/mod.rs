//! Stacks: capture in the hook (`unwind`, over the compact rules of
//! `offheap_core::stack::rules`), known code images (`modules`), the stack the deep parts of a
//! walk run on (`sidestack`), and the readable-memory oracle the walk relies on (`bounds`).

pub mod bounds;
pub mod modules;
pub mod recycle;
pub mod sidestack;
pub mod unwind;
