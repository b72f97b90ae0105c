//! Where the patched Go functions land: three assembly entries and the Rust behind them.
//!
//! Go code calls these with Go's calling conventions, on goroutine stacks that are small and
//! may move, with `R14` holding the current goroutine and `X15` required to be zero when
//! control goes back to Go. So the entries: do only register work on the Go stack; switch to
//! a stack of ours before any Rust runs; keep `RSP`, `RBP` and `R14` (the System V callee
//! saves `RBX`, `RBP`, `R12`–`R15`, so a C call keeps `R14`); zero `X15` before returning.
//!
//! - `offheap_go_syscall6`: replaces the Go runtime's raw system-call entry (ABIInternal: AX
//!   = number, BX CX DI SI R8 R9 = arguments; returns AX = r1, BX = r2, CX = errno). Every
//!   call but mmap, munmap and mremap is executed right here, exactly as the original does
//!   (the same instructions); those three go to `go_mapping` on the thread's side stack.
//! - `offheap_go_exit`: replaces `runtime.exit` (ABI0, the status at 8(%rsp)): writes the exit
//!   dump, then exits with the same status.
//! - `offheap_go_die`: runs at the entry of `runtime.dieFromSignal` (ABIInternal, the signal
//!   in EAX) and then lets it go on (the displaced prologue and a jump back are in the near
//!   page, at `GO_DIE_RESUME`): the exit dump is written before the signal kills the process.
//!
//! The exit and death paths run on one stack reserved for the end of the process, taken by
//! whichever thread gets there first (a process ends once; a second thread, or the nested
//! second call of dieFromSignal, goes on without a dump).

use crate::state;
use crate::track::mapping;
use core::sync::atomic::{AtomicU64, Ordering};
use offheap_core::sys::raw;
use offheap_format::Via;

/// Where `offheap_go_die` continues: the displaced prologue of dieFromSignal, then a jump back.
pub static GO_DIE_RESUME: AtomicU64 = AtomicU64::new(0);
/// Top of the stack the process's end runs on (0 until the probes are installed).
pub static END_STACK: AtomicU64 = AtomicU64::new(0);
/// Set by the first thread that takes the end stack.
pub static END_TAKEN: AtomicU64 = AtomicU64::new(0);

/// A raw system call as the entry saw it: number and six arguments, the Go caller's stack and
/// frame pointers; on return r1, r2, errno in the first three slots.
#[repr(C)]
pub struct GoCall {
    pub regs: [u64; 7],
    pub sp: u64,
    pub bp: u64,
    pub saved_sp: u64,
}

core::arch::global_asm!(
    ".pushsection .text.offheap_go,\"ax\",@progbits",
    ".globl offheap_go_syscall6",
    ".hidden offheap_go_syscall6",
    ".p2align 4",
    "offheap_go_syscall6:",
    "    cmp rax, 9",
    "    je 2f",
    "    cmp rax, 11",
    "    je 2f",
    "    cmp rax, 25",
    "    je 2f",
    // Everything else: the original function, instruction for instruction.
    "1:  mov r10, rsi",
    "    mov rdx, rdi",
    "    mov rsi, rcx",
    "    mov rdi, rbx",
    "    syscall",
    "    cmp rax, -4095",
    "    jbe 3f",
    "    neg rax",
    "    mov rcx, rax",
    "    mov rax, -1",
    "    mov ebx, 0",
    "    ret",
    "3:  mov rbx, rdx",
    "    mov ecx, 0",
    "    ret",
    // mmap, munmap, mremap: on the thread's side stack, unless our own code is running on
    // this thread (never recurse) or it has no side stack (then untracked, as above).
    "2:  mov r11, qword ptr fs:[0]",
    "    add r11, qword ptr [rip + offheap_tls@GOTTPOFF]",
    "    cmp dword ptr [r11 + {depth}], 0",
    "    jne 1b",
    "    mov r11, qword ptr [r11 + {side}]",
    "    test r11, r11",
    "    jz 1b",
    "    mov r10, rsp",
    "    mov rsp, r11",
    "    sub rsp, 80",
    "    mov [rsp + 0], rax",
    "    mov [rsp + 8], rbx",
    "    mov [rsp + 16], rcx",
    "    mov [rsp + 24], rdi",
    "    mov [rsp + 32], rsi",
    "    mov [rsp + 40], r8",
    "    mov [rsp + 48], r9",
    "    mov [rsp + 56], r10",
    "    mov [rsp + 64], rbp",
    "    mov [rsp + 72], r10",
    "    mov rdi, rsp",
    "    call {mapping}",
    "    mov rax, [rsp + 0]",
    "    mov rbx, [rsp + 8]",
    "    mov rcx, [rsp + 16]",
    "    mov rsp, [rsp + 72]",
    "    xorps xmm15, xmm15",
    "    ret",
    //
    ".globl offheap_go_exit",
    ".hidden offheap_go_exit",
    ".p2align 4",
    "offheap_go_exit:",
    "    mov ebx, dword ptr [rsp + 8]",
    "    mov r11, qword ptr fs:[0]",
    "    add r11, qword ptr [rip + offheap_tls@GOTTPOFF]",
    "    cmp dword ptr [r11 + {depth}], 0",
    "    jne 5f",
    "    mov r11, qword ptr [rip + {end_stack}]",
    "    test r11, r11",
    "    jz 5f",
    "    xor eax, eax",
    "    mov ecx, 1",
    "    lock cmpxchg qword ptr [rip + {end_taken}], rcx",
    "    jne 5f",
    "    mov rsp, r11",
    "    mov edi, ebx",
    "    call {exiting}",
    "5:  mov edi, ebx",
    "    mov eax, 231",
    "    syscall",
    "    jmp 5b",
    //
    ".globl offheap_go_die",
    ".hidden offheap_go_die",
    ".p2align 4",
    "offheap_go_die:",
    "    mov r11, qword ptr fs:[0]",
    "    add r11, qword ptr [rip + offheap_tls@GOTTPOFF]",
    "    cmp dword ptr [r11 + {depth}], 0",
    "    jne 7f",
    "    mov r11, qword ptr [rip + {end_stack}]",
    "    test r11, r11",
    "    jz 7f",
    "    mov r12, rax",
    "    xor eax, eax",
    "    mov ecx, 1",
    "    lock cmpxchg qword ptr [rip + {end_taken}], rcx",
    "    mov rax, r12",
    "    jne 7f",
    "    mov r13, rsp",
    "    mov rsp, r11",
    "    mov edi, r12d",
    "    call {dying}",
    "    mov rsp, r13",
    "    mov rax, r12",
    "    xorps xmm15, xmm15",
    "7:  jmp qword ptr [rip + {die_resume}]",
    ".popsection",
    depth = const core::mem::offset_of!(c_shim::ThreadState, depth),
    side = const core::mem::offset_of!(c_shim::ThreadState, side_stack),
    mapping = sym go_mapping,
    exiting = sym go_exiting,
    dying = sym go_dying,
    end_stack = sym END_STACK,
    end_taken = sym END_TAKEN,
    die_resume = sym GO_DIE_RESUME,
);

extern "C" {
    pub fn offheap_go_syscall6();
    pub fn offheap_go_exit();
    pub fn offheap_go_die();
}

/// mmap, munmap or mremap made by Go code: made and recorded here, with the Go stack.
extern "C" fn go_mapping(c: &mut GoCall) {
    let [nr, a1, a2, a3, a4, a5, a6] = c.regs;
    let birth = || crate::track::go_birth(c.sp, c.bp);
    let r = match nr as i64 {
        libc::SYS_mmap => mapping::map(
            Via::Syscall,
            birth(),
            a1 as usize,
            a2 as usize,
            a3 as i32,
            a4 as i32,
            a5 as i32,
            a6 as i64,
        ),
        libc::SYS_munmap => mapping::unmap(a1 as usize, a2 as usize),
        libc::SYS_mremap => mapping::remap(
            Via::Syscall,
            birth(),
            a1 as usize,
            a2 as usize,
            a3 as usize,
            a4 as i32,
            a5 as usize,
        ),
        _ => raw::syscall6(
            nr as i64,
            [
                a1 as usize,
                a2 as usize,
                a3 as usize,
                a4 as usize,
                a5 as usize,
                a6 as usize,
            ],
        ),
    };
    // The original's results: r1 = -1, r2 = 0, errno on failure; r1, r2 = rdx (the third
    // argument, which the kernel leaves in place), errno 0 on success.
    c.regs[..3].copy_from_slice(&match raw::error(r) {
        Some(e) => [u64::MAX, 0, e as u64],
        None => [r as u64, a3, 0],
    });
}

/// `runtime.exit(code)`: the exit dump, on the end stack.
extern "C" fn go_exiting(code: i32) {
    if state::get().is_some() {
        crate::dump::exit::exit_dump("go-exit", Some(code as i64), None);
    }
}

/// `runtime.dieFromSignal(sig)`: the exit dump before the signal's default action.
extern "C" fn go_dying(sig: i32) {
    if state::get().is_some() {
        crate::dump::exit::exit_dump("signal", None, Some(sig as i64));
    }
}

/// Whether the end stack was taken (a probe wrote, or is writing, the exit dump).
pub fn end_taken() -> bool {
    END_TAKEN.load(Ordering::Relaxed) != 0
}
