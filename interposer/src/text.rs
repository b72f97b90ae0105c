//! Changing code in place, in the constructor: the Go probes' jumps over the executable's
//! functions (`probes::patch`) and the direct jumps into glibc at our own forwarding sites
//! (`hooks::direct`).
//!
//! The pages keep execute permission throughout (read-write-execute while written, then
//! read-execute again), so a thread running code on them never faults. A kernel or security
//! policy that refuses writable-executable pages refuses the first mprotect; the code is then
//! left as it was and the caller keeps working without the patch.

use offheap_core::sys::raw;

const PAGE: u64 = offheap_core::sys::PAGE as u64;

/// Why code could not be changed, or not put back read-only.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TextError {
    /// The kernel refused to make the page writable: nothing was written.
    NotWritable,
    /// The code was written, but the page stays writable (the second mprotect failed).
    NotRestored,
}

impl TextError {
    pub fn text(self) -> &'static str {
        match self {
            TextError::NotWritable => "mprotect of the text refused (W^X policy?)",
            TextError::NotRestored => "mprotect back to read-execute refused",
        }
    }
}

/// Runs `write`, which changes code in `[at, at + len)`, with those pages writable.
pub fn with_writable(at: u64, len: u64, write: impl FnOnce()) -> Result<(), TextError> {
    let page = at & !(PAGE - 1);
    // Two pages when the range crosses a page boundary.
    let span = ((at + len + PAGE - 1) & !(PAGE - 1)) - page;
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    let r = offheap_core::raw_syscall!(libc::SYS_mprotect, page, span, rwx);
    if raw::error(r).is_some() {
        return Err(TextError::NotWritable);
    }
    write();
    let rx = libc::PROT_READ | libc::PROT_EXEC;
    let r = offheap_core::raw_syscall!(libc::SYS_mprotect, page, span, rx);
    if raw::error(r).is_some() {
        return Err(TextError::NotRestored);
    }
    Ok(())
}

/// Threads the process has now, None when it cannot be told. Code other threads may be
/// running is not rewritten: x86 guarantees what a core executes after another core changed
/// its code only once the executing core serialises.
///
/// procfs gives /proc/self/task two links plus one per thread: one `stat`, no descriptor
/// opened (every exec'd image runs this constructor) and nothing allocated.
pub fn threads_now() -> Option<u64> {
    let _errno = offheap_core::sys::ErrnoGuard::save();
    // SAFETY: all-zero is a valid `struct stat` to be filled in.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    let r = unsafe { libc::stat(c"/proc/self/task".as_ptr(), &mut st) };
    if r != 0 {
        return None;
    }
    (st.st_nlink as u64).checked_sub(2)
}

/// `e9 <rel32>`: the five bytes of a jump from `at` to `to`, or None when `to` is beyond a
/// rel32's reach.
pub fn near_jump(at: u64, to: u64) -> Option<[u8; 5]> {
    let rel = i32::try_from((to as i64).wrapping_sub(at as i64 + 5)).ok()?;
    let mut code = [0xe9u8, 0, 0, 0, 0];
    code[1..].copy_from_slice(&rel.to_le_bytes());
    Some(code)
}
