//! Mappings: mmap, munmap, mremap and mprotect, made as raw system calls and mirrored in the
//! interval table, whoever asked (libc's entry points, or Go code's raw system calls through
//! the probes: `via`).
//!
//! The table's lock is never held across a system call (a thread blocked in the kernel would
//! stall every other mapping call and every stack walk that proves a read). The order of
//! table changes and kernel calls keeps walkers safe instead:
//!
//! - **insert after the mapping exists** (mmap, the target of mremap, mprotect that grants
//!   read): a range in the table is always mapped and readable;
//! - **remove before the mapping goes** (munmap, the source of mremap, mprotect that takes
//!   read away, MAP_FIXED over a range): the range leaves the table and the table's
//!   generation moves on (cached proofs die) before the kernel changes it; if the call fails,
//!   the removed pieces go back.
//!
//! A walker therefore only ever trusts memory that is mapped, at the cost of seeing a range
//! as "not provable" for the moment a call is in flight (its stack then ends "broken").

use super::{note_alloc, note_free, stack_id, Caller, Stripe};
use crate::state::{self, State};
use crate::tls::Inside;
use offheap_core::sys::raw;
use offheap_core::table::intervals::{self, Interval};
use offheap_core::table::Birth;
use offheap_format::Via;

/// A mapping's result as the kernel gave it: the address or −errno.
pub type Raw = isize;

fn birth_here(st: &State, inside: &mut Inside) -> Birth {
    let stack = stack_id(st, inside, Caller::Here);
    super::birth(st, inside, stack, false)
}

fn count_release(st: &State, removed: &[(u64, Interval)]) {
    for (s, iv) in removed {
        note_free(st, iv.birth.stack, iv.end - s, Stripe::SHARED);
    }
}

fn put_back(st: &State, removed: Vec<(u64, Interval)>) {
    let Some(mut map) = st.intervals.lock_or_give_up() else {
        return;
    };
    for (s, iv) in removed {
        map.insert(s, iv);
    }
}

/// Cuts `[start, end)` out of the table and invalidates cached proofs, before a call that may
/// unmap or re-protect it.
fn remove_before(st: &State, start: u64, end: u64) -> Vec<(u64, Interval)> {
    let Some(mut map) = st.intervals.lock_or_give_up() else {
        return Vec::new();
    };
    let removed = intervals::cut(&mut map, start, end);
    st.intervals.invalidate();
    removed
}

fn page_end(start: u64, len: usize) -> u64 {
    start.saturating_add(offheap_core::sys::round_up(len, offheap_core::sys::PAGE) as u64)
}

/// mmap with a birth captured by the caller's walk (`birth`), or here.
#[allow(clippy::too_many_arguments)]
pub fn map(
    via: Via,
    birth: Option<Birth>,
    addr: usize,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> Raw {
    let syscall = || {
        raw::syscall6(
            libc::SYS_mmap,
            [
                addr,
                len,
                prot as usize,
                flags as usize,
                fd as usize,
                off as usize,
            ],
        )
    };
    let Some(st) = state::get() else {
        return syscall();
    };
    let Some(mut inside) = Inside::enter() else {
        return syscall();
    };
    let birth = match birth {
        Some(b) => b,
        None if super::sandboxed() => Birth::default(),
        None => birth_here(st, &mut inside),
    };
    // MAP_FIXED replaces whatever was there: that part leaves the table first.
    let replaced = (flags & libc::MAP_FIXED != 0)
        .then(|| remove_before(st, addr as u64, page_end(addr as u64, len)));
    let p = syscall();
    if raw::error(p).is_some() {
        if let Some(r) = replaced {
            put_back(st, r);
        }
        return p;
    }
    if let Some(r) = &replaced {
        count_release(st, r);
    }
    let start = p as u64;
    let end = page_end(start, len);
    let iv = Interval {
        end,
        prot,
        file: flags & libc::MAP_ANONYMOUS == 0,
        via,
        birth,
    };
    let Some(mut map) = st.intervals.lock_or_give_up() else {
        return p;
    };
    let stale = intervals::cut(&mut map, start, end);
    map.insert(start, iv);
    drop(map);
    // A stale record (a range unmapped behind our back) is released, not leaked.
    count_release(st, &stale);
    note_alloc(st, birth.stack, end - start, Stripe::SHARED);
    p
}

/// munmap.
pub fn unmap(addr: usize, len: usize) -> Raw {
    let syscall = || raw::syscall6(libc::SYS_munmap, [addr, len, 0, 0, 0, 0]);
    let start = addr as u64;
    let (Some(st), true) = (
        state::get(),
        start.is_multiple_of(offheap_core::sys::PAGE as u64) && len != 0,
    ) else {
        return syscall();
    };
    let Some(_inside) = Inside::enter() else {
        return syscall();
    };
    let removed = remove_before(st, start, page_end(start, len));
    let rc = syscall();
    if raw::error(rc).is_some() {
        put_back(st, removed);
    } else {
        count_release(st, &removed);
    }
    rc
}

/// mremap (the fifth argument only with MREMAP_FIXED).
pub fn remap(
    via: Via,
    birth: Option<Birth>,
    old: usize,
    old_len: usize,
    new_len: usize,
    flags: i32,
    new_addr: usize,
) -> Raw {
    let target = if flags & libc::MREMAP_FIXED != 0 {
        new_addr
    } else {
        0
    };
    let syscall = || {
        raw::syscall6(
            libc::SYS_mremap,
            [old, old_len, new_len, flags as usize, target, 0],
        )
    };
    let Some(st) = state::get() else {
        return syscall();
    };
    let Some(mut inside) = Inside::enter() else {
        return syscall();
    };
    let start = old as u64;
    let old_end = page_end(start, old_len);
    let template = st.intervals.lock_or_give_up().and_then(|map| {
        map.range(..=start)
            .next_back()
            .filter(|(_, iv)| iv.end > start)
            .map(|(_, iv)| *iv)
    });
    let fallback = match birth {
        Some(b) => b,
        None if template.is_some() || super::sandboxed() => Birth::default(),
        None => birth_here(st, &mut inside),
    };
    // old_len == 0 duplicates a shared mapping and leaves the old one in place; so does
    // MREMAP_DONTUNMAP (the old range stays mapped, emptied, still owned by its creator).
    const MREMAP_DONTUNMAP: i32 = 4;
    let moves_away = old_len != 0 && flags & MREMAP_DONTUNMAP == 0;
    let removed = if moves_away {
        remove_before(st, start, old_end)
    } else {
        Vec::new()
    };
    let p = syscall();
    if raw::error(p).is_some() {
        put_back(st, removed);
        return p;
    }
    count_release(st, &removed);
    let new_start = p as u64;
    let new_end = page_end(new_start, new_len);
    let iv = match template {
        Some(t) => Interval { end: new_end, ..t },
        None => Interval {
            end: new_end,
            prot: libc::PROT_READ | libc::PROT_WRITE,
            file: false,
            via,
            birth: fallback,
        },
    };
    let Some(mut map) = st.intervals.lock_or_give_up() else {
        return p;
    };
    let stale = intervals::cut(&mut map, new_start, new_end);
    map.insert(new_start, iv);
    drop(map);
    count_release(st, &stale);
    note_alloc(st, iv.birth.stack, new_end - new_start, Stripe::SHARED);
    p
}

/// mprotect.
pub fn protect(addr: usize, len: usize, prot: i32) -> Raw {
    let syscall = || raw::syscall6(libc::SYS_mprotect, [addr, len, prot as usize, 0, 0, 0]);
    let Some(st) = state::get() else {
        return syscall();
    };
    let Some(_inside) = Inside::enter() else {
        return syscall();
    };
    let start = addr as u64;
    let end = page_end(start, len);
    // Taking read access away: the range leaves the table first. Granting it: relabel after.
    let removed = remove_before(st, start, end);
    let rc = syscall();
    let Some(mut map) = st.intervals.lock_or_give_up() else {
        return rc;
    };
    for (s, iv) in removed {
        let iv = if raw::error(rc).is_none() {
            Interval { prot, ..iv }
        } else {
            iv
        };
        map.insert(s, iv);
    }
    rc
}
