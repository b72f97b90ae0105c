//! Go probes: raw-syscall mappings with their Go stack, and an exit dump however a Go
//! program ends.
//!
//! Go bypasses libc for its own system calls: `syscall.Mmap`, `x/sys/unix.Mmap/Munmap/Mremap`
//! never reach our mmap hooks, and a Go program leaves through a raw `exit_group` (from
//! `os.Exit`, the return of `main.main`, a fatal panic) or dies of a signal inside the
//! runtime (SIGTERM without `signal.Notify`), so libc's exit path, where C programs get their
//! exit dump, never runs. In the constructor, before any Go code runs, we find three runtime
//! functions in the executable (its symbol table, or `.gopclntab` when stripped; the toolchain
//! version from `.go.buildinfo`) and divert their entry into the library (`entry`).
//!
//! Safety first: a function is patched only when its bytes are exactly the ones known for
//! the toolchains we tested (docs/go-probes-research.md); a `-race` build (whose runtime makes
//! raw calls of its own), unknown bytes, a text the kernel will not make writable (W^X), or
//! OFFHEAP_GO_PROBES=0 leave that probe off, say so once under OFFHEAP_VERBOSE=1, and the
//! dump header records it (`header.go.probes`).

pub mod entry;
pub mod facts;
pub mod patch;

use crate::stack::modules;
use offheap_format::schema::{GoInfo, ProbeState};
use patch::{NearPage, Pattern};

/// The raw system-call entry: its names by Go version, and its two known encodings (go1.19 to
/// go1.26 spell `MOVQ $0, reg` as `48 c7`; go1.27 as `mov r32, imm32`).
const SYSCALL6_NAMES: &[&str] = &[
    "internal/runtime/syscall/linux.Syscall6",
    "internal/runtime/syscall.Syscall6",
    "runtime/internal/syscall.Syscall6",
];
const SYSCALL6_126: Pattern = crate::bytes!(
    0x49 0x89 0xf2 0x48 0x89 0xfa 0x48 0x89 0xce 0x48 0x89 0xdf 0x0f 0x05 0x48 0x3d 0x01 0xf0
    0xff 0xff 0x76 0x15 0x48 0xf7 0xd8 0x48 0x89 0xc1 0x48 0xc7 0xc0 0xff 0xff 0xff 0xff 0x48
    0xc7 0xc3 0x00 0x00 0x00 0x00 0xc3 0x48 0x89 0xd3 0x48 0xc7 0xc1 0x00 0x00 0x00 0x00 0xc3
);
const SYSCALL6_127: Pattern = crate::bytes!(
    0x49 0x89 0xf2 0x48 0x89 0xfa 0x48 0x89 0xce 0x48 0x89 0xdf 0x0f 0x05 0x48 0x3d 0x01 0xf0
    0xff 0xff 0x76 0x13 0x48 0xf7 0xd8 0x48 0x89 0xc1 0x48 0xc7 0xc0 0xff 0xff 0xff 0xff 0xbb
    0x00 0x00 0x00 0x00 0xc3 0x48 0x89 0xd3 0xb9 0x00 0x00 0x00 0x00 0xc3
);
/// `runtime.exit`, the same in every version: `mov 8(%rsp),%edi; mov $231,%eax; syscall; ret`.
const EXIT: Pattern = crate::bytes!(0x8b 0x7c 0x24 0x08 0xb8 0xe7 0x00 0x00 0x00 0x0f 0x05 0xc3);
/// `runtime.dieFromSignal`'s prologue, up to the call of unblocksig (its rel32 varies with
/// layout). The first `n` bytes (whole instructions, position-independent) are displaced.
const DIE_126: (Pattern, usize) = (
    crate::bytes!(0x55 0x48 0x89 0xe5 0x48 0x83 0xec 0x10 0x89 0x44 0x24 0x20 0xe8 _ _ _ _),
    8,
);
const DIE_119: (Pattern, usize) = (
    crate::bytes!(0x48 0x83 0xec 0x18 0x48 0x89 0x6c 0x24 0x10 0x48 0x8d 0x6c 0x24 0x10 0x89 0x44 0x24 0x20 0xe8 _ _ _ _),
    9,
);

/// Bytes of the stack the process's end runs on.
const END_STACK: usize = 256 * 1024;

/// The main executable's file, mapped read-only for the time of `f`.
fn with_executable<R>(f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let fd = offheap_core::sys::raw::open_read_only(b"/proc/self/exe\0")?;
    let mut st: libc::stat = unsafe_zeroed_stat();
    let ok = offheap_core::raw_syscall!(libc::SYS_fstat, fd, &mut st as *mut libc::stat) == 0;
    let len = st.st_size as usize;
    let map = if ok && len > 0 {
        offheap_core::raw_syscall!(
            libc::SYS_mmap,
            0usize,
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0usize
        )
    } else {
        -1
    };
    let _ = offheap_core::raw_syscall!(libc::SYS_close, fd);
    if offheap_core::sys::raw::error(map).is_some() || map < 0 {
        return None;
    }
    // SAFETY: a fresh private read-only mapping of `len` bytes, unmapped below only.
    let bytes = unsafe { core::slice::from_raw_parts(map as *const u8, len) };
    let r = f(bytes);
    let _ = offheap_core::raw_syscall!(libc::SYS_munmap, map, len);
    Some(r)
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: stat is plain data; all-zero is a valid value.
    unsafe { core::mem::zeroed() }
}

/// A function of the executable found at run time, with the pattern it matched.
struct Found {
    addr: u64,
    pattern: Pattern,
}

/// The first function named one of `names` whose code matches one of `patterns`.
fn find(
    exe: &[u8],
    bias: u64,
    text: &[(u64, u64)],
    names: &[&str],
    patterns: &[Pattern],
) -> Result<Found, String> {
    let mut seen = false;
    for name in names {
        for vaddr in offheap_gobin::functions(exe, name) {
            seen = true;
            let addr = vaddr.wrapping_add(bias);
            for &p in patterns {
                let inside = text
                    .iter()
                    .any(|&(lo, hi)| lo <= addr && addr + p.len() as u64 <= hi);
                // SAFETY: the range lies inside the executable's mapped text (checked).
                if inside && unsafe { patch::matches(addr, p) } {
                    return Ok(Found { addr, pattern: p });
                }
            }
        }
    }
    Err(if seen {
        format!(
            "{} has bytes this library does not know",
            names.first().copied().unwrap_or("?")
        )
    } else {
        format!(
            "{} not found in the executable",
            names.first().copied().unwrap_or("?")
        )
    })
}

fn state(name: &str, r: &Result<(), String>) -> ProbeState {
    ProbeState {
        name: name.into(),
        state: if r.is_ok() { "on" } else { "off" }.into(),
        reason: r.as_ref().err().cloned(),
    }
}

/// Finds and patches the probes (constructor, single-threaded, before any Go code).
pub fn install(enabled: bool) {
    let Some(exe) = modules::images_for_dump().into_iter().next() else {
        return;
    };
    let result = with_executable(|bytes| {
        let info = offheap_gobin::buildinfo::from_executable(bytes).ok()?;
        let mut go = GoInfo {
            version: info.go_version.clone(),
            main_module: info.main_module.clone(),
            probes: Default::default(),
        };
        let why_not = if !enabled {
            Some("turned off (OFFHEAP_GO_PROBES=0)".to_string())
        } else if info.race {
            Some("a -race build: its runtime makes raw system calls of its own".to_string())
        } else {
            None
        };
        let results = match why_not {
            Some(w) => [Err(w.clone()), Err(w.clone()), Err(w)],
            None => patch_all(bytes, &exe),
        };
        for (name, r) in ["syscall", "exit", "signal"].iter().zip(results.iter()) {
            if let Err(e) = r {
                crate::verbose!("Go probe {name} is off: {e}");
            }
            go.probes.push(state(name, r));
        }
        Some(go)
    });
    if let Some(Some(go)) = result {
        if go.probes.iter().any(|p| p.state == "on") {
            facts::set_active();
            crate::stack::sidestack::ensure();
        }
        facts::set_go_info(go);
    }
}

/// Patches the three probes; one result each (syscall, exit, signal).
fn patch_all(bytes: &[u8], exe: &modules::Image) -> [Result<(), String>; 3] {
    let text = &exe.ranges;
    let lowest = text.iter().map(|r| r.0).min().unwrap_or(0);
    let highest = text.iter().map(|r| r.1).max().unwrap_or(0);
    let all = |e: &str| [Err(e.to_string()), Err(e.to_string()), Err(e.to_string())];
    let Some(mut near) = NearPage::below(lowest, highest) else {
        return all("no free page within reach of the executable's text");
    };
    let end = offheap_core::sys::map_own(END_STACK);
    if end.is_null() {
        return all("no memory for the end-of-process stack");
    }
    entry::END_STACK.store(
        (end as u64 + END_STACK as u64) & !15,
        core::sync::atomic::Ordering::Release,
    );
    let sys = find(
        bytes,
        exe.base,
        text,
        SYSCALL6_NAMES,
        &[SYSCALL6_126, SYSCALL6_127],
    )
    .and_then(|f| {
        divert(
            &mut near,
            f.addr,
            entry::offheap_go_syscall6 as *const () as u64,
        )
    });
    let exit = find(bytes, exe.base, text, &["runtime.exit"], &[EXIT]).and_then(|f| {
        divert(
            &mut near,
            f.addr,
            entry::offheap_go_exit as *const () as u64,
        )
    });
    let die = find(
        bytes,
        exe.base,
        text,
        &["runtime.dieFromSignal"],
        &[DIE_126.0, DIE_119.0],
    )
    .and_then(|f| hook_and_resume(&mut near, &f));
    if !near.seal() {
        return all("the near page cannot be made executable");
    }
    // The jumps go in only once the page they lead to is executable.
    let out = [sys, exit, die].map(|r| {
        r.and_then(|(at, to)| {
            patch::jump(at, to).map_err(str::to_string)?;
            Ok(at & !(offheap_core::sys::PAGE as u64 - 1))
        })
    });
    facts::set_patched_pages(&out.each_ref().map(|r| r.as_ref().map_or(0, |&p| p)));
    out.map(|r| r.map(|_| ()))
}

/// A jump written later: (at, to).
type Pending = (u64, u64);

/// `at` jumps (through the near page) to `handler`, never to come back.
fn divert(near: &mut NearPage, at: u64, handler: u64) -> Result<Pending, String> {
    let stub = near.push_jump(handler).ok_or("the near page is full")?;
    Ok((at, stub))
}

/// dieFromSignal runs our handler first, then its own prologue (displaced into the near
/// page) and the rest of itself.
fn hook_and_resume(near: &mut NearPage, f: &Found) -> Result<Pending, String> {
    let displaced = if f.pattern.len() == DIE_119.0.len() {
        DIE_119.1
    } else {
        DIE_126.1
    };
    // SAFETY: the pattern just matched these bytes in the mapped text.
    let prologue = unsafe { core::slice::from_raw_parts(f.addr as usize as *const u8, displaced) };
    let resume = near
        .push_then_jump(prologue, f.addr + displaced as u64)
        .ok_or("the near page is full")?;
    entry::GO_DIE_RESUME.store(resume, core::sync::atomic::Ordering::Release);
    divert(near, f.addr, entry::offheap_go_die as *const () as u64)
}
