//! A stack of the thread's own for the deep parts of our work.
//!
//! Evaluating CFI on a rule-cache miss (gimli's unwind table rows), framehop, building the
//! per-thread caches and writing the exit dump need more stack than a thread created with
//! PTHREAD_STACK_MIN or a 16 KiB signal stack has left, and Go's goroutine stacks (the Go
//! probes) must never carry our frames: those calls run on a side stack. Each thread gets its
//! own, mapped the first time it needs one (256 KiB reserved, a guard page below; only the
//! pages touched become resident) and given back when the thread exits (to `recycle`'s few
//! idle ones, else unmapped), so no lock is ever taken to use it and a thread stopped in the
//! middle of a walk holds nothing up.

use crate::tls;

const SIZE: usize = 256 * 1024;
const GUARD: usize = offheap_core::sys::PAGE;

/// The calling thread's side stack (its top), mapped on first use; None when it cannot be
/// mapped (out of memory), and the call then runs in place.
fn own_stack() -> Option<usize> {
    let top = tls::side_stack();
    if top != 0 {
        return Some(top);
    }
    let base = match super::recycle::SIDE_STACKS.take() {
        // An exited thread's, guard page and all.
        Some(idle) => idle as *mut u8,
        None => {
            let base = offheap_core::sys::map_own(SIZE + GUARD);
            if base.is_null() {
                return None;
            }
            // The first page of our own fresh mapping becomes the guard; a raw system call,
            // so the interval hooks do not see it.
            let _ = offheap_core::raw_syscall!(
                libc::SYS_mprotect,
                base as usize,
                GUARD,
                libc::PROT_NONE
            );
            base
        }
    };
    let top = (base as usize + SIZE + GUARD) & !15;
    tls::set_side_stack(top);
    crate::process::thread_needs_cleanup();
    Some(top)
}

/// Maps the calling thread's side stack now (threads of a Go program with probes: the probe
/// entries switch to it and cannot map one from a Go stack).
pub fn ensure() {
    let _ = own_stack();
}

/// Releases the calling thread's side stack (thread exit; not while running on it).
pub fn release() {
    let top = tls::side_stack();
    if top != 0 && !on_side_stack(top) {
        tls::set_side_stack(0);
        let base = top - SIZE - GUARD;
        if !super::recycle::SIDE_STACKS.give(base) {
            offheap_core::sys::unmap_own(base as *mut u8, SIZE + GUARD);
        }
    }
}

fn current_sp() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer; no memory is touched.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

fn on_side_stack(top: usize) -> bool {
    let sp = current_sp();
    top - SIZE <= sp && sp <= top
}

/// The rule cache's deep calls (gimli on a miss) run here.
pub struct SideStack;

impl offheap_core::stack::rules::DeepCall for SideStack {
    fn run<R>(f: impl FnOnce() -> R) -> R {
        run(f)
    }
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

/// Run `f` on this thread's side stack (in place when already on it, or when it cannot be
/// mapped).
pub fn run<F: FnOnce() -> R, R>(f: F) -> R {
    let Some(top) = own_stack() else {
        return f();
    };
    if on_side_stack(top) {
        return f();
    }
    let mut call = Call {
        f: Some(f),
        result: None,
    };
    let ptr: *mut Call<F, R> = &mut call;
    // SAFETY: switches rsp to the top of this thread's own 16-byte aligned side stack, calls
    // the trampoline with the Call pointer in rdi, and restores rsp from r12, which the
    // callee preserves (callee-saved in the C ABI). Only this thread uses this stack, and it
    // is not on it now (checked above), so nothing of ours lives where the call runs.
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
