//! Direct jumps into glibc where an unsampled call leaves the library.
//!
//! An unsampled malloc or free ends in a jump to glibc's. Through `real::FORWARD_MALLOC` or
//! `real::FORWARD_FREE` that jump is indirect, and on this machine (Intel Xeon, KVM) an
//! indirect jump per call is most of what a preload costs: a preload that only forwards
//! (bench/forward.c) is 1.044× plain on the tcache workload with an indirect jump per call
//! and 1.011× with a direct one (15 interleaved runs, 1 thread). With the sites below made
//! direct and the entry points on lines of their own, sampling at 512 KiB went from 1.095×
//! to 1.05× there.
//!
//! So each place where an unsampled call leaves is a *forward site*: an 8-byte-aligned
//! `jmp qword ptr [rip + slot]` through the slot that names the allocator. Once
//! `real::decide` has settled on glibc, `install` (called by the constructor) rewrites each
//! site, in one aligned 8-byte store, into a direct jump to the function the slot holds:
//!
//! ```text
//!  before   ┌────┬────┬──────────────────────────┬─────────┐
//!           │ ff │ 25 │ rel32 to the slot        │ next 2  │   jmp qword ptr [rip + slot]
//!           └────┴────┴──────────────────────────┴─────────┘
//!  after    ┌────┬──────────────────────────┬────┬─────────┐
//!           │ e9 │ rel32 to the function    │ old│ next 2  │   jmp function
//!           └────┴──────────────────────────┴────┴─────────┘
//!  byte      0    1                          5    6       7
//! ```
//!
//! Bytes 5–7 are stored back as they were (the old jump's last byte, now dead, and the first
//! two of whatever follows). Only a process with one thread is rewritten: x86 promises what
//! another core executes after code changed under it only once that core serialises, so a
//! library constructor that started threads before ours (which run malloc through these
//! sites) keeps the indirect jumps. The store is one aligned word all the same, so that no
//! instruction is ever half old and half new in memory. A site is left indirect — slower,
//! equally right — when the program has an allocator of its own (the slot then holds a slow
//! forwarder that is also called from elsewhere), when the function is beyond a rel32's
//! reach, when the site does not read exactly the expected jump, when the kernel refuses to
//! make our text writable, when other threads exist, under secure execution (nothing is set
//! up there), or when `OFFHEAP_DIRECT=0` says not to try (a host whose security policy logs
//! every refused writable-executable mapping).

use super::real;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};

/// What `install` did (it runs before the configuration is read; `outcome` tells it later).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Outcome {
    /// Not tried: the program has an allocator of its own.
    NotTried = 0,
    /// Not tried: `OFFHEAP_DIRECT=0`.
    TurnedOff,
    /// Not tried: other threads were running already (started by an earlier library's
    /// constructor), or their number could not be read.
    OtherThreads,
    Direct,
    Unaligned,
    UnexpectedCode,
    OutOfReach,
    TextNotWritable,
    /// Written, but a page stayed writable; the remaining sites were left indirect.
    TextLeftWritable,
}

impl Outcome {
    /// For OFFHEAP_VERBOSE.
    pub fn text(self) -> &'static str {
        match self {
            Outcome::NotTried => "unsampled calls jump through a pointer to the program's allocator",
            Outcome::TurnedOff => {
                "OFFHEAP_DIRECT=0: unsampled calls jump through a pointer to glibc's malloc and free"
            }
            Outcome::Direct => "unsampled calls jump straight to glibc's malloc and free",
            Outcome::Unaligned => {
                "a forward site is not 8-byte aligned: unsampled calls keep an indirect jump"
            }
            Outcome::UnexpectedCode => {
                "a forward site does not read the expected jump: unsampled calls keep an indirect jump"
            }
            Outcome::OutOfReach => {
                "glibc is beyond a rel32's reach of our text: unsampled calls keep an indirect jump"
            }
            Outcome::TextNotWritable => {
                "our text cannot be made writable (W^X policy?): unsampled calls keep an indirect jump"
            }
            Outcome::TextLeftWritable => {
                "unsampled calls jump straight to glibc, but part of our text could not be made \
                 read-only again"
            }
            Outcome::OtherThreads => {
                "threads were running before the library started: unsampled calls keep an \
                 indirect jump (their code is not rewritten under them)"
            }
        }
    }

    fn from_u8(v: u8) -> Outcome {
        [
            Outcome::NotTried,
            Outcome::TurnedOff,
            Outcome::Direct,
            Outcome::Unaligned,
            Outcome::UnexpectedCode,
            Outcome::OutOfReach,
            Outcome::TextNotWritable,
            Outcome::TextLeftWritable,
            Outcome::OtherThreads,
        ]
        .into_iter()
        .find(|o| *o as u8 == v)
        .unwrap_or(Outcome::NotTried)
    }
}

static OUTCOME: AtomicU8 = AtomicU8::new(Outcome::NotTried as u8);

/// What `install` did, if it ran.
pub fn outcome() -> Outcome {
    Outcome::from_u8(OUTCOME.load(Ordering::Acquire))
}

/// One forward site: where it is, and the slot its indirect jump goes through.
struct Site {
    at: u64,
    slot: &'static AtomicPtr<()>,
}

impl Site {
    /// Whether the eight bytes at the site read `ff 25 <rel32 to slot>`.
    fn reads_indirect_jump(&self, word: u64) -> bool {
        let slot = self.slot as *const AtomicPtr<()> as u64;
        let rel = (word >> 16) as u32 as i32 as i64;
        word & 0xffff == 0x25ff && (self.at as i64 + 6).wrapping_add(rel) == slot as i64
    }

    /// Rewrites the site into a direct jump to the slot's function (see the module docs).
    fn make_direct(&self) -> Result<(), Outcome> {
        if !self.at.is_multiple_of(8) {
            return Err(Outcome::Unaligned);
        }
        let word_at = self.at as usize as *const AtomicU64;
        // SAFETY: `at` is an 8-byte-aligned address inside our own mapped text.
        let old = unsafe { &*word_at }.load(Ordering::Relaxed);
        if !self.reads_indirect_jump(old) {
            return Err(Outcome::UnexpectedCode);
        }
        let target = self.slot.load(Ordering::Acquire) as u64;
        let Some(jump) = crate::text::near_jump(self.at, target) else {
            return Err(Outcome::OutOfReach);
        };
        let mut new = old.to_le_bytes();
        new[..5].copy_from_slice(&jump);
        let new = u64::from_le_bytes(new);
        crate::text::with_writable(self.at, 8, || {
            // SAFETY: as above, and the page is writable while this runs; the process has one
            // thread (checked by `install`), this one, which is not running the site.
            unsafe { &*word_at }.store(new, Ordering::Release);
        })
        .map_err(|e| match e {
            crate::text::TextError::NotWritable => Outcome::TextNotWritable,
            crate::text::TextError::NotRestored => Outcome::TextLeftWritable,
        })
    }
}

extern "C" {
    /// The unsampled exit of malloc's entry (`hooks::malloc::malloc`).
    static offheap_malloc_forward_site: u8;
    /// The exit of free's entry for blocks its probe rules out (`hooks::malloc::free`).
    static offheap_free_forward_site: u8;
}

/// The site in a forwarding function: its first instruction after the alignment padding.
fn aligned_site(function: u64) -> u64 {
    function.next_multiple_of(8)
}

/// Makes every forward site a direct jump, once `real::decide` has chosen glibc (the
/// constructor calls this then).
/// Sites already rewritten stay so when a later one is refused: each is right either way.
pub fn install() {
    if !crate::config::direct_jumps_wanted() {
        OUTCOME.store(Outcome::TurnedOff as u8, Ordering::Release);
        return;
    }
    if crate::text::threads_now() != Some(1) {
        OUTCOME.store(Outcome::OtherThreads as u8, Ordering::Release);
        return;
    }
    let sites = [
        Site {
            at: core::ptr::addr_of!(offheap_malloc_forward_site) as u64,
            slot: &real::FORWARD_MALLOC,
        },
        Site {
            at: core::ptr::addr_of!(offheap_free_forward_site) as u64,
            slot: &real::FORWARD_FREE,
        },
        Site {
            at: aligned_site(real::forward_malloc as *const () as u64),
            slot: &real::FORWARD_MALLOC,
        },
        Site {
            at: aligned_site(real::forward_free as *const () as u64),
            slot: &real::FORWARD_FREE,
        },
    ];
    let done = sites
        .iter()
        .try_for_each(Site::make_direct)
        .map_or_else(|refused| refused, |()| Outcome::Direct);
    OUTCOME.store(done as u8, Ordering::Release);
}
