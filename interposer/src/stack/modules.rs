//! Code images loaded in the process: the unwinder's module set and the dump's module map.
//!
//! framehop needs each image's `.eh_frame` and `.eh_frame_hdr`, which the loader has already
//! mapped: we find them through `dl_iterate_phdr` and `PT_GNU_EH_FRAME` and hand framehop
//! slices of live memory. The set is rebuilt after dlopen/dlclose (outside the loader lock)
//! and published by pointer swap, so walkers never take a lock.
//!
//! Reclamation has no timing in it (`offheap_core::epoch`): every walk pins the set it uses
//! ([`pin`]), and a replaced set is freed only once no walk that could hold it is in flight,
//! however long a thread stays stopped mid-walk. An image's unwind tables are mapped memory
//! the loader owns, so before `dlclose` may unmap one, [`close_begin`] publishes the set of
//! images loaded at start-up (which can never be unloaded) and the close waits until no walk
//! still holds an older set. A walk that will not finish soon (a stopped thread) makes the
//! close wait on the dumper thread instead of in the program's call ([`defer_close`]):
//! dlclose then returns success and the library is unloaded later, which POSIX allows.
//!
//! ```text
//!   dlclose(h):  close_begin ──► publish INITIAL, r = retire epoch
//!                quiescent(r)? ─yes─► real dlclose ──► close_end ──► rebuild, publish
//!                     │no (a walk in flight beyond the wait budget, or our own)
//!                     └──► defer_close(h, r): the dumper polls quiescent(r), then closes
//!   while any close is pending, every rebuild publishes INITIAL
//! ```

use framehop::x86_64::UnwinderX86_64;
use framehop::{ExplicitModuleSectionInfo, Module, MustNotAllocateDuringUnwind, Unwinder};
use offheap_core::epoch::{Domain, Limbo, Pinned, Slot};
use offheap_core::stack::rules::ModuleCfi;
use offheap_core::sync::SpinLock;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

pub type NativeUnwinder = UnwinderX86_64<&'static [u8], MustNotAllocateDuringUnwind>;

/// One loaded image as the dump describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub path: String,
    pub build_id: Option<String>,
    pub base: u64,
    /// Executable segments at runtime addresses, end exclusive.
    pub ranges: Vec<(u64, u64)>,
}

pub struct ModuleSet {
    pub unwinder: NativeUnwinder,
    /// Compact-rule CFI per image, sorted by address (the fast path; framehop is the fallback).
    pub cfi: Vec<ModuleCfi>,
    /// Changes with every rebuild, so per-thread rule caches know to start over.
    /// [`POISONED`] once freed under the park testing aid (sets are then kept, not freed).
    pub generation: u64,
    /// Sorted executable ranges of every image: a return address outside them is garbage.
    pub code: Vec<(u64, u64)>,
    /// Our own executable range: frames inside it are the hook itself.
    pub own: (u64, u64),
    pub images: Vec<Image>,
}

/// The generation a freed set carries when the park testing aid keeps its memory.
pub const POISONED: u64 = u64::MAX;

impl ModuleSet {
    #[inline]
    pub fn is_code(&self, addr: u64) -> bool {
        let i = self.code.partition_point(|&(lo, _)| lo <= addr);
        i.checked_sub(1)
            .and_then(|i| self.code.get(i))
            .is_some_and(|&(_, hi)| addr < hi)
    }
}

static CURRENT: AtomicPtr<ModuleSet> = AtomicPtr::new(core::ptr::null_mut());
/// The current set's generation, readable without pinning (0 before the first build).
static CURRENT_GENERATION: AtomicU64 = AtomicU64::new(0);
/// The images loaded at start-up: never unloaded, so never freed; published during closes.
static INITIAL: AtomicPtr<ModuleSet> = AtomicPtr::new(core::ptr::null_mut());
static WALKS: Domain = Domain::new();
static LIMBO: Limbo = Limbo::new();
/// Every image ever seen, so stacks captured in a since-unloaded library still symbolize.
static SEEN: SpinLock<Vec<Image>> = SpinLock::new(Vec::new());
/// Serialises rebuilds so that two racing dlopens cannot publish an older set last.
static REBUILD: SpinLock<()> = SpinLock::new(());
/// Closes begun and not yet ended (in a dlclose call, or deferred).
static CLOSING: AtomicUsize = AtomicUsize::new(0);
/// Deferred closes: (handle, the real dlclose, retirement epoch to wait for).
static DEFERRED: SpinLock<Vec<(usize, usize, u64)>> = SpinLock::new(Vec::new());
/// Walks that found their set freed (only the park testing aid can see one).
static STALE: AtomicU64 = AtomicU64::new(0);

/// The module set a walk uses, pinned: it stays valid until this is dropped.
pub struct PinnedSet {
    set: &'static ModuleSet,
    _pin: Pinned<'static>,
}

impl core::ops::Deref for PinnedSet {
    type Target = ModuleSet;
    fn deref(&self) -> &ModuleSet {
        self.set
    }
}

/// The current set's generation without pinning it (what a walk-cache lookup keys on; a
/// walk that then runs pins the set and uses the set's own generation).
#[inline(always)]
pub fn generation() -> u64 {
    CURRENT_GENERATION.load(Ordering::Acquire)
}

/// This thread's walk slot, claimed on first use (released by the thread's key destructor).
fn own_slot() -> Option<Slot> {
    let s = crate::tls::walk_slot();
    if s != 0 {
        return Some(Slot(s - 1));
    }
    let slot = WALKS.claim()?;
    crate::tls::set_walk_slot(slot.0 + 1);
    crate::process::thread_needs_cleanup();
    Some(slot)
}

/// Pins and returns the current set; None before the first build, or for a thread beyond
/// the slots there are (its stacks stay one frame deep).
#[inline]
pub fn pin() -> Option<PinnedSet> {
    let pin = WALKS.pin(own_slot()?);
    let p = CURRENT.load(Ordering::SeqCst);
    // SAFETY: published sets are leaked boxes, freed only from the limbo once no pinned walk
    // can hold them; this thread pinned before loading the pointer (see offheap_core::epoch).
    let set = unsafe { p.as_ref() }?;
    Some(PinnedSet { set, _pin: pin })
}

/// Gives this thread's slot back (thread exit, not during a walk).
pub fn thread_exiting() {
    let s = crate::tls::walk_slot();
    if s != 0 {
        crate::tls::set_walk_slot(0);
        WALKS.release(Slot(s - 1));
    }
}

/// Rebuild from the loader's current list and publish (the start-up set while a close is
/// pending: an image being closed must not come back into a set).
pub fn rebuild() {
    let _serial = REBUILD.lock();
    let initial = INITIAL.load(Ordering::Acquire);
    if !initial.is_null() && CLOSING.load(Ordering::SeqCst) > 0 {
        publish(initial);
        return;
    }
    let set = Box::new(discover());
    {
        let mut seen = SEEN.lock();
        for img in &set.images {
            if !seen.contains(img) {
                seen.push(img.clone());
            }
        }
    }
    let p = Box::into_raw(set);
    if initial.is_null() {
        INITIAL.store(p, Ordering::Release);
    }
    publish(p);
}

/// Swaps `new` in; the old set waits in the limbo. Returns the retirement epoch. The caller
/// holds REBUILD.
fn publish(new: *mut ModuleSet) -> u64 {
    // SAFETY: `new` is a live set: just built, or the start-up set, which is never freed.
    let generation = unsafe { (*new).generation };
    let old = CURRENT.swap(new, Ordering::SeqCst);
    CURRENT_GENERATION.store(generation, Ordering::Release);
    let retired = WALKS.retire();
    if !old.is_null() && old != INITIAL.load(Ordering::Acquire) && old != new {
        LIMBO.push(retired, old as usize);
    }
    reclaim();
    retired
}

/// Frees the sets no walk can still hold (dumper thread, and after every publish).
pub fn reclaim() {
    let unsafe_now = crate::config::try_get().is_some_and(|c| c.test_reclaim_unsafe);
    let ready = if unsafe_now {
        LIMBO.take_ready_ignoring_readers()
    } else {
        LIMBO.take_ready(&WALKS, None)
    };
    let keep_poisoned = crate::config::try_get().is_some_and(|c| c.test_park_ms > 0);
    for p in ready {
        let p = p as *mut ModuleSet;
        if keep_poisoned {
            // SAFETY: p came from Box::into_raw in `rebuild` and left the limbo just now; it
            // is kept (leaked) so that a walk that wrongly still holds it reads the poison.
            unsafe { core::ptr::addr_of_mut!((*p).generation).write_volatile(POISONED) };
        } else {
            // SAFETY: p came from Box::into_raw in `rebuild`; no pinned walk can hold it.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// A close is about to begin: publish the start-up set and return the epoch the close must
/// wait for (None before the first build).
pub fn close_begin() -> Option<u64> {
    let _serial = REBUILD.lock();
    let initial = INITIAL.load(Ordering::Acquire);
    if initial.is_null() {
        return None;
    }
    CLOSING.fetch_add(1, Ordering::SeqCst);
    Some(publish(initial))
}

/// How a close may go on, given the epoch from `close_begin`.
pub enum CloseWait {
    /// No walk can reach the image: unmap it now.
    Now,
    /// Walks are in flight that will not finish soon (or one is this thread's own).
    Later,
}

/// Waits up to `budget_ns` for no walk to hold a set retired by `retired`.
pub fn close_wait(retired: u64, budget_ns: u64) -> CloseWait {
    let own = match crate::tls::walk_slot() {
        0 => None,
        s => Some(Slot(s - 1)),
    };
    if own.is_some_and(|s| WALKS.is_pinned(s)) || !DEFERRED.lock().is_empty() {
        // Our own walk (a dlclose from a signal handler) cannot end while we wait; and behind
        // a deferred close, waiting here would not let this one finish first.
        return CloseWait::Later;
    }
    let start = offheap_core::sys::monotonic_ns();
    let mut rounds = 0u32;
    while !WALKS.quiescent(retired, None) {
        if offheap_core::sys::monotonic_ns().saturating_sub(start) > budget_ns {
            return CloseWait::Later;
        }
        rounds = rounds.saturating_add(1);
        offheap_core::sync::wait_a_little(rounds);
    }
    CloseWait::Now
}

/// The close finished (the image is gone or was still referenced): rebuild from the loader.
pub fn close_end() {
    CLOSING.fetch_sub(1, Ordering::SeqCst);
    rebuild();
}

/// Hands a close to the dumper thread: `real_dlclose(handle)` runs once no walk can reach the
/// image.
pub fn defer_close(handle: usize, real_dlclose: usize, retired: u64) {
    DEFERRED.lock().push((handle, real_dlclose, retired));
}

/// Whether closes are waiting for the dumper (it then looks again soon).
pub fn closes_deferred() -> bool {
    !DEFERRED.lock().is_empty()
}

/// Runs the deferred closes that have become safe (dumper thread).
pub fn run_deferred_closes() {
    type DlClose = unsafe extern "C" fn(*mut libc::c_void) -> libc::c_int;
    let ready: Vec<(usize, usize, u64)> = {
        let mut d = DEFERRED.lock();
        let mut ready = Vec::new();
        d.retain(|&(h, f, r)| {
            let now = WALKS.quiescent(r, None);
            if now {
                ready.push((h, f, r));
            }
            !now
        });
        ready
    };
    for (handle, f, _) in ready {
        // SAFETY: f is libc's dlclose and handle the program's, which it already closed (we
        // answered for it); no walk can reach the image any more.
        let _ = unsafe { core::mem::transmute::<usize, DlClose>(f)(handle as *mut libc::c_void) };
        close_end();
    }
}

/// The park testing aid: a thread named `offheap-park` stops once, mid-walk, holding `set`;
/// afterwards the set must not have been freed. Costs one predictable branch otherwise.
#[inline]
pub fn park_if_asked(set: &ModuleSet) {
    let Some(ms) = crate::config::try_get().map(|c| c.test_park_ms) else {
        return;
    };
    if ms == 0 {
        return;
    }
    park(set, ms);
}

#[cold]
fn park(set: &ModuleSet, ms: u64) {
    if crate::tls::flags() & c_shim::THREAD_PARKED != 0 || !named_park() {
        return;
    }
    crate::tls::set_flags(c_shim::THREAD_PARKED);
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    let _ = offheap_core::raw_syscall!(
        libc::SYS_nanosleep,
        &ts as *const libc::timespec as usize,
        0usize
    );
    // SAFETY: a volatile read of the pinned set's generation: POISONED means it was freed
    // (kept under the testing aid) while this walk held it.
    let generation = unsafe { core::ptr::addr_of!(set.generation).read_volatile() };
    if generation == POISONED {
        STALE.fetch_add(1, Ordering::Relaxed);
        crate::diag!("test: a stack walk held a module set that was freed under it");
    } else {
        crate::verbose!("test: the parked walk's module set is still intact");
    }
}

fn named_park() -> bool {
    let mut name = [0u8; 16];
    let rc = offheap_core::raw_syscall!(
        libc::SYS_prctl,
        libc::PR_GET_NAME as usize,
        name.as_mut_ptr() as usize
    );
    rc == 0 && name.starts_with(b"offheap-park\0")
}

/// In a forked child: the other threads' walks do not exist here.
pub fn fork_child() {
    let own = match crate::tls::walk_slot() {
        0 => None,
        s => Some(Slot(s - 1)),
    };
    WALKS.forget_other_threads(own);
}

/// Hold the module locks across fork (see lifecycle).
pub fn fork_prepare() {
    REBUILD.lock_forever();
    SEEN.lock_forever();
    DEFERRED.lock_forever();
    LIMBO.lock_forever();
}

/// # Safety
/// Pairs with `fork_prepare`.
pub unsafe fn fork_release() {
    // SAFETY: forwarded contract.
    unsafe {
        LIMBO.force_unlock();
        DEFERRED.force_unlock();
        SEEN.force_unlock();
        REBUILD.force_unlock();
    }
}

/// Images for the dump: the ones loaded now, then any unloaded ones seen before.
pub fn images_for_dump() -> Vec<Image> {
    SEEN.lock().clone()
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

struct Discovery {
    unwinder: NativeUnwinder,
    cfi: Vec<ModuleCfi>,
    code: Vec<(u64, u64)>,
    own: (u64, u64),
    images: Vec<Image>,
}

fn discover() -> ModuleSet {
    let mut d = Discovery {
        unwinder: NativeUnwinder::new(),
        cfi: Vec::new(),
        code: Vec::new(),
        own: (0, 0),
        images: Vec::new(),
    };
    // SAFETY: the callback only reads the loader-provided structures during the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(on_image),
            &mut d as *mut Discovery as *mut libc::c_void,
        )
    };
    d.code.sort_unstable();
    d.cfi.sort_unstable_by_key(|m| m.lo);
    ModuleSet {
        unwinder: d.unwinder,
        cfi: d.cfi,
        generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        code: d.code,
        own: d.own,
        images: d.images,
    }
}

fn own_marker() {}

unsafe extern "C" fn on_image(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info and our Discovery pointer.
    let (info, d) = unsafe { (&*info, &mut *(data as *mut Discovery)) };
    let base = info.dlpi_addr;
    // SAFETY: the loader gives dlpi_phnum program headers at dlpi_phdr.
    let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut exec: Vec<(u64, u64)> = Vec::new();
    let mut eh_hdr: Option<(u64, u64)> = None;
    let mut build_id = None;
    let mut loads: Vec<(u64, u64)> = Vec::new();
    for ph in phdrs {
        let lo = base + ph.p_vaddr;
        let hi = lo + ph.p_memsz;
        match ph.p_type {
            libc::PT_LOAD => {
                loads.push((lo, hi));
                if ph.p_flags & libc::PF_X != 0 {
                    exec.push((lo, hi));
                }
            }
            libc::PT_GNU_EH_FRAME => eh_hdr = Some((lo, hi)),
            libc::PT_NOTE if build_id.is_none() => {
                // SAFETY: PT_NOTE segments are mapped (inside a PT_LOAD) for p_memsz bytes.
                let bytes =
                    unsafe { core::slice::from_raw_parts(lo as *const u8, ph.p_memsz as usize) };
                build_id = gnu_build_id(bytes);
            }
            _ => {}
        }
    }
    if exec.is_empty() {
        return 0;
    }
    let path = if name.is_empty() && d.images.is_empty() {
        std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        name
    };
    let marker = own_marker as fn() as usize as u64;
    let lo = exec.iter().map(|r| r.0).min().unwrap_or(0);
    let hi = exec.iter().map(|r| r.1).max().unwrap_or(0);
    if lo <= marker && marker < hi {
        d.own = (lo, hi);
    }
    d.code.extend_from_slice(&exec);
    if let Some((hdr_lo, hdr_hi)) = eh_hdr {
        if let Some((module, cfi)) = unwind_info(&path, base, (lo, hi), (hdr_lo, hdr_hi), &loads) {
            d.unwinder.add_module(module);
            d.cfi.extend(cfi);
        }
    }
    d.images.push(Image {
        path,
        build_id,
        base,
        ranges: exec,
    });
    0
}

fn unwind_info(
    path: &str,
    base: u64,
    text: (u64, u64),
    hdr: (u64, u64),
    loads: &[(u64, u64)],
) -> Option<(Module<&'static [u8]>, Option<ModuleCfi>)> {
    // SAFETY: PT_GNU_EH_FRAME lies inside a mapped PT_LOAD segment for its p_memsz bytes; the
    // image stays mapped while it is in the published set (dlclose triggers a rebuild).
    let hdr_bytes: &'static [u8] =
        unsafe { core::slice::from_raw_parts(hdr.0 as *const u8, (hdr.1 - hdr.0) as usize) };
    let eh_frame = decode_eh_frame_ptr(hdr_bytes, hdr.0)?;
    // The section length is not recorded anywhere at runtime: use the end of its segment.
    let seg_end = loads
        .iter()
        .find(|&&(lo, hi)| lo <= eh_frame && eh_frame < hi)?
        .1;
    // SAFETY: [eh_frame, seg_end) is inside one mapped PT_LOAD segment.
    let eh_bytes: &'static [u8] = unsafe {
        core::slice::from_raw_parts(eh_frame as *const u8, (seg_end - eh_frame) as usize)
    };
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: Some(text.0 - base..text.1 - base),
        text: None,
        stubs_svma: None,
        stub_helper_svma: None,
        got_svma: None,
        unwind_info: None,
        eh_frame_svma: Some(eh_frame - base..seg_end - base),
        eh_frame: Some(eh_bytes),
        eh_frame_hdr_svma: Some(hdr.0 - base..hdr.1 - base),
        eh_frame_hdr: Some(hdr_bytes),
        debug_frame: None,
        text_segment_svma: None,
        text_segment: None,
    };
    let cfi = ModuleCfi::new(
        text,
        base,
        hdr_bytes,
        hdr.0 - base,
        eh_bytes,
        eh_frame - base,
        text.0 - base,
    );
    Some((
        Module::new(path.to_string(), text.0..text.1, base, info),
        cfi,
    ))
}

/// The `eh_frame_ptr` field of `.eh_frame_hdr`, decoded to a runtime address.
fn decode_eh_frame_ptr(hdr: &[u8], hdr_addr: u64) -> Option<u64> {
    if hdr.len() < 8 || hdr.first() != Some(&1) {
        return None;
    }
    let enc = *hdr.get(1)?;
    let field_addr = hdr_addr + 4;
    let raw = hdr.get(4..)?;
    let value: i64 = match enc & 0x0f {
        0x03 => u32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as i64,
        0x0b => i32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as i64,
        0x04 | 0x0c => i64::from_le_bytes(raw.get(..8)?.try_into().ok()?),
        _ => return None,
    };
    match enc & 0x70 {
        0x00 => Some(value as u64),
        0x10 => Some(field_addr.wrapping_add(value as u64)),
        0x30 => Some(hdr_addr.wrapping_add(value as u64)),
        _ => None,
    }
}

/// The GNU build id in a note segment, as lowercase hex.
pub fn gnu_build_id(notes: &[u8]) -> Option<String> {
    let mut off = 0usize;
    while off + 12 <= notes.len() {
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(notes.get(at..at + 4)?.try_into().ok()?))
        };
        let namesz = word(off)? as usize;
        let descsz = word(off + 4)? as usize;
        let ntype = word(off + 8)?;
        let name_start = off + 12;
        let desc_start = name_start + namesz.div_ceil(4) * 4;
        let next = desc_start + descsz.div_ceil(4) * 4;
        if next > notes.len() {
            return None;
        }
        if ntype == 3 && namesz == 4 && notes.get(name_start..name_start + 4) == Some(b"GNU\0") {
            let desc = notes.get(desc_start..desc_start + descsz)?;
            return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
        }
        off = next;
    }
    None
}
