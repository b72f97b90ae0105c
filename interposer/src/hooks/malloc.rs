//! The malloc family, forwarded to the real allocator (`super::real`: glibc's exported
//! `__libc_*` entry points, or the program's own allocator when it links one).
//!
//! Linking to `__libc_malloc` directly (as bytehound does) means no dlsym bootstrap and no
//! calloc-before-dlsym problem: the hooks work from the first call ld.so makes. Semantics
//! are glibc's own: errno as libc sets it, realloc(p, 0) frees, reallocarray and calloc fail
//! with ENOMEM on overflow, posix_memalign returns EINVAL for a bad alignment.
//!
//! On x86_64 each allocating entry point is a two-instruction naked trampoline that hands the
//! implementation the stack pointer at entry (where the return address sits) and the caller's
//! frame pointer, so the stack walk starts at the caller instead of unwinding our own frames.

use crate::track::{self, Caller};
use core::ffi::c_void;

use super::real;

/// Declares `$name` as an exported trampoline that appends (entry sp, entry bp) to the
/// arguments and jumps to `$imp`.
#[cfg(target_arch = "x86_64")]
macro_rules! trampoline {
    ($name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty => $imp:ident, $sp_reg:literal, $bp_reg:literal) => {
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            core::arch::naked_asm!(
                ".cfi_startproc",
                concat!("mov ", $sp_reg, ", rsp"),
                concat!("mov ", $bp_reg, ", rbp"),
                "jmp {imp}",
                ".cfi_endproc",
                imp = sym $imp,
            )
        }
    };
}

/// Elsewhere (the aarch64 design keeps the same split, with `mov x_, sp; mov x_, x29` and LR
/// as the return address) the entry point walks from inside the library instead.
#[cfg(not(target_arch = "x86_64"))]
macro_rules! trampoline {
    ($name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty => $imp:ident, $sp_reg:literal, $bp_reg:literal) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: forwarded with the caller's arguments; 0 selects the in-library walk.
            unsafe { $imp($($arg,)* 0, 0) }
        }
    };
}

#[inline(always)]
fn caller(sp: u64, bp: u64) -> Caller {
    if sp == 0 {
        Caller::Here
    } else {
        Caller::Entry { sp, bp }
    }
}

#[cfg(not(target_arch = "x86_64"))]
trampoline!(malloc(size: usize) -> *mut c_void => malloc_impl, "rsi", "rdx");
trampoline!(calloc(n: usize, size: usize) -> *mut c_void => calloc_impl, "rdx", "rcx");
trampoline!(realloc(p: *mut c_void, size: usize) -> *mut c_void => realloc_impl, "rdx", "rcx");
trampoline!(reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void => reallocarray_impl, "rcx", "r8");
trampoline!(memalign(align: usize, size: usize) -> *mut c_void => memalign_impl, "rdx", "rcx");
trampoline!(aligned_alloc(align: usize, size: usize) -> *mut c_void => memalign_impl, "rdx", "rcx");
trampoline!(posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 => posix_memalign_impl, "rcx", "r8");
trampoline!(valloc(size: usize) -> *mut c_void => valloc_impl, "rsi", "rdx");
trampoline!(pvalloc(size: usize) -> *mut c_void => pvalloc_impl, "rsi", "rdx");

/// An unsampled malloc is a countdown and a tail call: no frame, nothing else touched.
#[cfg(not(target_arch = "x86_64"))]
extern "C" fn malloc_impl(size: usize, sp: u64, bp: u64) -> *mut c_void {
    if track::unsampled_alloc(size) {
        return real::malloc(size);
    }
    malloc_tracked(size, sp, bp)
}

/// A malloc the countdown did not rule out, with the countdown already taken down by `size`
/// (`on_malloc` decides whether it is sampled, and sets the countdown anew even when the
/// malloc failed).
#[inline(never)]
extern "C" fn malloc_tracked(size: usize, sp: u64, bp: u64) -> *mut c_void {
    let p = real::malloc(size);
    track::on_malloc(p as u64, size, caller(sp, bp));
    p
}

extern "C" fn calloc_impl(n: usize, size: usize, sp: u64, bp: u64) -> *mut c_void {
    let p = real::calloc(n, size);
    if !p.is_null() {
        track::on_alloc(p as u64, n.wrapping_mul(size), caller(sp, bp));
    }
    p
}

extern "C" fn realloc_impl(p: *mut c_void, size: usize, sp: u64, bp: u64) -> *mut c_void {
    // Remove first: once glibc releases the old block its address can be reused at once.
    let old = if p.is_null() {
        None
    } else {
        track::on_free(p as u64)
    };
    // SAFETY: p is a live block the caller hands to realloc.
    let q = unsafe { real::realloc(p, size) };
    if q.is_null() {
        // realloc(p, 0) freed p; any other NULL is a failure that left p alone.
        if size != 0 {
            if let Some(rec) = old {
                track::restore(rec);
            }
        }
        return q;
    }
    track::on_alloc(q as u64, size, caller(sp, bp));
    q
}

extern "C" fn reallocarray_impl(
    p: *mut c_void,
    n: usize,
    size: usize,
    sp: u64,
    bp: u64,
) -> *mut c_void {
    match n.checked_mul(size) {
        Some(bytes) => realloc_impl(p, bytes, sp, bp),
        None => {
            offheap_core::sys::set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

extern "C" fn memalign_impl(align: usize, size: usize, sp: u64, bp: u64) -> *mut c_void {
    // glibc's aligned_alloc is memalign in this glibc.
    let p = real::memalign(align, size);
    if !p.is_null() {
        track::on_alloc(p as u64, size, caller(sp, bp));
    }
    p
}

extern "C" fn posix_memalign_impl(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
    sp: u64,
    bp: u64,
) -> i32 {
    let word = core::mem::size_of::<*mut c_void>();
    if align == 0 || !align.is_multiple_of(word) || !(align / word).is_power_of_two() {
        return libc::EINVAL;
    }
    let p = real::memalign(align, size);
    if p.is_null() {
        return libc::ENOMEM;
    }
    track::on_alloc(p as u64, size, caller(sp, bp));
    // SAFETY: the caller passes a valid out-pointer, as posix_memalign requires.
    unsafe { *out = p };
    0
}

extern "C" fn valloc_impl(size: usize, sp: u64, bp: u64) -> *mut c_void {
    let p = real::valloc(size);
    if !p.is_null() {
        track::on_alloc(p as u64, size, caller(sp, bp));
    }
    p
}

extern "C" fn pvalloc_impl(size: usize, sp: u64, bp: u64) -> *mut c_void {
    let p = real::pvalloc(size);
    if !p.is_null() {
        let rounded = offheap_core::sys::round_up(size.max(1), offheap_core::sys::PAGE);
        track::on_alloc(p as u64, rounded, caller(sp, bp));
    }
    p
}

// Every naked entry here brackets its code with `.cfi_startproc`/`.cfi_endproc`: none moves
// the stack pointer, so the default rule (the caller's frame at rsp + 8) is right throughout,
// and an unwinder that starts inside one (a profiler's signal, `backtrace()` in a handler, our
// own walk from a signal handler) reaches the caller instead of stopping.
//
// The entry points of the two calls a program makes most, on x86_64, each in a section of
// its own that starts on a cache line (`.p2align` as the first directive of a function alone
// in its section pads nothing and aligns the section): `free` fills at most two lines and
// `malloc` one line, so the code every call runs stays in a few lines of one page (sampling
// on tcache: 1.067× → 1.051× from the placement alone, BENCHMARKS.md seventh pass).

/// free's entry on x86_64: `track::may_be_tracked` written out over the filter's geometry
/// (`Filter::PROBE`, whose arithmetic a test in `offheap_core::sampling` checks against the
/// filter), then one jump: to the real free through its forward site (`super::direct`), or,
/// when the block may be tracked, to `free_tracked`. As Rust, the probe ended in a second jump,
/// to `real::forward_free` (the compiler's tail call cannot be rewritten in place), and could
/// not be placed on a line of its own beside `malloc`.
///
/// ```text
///   everywhere byte set (full tracking)                              → free_tracked
///   slot = p >> 4
///   word = filter + bits_offset + ((p >> group_shift) & group_field)
///                               + ((slot >> 6) & word_mask) · 8
///   bit (slot mod 64) of word set                                    → free_tracked
///   else                                                              → the real free
/// ```
///
/// # Safety
/// `p` is null or a live block from this allocator, as for libc's free.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
#[link_section = ".text.hot.offheap.free"]
pub unsafe extern "C" fn free(p: *mut c_void) {
    core::arch::naked_asm!(
        ".p2align 6",
        ".cfi_startproc",
        "cmp byte ptr [rip + {filter} + {everywhere}], 0",
        "jne {tracked}",
        // rcx = slot, before masking; `bt` below takes its bit number mod 64.
        "mov rcx, rdi",
        "shr rcx, 4",
        "mov edx, ecx",
        "shr edx, 6",
        "and edx, {word_mask}",
        "mov rax, rdi",
        "shr rax, {group_shift}",
        "and eax, {group_field}",
        "lea rsi, [rip + {filter}]",
        "add rsi, rax",
        "mov rax, qword ptr [rsi + rdx * 8 + {bits}]",
        "bt rax, rcx",
        "jb {tracked}",
        // The forward site (`super::direct`): 8-byte aligned, so it can be rewritten in one
        // store; the padding before it is at most one no-op.
        ".p2align 3",
        ".globl offheap_free_forward_site",
        ".hidden offheap_free_forward_site",
        "offheap_free_forward_site:",
        "jmp qword ptr [rip + {forward}]",
        ".cfi_endproc",
        filter = sym crate::state::SAMPLE_FILTER,
        everywhere = const PROBE.everywhere_offset,
        bits = const PROBE.bits_offset,
        word_mask = const PROBE.word_mask,
        group_shift = const PROBE.group_shift,
        group_field = const PROBE.group_field,
        forward = sym real::FORWARD_FREE,
        tracked = sym free_tracked,
    )
}

/// malloc's entry on x86_64: the sampling countdown (the test `track::unsampled_alloc`
/// makes, written here because no frame exists yet), then either one jump to the real malloc
/// or, when the allocation is to be tracked, the trampoline into `malloc_tracked`.
///
/// The countdown is unsigned and the test is the borrow of one read-modify-write: a size
/// below the countdown takes it down exactly and is forwarded; a size at or above it (every
/// size when the countdown is 0, as with full tracking; any request of 2^63 bytes or more)
/// leaves the wrapped difference behind and goes to `malloc_tracked`, which always sets the
/// countdown anew, whether the malloc succeeded or not (`track::on_malloc`). As a signed
/// count with `jle`, a request of 2^63 bytes or more raised the countdown instead, and three
/// failed requests of 2^62 wrapped it: every later malloc of the thread went untracked. An
/// unsampled malloc costs four instructions and the jump, where a trampoline, a Rust hook and
/// a flag cost three times that and a second taken branch.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
#[link_section = ".text.hot.offheap.malloc"]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    core::arch::naked_asm!(
        ".p2align 5",
        ".cfi_startproc",
        "mov rax, qword ptr [rip + offheap_tls@GOTTPOFF]",
        "sub qword ptr fs:[rax + {countdown}], rdi",
        "jbe 2f",
        // The forward site (`super::direct`), as in `free`.
        ".p2align 3",
        ".globl offheap_malloc_forward_site",
        ".hidden offheap_malloc_forward_site",
        "offheap_malloc_forward_site:",
        "jmp qword ptr [rip + {forward}]",
        "2:",
        "mov rsi, rsp",
        "mov rdx, rbp",
        "jmp {tracked}",
        ".cfi_endproc",
        countdown = const core::mem::offset_of!(c_shim::ThreadState, sample_countdown),
        forward = sym real::FORWARD_MALLOC,
        tracked = sym malloc_tracked,
    )
}

/// The filter's geometry the assembly `free` probes with.
#[cfg(target_arch = "x86_64")]
const PROBE: offheap_core::sampling::ProbeGeometry = crate::state::SampleFilter::PROBE;

/// # Safety
/// `p` is null or a live block from this allocator, as for libc's free.
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if !track::may_be_tracked(p as u64) {
        // SAFETY: forwarded contract.
        return unsafe { real::free(p) };
    }
    // SAFETY: forwarded contract.
    unsafe { free_tracked(p) }
}

/// A free `free`'s probe did not rule out: forget its record, then the real free.
///
/// # Safety
/// As for `free`.
#[inline(never)]
unsafe extern "C" fn free_tracked(p: *mut c_void) {
    track::on_released(p as u64);
    // SAFETY: forwarded contract.
    unsafe { real::free(p) }
}

/// Same as `free` (old SunOS name some programs still call).
///
/// # Safety
/// As for `free`.
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { free(p) }
}

/// Pass-through: we never change blocks, so glibc's answer is the truth.
///
/// # Safety
/// `p` is null or a live block, as for libc's malloc_usable_size.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded contract.
    unsafe { real::usable_size(p) }
}
