//! mmap, mmap64, munmap, mremap and mprotect: libc's entry points over `track::mapping`, which
//! makes the raw system call and keeps the interval table. Each hook only turns the kernel's
//! result into libc's (MAP_FAILED or −1, with errno); errno is left untouched on success.

use crate::track::mapping::{self, Raw};
use core::ffi::c_void;
use offheap_core::sys::{raw, set_errno};
use offheap_format::Via;

/// libc's convention for a pointer result.
fn pointer(r: Raw) -> *mut c_void {
    match raw::error(r) {
        Some(e) => {
            set_errno(e);
            libc::MAP_FAILED
        }
        None => r as *mut c_void,
    }
}

/// libc's convention for a status result.
fn status(r: Raw) -> i32 {
    match raw::error(r) {
        Some(e) => {
            set_errno(e);
            -1
        }
        None => 0,
    }
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
    pointer(mapping::map(
        Via::Libc,
        None,
        addr as usize,
        len,
        prot,
        flags,
        fd,
        off,
    ))
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

/// # Safety
/// As for libc's munmap.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> i32 {
    status(mapping::unmap(addr as usize, len))
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
    pointer(mapping::remap(
        Via::Libc,
        None,
        old as usize,
        old_len,
        new_len,
        flags,
        new_addr as usize,
    ))
}

/// # Safety
/// As for libc's mprotect.
#[no_mangle]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: usize, prot: i32) -> i32 {
    status(mapping::protect(addr as usize, len, prot))
}
