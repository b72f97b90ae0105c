//! Our lines on the host's stderr: `offheap: <message>`, formatted without allocating.
//!
//! A process gets at most one line of ours on its stderr, ever (a host's error log must not
//! fill with our complaints: a worker running as another user would repeat one per dump);
//! `verbose!` lines, asked for with OFFHEAP_VERBOSE=1, are not counted. Text from the
//! environment or the file system cannot forge extra lines (LineBuf replaces control
//! characters).

use core::sync::atomic::{AtomicBool, Ordering};

static SPOKEN: AtomicBool = AtomicBool::new(false);
static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Whether OFFHEAP_VERBOSE=1 asked for verbose lines (set once by the configuration).
#[inline]
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Whether this process may still print its one line (and uses it up).
pub fn take_line() -> bool {
    !SPOKEN.swap(true, Ordering::Relaxed)
}

/// `offheap: <message>` on stderr, formatted without allocating.
#[macro_export]
macro_rules! diag {
    ($($arg:tt)*) => {{
        if $crate::diag::take_line() {
            $crate::say!($($arg)*);
        }
    }};
}

/// A line on stderr regardless of the budget (verbose output).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut line = offheap_core::sys::LineBuf::new();
        let _ = write!(line, "offheap: ");
        let _ = write!(line, $($arg)*);
        line.end_line();
        offheap_core::sys::write_stderr(line.as_bytes());
    }};
}

/// Like `diag!`, only with OFFHEAP_VERBOSE=1.
#[macro_export]
macro_rules! verbose {
    ($($arg:tt)*) => {{
        if $crate::diag::verbose() {
            $crate::say!($($arg)*);
        }
    }};
}
