//! Our lines on the host's stderr: `offheap: <message>`, formatted without allocating.
//!
//! Text from the environment or the file system cannot forge extra lines (LineBuf replaces
//! control characters), and `verbose!` lines only appear with OFFHEAP_VERBOSE=1.

/// `offheap: <message>` on stderr, formatted without allocating.
#[macro_export]
macro_rules! diag {
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
        if $crate::config::verbose() {
            $crate::diag!($($arg)*);
        }
    }};
}
