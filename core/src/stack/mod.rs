//! Stacks: interning (`store`) and the compact unwind rules with their per-thread cache
//! (`rules`). The walk itself lives in the cdylib, which knows the loaded images.

pub mod rules;
pub mod store;

/// Hard upper bound for OFFHEAP_MAX_FRAMES; capture buffers are this size.
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
