//! Allocations and frees made by other libraries' fork handlers while ours hold the library's
//! locks.
//!
//! Our `pthread_atfork` prepare handler takes the library's locks (stack store, interval table,
//! thread registry, module list, own allocator) so that the child finds none of them held by a
//! thread it does not have; our parent and child handlers release them. glibc runs prepare
//! handlers in reverse order of registration and parent/child handlers in order, so a library
//! that registered before us (any library the program links: its constructor runs before the
//! preloaded one's) runs its prepare, parent and child handlers while we hold those locks. A
//! tracked path there would wait on them forever; skipping those calls (as the library did)
//! left a free in a prepare handler as a phantom leak and a malloc in a parent handler as a
//! missed one.
//!
//! So on the forking thread, between our prepare handler and our parent/child handler, the
//! tracked malloc paths write what happened here instead — a fixed array, no lock of ours, no
//! allocation — and our parent/child handler plays it back once the locks are released. The
//! window keeps the thread "inside" the library as before (every other hook there, mappings
//! and dlopen included, still does nothing of ours); only the malloc family's tracked paths,
//! finding themselves refused entry with the window's flag set, write an entry.
//! Allocations get no stack (walking and interning need the held locks): they show as
//! "(no stack)". Each entry keeps the pid it was made in, so the child plays back only what
//! its own child handlers did (what the prepare handlers did happened before the fork and is
//! the parent's, like every other inherited block).
//!
//! Only one thread at a time can be in the window: a second thread's prepare handler waits on
//! the locks the first holds. The array is still behind a lock of its own, taken with
//! `try_lock`, so that a signal handler's hook interrupting a write drops its entry (counted
//! as lost) instead of spinning.

use offheap_core::sync::SpinLock;

/// Entries per fork: handlers that allocate or free more than this in one fork lose the rest
/// (counted as lost records).
const CAPACITY: usize = 1024;

#[derive(Clone, Copy)]
pub enum Op {
    Alloc { addr: u64, size: u64, sampled: bool },
    Free { addr: u64 },
}

#[derive(Clone, Copy)]
struct Entry {
    pid: u32,
    op: Op,
}

struct Log {
    entries: [Entry; CAPACITY],
    len: usize,
    lost: u64,
}

static LOG: SpinLock<Log> = SpinLock::new(Log {
    entries: [Entry {
        pid: 0,
        op: Op::Free { addr: 0 },
    }; CAPACITY],
    len: 0,
    lost: 0,
});

/// Whether this thread is between our prepare handler and our parent/child handler.
#[inline(always)]
pub fn forking() -> bool {
    crate::tls::flags() & c_shim::THREAD_FORKING != 0
}

/// Our prepare handler has taken the locks: from now on this thread's tracked paths write here.
pub fn open() {
    crate::tls::set_flags(c_shim::THREAD_FORKING);
}

/// Writes `op` down for playback (no lock of the library's is taken).
pub fn write(op: Op) {
    // Under a seccomp filter the program installed, make no system call (not even getpid):
    // nothing is written, as before the log existed.
    if crate::process::sandboxed() {
        return;
    }
    let pid = crate::process::own_pid();
    let Some(mut log) = LOG.try_lock() else {
        return; // a signal handler's hook in the middle of a write: lost, rarely
    };
    let len = log.len;
    match log.entries.get_mut(len) {
        Some(e) => {
            *e = Entry { pid, op };
            log.len += 1;
        }
        None => log.lost += 1,
    }
}

/// Our parent/child handler begins: nothing more is written (what its own code allocates, say
/// a thread's TLS when the child starts its dumper, is the library's, not the program's).
pub fn end() {
    crate::tls::clear_flags(c_shim::THREAD_FORKING);
}

/// Our parent/child handler has released the locks and left the library (after `end`):
/// `play(op)` is called for every entry made in this process, in order. Returns how many
/// entries could not be kept.
pub fn play(mut play: impl FnMut(Op)) -> u64 {
    // Played back under the log's lock (no copy of 1,024 entries on a stack that may be
    // small): nothing played back writes here, this thread's flag being clear.
    let Some(mut log) = LOG.try_lock() else {
        return 0;
    };
    let len = log.len;
    if len == 0 && log.lost == 0 {
        return 0; // the common fork: no system call of ours
    }
    let pid = crate::process::own_pid();
    for e in log.entries.iter().take(len).filter(|e| e.pid == pid) {
        play(e.op);
    }
    let lost = log.lost;
    log.len = 0;
    log.lost = 0;
    lost
}
