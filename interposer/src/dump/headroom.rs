//! Before a dump: does the process have the room a dump takes, without taking what the host
//! itself has left?
//!
//! A dump allocates (the snapshot's copy of the live table, the smaps read, the encoded
//! members) from our own allocator, which maps memory as it needs it. In a host that has used
//! up its address space (`RLIMIT_AS`) or its mappings (`vm.max_map_count`) such a mapping is
//! refused, and a refused allocation inside Rust code ends in its allocation-failure handler:
//! an abort of the host (a program that filled its `ulimit -v` and exited normally died of
//! SIGABRT in its exit dump). So the dump first checks, with calls that allocate nothing:
//! mappings left under the kernel's limit, and an address-space reservation the size of the
//! dump (made and given back at once). Short of either, the dump is skipped, quietly: the
//! host is at its limit, and a line on its stderr would be ours, not its.

use offheap_core::sys;

/// Mappings a dump may make (own-allocator chunks, large buffers), and leaves the host.
const MAPPINGS_NEEDED: usize = 512;
/// Address space a dump needs beyond its copy of the live table and twice what the previous
/// dump took beyond its copy (buffers, encoders, the stacks member, the smaps read).
const BYTES_BEYOND_COPY: usize = 16 << 20;
/// Bytes of smaps parse state per mapping, generously.
const BYTES_PER_MAPPING: usize = 512;

/// What the process is short of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// Fewer than `MAPPINGS_NEEDED` mappings left under `vm.max_map_count`.
    Mappings { in_use: usize, limit: usize },
    /// The address space (or memory) for a dump of this size was refused.
    AddressSpace { bytes: usize },
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shortage::Mappings { in_use, limit } => write!(
                f,
                "the process has {in_use} memory mappings of vm.max_map_count's {limit}"
            ),
            Shortage::AddressSpace { bytes } => write!(
                f,
                "{} MiB of address space for the dump were refused (RLIMIT_AS or memory)",
                bytes >> 20
            ),
        }
    }
}

/// Whether a dump whose snapshot copies `copy_bytes` can run now; `previous_extra` is what
/// the previous dump took beyond its copy (0 before the first).
pub fn check(copy_bytes: usize, previous_extra: usize) -> Result<(), Shortage> {
    let mut in_use = 0usize;
    crate::stack::bounds::for_each_mapping(|_, _, _| {
        in_use += 1;
        true
    });
    if let Some(limit) = max_map_count() {
        if in_use + MAPPINGS_NEEDED > limit {
            return Err(Shortage::Mappings { in_use, limit });
        }
    }
    let bytes = copy_bytes
        .saturating_add(BYTES_BEYOND_COPY)
        .saturating_add(previous_extra.saturating_mul(2))
        .saturating_add(in_use.saturating_mul(BYTES_PER_MAPPING));
    let trial = sys::map_own(bytes);
    if trial.is_null() {
        return Err(Shortage::AddressSpace { bytes });
    }
    sys::unmap_own(trial, bytes);
    Ok(())
}

/// The kernel's limit on a process's mappings, if it can be read (raw calls, a stack buffer).
fn max_map_count() -> Option<usize> {
    let _errno = sys::ErrnoGuard::save();
    let fd = sys::raw::open_read_only(b"/proc/sys/vm/max_map_count\0")?;
    let mut buf = [0u8; 32];
    // Reads at most buf.len() bytes into buf.
    let n = offheap_core::raw_syscall!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len());
    let _ = offheap_core::raw_syscall!(libc::SYS_close, fd);
    let text = buf.get(..usize::try_from(n).ok()?)?;
    std::str::from_utf8(text).ok()?.trim().parse().ok()
}
