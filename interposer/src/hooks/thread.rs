//! `pthread_create`: who starts threads, and what every thread's stack is.
//!
//! Each thread the program creates starts in our trampoline, which knows (from the creator)
//! the stack it runs on, so stack walks on it never need a system call to prove their reads
//! safe; it registers the thread with its creating stack (a thread leak names its creator
//! like an allocation leak does); and it inherits the creator's sandbox state. The first
//! thread the program starts also wakes the library's own dumper thread (a single-threaded
//! program has none: see `lifecycle`).

use crate::stack::bounds;
use crate::state;
use crate::tls;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};
use offheap_core::threads::ThreadInfo;

type StartRoutine = extern "C" fn(*mut c_void) -> *mut c_void;
type PthreadCreate = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    StartRoutine,
    *mut c_void,
) -> c_int;

static REAL: AtomicUsize = AtomicUsize::new(0);

extern "C" {
    /// glibc ≥ 2.18; not in the libc crate.
    fn pthread_getattr_default_np(attr: *mut libc::pthread_attr_t) -> c_int;
}

/// What the trampoline needs: the program's routine and what the creator knew.
struct Start {
    routine: StartRoutine,
    arg: *mut c_void,
    creator: u32,
    /// A stack the program gave (`pthread_attr_setstack`), else the size glibc will map.
    given_stack: Option<(usize, usize)>,
    stacksize: usize,
    flags: u32,
}

fn real() -> Option<PthreadCreate> {
    let mut f = REAL.load(Ordering::Acquire);
    if f == 0 {
        f = tls::as_inside(|| {
            // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds libc's definition.
            unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_create".as_ptr()) as usize }
        });
        REAL.store(f, Ordering::Release);
    }
    // SAFETY: f is libc's pthread_create (or 0).
    (f != 0).then(|| unsafe { core::mem::transmute::<usize, PthreadCreate>(f) })
}

/// Resolve the real function early (constructor), while nothing else is going on.
pub fn init() {
    let _ = real();
}

/// The stack the new thread will run on, from its attributes (plain reads of the attribute
/// object; no system call).
fn stack_of(attr: *const libc::pthread_attr_t) -> (Option<(usize, usize)>, usize) {
    // SAFETY: pthread_attr_t is plain data; zeroed is a valid out-value for the getters.
    let mut own: libc::pthread_attr_t = unsafe { core::mem::zeroed() };
    let a: *const libc::pthread_attr_t = if attr.is_null() {
        // SAFETY: fills `own` with the process default attributes.
        if unsafe { pthread_getattr_default_np(&mut own) } != 0 {
            return (None, 0);
        }
        &own
    } else {
        attr
    };
    let mut addr: *mut c_void = core::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: `a` is a valid attribute object (the caller's, or the default just read).
    // Without a stack set, glibc reports "address" 0 − size (its top is 0): no stack given.
    let given = unsafe { libc::pthread_attr_getstack(a, &mut addr, &mut size) } == 0
        && !addr.is_null()
        && (addr as usize)
            .checked_add(size)
            .is_some_and(|top| top != 0);
    let result = if given {
        (Some((addr as usize, addr as usize + size)), size)
    } else {
        let mut s: usize = 0;
        // SAFETY: as above.
        unsafe { libc::pthread_attr_getstacksize(a, &mut s) };
        (None, s)
    };
    if attr.is_null() {
        // SAFETY: `own` was initialised by pthread_getattr_default_np.
        unsafe { libc::pthread_attr_destroy(&mut own) };
    }
    result
}

/// # Safety
/// As for libc's pthread_create.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let Some(real) = real() else {
        return libc::EAGAIN;
    };
    // Our own threads, and threads started before tracking, go straight through.
    if tls::is_inside() || state::get().is_none() {
        // SAFETY: forwarded contract.
        return unsafe { real(thread, attr, routine, arg) };
    }
    let creator = crate::track::creator_stack();
    let (given_stack, stacksize) = tls::as_inside(|| stack_of(attr));
    let start = tls::as_inside(|| {
        Box::new(Start {
            routine,
            arg,
            creator,
            given_stack,
            stacksize,
            flags: tls::flags() & c_shim::THREAD_SANDBOXED,
        })
    });
    let p = Box::into_raw(start);
    if let Some(st) = state::get() {
        st.threads.starting(creator, st.uptime_ms());
    }
    // SAFETY: forwarded contract, with our trampoline owning `p` once the thread runs.
    let rc = unsafe { real(thread, attr, trampoline, p as *mut c_void) };
    if rc != 0 {
        if let Some(st) = state::get() {
            st.threads.not_started(creator);
        }
        // SAFETY: the thread was not created, so nobody else owns `p`.
        tls::as_inside(|| drop(unsafe { Box::from_raw(p) }));
    } else {
        crate::dump::dumper::program_thread_started();
    }
    rc
}

extern "C" fn trampoline(p: *mut c_void) -> *mut c_void {
    // SAFETY: `p` is the Start that pthread_create handed this thread, owned by it alone.
    let start = tls::as_inside(|| unsafe { Box::from_raw(p as *mut Start) });
    tls::set_flags(start.flags);
    let (lo, hi) = match start.given_stack {
        Some(r) => r,
        None => bounds::pthread_stack(bounds::thread_pointer(), start.stacksize),
    };
    tls::set_stack_bounds(lo, hi);
    if crate::probes::facts::active() {
        tls::as_inside(crate::stack::sidestack::ensure);
    }
    if let Some(st) = state::get() {
        let slot = st.threads.register(ThreadInfo {
            creator: start.creator,
            start_ms: st.uptime_ms() as u32,
            stack: (lo as u64, hi as u64),
        });
        crate::tls::set_thread_slot(slot);
        crate::process::thread_needs_cleanup();
    }
    let (routine, arg) = (start.routine, start.arg);
    tls::as_inside(|| drop(start));
    routine(arg)
}

type PthreadExit = unsafe extern "C" fn(*mut c_void) -> !;

static REAL_EXIT: AtomicUsize = AtomicUsize::new(0);

/// The main thread leaving with pthread_exit ends the process only when the last other
/// thread goes: the dumper must then not be the one keeping it alive.
///
/// # Safety
/// As for libc's pthread_exit.
#[no_mangle]
pub unsafe extern "C" fn pthread_exit(retval: *mut c_void) -> ! {
    if tls::flags() & c_shim::THREAD_MAIN != 0 {
        crate::dump::dumper::main_thread_exiting();
    }
    let mut f = REAL_EXIT.load(Ordering::Acquire);
    if f == 0 {
        f = tls::as_inside(|| {
            // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds libc's definition.
            unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_exit".as_ptr()) as usize }
        });
        REAL_EXIT.store(f, Ordering::Release);
    }
    if f == 0 {
        // No libc pthread_exit to forward to (never happens with glibc): end the thread.
        loop {
            let _ = offheap_core::raw_syscall!(libc::SYS_exit, 0);
        }
    }
    // SAFETY: libc's pthread_exit with the caller's argument.
    unsafe { core::mem::transmute::<usize, PthreadExit>(f)(retval) }
}
