//! A dedicated stack for the deep parts of a walk.
//!
//! Evaluating CFI on a rule-cache miss (gimli's unwind table rows) or in framehop needs more
//! stack than a thread created with PTHREAD_STACK_MIN or a 16 KiB signal stack has left: a
//! hook must never overflow its caller's stack. Those rare, deep calls run on one 256 KiB
//! stack of our own (with a guard page), taken under a lock; the common walk stays on the
//! caller's stack.

use core::sync::atomic::{AtomicUsize, Ordering};
use offheap_core::sync::SpinLock;

const SIZE: usize = 256 * 1024;
const GUARD: usize = offheap_core::sys::PAGE;

static TOP: AtomicUsize = AtomicUsize::new(0);
static LOCK: SpinLock<()> = SpinLock::new(());

/// Map the stack (constructor). Without it, `run` calls in place.
pub fn init() {
    let base = offheap_core::sys::map_own(SIZE + GUARD);
    if base.is_null() {
        return;
    }
    // The first page of our own fresh mapping becomes the guard; a raw system call, so the
    // interval hooks do not see it.
    let _ = offheap_core::raw_syscall!(libc::SYS_mprotect, base as usize, GUARD, libc::PROT_NONE);
    TOP.store((base as usize + SIZE + GUARD) & !15, Ordering::Release);
}

/// Hold the stack across fork (a child must not inherit it taken).
pub fn fork_prepare() {
    LOCK.lock_forever();
}

/// # Safety
/// Pairs with `fork_prepare`.
pub unsafe fn fork_release() {
    // SAFETY: forwarded contract.
    unsafe { LOCK.force_unlock() };
}

struct Call<F, R> {
    f: Option<F>,
    result: Option<R>,
}

extern "C" fn trampoline<F: FnOnce() -> R, R>(call: *mut Call<F, R>) {
    // SAFETY: `run` passes a pointer to its own live Call for the duration of this call.
    let call = unsafe { &mut *call };
    if let Some(f) = call.f.take() {
        call.result = Some(f());
    }
}

/// The rule cache's deep calls (gimli on a miss) run here.
pub struct SideStack;

impl offheap_core::stack::rules::DeepCall for SideStack {
    fn run<R>(f: impl FnOnce() -> R) -> R {
        run(f)
    }
}

/// Run `f` on the side stack (serialised between threads), or in place if it was never mapped.
pub fn run<F: FnOnce() -> R, R>(f: F) -> R {
    let top = TOP.load(Ordering::Acquire);
    if top == 0 {
        return f();
    }
    let _only_one = LOCK.lock();
    let mut call = Call {
        f: Some(f),
        result: None,
    };
    let ptr: *mut Call<F, R> = &mut call;
    // SAFETY: switches rsp to the top of our own 16-byte aligned stack, calls the trampoline
    // with the Call pointer in rdi, and restores rsp from r12, which the callee preserves (it
    // is callee-saved in the C ABI). The lock guarantees no other thread is on that stack; a
    // re-entrant use on this thread cannot happen because hooks pass through while busy.
    unsafe {
        core::arch::asm!(
            "mov r12, rsp",
            "mov rsp, {top}",
            "call {tramp}",
            "mov rsp, r12",
            top = in(reg) top,
            tramp = in(reg) trampoline::<F, R> as *const (),
            in("rdi") ptr,
            out("r12") _,
            clobber_abi("C"),
        );
    }
    // SAFETY: the asm block calls the trampoline unconditionally, and the trampoline always
    // stores the result (f cannot unwind: panic=abort), so it is Some here.
    unsafe { call.result.unwrap_unchecked() }
}
