//! Code patching for the Go probes: recognising a function's bytes, a page of our own within
//! reach of the executable's text, and the 5-byte jumps written over function entries.
//!
//! Everything here runs in the constructor, before any Go code has run and while the process
//! has one thread, so a function is never executing while its first bytes change. A patched
//! entry reads `e9 <rel32>`: a jump into the near page, where an absolute jump
//! (`ff 25 00000000 <addr64>`) leads on into the library, which is too far away for a rel32.

use offheap_core::sys::raw;

/// A byte pattern: `None` matches any byte (a rel32 that depends on layout).
pub type Pattern = &'static [Option<u8>];

/// Whether the code at `addr` reads exactly `pattern`.
///
/// # Safety
/// `addr .. addr + pattern.len()` must be mapped readable (inside the executable's text).
pub unsafe fn matches(addr: u64, pattern: Pattern) -> bool {
    pattern.iter().enumerate().all(|(i, want)| {
        // SAFETY: forwarded contract: the range is readable text.
        let got = unsafe { *((addr as usize + i) as *const u8) };
        want.is_none_or(|w| w == got)
    })
}

/// The bytes of a pattern written as hex literals, `_` for "any".
#[macro_export]
macro_rules! bytes {
    ($($b:tt)*) => { &[$( $crate::byte!($b) ),*] };
}

#[macro_export]
macro_rules! byte {
    (_) => {
        None
    };
    ($b:literal) => {
        Some($b)
    };
}

const PAGE: u64 = offheap_core::sys::PAGE as u64;
/// How far a rel32 reaches.
const REACH: u64 = (1 << 31) - PAGE;

/// A page of ours, executable once sealed, reachable by rel32 from every target.
pub struct NearPage {
    base: u64,
    used: usize,
}

impl NearPage {
    /// A page below `lowest` (the executable's first segment) and within rel32 reach of
    /// every address in `[lowest, highest)`. Below the image, never above it: the brk heap
    /// grows right after the data segment.
    pub fn below(lowest: u64, highest: u64) -> Option<NearPage> {
        const MAP_FIXED_NOREPLACE: i32 = 0x100000;
        let mut hint = (lowest & !(PAGE - 1)).checked_sub(16 * PAGE)?;
        while highest.saturating_sub(hint) < REACH && hint >= 1 << 16 {
            let p = offheap_core::raw_syscall!(
                libc::SYS_mmap,
                hint,
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                -1i64 as usize,
                0usize
            );
            if raw::error(p).is_none() && p as u64 == hint {
                offheap_core::sys::note_own_mapping(hint, PAGE);
                return Some(NearPage {
                    base: hint,
                    used: 0,
                });
            }
            if raw::error(p).is_none() {
                // An old kernel ignores the flag and maps elsewhere: give that back.
                let _ = offheap_core::raw_syscall!(libc::SYS_munmap, p, PAGE);
            }
            hint = hint.checked_sub(16 * PAGE)?;
        }
        None
    }

    /// Appends `code`; returns its address.
    pub fn push(&mut self, code: &[u8]) -> Option<u64> {
        let at = self.used;
        if at + code.len() > PAGE as usize {
            return None;
        }
        // SAFETY: [base + at, base + at + len) lies in our page, mapped read-write until
        // `seal`.
        unsafe {
            core::ptr::copy_nonoverlapping(
                code.as_ptr(),
                (self.base as usize + at) as *mut u8,
                code.len(),
            )
        };
        // Keep every entry 16-byte aligned.
        self.used = (at + code.len() + 15) & !15;
        Some(self.base + at as u64)
    }

    /// An absolute jump to `target`; returns its address.
    pub fn push_jump(&mut self, target: u64) -> Option<u64> {
        let mut code = [0u8; 14];
        code[..6].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
        code[6..].copy_from_slice(&target.to_le_bytes());
        self.push(&code)
    }

    /// `code` followed by an absolute jump to `then`; returns its address.
    pub fn push_then_jump(&mut self, code: &[u8], then: u64) -> Option<u64> {
        let mut buf = [0u8; 64];
        let n = code.len();
        let block = buf.get_mut(..n + 14)?;
        block.get_mut(..n)?.copy_from_slice(code);
        block
            .get_mut(n..n + 6)?
            .copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
        block
            .get_mut(n + 6..n + 14)?
            .copy_from_slice(&then.to_le_bytes());
        self.push(block)
    }

    /// Read and execute only, from now on.
    pub fn seal(&self) -> bool {
        let r = offheap_core::raw_syscall!(
            libc::SYS_mprotect,
            self.base,
            PAGE,
            libc::PROT_READ | libc::PROT_EXEC
        );
        raw::error(r).is_none()
    }
}

/// Writes `e9 <rel32 to to>` at `at`, changing the page's protection around it. Fails
/// (leaving the code as it was) when the kernel refuses (W^X policies) or `to` is out of
/// reach.
pub fn jump(at: u64, to: u64) -> Result<(), &'static str> {
    let Some(code) = crate::text::near_jump(at, to) else {
        return Err("the near page is out of rel32 reach");
    };
    crate::text::with_writable(at, code.len() as u64, || {
        // SAFETY: the five bytes lie in the executable's text, writable while this runs; no
        // thread runs this function yet (we are in the constructor, before any Go code).
        unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), at as usize as *mut u8, 5) };
    })
    .map_err(crate::text::TextError::text)
}
