//! Code images loaded in the process: the unwinder's module set and the dump's module map.
//!
//! framehop needs each image's `.eh_frame` and `.eh_frame_hdr`, which the loader has already
//! mapped: we find them through `dl_iterate_phdr` and `PT_GNU_EH_FRAME` and hand framehop
//! slices of live memory. The set is rebuilt after dlopen/dlclose (outside the loader lock)
//! and published by pointer swap, so walkers never take a lock; a replaced set is kept for a
//! grace period before it is freed, because a walk in flight may still be using it.

use framehop::x86_64::UnwinderX86_64;
use framehop::{ExplicitModuleSectionInfo, Module, MustNotAllocateDuringUnwind, Unwinder};
use offheap_core::stack::rules::ModuleCfi;
use offheap_core::sync::SpinLock;
use std::sync::atomic::{AtomicPtr, Ordering};

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
    pub generation: u64,
    /// Sorted executable ranges of every image: a return address outside them is garbage.
    pub code: Vec<(u64, u64)>,
    /// Our own executable range: frames inside it are the hook itself.
    pub own: (u64, u64),
    pub images: Vec<Image>,
}

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
static RETIRED: SpinLock<Vec<(u64, usize)>> = SpinLock::new(Vec::new());
/// Every image ever seen, so stacks captured in a since-unloaded library still symbolize.
static SEEN: SpinLock<Vec<Image>> = SpinLock::new(Vec::new());
/// Serialises rebuilds so that two racing dlopens cannot publish an older set last.
static REBUILD: SpinLock<()> = SpinLock::new(());

/// The current module set, or None before the first build.
#[inline]
pub fn current() -> Option<&'static ModuleSet> {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: published sets are leaked boxes, freed only after a grace period in
    // `reclaim`, long after any walk that loaded the pointer has finished.
    unsafe { p.as_ref() }
}

/// Rebuild from the loader's current list and publish.
pub fn rebuild() {
    let _serial = REBUILD.lock();
    let set = Box::new(discover());
    {
        let mut seen = SEEN.lock();
        for img in &set.images {
            if !seen.contains(img) {
                seen.push(img.clone());
            }
        }
    }
    let old = CURRENT.swap(Box::into_raw(set), Ordering::AcqRel);
    if !old.is_null() {
        RETIRED
            .lock()
            .push((offheap_core::sys::monotonic_ns(), old as usize));
    }
}

/// Free sets retired more than ten seconds ago (called from the dumper thread).
pub fn reclaim() {
    let now = offheap_core::sys::monotonic_ns();
    let ready: Vec<usize> = {
        let mut retired = RETIRED.lock();
        let (old, young): (Vec<_>, Vec<_>) = retired
            .drain(..)
            .partition(|&(t, _)| now.saturating_sub(t) > 10_000_000_000);
        *retired = young;
        old.into_iter().map(|(_, p)| p).collect()
    };
    for p in ready {
        // SAFETY: p came from Box::into_raw in `rebuild` and was unpublished ten seconds ago.
        drop(unsafe { Box::from_raw(p as *mut ModuleSet) });
    }
}

/// Hold the module locks across fork (see lifecycle).
pub fn fork_prepare() {
    REBUILD.lock_forever();
    SEEN.lock_forever();
    RETIRED.lock_forever();
}

/// # Safety
/// Pairs with `fork_prepare`.
pub unsafe fn fork_release() {
    // SAFETY: forwarded contract.
    unsafe {
        RETIRED.force_unlock();
        SEEN.force_unlock();
        REBUILD.force_unlock();
    }
}

/// Images for the dump: the ones loaded now, then any unloaded ones seen before.
pub fn images_for_dump() -> Vec<Image> {
    SEEN.lock().clone()
}

static GENERATION: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

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
