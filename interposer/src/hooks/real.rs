//! Which allocator the hooks forward to.
//!
//! Normally glibc, through its exported `__libc_*` entry points, called directly. When the
//! program has an allocator of its own — linked in (jemalloc, tcmalloc, mimalloc), defined in
//! the executable itself (rustc links jemalloc that way), or another interposer after us —
//! every entry point forwards to that allocator's definition instead, so the program's blocks
//! stay its allocator's, its extensions (`mallocx`, `dallocx`, ...) keep working on them, and
//! an entry point it does not define (say `reallocarray`) still reaches its `realloc`, never
//! glibc's. Definitions are looked up in the global scope first (`RTLD_DEFAULT` finds the
//! executable's, which `RTLD_NEXT` from a preloaded library never sees), then past us.
//!
//! Blocks glibc handed out before that decision go back to glibc (`offheap_core::early`).

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use offheap_core::early::EarlyBlocks;

extern "C" {
    pub fn __libc_malloc(size: usize) -> *mut c_void;
    pub fn __libc_free(p: *mut c_void);
    pub fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    pub fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void;
    pub fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    pub fn __libc_valloc(size: usize) -> *mut c_void;
    pub fn __libc_pvalloc(size: usize) -> *mut c_void;
}

/// Forwarding to the program's own allocator (decided once, in the constructor).
static FOREIGN: AtomicBool = AtomicBool::new(false);

/// Where malloc and free forward: the slow forwarders below until the decision is made (they
/// record or look up early blocks, or reach the program's own allocator), then, when glibc it
/// is, `__libc_malloc` and `__libc_free` themselves. An unsampled call is then one jump
/// through these, with no flag tested on the way (the malloc entry point jumps through
/// `FORWARD_MALLOC` from its assembly, the rest through `forward_malloc` and `forward_free`),
/// and `super::direct` turns those jumps into direct ones once glibc it is.
pub static FORWARD_MALLOC: AtomicPtr<()> = AtomicPtr::new(malloc_undecided_or_foreign as *mut ());
pub static FORWARD_FREE: AtomicPtr<()> = AtomicPtr::new(free_undecided_or_foreign as *mut ());
static EARLY: EarlyBlocks = EarlyBlocks::new();

/// The program's allocator's entry points (0 = it has none of that name).
struct Next {
    malloc: AtomicUsize,
    free: AtomicUsize,
    calloc: AtomicUsize,
    realloc: AtomicUsize,
    memalign: AtomicUsize,
    usable: AtomicUsize,
    /// glibc's own, for its early blocks.
    glibc_usable: AtomicUsize,
}

static NEXT: Next = Next {
    malloc: AtomicUsize::new(0),
    free: AtomicUsize::new(0),
    calloc: AtomicUsize::new(0),
    realloc: AtomicUsize::new(0),
    memalign: AtomicUsize::new(0),
    usable: AtomicUsize::new(0),
    glibc_usable: AtomicUsize::new(0),
};

type Malloc = unsafe extern "C" fn(usize) -> *mut c_void;
type Free = unsafe extern "C" fn(*mut c_void);
type Calloc = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type Realloc = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type Memalign = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type Usable = unsafe extern "C" fn(*mut c_void) -> usize;
type Mallopt = unsafe extern "C" fn(i32, i32) -> i32;

#[inline(always)]
fn foreign() -> bool {
    FOREIGN.load(Ordering::Relaxed)
}

/// Whether the program uses an allocator of its own (glibc's figures then say nothing).
pub fn is_foreign() -> bool {
    foreign()
}

fn next(slot: &AtomicUsize) -> usize {
    slot.load(Ordering::Acquire)
}

fn dlsym_in(handle: *mut c_void, name: &core::ffi::CStr) -> usize {
    // SAFETY: dlsym with a valid pseudo-handle or handle and a NUL-terminated name.
    unsafe { libc::dlsym(handle, name.as_ptr()) as usize }
}

/// The load address of the image holding `addr` (dladdr: no allocation).
fn image_of(addr: usize) -> usize {
    let mut info = libc::Dl_info {
        dli_fname: core::ptr::null(),
        dli_fbase: core::ptr::null_mut(),
        dli_sname: core::ptr::null(),
        dli_saddr: core::ptr::null_mut(),
    };
    // SAFETY: dladdr only fills `info`.
    if unsafe { libc::dladdr(addr as *const c_void, &mut info) } == 0 {
        return 0;
    }
    info.dli_fbase as usize
}

/// The program's definition of `name`: the first in the global scope unless that is ours,
/// else the next one after us. (Comparing addresses would not do: the address of our own
/// exported function is, to our own code too, the definition that interposes it.)
fn lookup(name: &core::ffi::CStr) -> usize {
    let first = dlsym_in(libc::RTLD_DEFAULT, name);
    if first != 0
        && image_of(first) != image_of(image_of as *const () as usize)
        && defines(first, name)
    {
        return first;
    }
    dlsym_in(libc::RTLD_NEXT, name)
}

/// Whether `addr` is a definition of `name` rather than a non-PIE executable's canonical
/// PLT entry: an executable that takes `malloc`'s address gets an undefined `malloc` symbol
/// whose value is its PLT stub; dlsym and dladdr both answer with that stub, and the stub
/// jumps back to us. Only the symbol's section index tells the two apart.
fn defines(addr: usize, name: &core::ffi::CStr) -> bool {
    /// `RTLD_DL_SYMENT` from <dlfcn.h>: dladdr1 also returns the matching symbol entry.
    const RTLD_DL_SYMENT: libc::c_int = 1;
    let mut info = libc::Dl_info {
        dli_fname: core::ptr::null(),
        dli_fbase: core::ptr::null_mut(),
        dli_sname: core::ptr::null(),
        dli_saddr: core::ptr::null_mut(),
    };
    let mut sym: *mut c_void = core::ptr::null_mut();
    // SAFETY: dladdr1 only fills `info` and `sym`.
    let found =
        unsafe { libc::dladdr1(addr as *const c_void, &mut info, &mut sym, RTLD_DL_SYMENT) };
    if found == 0 || info.dli_sname.is_null() || sym.is_null() {
        return false;
    }
    // SAFETY: with RTLD_DL_SYMENT, `sym` points at the image's own symbol table entry.
    let shndx = unsafe { (*(sym as *const libc::Elf64_Sym)).st_shndx };
    // SAFETY: dli_sname is a NUL-terminated name in the image's string table.
    let sname = unsafe { core::ffi::CStr::from_ptr(info.dli_sname) };
    /// `SHN_UNDEF` from <elf.h>.
    const SHN_UNDEF: u16 = 0;
    shndx != SHN_UNDEF && info.dli_saddr as usize == addr && sname == name
}

/// glibc's own function `name`: the definition after ours (the program's, when it has one,
/// comes before us in the global scope). Looked up without dlopen, which would allocate
/// through the program's allocator and change what it sees.
fn glibc(name: &core::ffi::CStr) -> usize {
    dlsym_in(libc::RTLD_NEXT, name)
}

/// Decide (constructor, inside): glibc, or the program's own allocator.
pub fn decide() {
    let m = lookup(c"malloc");
    let f = lookup(c"free");
    let own = m != 0 && m != __libc_malloc as *const () as usize && f != 0;
    NEXT.usable
        .store(lookup(c"malloc_usable_size"), Ordering::Release);
    if own {
        NEXT.malloc.store(m, Ordering::Release);
        NEXT.free.store(f, Ordering::Release);
        for (slot, name) in [
            (&NEXT.calloc, c"calloc"),
            (&NEXT.realloc, c"realloc"),
            (&NEXT.memalign, c"memalign"),
        ] {
            slot.store(lookup(name), Ordering::Release);
        }
        NEXT.glibc_usable
            .store(glibc(c"malloc_usable_size"), Ordering::Release);
        // glibc must never give its early heap back: a program allocator growing the break
        // could then reuse the range that tells early blocks apart.
        let mallopt = glibc(c"mallopt");
        if mallopt != 0 {
            const M_TRIM_THRESHOLD: i32 = -1;
            // SAFETY: glibc's mallopt, with a valid parameter.
            unsafe { core::mem::transmute::<usize, Mallopt>(mallopt)(M_TRIM_THRESHOLD, i32::MAX) };
        }
        crate::verbose!("the program has its own allocator: forwarding to it");
        FOREIGN.store(true, Ordering::Release);
    }
    // SAFETY: sbrk(0) only reads the current break.
    let brk = unsafe { libc::sbrk(0) } as u64;
    EARLY.seal(brk);
    if !own {
        FORWARD_MALLOC.store(__libc_malloc as *mut (), Ordering::Release);
        FORWARD_FREE.store(__libc_free as *mut (), Ordering::Release);
    }
}

/// A forward site (`super::direct`) for malloc: jumps to what `FORWARD_MALLOC` holds.
///
/// # Safety
/// As for libc's malloc.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[link_section = ".text.hot.offheap.forward_malloc"]
pub unsafe extern "C" fn forward_malloc(size: usize) -> *mut c_void {
    core::arch::naked_asm!(
        // The site is 8-byte aligned (`super::direct`): at most one no-op before it.
        ".p2align 3",
        ".cfi_startproc",
        "jmp qword ptr [rip + {slot}]",
        ".cfi_endproc",
        slot = sym FORWARD_MALLOC,
    )
}

/// A forward site (`super::direct`) for free: jumps to what `FORWARD_FREE` holds.
///
/// # Safety
/// As for libc's free.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[link_section = ".text.hot.offheap.forward_free"]
pub unsafe extern "C" fn forward_free(p: *mut c_void) {
    core::arch::naked_asm!(
        // The site is 8-byte aligned (`super::direct`): at most one no-op before it.
        ".p2align 3",
        ".cfi_startproc",
        "jmp qword ptr [rip + {slot}]",
        ".cfi_endproc",
        slot = sym FORWARD_FREE,
    )
}

/// Remember a block glibc handed out before the decision.
#[inline(always)]
fn note_glibc_block(p: *mut c_void) {
    if !p.is_null() && EARLY.recording() {
        // glibc's chunk header just below the block: IS_MMAPPED is bit 1 of the size word.
        // SAFETY: p is a block glibc just returned; its header is glibc memory before it.
        let large = unsafe { *(p as *const u64).sub(1) } & 2 != 0;
        EARLY.record(p as u64, large);
    }
}

/// The real malloc: a call (or tail jump) to the forward site, direct once glibc it is.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn malloc(size: usize) -> *mut c_void {
    // SAFETY: malloc's contract is only that the size is a size.
    unsafe { forward_malloc(size) }
}

/// The real malloc: one indirect call (or tail jump) through `FORWARD_MALLOC`.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn malloc(size: usize) -> *mut c_void {
    let f = FORWARD_MALLOC.load(Ordering::Relaxed);
    // SAFETY: FORWARD_MALLOC only ever holds a function of malloc's type (its initial value
    // or `__libc_malloc`).
    unsafe { core::mem::transmute::<*mut (), Malloc>(f)(size) }
}

#[inline(never)]
extern "C" fn malloc_undecided_or_foreign(size: usize) -> *mut c_void {
    if foreign() {
        // SAFETY: the program's own malloc, resolved in decide().
        return unsafe { core::mem::transmute::<usize, Malloc>(next(&NEXT.malloc))(size) };
    }
    // SAFETY: plain forwarding to glibc.
    let p = unsafe { __libc_malloc(size) };
    note_glibc_block(p);
    p
}

#[inline(always)]
pub fn calloc(n: usize, size: usize) -> *mut c_void {
    if foreign() {
        let f = next(&NEXT.calloc);
        if f != 0 {
            // SAFETY: the program's own calloc.
            return unsafe { core::mem::transmute::<usize, Calloc>(f)(n, size) };
        }
        let Some(bytes) = n.checked_mul(size) else {
            offheap_core::sys::set_errno(libc::ENOMEM);
            return core::ptr::null_mut();
        };
        let p = malloc(bytes);
        if !p.is_null() {
            // SAFETY: p has room for `bytes` bytes.
            unsafe { core::ptr::write_bytes(p as *mut u8, 0, bytes) };
        }
        return p;
    }
    // SAFETY: plain forwarding to glibc (which checks n * size for overflow).
    let p = unsafe { __libc_calloc(n, size) };
    note_glibc_block(p);
    p
}

#[inline(always)]
pub fn memalign(align: usize, size: usize) -> *mut c_void {
    if foreign() {
        let f = next(&NEXT.memalign);
        if f != 0 {
            // SAFETY: the program's own memalign.
            return unsafe { core::mem::transmute::<usize, Memalign>(f)(align, size) };
        }
        // No memalign of its own: without us the call would reach glibc's, so it does.
    }
    // SAFETY: plain forwarding to glibc.
    let p = unsafe { __libc_memalign(align, size) };
    note_glibc_block(p);
    p
}

pub fn valloc(size: usize) -> *mut c_void {
    if foreign() {
        return memalign(offheap_core::sys::PAGE, size);
    }
    // SAFETY: plain forwarding to glibc.
    let p = unsafe { __libc_valloc(size) };
    note_glibc_block(p);
    p
}

pub fn pvalloc(size: usize) -> *mut c_void {
    if foreign() {
        let rounded = offheap_core::sys::round_up(size.max(1), offheap_core::sys::PAGE);
        return memalign(offheap_core::sys::PAGE, rounded);
    }
    // SAFETY: plain forwarding to glibc.
    let p = unsafe { __libc_pvalloc(size) };
    note_glibc_block(p);
    p
}

/// # Safety
/// `p` is null or a live block of the allocator we forward to, as for libc's free.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn free(p: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { forward_free(p) }
}

/// # Safety
/// `p` is null or a live block of the allocator we forward to, as for libc's free.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub unsafe fn free(p: *mut c_void) {
    let f = FORWARD_FREE.load(Ordering::Relaxed);
    // SAFETY: FORWARD_FREE only ever holds a function of free's type (its initial value or
    // `__libc_free`), and the caller's contract is free's.
    unsafe { core::mem::transmute::<*mut (), Free>(f)(p) }
}

/// # Safety
/// As for `free`.
#[inline(never)]
unsafe extern "C" fn free_undecided_or_foreign(p: *mut c_void) {
    if foreign() && !EARLY.take(p as u64) {
        // SAFETY: the program's own free, for one of its own blocks.
        return unsafe { core::mem::transmute::<usize, Free>(next(&NEXT.free))(p) };
    }
    EARLY.forget_while_recording(p as u64);
    // SAFETY: a glibc block.
    unsafe { __libc_free(p) }
}

/// # Safety
/// `p` is null or a live block, as for libc's realloc.
#[inline(always)]
pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if foreign() {
        if !p.is_null() && EARLY.contains(p as u64) {
            // A glibc block moving to the program's allocator: copy, then give it back.
            if size == 0 {
                // SAFETY: forwarded contract.
                unsafe { free(p) };
                return core::ptr::null_mut();
            }
            let q = malloc(size);
            if !q.is_null() {
                // SAFETY: forwarded contract.
                let old = unsafe { usable_size(p) };
                // SAFETY: both blocks are valid for min(old, size) bytes.
                unsafe {
                    core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, old.min(size))
                };
                // SAFETY: forwarded contract.
                unsafe { free(p) };
            }
            return q;
        }
        // SAFETY: the program's own realloc, for one of its own blocks.
        return unsafe { core::mem::transmute::<usize, Realloc>(next(&NEXT.realloc))(p, size) };
    }
    EARLY.forget_while_recording(p as u64);
    // SAFETY: plain forwarding to glibc.
    let q = unsafe { __libc_realloc(p, size) };
    note_glibc_block(q);
    q
}

/// # Safety
/// `p` is null or a live block, as for libc's malloc_usable_size.
pub unsafe fn usable_size(p: *mut c_void) -> usize {
    let glibc_block = !foreign() || EARLY.contains(p as u64);
    let f = if foreign() && glibc_block {
        next(&NEXT.glibc_usable)
    } else {
        next(&NEXT.usable)
    };
    let f = if f == 0 {
        let r = crate::tls::as_inside(|| lookup(c"malloc_usable_size"));
        NEXT.usable.store(r, Ordering::Release);
        r
    } else {
        f
    };
    if f == 0 {
        return 0;
    }
    // SAFETY: f is the usable-size function of the allocator that owns p.
    unsafe { core::mem::transmute::<usize, Usable>(f)(p) }
}
