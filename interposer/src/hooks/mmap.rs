//! mmap, mmap64, munmap, mremap and mprotect, performed with raw system calls.
//!
//! The interval table's lock is held across the real call so that the table changes in the
//! kernel's order even when threads race on the same addresses (the Go runtime maps and
//! unmaps from many threads). The stack is captured before the lock is taken, because the
//! walk itself may need the table to prove goroutine-stack reads safe.

use crate::state;
use crate::track::{self, Busy};
use core::ffi::c_void;
use offheap_core::sys::{self, ErrnoGuard};
use offheap_core::table::intervals::{self, Interval};

fn raw_mmap(
    addr: *mut c_void,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> *mut c_void {
    // SAFETY: the kernel validates every argument; libc::syscall sets errno on failure and
    // returns -1, which is MAP_FAILED.
    unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) as *mut c_void }
}

/// # Safety
/// As for libc's mmap.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> *mut c_void {
    let Some(st) = state::get() else {
        return raw_mmap(addr, len, prot, flags, fd, off);
    };
    let Some(busy) = Busy::enter() else {
        return raw_mmap(addr, len, prot, flags, fd, off);
    };
    let mut errno = ErrnoGuard::save();
    let birth = track::mmap_birth(st, busy.ts);
    let mut map = st.intervals.lock();
    if flags & libc::MAP_FIXED != 0 {
        st.intervals.invalidate();
    }
    let p = raw_mmap(addr, len, prot, flags, fd, off);
    errno.set_saved(sys::errno());
    if p != libc::MAP_FAILED {
        let start = p as u64;
        let end = start + sys::round_up(len, sys::PAGE) as u64;
        let replaced = intervals::cut(&mut map, start, end);
        for (s, iv) in replaced {
            count_release(st, iv.birth.stack, iv.end - s);
        }
        map.insert(
            start,
            Interval {
                end,
                prot,
                file: flags & libc::MAP_ANONYMOUS == 0,
                via: offheap_format::Via::Libc,
                birth,
            },
        );
        count_alloc(st, birth.stack, end - start);
    }
    p
}

/// # Safety
/// As for libc's mmap64 (the same call on 64-bit).
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { mmap(addr, len, prot, flags, fd, off) }
}

fn count_alloc(st: &state::State, stack: u32, bytes: u64) {
    track::note_alloc(st, stack, bytes, 0);
}

fn count_release(st: &state::State, stack: u32, bytes: u64) {
    track::note_free(st, stack, bytes, 0);
}

/// # Safety
/// As for libc's munmap.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> i32 {
    let raw = || {
        // SAFETY: the kernel validates the range.
        unsafe { libc::syscall(libc::SYS_munmap, addr, len) as i32 }
    };
    let start = addr as u64;
    let (Some(st), true) = (
        state::get(),
        start.is_multiple_of(sys::PAGE as u64) && len != 0,
    ) else {
        return raw();
    };
    let Some(_busy) = Busy::enter() else {
        return raw();
    };
    let mut errno = ErrnoGuard::save();
    let end = start.saturating_add(sys::round_up(len, sys::PAGE) as u64);
    let mut map = st.intervals.lock();
    st.intervals.invalidate();
    // Remove first: the range can be mapped again by another thread the instant it is gone.
    let removed = intervals::cut(&mut map, start, end);
    let rc = raw();
    errno.set_saved(sys::errno());
    if rc == 0 {
        for (s, iv) in &removed {
            count_release(st, iv.birth.stack, iv.end - s);
        }
    } else {
        for (s, iv) in removed {
            map.insert(s, iv);
        }
    }
    rc
}

/// The fifth argument is only passed (and only read) with MREMAP_FIXED; on the x86_64 and
/// aarch64 calling conventions a variadic argument arrives in the same register as a named
/// one, so declaring it is sound.
///
/// # Safety
/// As for libc's mremap.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: usize,
    new_len: usize,
    flags: i32,
    new_addr: *mut c_void,
) -> *mut c_void {
    let raw = || {
        let target = if flags & libc::MREMAP_FIXED != 0 {
            new_addr
        } else {
            core::ptr::null_mut()
        };
        // SAFETY: the kernel validates every argument.
        unsafe {
            libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, target) as *mut c_void
        }
    };
    let Some(st) = state::get() else { return raw() };
    let Some(busy) = Busy::enter() else {
        return raw();
    };
    let mut errno = ErrnoGuard::save();
    let fallback = track::mmap_birth(st, busy.ts);
    let mut map = st.intervals.lock();
    st.intervals.invalidate();
    let p = raw();
    errno.set_saved(sys::errno());
    if p == libc::MAP_FAILED {
        return p;
    }
    let start = old as u64;
    let old_end = start + sys::round_up(old_len, sys::PAGE) as u64;
    let template = map
        .range(..=start)
        .next_back()
        .filter(|(_, iv)| iv.end > start)
        .map(|(_, iv)| *iv);
    // old_len == 0 duplicates a shared mapping and leaves the old one in place; so does
    // MREMAP_DONTUNMAP (the old range stays mapped, emptied, still owned by its creator).
    const MREMAP_DONTUNMAP: i32 = 4;
    if old_len != 0 && flags & MREMAP_DONTUNMAP == 0 {
        for (s, iv) in intervals::cut(&mut map, start, old_end) {
            count_release(st, iv.birth.stack, iv.end - s);
        }
    }
    let new_start = p as u64;
    let new_end = new_start + sys::round_up(new_len, sys::PAGE) as u64;
    let iv = match template {
        Some(t) => Interval { end: new_end, ..t },
        None => Interval {
            end: new_end,
            prot: libc::PROT_READ | libc::PROT_WRITE,
            file: false,
            via: offheap_format::Via::Libc,
            birth: fallback,
        },
    };
    for (s, old_iv) in intervals::cut(&mut map, new_start, new_end) {
        count_release(st, old_iv.birth.stack, old_iv.end - s);
    }
    map.insert(new_start, iv);
    count_alloc(st, iv.birth.stack, new_end - new_start);
    p
}

/// # Safety
/// As for libc's mprotect.
#[no_mangle]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: usize, prot: i32) -> i32 {
    let raw = || {
        // SAFETY: the kernel validates the range.
        unsafe { libc::syscall(libc::SYS_mprotect, addr, len, prot) as i32 }
    };
    let Some(st) = state::get() else { return raw() };
    let Some(_busy) = Busy::enter() else {
        return raw();
    };
    let mut errno = ErrnoGuard::save();
    let mut map = st.intervals.lock();
    st.intervals.invalidate();
    let rc = raw();
    errno.set_saved(sys::errno());
    if rc == 0 {
        let start = addr as u64;
        let end = start + sys::round_up(len, sys::PAGE) as u64;
        intervals::protect(&mut map, start, end, prot);
    }
    rc
}
