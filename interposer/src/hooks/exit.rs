//! How a C program ends without libc's `exit`: `_exit`/`_Exit`, and fatal signals.
//!
//! `exit()` runs our ELF destructor (the exit dump); `_exit` and `_Exit` skip destructors, so
//! they are interposed: the exit dump first, then the same `exit_group`. A program killed by
//! SIGSEGV, SIGBUS, SIGABRT, SIGFPE or SIGILL without a handler of its own gets a best-effort
//! dump too: at start-up, for each of those still at SIG_DFL, the library installs a handler
//! that writes the dump (from its own memory: the program's heap may be what is broken), puts
//! SIG_DFL back and lets the signal take its default action, so the process dies of the same
//! signal with the same core.
//!
//! A handler the program installs always wins (it replaces ours in the kernel), and a program
//! asking for a disposition (`sigaction(sig, NULL, &old)`, `signal`) sees what it set itself,
//! or SIG_DFL — never ours. `sigaction` and `signal` are interposed for that.

use core::ffi::c_int;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Exit dump, then the process's end, exactly as glibc's `_exit` does it.
fn end(status: c_int) -> ! {
    crate::dump::exit::exit_dump("_exit", Some(status as i64), None);
    loop {
        let _ = offheap_core::raw_syscall!(libc::SYS_exit_group, status);
    }
}

/// # Safety
/// As for libc's `_exit`.
#[no_mangle]
pub unsafe extern "C" fn _exit(status: c_int) -> ! {
    end(status)
}

/// # Safety
/// As for libc's `_Exit`.
#[no_mangle]
pub unsafe extern "C" fn _Exit(status: c_int) -> ! {
    end(status)
}

const CRASH: [c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGFPE,
    libc::SIGILL,
];

/// Per crash signal: our handler is the one in the kernel (the program set none), and the
/// program has set a disposition of its own (what it asks back is then the kernel's answer).
struct Slot {
    ours: AtomicBool,
    program_set: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    ours: AtomicBool::new(false),
    program_set: AtomicBool::new(false),
};
static SLOTS: [Slot; 5] = [FREE; 5];

fn slot(sig: c_int) -> Option<&'static Slot> {
    CRASH
        .iter()
        .position(|&s| s == sig)
        .and_then(|i| SLOTS.get(i))
}

/// The kernel's sigaction, straight (libc's adds nothing we need and is interposed here).
fn kernel_sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    REAL_SIGACTION.get().map_or(-1, |f| {
        // SAFETY: libc's sigaction with the caller's pointers.
        unsafe { f(sig, act, old) }
    })
}

type SigactionFn =
    unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;

/// A libc function resolved once (RTLD_NEXT).
struct Real(AtomicUsize, &'static core::ffi::CStr);

impl Real {
    fn get(&self) -> Option<SigactionFn> {
        let mut f = self.0.load(Ordering::Acquire);
        if f == 0 {
            f = crate::tls::as_inside(|| {
                // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds libc's definition.
                unsafe { libc::dlsym(libc::RTLD_NEXT, self.1.as_ptr()) as usize }
            });
            self.0.store(f, Ordering::Release);
        }
        // SAFETY: f is libc's sigaction (or 0).
        (f != 0).then(|| unsafe { core::mem::transmute::<usize, SigactionFn>(f) })
    }
}

static REAL_SIGACTION: Real = Real(AtomicUsize::new(0), c"sigaction");

extern "C" fn on_crash(sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let _errno = offheap_core::sys::ErrnoGuard::save();
    // A crash inside our own code holds who knows which of our locks: no dump then.
    if !crate::tls::is_inside() {
        crate::dump::exit::exit_dump("signal", None, Some(sig as i64));
    }
    // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
    let dfl: libc::sigaction = unsafe { core::mem::zeroed() };
    kernel_sigaction(sig, &dfl, core::ptr::null_mut());
    if let Some(s) = slot(sig) {
        s.ours.store(false, Ordering::Relaxed);
    }
    // A fault the kernel raised happens again when we return, now with the default action
    // (and a core that shows the faulting instruction); a signal someone sent is sent again.
    // SAFETY: info is the kernel's siginfo for this delivery.
    let code = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_code }
    };
    if code <= 0 {
        let pid = offheap_core::raw_syscall!(libc::SYS_getpid);
        let tid = offheap_core::raw_syscall!(libc::SYS_gettid);
        let _ = offheap_core::raw_syscall!(libc::SYS_tgkill, pid, tid, sig);
    }
}

/// Installs the crash handler for each crash signal still at SIG_DFL (constructor).
pub fn install() {
    for (i, &sig) in CRASH.iter().enumerate() {
        // SAFETY: sigaction is plain data; all-zero is valid.
        let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
        if kernel_sigaction(sig, core::ptr::null(), &mut old) != 0
            || old.sa_sigaction != libc::SIG_DFL
        {
            continue;
        }
        // SAFETY: as above.
        let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
        act.sa_sigaction = on_crash as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        if kernel_sigaction(sig, &act, core::ptr::null_mut()) == 0 {
            if let Some(s) = SLOTS.get(i) {
                s.ours.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// What a program that never set `sig` sees: SIG_DFL.
fn report_default(old: *mut libc::sigaction) {
    if !old.is_null() {
        // SAFETY: the caller passed a valid out-pointer, as sigaction requires; zeroed is
        // SIG_DFL, no flags, an empty mask.
        unsafe { *old = core::mem::zeroed() };
    }
}

/// # Safety
/// As for libc's sigaction.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    let Some(s) = slot(sig) else {
        return kernel_sigaction(sig, act, old);
    };
    if s.program_set.load(Ordering::Relaxed) || !s.ours.load(Ordering::Relaxed) {
        // The program's own disposition is in the kernel: it sees and changes that.
        if !act.is_null() {
            s.program_set.store(true, Ordering::Relaxed);
            s.ours.store(false, Ordering::Relaxed);
        }
        return kernel_sigaction(sig, act, old);
    }
    // Ours is in the kernel: the program sees SIG_DFL, and its handler (if any) replaces ours.
    if act.is_null() {
        report_default(old);
        return 0;
    }
    let rc = kernel_sigaction(sig, act, core::ptr::null_mut());
    if rc == 0 {
        report_default(old);
        s.program_set.store(true, Ordering::Relaxed);
        s.ours.store(false, Ordering::Relaxed);
    }
    rc
}

/// `signal()` through our `sigaction`, with BSD semantics as glibc's (SA_RESTART).
///
/// # Safety
/// As for libc's signal.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: sigaction is plain data; all-zero is valid.
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = libc::SA_RESTART;
    // SAFETY: a valid set to fill.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: our own sigaction with valid pointers.
    if unsafe { sigaction(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}
