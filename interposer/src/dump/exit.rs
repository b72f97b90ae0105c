//! The exit dump: written by the thread that ends the process, however it ends (`exit` and
//! return from main through our destructor, `_exit`/`_Exit`, a fatal signal without a
//! program handler, the Go runtime's own exit and death by signal through the probes), or by
//! our resident thread when every program thread left by the raw exit system call.

use crate::process;
use crate::state;
use crate::tls;
use offheap_format::schema::ExitInfo;
use std::sync::atomic::Ordering;

/// Pool room the exit dump's first small allocations need.
const SMALL_ROOM: usize = 64 * 1024;

/// The process is ending (`path`: how; `status` or `signal`): write the exit dump from the
/// exiting thread, unless there is nothing of ours to write or it must not be written here.
pub fn exit_dump(path: &str, status: Option<i64>, signal: Option<i64>) {
    let Some(st) = state::get() else {
        process::set_exiting();
        return;
    };
    // Under a seccomp filter the program installed, make no system call at all (even the
    // getpid below).
    if process::sandboxed() {
        process::set_exiting();
        return;
    }
    // A child created without fork handlers: the tables are not its own, and a vfork child
    // shares them — and our flags — with its parent, which must go on as before: marking
    // "exiting" here would stop the parent's dumper.
    if process::orphaned() {
        return;
    }
    process::set_exiting();
    // Before anything that may reach a cancellation point (pthread_join, the dump's files).
    let _no_cancel = super::NoCancellation::new();
    let born = st.child_born_ms.load(Ordering::Relaxed);
    if born != u64::MAX && st.uptime_ms().saturating_sub(born) < st.config.child_min_ms {
        return;
    }
    crate::diag::flush_held();
    crate::verbose!("writing the exit dump ({path})");
    // The dump's first allocations (this one, the series' bookkeeping) come before its own
    // room check: a host out of memory or mappings must not meet Rust's allocation-failure
    // handler here either.
    if !crate::OWN_ALLOCATOR.ensure_room(SMALL_ROOM) {
        return;
    }
    let info = ExitInfo {
        path: path.to_string(),
        status,
        signal,
    };
    // The dump's descriptors live in a table of their own, so none of the program's other
    // threads can see, close or reuse them. After `exit` the program's code still runs on
    // this thread (later destructors), so with program threads alive the dump gets a thread
    // of its own (`exit_dump_on_own_thread`); elsewhere this thread takes the table: nothing
    // of the program runs on it after us (`_exit`, a fatal signal, Go's exit), or no other
    // thread shares it. Not when the last thread's end is what exits (our registry is empty
    // then): glibc's thread count is 0, and a thread of ours ending would call exit(0) again
    // and end the process before the program's stdio is flushed. The exiting thread may have
    // a tiny stack (exit from a PTHREAD_STACK_MIN thread): the dump runs on our own.
    tls::as_inside(|| {
        if path == "exit" && st.threads.live_count() > 0 {
            if super::dumper::exit_dump_on_own_thread(info.clone()) {
                return;
            }
            // No thread: the shared table, rather than none of the program's own.
        } else {
            super::dumper::private_descriptors();
        }
        crate::stack::sidestack::run(|| super::dumper::final_dump(info));
    });
    // A line the exit dump itself had to say (this thread may have no stderr of its own
    // now: its table is private, but a copy of the program's, so fd 2 is still there).
    crate::diag::flush_held();
}
