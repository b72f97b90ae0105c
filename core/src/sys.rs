//! Thin, allocation-free wrappers over the kernel calls the library needs for itself.
//!
//! Everything here bypasses the interposed symbols (raw syscalls) so that our own memory and
//! our own messages never show up in the host's accounting or re-enter the hooks.

pub const PAGE: usize = 4096;

/// Bytes of memory mapped for our own use (tables, stack store, our allocator's chunks).
pub static FOOTPRINT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Saves errno on creation and restores it on drop, so hooks leave errno exactly as the real
/// libc call set it (or untouched, where our bookkeeping made calls of its own).
pub struct ErrnoGuard(i32);

impl ErrnoGuard {
    #[inline(always)]
    pub fn save() -> Self {
        // SAFETY: __errno_location always returns this thread's errno slot.
        ErrnoGuard(unsafe { *libc::__errno_location() })
    }
    /// Replace the value to restore (used after the real call, whose errno must win).
    #[inline(always)]
    pub fn set_saved(&mut self, value: i32) {
        self.0 = value;
    }
}

impl Drop for ErrnoGuard {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: see save().
        unsafe { *libc::__errno_location() = self.0 };
    }
}

#[inline(always)]
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

#[inline(always)]
pub fn set_errno(value: i32) {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() = value };
}

/// Anonymous private mapping for our own data, named `[anon:offheap]` where the kernel supports
/// it so that /proc/PID/maps (and our own untracked-mapping scan) can tell it apart.
/// Returns null on failure.
pub fn map_own(len: usize) -> *mut u8 {
    let _errno = ErrnoGuard::save();
    let len = round_up(len, PAGE);
    // SAFETY: a fresh anonymous mapping has no aliasing; the raw syscall bypasses our hooks.
    let p = unsafe {
        libc::syscall(
            libc::SYS_mmap,
            0usize,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1i32,
            0usize,
        )
    };
    if p < 0 {
        return core::ptr::null_mut();
    }
    name_own(p as *mut u8, len);
    FOOTPRINT.fetch_add(len, core::sync::atomic::Ordering::Relaxed);
    OWN_MAPS.lock().add(p as u64, len as u64);
    p as *mut u8
}

/// Our own mappings, so the untracked-mapping scan can leave them out even on kernels that
/// cannot name them. A fixed array: registering must not allocate (our allocator calls us).
pub struct OwnMaps {
    ranges: [(u64, u64); 4096],
    len: usize,
}

impl OwnMaps {
    fn add(&mut self, start: u64, len: u64) {
        if self.len < self.ranges.len() {
            self.ranges[self.len] = (start, start + len);
            self.len += 1;
        }
    }
    fn remove(&mut self, start: u64) {
        if let Some(i) = self.ranges[..self.len].iter().position(|r| r.0 == start) {
            self.ranges[i] = self.ranges[self.len - 1];
            self.len -= 1;
        }
    }
}

/// Sorted copy of our own mappings. The buffer is allocated before the lock is taken: our
/// allocator may itself need a new mapping, which registers under the same lock.
pub fn own_maps_sorted() -> Vec<(u64, u64)> {
    loop {
        let want = OWN_MAPS.lock().len + 16;
        let mut v: Vec<(u64, u64)> = Vec::with_capacity(want);
        {
            let maps = OWN_MAPS.lock();
            if maps.len > v.capacity() {
                continue;
            }
            v.extend_from_slice(&maps.ranges[..maps.len]);
        }
        v.sort_unstable();
        return v;
    }
}

pub static OWN_MAPS: crate::sync::SpinLock<OwnMaps> = crate::sync::SpinLock::new(OwnMaps {
    ranges: [(0, 0); 4096],
    len: 0,
});

/// Release a mapping obtained from `map_own` with the same length.
pub fn unmap_own(p: *mut u8, len: usize) {
    let _errno = ErrnoGuard::save();
    let len = round_up(len, PAGE);
    // SAFETY: the caller passes a mapping it got from map_own and no longer references.
    let rc = unsafe { libc::syscall(libc::SYS_munmap, p as usize, len) };
    if rc == 0 {
        FOOTPRINT.fetch_sub(len, core::sync::atomic::Ordering::Relaxed);
        OWN_MAPS.lock().remove(p as u64);
    }
}

fn name_own(p: *mut u8, len: usize) {
    const PR_SET_VMA: i32 = 0x53564d41;
    const PR_SET_VMA_ANON_NAME: usize = 0;
    static NAME: &[u8] = b"offheap\0";
    let e = ErrnoGuard::save();
    // SAFETY: prctl only reads the NUL-terminated static name; EINVAL on older kernels is fine.
    unsafe {
        libc::syscall(
            libc::SYS_prctl,
            PR_SET_VMA,
            PR_SET_VMA_ANON_NAME,
            p as usize,
            len,
            NAME.as_ptr() as usize,
        )
    };
    drop(e);
}

#[inline(always)]
pub const fn round_up(n: usize, to: usize) -> usize {
    (n + to - 1) & !(to - 1)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; clock_gettime through the vDSO does not allocate.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Monotonic milliseconds from the coarse clock (vDSO, a few ns): ages need no better.
#[inline(always)]
pub fn coarse_ms() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE) / 1_000_000
}

pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

pub fn wall_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Write raw bytes to stderr with a raw syscall (no stdio buffer, no allocation).
pub fn write_stderr(msg: &[u8]) {
    let e = ErrnoGuard::save();
    let mut off = 0;
    while off < msg.len() {
        // SAFETY: the slice is valid for reads of its length.
        let n = unsafe {
            libc::syscall(
                libc::SYS_write,
                2,
                msg[off..].as_ptr() as usize,
                msg.len() - off,
            )
        };
        if n <= 0 {
            break;
        }
        off += n as usize;
    }
    drop(e);
}

/// A small fixed buffer for formatting a line without allocating.
pub struct LineBuf {
    buf: [u8; 512],
    len: usize,
}

impl LineBuf {
    pub const fn new() -> Self {
        LineBuf {
            buf: [0; 512],
            len: 0,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl LineBuf {
    /// End the line. Only this newline is ever written raw: text formatted into the buffer
    /// (paths, values from the environment) cannot forge extra lines.
    pub fn end_line(&mut self) {
        if self.len == self.buf.len() {
            self.len -= 1;
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
    }
}

impl core::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() - 1 {
                break; // keep room for the newline
            }
            self.buf[self.len] = if b < 0x20 || b == 0x7f { b'?' } else { b };
            self.len += 1;
        }
        Ok(())
    }
}
