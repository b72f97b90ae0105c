//! Stacks: capture in the hook (`unwind`, with compact CFI rules in `cfi`), known code
//! images (`modules`), interning
//! (`store`), and the readable-memory oracle the walk relies on (`bounds`).

pub mod bounds;
pub mod cfi;
pub mod modules;
pub mod sidestack;
pub mod store;
pub mod unwind;

/// Hard upper bound for OFFHEAP_MAX_FRAMES; capture buffers are this size on the stack.
pub const MAX_FRAMES_LIMIT: usize = 256;

/// How a walk ended; recorded with the interned stack.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum End {
    /// Reached the outermost frame (`_start`, thread start, a Go goroutine's end).
    Complete = 0,
    /// Stopped at OFFHEAP_MAX_FRAMES.
    Truncated = 1,
    /// Stopped on memory not proven readable or an address in no known module.
    Broken = 2,
}

impl End {
    pub fn name(self) -> &'static str {
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
