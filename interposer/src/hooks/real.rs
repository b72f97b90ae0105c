//! Which allocator the hooks forward to.
//!
//! Normally glibc, through its exported `__libc_*` entry points, called directly. When the
//! program links an allocator of its own (jemalloc, tcmalloc, mimalloc, or another
//! interposer after us: `malloc` resolves past us to something other than glibc), every entry
//! point forwards to that allocator's definition instead, so the program's blocks stay its
//! allocator's and its own extensions (`mallocx`, `dallocx`, ...) keep working on them. The
//! few blocks glibc handed out before our constructor decided are remembered and given back
//! to glibc.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use offheap_core::sync::SpinLock;

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
/// Still recording glibc blocks handed out before the decision.
static RECORDING: AtomicBool = AtomicBool::new(true);
/// Blocks in EARLY may still be freed: look them up.
static EARLY_LIVE: AtomicBool = AtomicBool::new(false);

#[derive(Default)]
struct Next {
    malloc: AtomicUsize,
    free: AtomicUsize,
    calloc: AtomicUsize,
    realloc: AtomicUsize,
    memalign: AtomicUsize,
    usable: AtomicUsize,
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

struct Early {
    addrs: [u64; 4096],
    len: usize,
}

static EARLY: SpinLock<Early> = SpinLock::new(Early {
    addrs: [0; 4096],
    len: 0,
});

type Malloc = unsafe extern "C" fn(usize) -> *mut c_void;
type Free = unsafe extern "C" fn(*mut c_void);
type Calloc = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type Realloc = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type Memalign = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type Usable = unsafe extern "C" fn(*mut c_void) -> usize;

#[inline(always)]
fn foreign() -> bool {
    FOREIGN.load(Ordering::Relaxed)
}

fn next(slot: &AtomicUsize) -> usize {
    slot.load(Ordering::Acquire)
}

fn dlsym_next(name: &core::ffi::CStr) -> usize {
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT searches past our library.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
}

/// Decide (constructor, thread busy): glibc, or the program's own allocator.
pub fn decide() {
    let m = dlsym_next(c"malloc");
    let f = dlsym_next(c"free");
    let own = m != 0 && m != __libc_malloc as *const () as usize && f != 0;
    NEXT.usable
        .store(dlsym_next(c"malloc_usable_size"), Ordering::Release);
    if own {
        NEXT.malloc.store(m, Ordering::Release);
        NEXT.free.store(f, Ordering::Release);
        NEXT.calloc.store(dlsym_next(c"calloc"), Ordering::Release);
        NEXT.realloc
            .store(dlsym_next(c"realloc"), Ordering::Release);
        NEXT.memalign
            .store(dlsym_next(c"memalign"), Ordering::Release);
        // glibc's own usable size, for the blocks it gave out before this decision.
        // SAFETY: libc.so.6 is loaded (we link it); RTLD_NOLOAD only looks it up.
        let libc_handle =
            unsafe { libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        if !libc_handle.is_null() {
            // SAFETY: a valid handle and a NUL-terminated name.
            let g = unsafe { libc::dlsym(libc_handle, c"malloc_usable_size".as_ptr()) };
            NEXT.glibc_usable.store(g as usize, Ordering::Release);
        }
        crate::verbose!("the program links its own allocator: forwarding to it");
        EARLY_LIVE.store(EARLY.lock().len > 0, Ordering::Release);
        FOREIGN.store(true, Ordering::Release);
    } else {
        EARLY.lock().len = 0;
    }
    RECORDING.store(false, Ordering::Release);
}

fn early_add(p: *mut c_void) {
    let mut e = EARLY.lock();
    if e.len < e.addrs.len() {
        let i = e.len;
        e.addrs[i] = p as u64;
        e.len += 1;
    }
}

/// Remove `p` from the early set; true if it was there.
fn early_take(p: *mut c_void) -> bool {
    let mut e = EARLY.lock();
    let len = e.len;
    match e.addrs[..len].iter().position(|&a| a == p as u64) {
        Some(i) => {
            e.addrs[i] = e.addrs[len - 1];
            e.len -= 1;
            if e.len == 0 {
                EARLY_LIVE.store(false, Ordering::Release);
            }
            true
        }
        None => false,
    }
}

fn early_contains(p: *mut c_void) -> bool {
    let e = EARLY.lock();
    e.addrs[..e.len].contains(&(p as u64))
}

#[inline(always)]
fn note_glibc_block(p: *mut c_void) {
    if RECORDING.load(Ordering::Relaxed) && !p.is_null() {
        early_add(p);
    }
}

#[inline(always)]
pub fn malloc(size: usize) -> *mut c_void {
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
#[inline(always)]
pub unsafe fn free(p: *mut c_void) {
    if foreign() && !(EARLY_LIVE.load(Ordering::Relaxed) && early_take(p)) {
        // SAFETY: the program's own free, for one of its own blocks.
        return unsafe { core::mem::transmute::<usize, Free>(next(&NEXT.free))(p) };
    }
    if RECORDING.load(Ordering::Relaxed) && !p.is_null() {
        early_take(p);
    }
    // SAFETY: a glibc block.
    unsafe { __libc_free(p) }
}

/// # Safety
/// `p` is null or a live block, as for libc's realloc.
#[inline(always)]
pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if foreign() {
        if !p.is_null() && EARLY_LIVE.load(Ordering::Relaxed) && early_contains(p) {
            // A glibc block moving to the program's allocator: copy, then give it back.
            if size == 0 {
                free(p);
                return core::ptr::null_mut();
            }
            let q = malloc(size);
            if !q.is_null() {
                let old = usable_size(p);
                // SAFETY: both blocks are valid for min(old, size) bytes.
                unsafe {
                    core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, old.min(size))
                };
                free(p);
            }
            return q;
        }
        // SAFETY: the program's own realloc, for one of its own blocks.
        return unsafe { core::mem::transmute::<usize, Realloc>(next(&NEXT.realloc))(p, size) };
    }
    if RECORDING.load(Ordering::Relaxed) && !p.is_null() {
        early_take(p);
    }
    // SAFETY: plain forwarding to glibc.
    let q = unsafe { __libc_realloc(p, size) };
    note_glibc_block(q);
    q
}

/// # Safety
/// `p` is null or a live block, as for libc's malloc_usable_size.
pub unsafe fn usable_size(p: *mut c_void) -> usize {
    let glibc_block = !foreign() || (EARLY_LIVE.load(Ordering::Relaxed) && early_contains(p));
    let f = if foreign() && glibc_block {
        next(&NEXT.glibc_usable)
    } else {
        next(&NEXT.usable)
    };
    let f = if f == 0 {
        let r = crate::tls::as_inside(|| dlsym_next(c"malloc_usable_size"));
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
