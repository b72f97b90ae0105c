//! Where an allocation comes from, decided from its symbolized frames.
//!
//! `go-runtime`: Go's own heap arenas and thread creation (the runtime calls libc mmap/malloc
//! itself when cgo is linked: `callCgoMmap`, `x_cgo_thread_start`); not something the user
//! can fix, so it is kept out of the suspects. `cgo`: C called from Go code through
//! `runtime.cgocall`/`_Cfunc_`. `go`: Go code's own memory outside the Go heap, made by raw
//! system calls (`syscall.Mmap`, `unix.Mmap`: the Go probes see them) — a Go stack with a
//! frame of user or library code and no runtime allocation path in it. `c`: everything else
//! (C threads, library internals).

use crate::symbolize::SymFrame;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Origin {
    #[serde(rename = "go-runtime")]
    GoRuntime,
    #[serde(rename = "cgo")]
    Cgo,
    #[serde(rename = "go")]
    Go,
    #[serde(rename = "c")]
    C,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::GoRuntime => "go-runtime",
            Origin::Cgo => "cgo",
            Origin::Go => "go",
            Origin::C => "c",
        }
    }
}

/// Functions through which the Go runtime allocates for itself.
const RUNTIME_PREFIXES: &[&str] = &[
    "runtime.sysAlloc",
    "runtime.sysReserve",
    "runtime.sysMap",
    "runtime.sysHugePage",
    "runtime.sysUsed",
    "runtime.(*mheap)",
    "runtime.mheap",
    "runtime.persistentalloc",
    "runtime.(*pageAlloc)",
    "runtime.(*linearAlloc)",
    "runtime.(*mcache)",
    "runtime.(*mcentral)",
    "runtime.callCgoMmap",
    "runtime.mmap",
    "runtime.newosproc",
    "runtime.newm",
    "runtime.malg",
    "runtime.stackalloc",
];
const RUNTIME_C: &[&str] = &[
    "x_cgo_thread_start",
    "_cgo_thread_start",
    "x_cgo_mmap",
    "x_cgo_munmap",
    "_cgo_sys_thread_start",
    "_cgo_try_pthread_create",
    "x_cgo_init",
];

fn is_runtime_alloc(name: &str) -> bool {
    RUNTIME_PREFIXES.iter().any(|p| name.starts_with(p)) || RUNTIME_C.contains(&name)
}

/// A user's call into C: `runtime.cgocall` (Go ≥1.20 keeps its frame), the generated
/// `_Cfunc_` wrappers and `_cgo_cmalloc` (the only trace left on Go 1.19, where asmcgocall
/// has no frame of its own).
fn is_user_cgo(name: &str) -> bool {
    name == "runtime.cgocall" || name.contains("_Cfunc_") || name.contains("_cgo_cmalloc")
}

/// Go functions that are plumbing, not the user's code.
pub fn is_go_plumbing(name: &str) -> bool {
    name.starts_with("runtime.")
        || name.starts_with("runtime/")
        || name.starts_with("internal/")
        || name.starts_with("syscall.")
        || name.starts_with("_cgo_")
        || name.starts_with("x_cgo")
        || name.starts_with("crosscall")
        || name.contains("._Cfunc_")
        || name.contains("._cgo_")
        || name.starts_with("golang.org/x/sys/")
}

/// A Go-looking symbol name (`pkg.Func`, `pkg.(*T).M`), for frames known only from a symbol
/// table; gcc's clone suffixes (`.part.0`, `.cold`, `.isra.0`) also contain dots.
pub fn looks_like_go(name: &str) -> bool {
    if name.starts_with('_') || name.contains("::") || name.contains(' ') {
        return false;
    }
    const GCC: &[&str] = &[
        ".part.",
        ".cold",
        ".isra.",
        ".constprop.",
        ".lto_priv",
        ".localalias",
    ];
    name.contains('.') && !GCC.iter().any(|s| name.contains(s))
}

/// A Go function's frame. Go names always carry a package (`pkg.Func`); a C function of a
/// cgo preamble sits in a `.go` file too, but its name has no dot.
pub fn is_go_frame(f: &SymFrame) -> bool {
    let name = f.function.as_deref();
    (f.go && name.is_none_or(|n| n.contains('.')))
        || (f.file.is_none() && name.is_some_and(looks_like_go))
}

/// glibc's thread-local storage of a new thread (`_dl_allocate_tls` under `pthread_create`'s
/// `allocate_stack`). glibc caches a joined thread's stack with its TLS and hands both to a
/// later thread, so the stack that allocated such a block says nothing about who keeps it
/// alive: the threads alive do (threadleak: the joined path's blocks kept by leaked threads).
pub fn is_thread_tls(frames: &[&SymFrame]) -> bool {
    frames.iter().any(|f| {
        f.function
            .as_deref()
            .is_some_and(|n| n.starts_with("_dl_allocate_tls") || n == "allocate_dtv")
    })
}

/// The innermost frame that says who allocated decides: the runtime's own allocation paths
/// (`x_cgo_mmap`, `sysMap`, thread creation) even when they run inside a user's cgo call
/// (heap growth during `C.GoString`), or the user's call into C (`_Cfunc_`, `cgocall`).
pub fn classify(frames: &[&SymFrame]) -> Origin {
    for name in frames.iter().filter_map(|f| f.function.as_deref()) {
        if is_runtime_alloc(name) {
            return Origin::GoRuntime;
        }
        // `runtime.asmcgocall` alone proves nothing: the runtime calls C through it too
        // (`newm` → `_cgo_thread_start`).
        if is_user_cgo(name) {
            return Origin::Cgo;
        }
    }
    let go: Vec<&&SymFrame> = frames.iter().filter(|f| is_go_frame(f)).collect();
    if go.is_empty() {
        return Origin::C;
    }
    // Go frames without a user call into C: the user's own raw system call when a frame of
    // user or library code is among them (`main.mapViaSyscall` → `syscall.Mmap`), else the
    // runtime itself (an unlisted path).
    let user = go
        .iter()
        .filter_map(|f| f.function.as_deref())
        .any(|n| !is_go_plumbing(n));
    if user {
        Origin::Go
    } else {
        Origin::GoRuntime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(f: &[SymFrame]) -> Vec<&SymFrame> {
        f.iter().collect()
    }

    fn fr(names: &[&str]) -> Vec<SymFrame> {
        names
            .iter()
            .map(|n| SymFrame {
                function: Some(n.to_string()),
                file: if n.contains('.') {
                    Some("/x/main.go".into())
                } else {
                    Some("x.c".into())
                },
                line: Some(1),
                module: None,
                addr: 1,
                inlined: false,
                note: None,
                go: n.contains('.'),
            })
            .collect()
    }

    /// threadleak's joined path: pthread_create mapped a new stack and allocated its TLS.
    #[test]
    fn a_new_threads_tls_is_recognised_and_a_plain_cgo_malloc_is_not() {
        let tls = fr(&[
            "calloc",
            "allocate_dtv",
            "_dl_allocate_tls",
            "allocate_stack",
            "__pthread_create_2_1",
            "pthread_create",
            "run_joined_worker",
            "runtime.cgocall",
            "main.runJoinedWorker",
        ]);
        assert!(is_thread_tls(&refs(&tls)));
        let plain = fr(&["malloc", "runtime.cgocall", "main._Cfunc_CString", "main.h"]);
        assert!(!is_thread_tls(&refs(&plain)));
    }

    /// A cgo call's allocation is cgo, also from a C function of the cgo preamble.
    #[test]
    fn origins_of_cgo_calls() {
        let cgo = fr(&[
            "malloc",
            "_cgo_abc_Cfunc__Cmalloc",
            "runtime.asmcgocall",
            "runtime.cgocall",
            "main._cgo_cmalloc",
            "main._Cfunc_CString",
            "main.handler",
            "main.main",
            "runtime.main",
            "runtime.goexit",
        ]);
        assert_eq!(classify(&refs(&cgo)), Origin::Cgo);
        // A C function of the cgo preamble lives in main.go but is not the Go caller.
        let mut preamble = fr(&[
            "leaky_c_helper",
            "runtime.asmcgocall",
            "runtime.cgocall",
            "main._Cfunc_leaky_c_helper",
            "main.callCHelper",
            "runtime.goexit",
        ]);
        preamble[0].file = Some("/x/main.go".into());
        preamble[0].go = true;
        assert_eq!(classify(&refs(&preamble)), Origin::Cgo);
    }

    /// Heap growth, thread creation and runtime-only stacks are the Go runtime's own.
    #[test]
    fn origins_of_the_go_runtime() {
        let rt = fr(&[
            "runtime.mmap",
            "runtime.sysReserveOS",
            "runtime.sysReserve",
            "runtime.(*mheap).grow",
            "runtime.systemstack",
            "runtime.mallocgc",
            "main.work",
        ]);
        assert_eq!(classify(&refs(&rt)), Origin::GoRuntime);
        let thr = fr(&[
            "x_cgo_thread_start",
            "runtime.asmcgocall",
            "runtime.newosproc",
        ]);
        assert_eq!(classify(&refs(&thr)), Origin::GoRuntime);
        // Heap growth inside a user's cgo call is still the runtime's own memory.
        let growth_in_cgo = fr(&[
            "x_cgo_mmap",
            "runtime.callCgoMmap",
            "runtime.mmap",
            "runtime.sysMapOS",
            "runtime.(*mheap).grow",
            "runtime.mallocgc",
            "runtime.gostring",
            "main._Cfunc_GoString",
            "main.cRound",
            "runtime.goexit",
        ]);
        assert_eq!(classify(&refs(&growth_in_cgo)), Origin::GoRuntime);
        let runtime_only = fr(&["runtime.sysFault", "runtime.gcStart", "runtime.goexit"]);
        assert_eq!(classify(&refs(&runtime_only)), Origin::GoRuntime);
    }

    /// A raw system call from Go code is Go; a stack of C functions only is C.
    #[test]
    fn origins_of_go_syscalls_and_plain_c() {
        // A raw system call of the user's Go code (the Go probes' rows) is the user's.
        let raw = fr(&[
            "syscall.RawSyscall6",
            "syscall.Syscall6",
            "syscall.mmap",
            "syscall.(*mmapper).Mmap",
            "syscall.Mmap",
            "main.mapViaSyscall",
            "main.main",
            "runtime.main",
            "runtime.goexit",
        ]);
        assert_eq!(classify(&refs(&raw)), Origin::Go);
        let c = fr(&["malloc_wrapper", "worker", "start_thread"]);
        assert_eq!(classify(&refs(&c)), Origin::C);
    }

    /// Go's package-qualified names are told from C names with dots in them.
    #[test]
    fn origins_tell_go_names_from_c_names() {
        assert!(!looks_like_go("foo.part.0"));
        assert!(looks_like_go("net/http.(*conn).serve"));
    }
}
