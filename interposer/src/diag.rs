//! Our lines on the host's stderr: `offheap: <message>`, formatted without allocating.
//!
//! The dumper thread has a descriptor table of its own with nothing in it (see
//! `dump::dumper`): it cannot reach the program's stderr. A line it has to say is held here
//! and written by the next program thread that passes [`flush_held`] (a hook's periodic clock
//! refresh, the exit path).
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

/// A line from a thread without the program's stderr, waiting for a program thread.
static HELD: offheap_core::sync::SpinLock<Option<offheap_core::sys::LineBuf>> =
    offheap_core::sync::SpinLock::new(None);
static ANY_HELD: AtomicBool = AtomicBool::new(false);

/// Writes `line` to stderr, or holds it when this thread cannot reach the program's stderr.
pub fn emit(line: &offheap_core::sys::LineBuf) {
    if crate::tls::flags() & c_shim::THREAD_DUMPER != 0 {
        let mut held = HELD.lock();
        if held.is_none() {
            *held = Some(line.clone());
            ANY_HELD.store(true, Ordering::Release);
        }
        return;
    }
    offheap_core::sys::write_stderr(line.as_bytes());
}

/// On a program thread: writes the line the dumper held, if any (one relaxed load otherwise).
#[inline(always)]
pub fn flush_held() {
    if ANY_HELD.load(Ordering::Relaxed) {
        flush_held_slow();
    }
}

#[cold]
fn flush_held_slow() {
    if crate::tls::flags() & c_shim::THREAD_DUMPER != 0 || crate::process::sandboxed() {
        return;
    }
    let line = {
        let Some(mut held) = HELD.try_lock() else {
            return;
        };
        ANY_HELD.store(false, Ordering::Relaxed);
        held.take()
    };
    if let Some(line) = line {
        offheap_core::sys::write_stderr(line.as_bytes());
    }
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
        $crate::diag::emit(&line);
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
