//! Thin, allocation-free wrappers over the kernel calls the library needs for itself.
//!
//! Everything here bypasses the interposed symbols (raw syscalls) so that our own memory and
//! our own messages never show up in the host's accounting or re-enter the hooks.

pub const PAGE: usize = 4096;

/// System calls made directly, without libc's `syscall()`: the library interposes that
/// function (to see seccomp filters being installed), so calling it from our own code would
/// go through our own hook, and it writes errno, which hooks must leave as the real call set
/// it. The result is the kernel's: a value, or −errno in [−4095, −1].
pub mod raw {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn syscall6(n: i64, a: [usize; 6]) -> isize {
        let ret: isize;
        // SAFETY: the SYSCALL instruction with the kernel's calling convention: number in
        // rax, arguments in rdi, rsi, rdx, r10, r8, r9; rcx and r11 are clobbered. Whether a
        // call is safe depends on its arguments, which each caller states.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a[0],
                in("rsi") a[1],
                in("rdx") a[2],
                in("r10") a[3],
                in("r8") a[4],
                in("r9") a[5],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    pub fn syscall6(n: i64, a: [usize; 6]) -> isize {
        // SAFETY: forwarded; libc's syscall() sets errno, which callers do not rely on here.
        let r = unsafe { libc::syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]) } as isize;
        if r == -1 {
            -(super::errno() as isize)
        } else {
            r
        }
    }

    /// Whether a raw result is an error, and which.
    #[inline(always)]
    pub fn error(ret: isize) -> Option<i32> {
        if (-4095..0).contains(&ret) {
            Some(-ret as i32)
        } else {
            None
        }
    }

    /// Opens `path` (NUL-terminated) read-only and close-on-exec with a raw system call (no
    /// interposed open, no errno change); the descriptor, or None.
    pub fn open_read_only(path: &[u8]) -> Option<isize> {
        if path.last() != Some(&0) {
            return None;
        }
        // `path` is NUL-terminated (checked above) and outlives the call.
        let fd = crate::raw_syscall!(
            libc::SYS_openat,
            libc::AT_FDCWD as isize,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC
        );
        if error(fd).is_some() {
            None
        } else {
            Some(fd)
        }
    }
}

/// A raw system call with up to six arguments (unused ones are 0).
#[macro_export]
macro_rules! raw_syscall {
    ($n:expr $(, $a:expr)* $(,)?) => {{
        let args: &[usize] = &[$($a as usize),*];
        let mut a = [0usize; 6];
        for (slot, v) in a.iter_mut().zip(args) {
            *slot = *v;
        }
        $crate::sys::raw::syscall6($n as i64, a)
    }};
}

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
    let p = crate::raw_syscall!(
        libc::SYS_mmap,
        0usize,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1i64 as usize,
        0usize
    );
    if raw::error(p).is_some() {
        return core::ptr::null_mut();
    }
    FOOTPRINT.fetch_add(len, core::sync::atomic::Ordering::Relaxed);
    register_own(p as u64, len as u64);
    p as *mut u8
}

/// Room for every slot array of the live table's 4,096 shards (each a mapping of its own), the
/// counters of every exclusive stripe (255), three per live thread (its unwinding cache, walk
/// cache and side stack: ~9,400 live threads fill it), and everything else we map; 512 KiB of
/// .bss, resident only as far as used.
const OWN_MAPS_MAX: usize = 32_768;

/// Our own mappings, so the untracked-mapping scan can leave them out even on kernels that
/// cannot name them. A fixed array: registering must not allocate (our allocator calls us).
pub struct OwnMaps {
    ranges: [(u64, u64); OWN_MAPS_MAX],
    len: usize,
    /// Mappings were added since `name_own_maps` last ran.
    unnamed: bool,
}

impl OwnMaps {
    fn add(&mut self, start: u64, len: u64) {
        if let Some(slot) = self.ranges.get_mut(self.len) {
            *slot = (start, start + len);
            self.len += 1;
            self.unnamed = true;
        }
    }
    fn remove(&mut self, start: u64) {
        let live = self.ranges.get(..self.len).unwrap_or(&[]);
        if let Some(i) = live.iter().position(|r| r.0 == start) {
            let last = self.len - 1;
            self.ranges.swap(i, last);
            self.len = last;
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
            v.extend_from_slice(maps.ranges.get(..maps.len).unwrap_or(&[]));
        }
        v.sort_unstable();
        return v;
    }
}

pub static OWN_MAPS: crate::sync::SpinLock<OwnMaps> = crate::sync::SpinLock::new(OwnMaps {
    ranges: [(0, 0); OWN_MAPS_MAX],
    len: 0,
    unnamed: false,
});

/// A mapping of ours made some other way (at a fixed address), to be told apart like the
/// ones `map_own` makes.
pub fn note_own_mapping(start: u64, len: u64) {
    FOOTPRINT.fetch_add(len as usize, core::sync::atomic::Ordering::Relaxed);
    register_own(start, len);
}

/// Registration gives up when the wait policy says the lock will never come free (a child
/// made by a raw clone3 inherited it held): that child never dumps, so an unlisted mapping
/// costs nothing, while waiting would hang it.
fn register_own(start: u64, len: u64) {
    if let Some(mut maps) = OWN_MAPS.lock_or_give_up() {
        maps.add(start, len);
    }
}

/// `map_own`, for memory a forked child must not share: marked `MADV_WIPEONFORK`, so fork
/// neither copies its page-table entries nor makes its pages copy-on-write (the parent's
/// writes after a fork then cost no page fault), and the child sees zeros. Returns the
/// mapping (null on failure) and whether the mark took (kernels before 4.14 refuse it; the
/// child then inherits the contents as with `map_own`).
pub fn map_own_wiped_in_child(len: usize) -> (*mut u8, bool) {
    let p = map_own(len);
    if p.is_null() {
        return (p, false);
    }
    let _errno = ErrnoGuard::save();
    /// `MADV_WIPEONFORK` from <linux/mman.h> (Linux 4.14).
    const MADV_WIPEONFORK: usize = 18;
    let rc = crate::raw_syscall!(
        libc::SYS_madvise,
        p as usize,
        round_up(len, PAGE),
        MADV_WIPEONFORK
    );
    (p, rc == 0)
}

/// Release a mapping obtained from `map_own` with the same length.
pub fn unmap_own(p: *mut u8, len: usize) {
    let _errno = ErrnoGuard::save();
    let len = round_up(len, PAGE);
    // The caller passes a mapping it got from map_own and no longer references.
    let rc = crate::raw_syscall!(libc::SYS_munmap, p as usize, len);
    if rc == 0 {
        FOOTPRINT.fetch_sub(len, core::sync::atomic::Ordering::Relaxed);
        if let Some(mut maps) = OWN_MAPS.lock_or_give_up() {
            maps.remove(p as u64);
        }
    }
}

/// Names our mappings `[anon:offheap]` where the kernel supports it, so /proc/PID/maps tells
/// them apart. Called from the library's own thread only: `prctl` is a system call a host's
/// seccomp filter may refuse (with SIGSYS), and hooks run on the host's threads. Mappings
/// made since the last call are named; the list is kept either way for kernels without the
/// feature.
pub fn name_own_maps() {
    const PR_SET_VMA: usize = 0x53564d41;
    const PR_SET_VMA_ANON_NAME: usize = 0;
    static NAME: &[u8] = b"offheap\0";
    let mut pending: Vec<(u64, u64)> = Vec::new();
    loop {
        let wanted = {
            let maps = OWN_MAPS.lock();
            if !maps.unnamed {
                return;
            }
            maps.len
        };
        // Room is made with the lock released: the allocation may map a fresh chunk, which
        // registers itself under this lock (holding it here hung a forked child for good: its
        // dumper waited on itself while holding the own allocator's pools, and the exit dump
        // waited on those).
        if pending.try_reserve_exact(wanted).is_err() {
            return;
        }
        let mut maps = OWN_MAPS.lock();
        if maps.len > pending.capacity() {
            continue; // more were registered meanwhile
        }
        maps.unnamed = false;
        pending.extend_from_slice(maps.ranges.get(..maps.len).unwrap_or(&[]));
        break;
    }
    for (start, end) in pending {
        // prctl only reads the NUL-terminated static name; EINVAL on older kernels is fine.
        let _ = crate::raw_syscall!(
            libc::SYS_prctl,
            PR_SET_VMA,
            PR_SET_VMA_ANON_NAME,
            start,
            end - start,
            NAME.as_ptr() as usize
        );
    }
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

/// Sleeps `ms` milliseconds with the raw system call (libc's nanosleep is a cancellation
/// point; an interrupted sleep just ends early).
pub fn sleep_ms(ms: u64) {
    let t = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    let _errno = ErrnoGuard::save();
    // `t` is a valid timespec; no remainder is asked for.
    let _ = crate::raw_syscall!(libc::SYS_nanosleep, &t as *const libc::timespec, 0usize);
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
        let Some(rest) = msg.get(off..) else { break };
        // The slice is valid for reads of its length.
        let n = crate::raw_syscall!(libc::SYS_write, 2, rest.as_ptr() as usize, rest.len());
        if n <= 0 {
            break;
        }
        off += n as usize;
    }
    drop(e);
}

/// A small fixed buffer for formatting a line without allocating.
#[derive(Clone)]
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
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl LineBuf {
    /// End the line. Only this newline is ever written raw: text formatted into the buffer
    /// (paths, values from the environment) cannot forge extra lines.
    pub fn end_line(&mut self) {
        if self.len >= self.buf.len() {
            self.len = self.buf.len() - 1;
        }
        if let Some(b) = self.buf.get_mut(self.len) {
            *b = b'\n';
            self.len += 1;
        }
    }
}

impl core::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.len + 1 >= self.buf.len() {
                break; // keep room for the newline
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = if b < 0x20 || b == 0x7f { b'?' } else { b };
                self.len += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// Starts loading the cache line at `p` (a hint: never faults, changes nothing), so that work
/// done before its first use hides the miss.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing into the program and faults on no address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
