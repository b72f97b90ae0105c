//! Which memory a stack walk may read.
//!
//! A fault inside a hook during one of the Go runtime's C calls kills the process, so every
//! read is proven safe first. The thread's own stack is found once per thread from
//! /proc/self/maps, read with plain open/read into a stack buffer (no allocation, no libc lock:
//! `pthread_getattr_np` takes a lock that Go's `x_cgo_getstackbound` may hold while it mallocs).

/// The mapping of /proc/self/maps that contains `addr` and is readable: `(start, end)`.
pub fn mapping_containing(addr: usize) -> Option<(usize, usize)> {
    let _errno = offheap_core::sys::ErrnoGuard::save();
    let path = b"/proc/self/maps\0";
    // SAFETY: path is NUL-terminated; the raw syscall bypasses any interposed open.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let fd = fd as i32;
    let mut buf = [0u8; 4096];
    let mut filled = 0usize;
    let mut found = None;
    'outer: loop {
        // SAFETY: writes at most buf.len() - filled bytes into the tail of buf.
        let n = unsafe {
            libc::syscall(
                libc::SYS_read,
                fd,
                buf[filled..].as_mut_ptr(),
                buf.len() - filled,
            )
        };
        if n <= 0 {
            break;
        }
        filled += n as usize;
        let mut start = 0;
        while let Some(nl) = buf[start..filled].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            if let Some((lo, hi, readable)) = parse_line(line) {
                if lo <= addr && addr < hi {
                    if readable {
                        found = Some((lo, hi));
                    }
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
    // SAFETY: fd was opened above.
    unsafe { libc::syscall(libc::SYS_close, fd) };
    found
}

/// `lo-hi perms ...` → (lo, hi, readable).
pub fn parse_line(line: &[u8]) -> Option<(usize, usize, bool)> {
    let dash = line.iter().position(|&b| b == b'-')?;
    let lo = parse_hex(&line[..dash])?;
    let rest = &line[dash + 1..];
    let sp = rest.iter().position(|&b| b == b' ')?;
    let hi = parse_hex(&rest[..sp])?;
    let readable = rest.get(sp + 1) == Some(&b'r');
    Some((lo, hi, readable))
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
