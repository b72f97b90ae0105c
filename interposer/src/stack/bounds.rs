//! Which memory a stack walk may read, found without a system call on the walking thread.
//!
//! A fault inside a hook during one of the Go runtime's C calls kills the process, so every
//! read is proven safe first. The proof must not cost the host anything it could notice: no
//! descriptor opened from a hook (the host's own threads may be closing and reopening
//! descriptors at that moment) and no system call a seccomp filter could refuse. So each
//! thread's stack range is known before it first allocates:
//!
//! - the main thread's from `/proc/self/maps`, read once in the constructor, before any code
//!   of the program runs;
//! - every thread created through `pthread_create` from its attributes and its thread
//!   pointer: glibc puts the thread descriptor (where `%fs` points) at the top of the stack
//!   block, so `[tp − stacksize + margin, tp)` lies inside the thread's own mapped stack.
//!
//! Anything else (signal stacks, coroutine stacks, threads nobody told us about) is readable
//! only when it lies in a readable mapping of our own interval table (Go's signal and
//! goroutine stacks do); otherwise the walk records the return address alone.

/// Below the thread descriptor at the top of a glibc stack block sit the static TLS block
/// and the descriptor itself; the guard page is at the bottom. A page of margin keeps the
/// estimated low end inside the usable part whatever their sizes.
const PTHREAD_MARGIN: usize = 4096;

/// `[lo, hi)` of a thread created with a stack of `stacksize` bytes, whose thread pointer is
/// `tp`.
pub fn pthread_stack(tp: usize, stacksize: usize) -> (usize, usize) {
    let lo = tp.saturating_sub(stacksize).saturating_add(PTHREAD_MARGIN);
    (lo.min(tp), tp)
}

/// The thread pointer (glibc's thread descriptor, `pthread_self()`).
#[cfg(target_arch = "x86_64")]
pub fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: %fs:0 holds the thread pointer itself (the TCB's self pointer); a read only.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    tp
}

/// The main thread's stack: `[lo, hi)` where hi is the end of `[stack]` and lo the higher of
/// (hi − RLIMIT_STACK) and the end of the mapping below it, so the range never covers
/// anything but the stack as it may grow. Read once, in the constructor.
pub fn main_thread_stack() -> Option<(usize, usize)> {
    let mut below_end = 0usize;
    let mut found = None;
    for_each_mapping(|lo, hi, name| {
        if name == b"[stack]" {
            found = Some((below_end, hi));
            return false;
        }
        let _ = lo;
        below_end = hi;
        true
    });
    let (below_end, hi) = found?;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY
    {
        lim.rlim_cur as usize
    } else {
        1 << 30
    };
    Some((hi.saturating_sub(limit).max(below_end), hi))
}

/// Calls `f(lo, hi, name)` for each line of /proc/self/maps until it returns false. Plain
/// open/read into a stack buffer: no allocation, no libc lock (`pthread_getattr_np` takes a
/// lock Go's `x_cgo_getstackbound` may hold while it mallocs).
pub fn for_each_mapping(mut f: impl FnMut(usize, usize, &[u8]) -> bool) {
    let _errno = offheap_core::sys::ErrnoGuard::save();
    let Some(fd) = offheap_core::sys::raw::open_read_only(b"/proc/self/maps\0") else {
        return;
    };
    let mut buf = [0u8; 4096];
    let mut filled = 0usize;
    'outer: while let Some(room) = buf.get_mut(filled..) {
        // Writes at most room.len() bytes into the tail of buf.
        let n = offheap_core::raw_syscall!(libc::SYS_read, fd, room.as_mut_ptr(), room.len());
        if n <= 0 {
            break;
        }
        filled += n as usize;
        let mut start = 0;
        while let Some(nl) = buf
            .get(start..filled)
            .and_then(|s| s.iter().position(|&b| b == b'\n'))
        {
            let line = buf.get(start..start + nl).unwrap_or(&[]);
            if let Some((lo, hi, name)) = parse_line(line) {
                if !f(lo, hi, name) {
                    break 'outer;
                }
            }
            start += nl + 1;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            break; // a line longer than 4 KiB: give up rather than misparse
        }
    }
    // fd was opened above.
    let _ = offheap_core::raw_syscall!(libc::SYS_close, fd);
}

/// `lo-hi perms offset dev inode   name` → (lo, hi, name).
pub fn parse_line(line: &[u8]) -> Option<(usize, usize, &[u8])> {
    let dash = line.iter().position(|&b| b == b'-')?;
    let lo = parse_hex(line.get(..dash)?)?;
    let rest = line.get(dash + 1..)?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let hi = parse_hex(rest.get(..sp)?)?;
    // The name starts after the fifth field (perms, offset, dev, inode and their spaces).
    let mut fields = 0;
    let mut i = sp;
    while fields < 4 {
        while rest.get(i) == Some(&b' ') {
            i += 1;
        }
        while rest.get(i).is_some_and(|&b| b != b' ') {
            i += 1;
        }
        fields += 1;
    }
    while rest.get(i) == Some(&b' ') {
        i += 1;
    }
    Some((lo, hi, rest.get(i..).unwrap_or(&[])))
}

fn parse_hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0usize;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = v << 4 | d as usize;
    }
    Some(v)
}
