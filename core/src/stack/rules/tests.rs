//! Unwind rules: every representable rule round-trips through its u64 packing; rules read
//! from real CFI (hand-written assembly in this test binary, so the right answer is known
//! from the directives) come out compact when they fit and `Other` when they do not; the
//! per-thread cache answers hits without evaluating again, forgets everything when the
//! module set's generation changes, and never changes an answer.

use super::*;
use proptest::prelude::*;
use std::cell::Cell;

// Two functions with hand-written CFI, never called: only their unwind tables are used.
// Each label marks the first instruction after a CFI change, so the row in force at the
// label is the one the directives just above it describe. Lookups are by return address,
// and the rule cache looks up `ra - 1` (the call instruction): `ra = label + 1`.
core::arch::global_asm!(
    ".pushsection .text.offheap_rules_tests,\"ax\",@progbits",
    ".p2align 4",
    ".globl offheap_cfi_none",
    "offheap_cfi_none:",
    "    nop",
    "    nop",
    "    nop",
    "    nop",
    ".p2align 4",
    ".globl offheap_cfi_frame",
    ".type offheap_cfi_frame,@function",
    "offheap_cfi_frame:",
    ".cfi_startproc",
    "    push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    ".globl offheap_cfi_frame_pushed",
    "offheap_cfi_frame_pushed:",
    "    mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    ".globl offheap_cfi_frame_based",
    "offheap_cfi_frame_based:",
    "    nop",
    "    pop rbp",
    ".cfi_def_cfa rsp, 8",
    ".cfi_restore rbp",
    ".globl offheap_cfi_frame_popped",
    "offheap_cfi_frame_popped:",
    "    ret",
    ".cfi_endproc",
    ".size offheap_cfi_frame, .-offheap_cfi_frame",
    ".p2align 4",
    ".globl offheap_cfi_odd",
    ".type offheap_cfi_odd,@function",
    "offheap_cfi_odd:",
    ".cfi_startproc",
    "    nop",
    ".cfi_undefined rip",
    ".globl offheap_cfi_odd_undefined_ra",
    "offheap_cfi_odd_undefined_ra:",
    "    nop",
    ".cfi_offset rip, -16",
    ".globl offheap_cfi_odd_ra_elsewhere",
    "offheap_cfi_odd_ra_elsewhere:",
    "    nop",
    ".cfi_offset rip, -8",
    ".cfi_def_cfa r12, 8",
    ".globl offheap_cfi_odd_cfa_r12",
    "offheap_cfi_odd_cfa_r12:",
    "    nop",
    // DW_CFA_def_cfa_expression, 2 bytes: DW_OP_breg7 (rsp) + 8.
    ".cfi_escape 0x0f, 0x02, 0x77, 0x08",
    ".globl offheap_cfi_odd_cfa_expr",
    "offheap_cfi_odd_cfa_expr:",
    "    nop",
    ".cfi_def_cfa rsp, 8",
    ".cfi_offset rbp, 0",
    ".globl offheap_cfi_odd_bp_at_cfa",
    "offheap_cfi_odd_bp_at_cfa:",
    "    nop",
    ".cfi_offset rbp, -32768",
    ".globl offheap_cfi_odd_bp_min",
    "offheap_cfi_odd_bp_min:",
    "    nop",
    ".cfi_offset rbp, -32776",
    ".globl offheap_cfi_odd_bp_too_far",
    "offheap_cfi_odd_bp_too_far:",
    "    nop",
    ".cfi_offset rbp, 16",
    ".globl offheap_cfi_odd_bp_above",
    "offheap_cfi_odd_bp_above:",
    "    nop",
    ".cfi_restore rbp",
    ".cfi_def_cfa_offset 2147483647",
    ".globl offheap_cfi_odd_cfa_max",
    "offheap_cfi_odd_cfa_max:",
    "    nop",
    ".cfi_def_cfa_offset 2147483648",
    ".globl offheap_cfi_odd_cfa_too_far",
    "offheap_cfi_odd_cfa_too_far:",
    "    nop",
    ".cfi_def_cfa_offset 8",
    ".cfi_same_value rbp",
    ".globl offheap_cfi_odd_same_value",
    "offheap_cfi_odd_same_value:",
    "    ret",
    ".cfi_endproc",
    ".size offheap_cfi_odd, .-offheap_cfi_odd",
    ".popsection",
);

extern "C" {
    static offheap_cfi_none: u8;
    static offheap_cfi_frame: u8;
    static offheap_cfi_frame_pushed: u8;
    static offheap_cfi_frame_based: u8;
    static offheap_cfi_frame_popped: u8;
    static offheap_cfi_odd_undefined_ra: u8;
    static offheap_cfi_odd_ra_elsewhere: u8;
    static offheap_cfi_odd_cfa_r12: u8;
    static offheap_cfi_odd_cfa_expr: u8;
    static offheap_cfi_odd_bp_at_cfa: u8;
    static offheap_cfi_odd_bp_min: u8;
    static offheap_cfi_odd_bp_too_far: u8;
    static offheap_cfi_odd_bp_above: u8;
    static offheap_cfi_odd_cfa_max: u8;
    static offheap_cfi_odd_cfa_too_far: u8;
    static offheap_cfi_odd_same_value: u8;
}

/// The return address whose call instruction is at `label`.
macro_rules! ra {
    ($label:ident) => {
        // Only the address of the label is taken, never its contents (safe for an extern
        // static).
        core::ptr::addr_of!($label) as u64 + 1
    };
}

fn frame(from_bp: bool, cfa_off: i32, bp_off: i16) -> Rule {
    Rule::Frame {
        from_bp,
        cfa_off,
        bp_off,
    }
}

/// Every label with the rule its directives describe.
fn expectations() -> Vec<(&'static str, u64, Rule)> {
    vec![
        ("entry", ra!(offheap_cfi_frame), frame(false, 8, 0)),
        (
            "pushed",
            ra!(offheap_cfi_frame_pushed),
            frame(false, 16, -16),
        ),
        ("based", ra!(offheap_cfi_frame_based), frame(true, 16, -16)),
        ("popped", ra!(offheap_cfi_frame_popped), frame(false, 8, 0)),
        ("undefined ra", ra!(offheap_cfi_odd_undefined_ra), Rule::End),
        (
            "ra at cfa-16",
            ra!(offheap_cfi_odd_ra_elsewhere),
            Rule::Other,
        ),
        ("cfa from r12", ra!(offheap_cfi_odd_cfa_r12), Rule::Other),
        ("cfa expression", ra!(offheap_cfi_odd_cfa_expr), Rule::Other),
        ("rbp at cfa+0", ra!(offheap_cfi_odd_bp_at_cfa), Rule::Other),
        (
            "rbp at i16::MIN",
            ra!(offheap_cfi_odd_bp_min),
            frame(false, 8, -32768),
        ),
        (
            "rbp below i16",
            ra!(offheap_cfi_odd_bp_too_far),
            Rule::Other,
        ),
        (
            "rbp above cfa",
            ra!(offheap_cfi_odd_bp_above),
            frame(false, 8, 16),
        ),
        (
            "cfa at i32::MAX",
            ra!(offheap_cfi_odd_cfa_max),
            frame(false, i32::MAX, 0),
        ),
        (
            "cfa past i32",
            ra!(offheap_cfi_odd_cfa_too_far),
            Rule::Other,
        ),
        (
            "rbp same value",
            ra!(offheap_cfi_odd_same_value),
            frame(false, 8, 0),
        ),
        ("no fde", ra!(offheap_cfi_none), Rule::NoCfi),
    ]
}

/// The test binary's own CFI, found the way the library finds an image's: program headers,
/// `.eh_frame_hdr`, and `.eh_frame` up to the end of its segment.
fn this_module() -> &'static [ModuleCfi] {
    static M: std::sync::OnceLock<Vec<ModuleCfi>> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        struct Found {
            want: u64,
            module: Option<ModuleCfi>,
        }
        unsafe extern "C" fn each(
            info: *mut libc::dl_phdr_info,
            _: usize,
            data: *mut libc::c_void,
        ) -> i32 {
            // SAFETY: dl_iterate_phdr hands valid headers; data is our Found.
            let (info, found) = unsafe { (&*info, &mut *(data as *mut Found)) };
            let base = info.dlpi_addr;
            // SAFETY: dlpi_phdr points at dlpi_phnum headers.
            let phdrs =
                unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
            let (mut loads, mut exec, mut hdr) = (Vec::new(), Vec::new(), None);
            for ph in phdrs {
                let (lo, hi) = (base + ph.p_vaddr, base + ph.p_vaddr + ph.p_memsz);
                match ph.p_type {
                    libc::PT_LOAD => {
                        loads.push((lo, hi));
                        if ph.p_flags & libc::PF_X != 0 {
                            exec.push((lo, hi));
                        }
                    }
                    libc::PT_GNU_EH_FRAME => hdr = Some((lo, hi)),
                    _ => {}
                }
            }
            let Some(&text) = exec.iter().find(|r| r.0 <= found.want && found.want < r.1) else {
                return 0;
            };
            let (hlo, hhi) = hdr.expect("the test binary has .eh_frame_hdr");
            // SAFETY: PT_GNU_EH_FRAME is mapped for p_memsz bytes while the binary runs.
            let hdr_bytes: &'static [u8] =
                unsafe { core::slice::from_raw_parts(hlo as *const u8, (hhi - hlo) as usize) };
            assert_eq!(hdr_bytes[0], 1, "eh_frame_hdr version");
            assert_eq!(hdr_bytes[1], 0x1b, "eh_frame_ptr is pc-relative sdata4");
            let rel = i32::from_le_bytes(hdr_bytes[4..8].try_into().unwrap());
            let eh = (hlo + 4).wrapping_add(rel as i64 as u64);
            let seg_end = loads.iter().find(|r| r.0 <= eh && eh < r.1).unwrap().1;
            // SAFETY: [eh, seg_end) lies in one mapped PT_LOAD segment.
            let eh_bytes: &'static [u8] =
                unsafe { core::slice::from_raw_parts(eh as *const u8, (seg_end - eh) as usize) };
            found.module = ModuleCfi::new(
                text,
                base,
                hdr_bytes,
                hlo - base,
                eh_bytes,
                eh - base,
                text.0 - base,
            );
            1
        }
        let mut found = Found {
            want: ra!(offheap_cfi_frame),
            module: None,
        };
        // SAFETY: the callback only reads what it is handed.
        unsafe { libc::dl_iterate_phdr(Some(each), &mut found as *mut Found as *mut _) };
        vec![found.module.expect("the test binary's CFI parses")]
    })
}

thread_local! {
    static DEEP_CALLS: Cell<u32> = const { Cell::new(0) };
}

/// Runs deep calls in place, counting them: a deep call is a cache miss.
struct Counting;

impl DeepCall for Counting {
    fn run<R>(f: impl FnOnce() -> R) -> R {
        DEEP_CALLS.with(|c| c.set(c.get() + 1));
        f()
    }
}

fn deep_calls() -> u32 {
    DEEP_CALLS.with(|c| c.get())
}

fn lookup(c: &mut RuleCache, modules: &[ModuleCfi], generation: u64, ra: u64) -> Rule {
    Rule::unpack(c.lookup_packed::<Counting>(modules, generation, ra))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_frame_rule_round_trips(from_bp: bool, cfa_off: i32, bp_off: i16) {
        let r = frame(from_bp, cfa_off, bp_off);
        let v = r.pack();
        prop_assert_eq!(Rule::unpack(v), r);
        prop_assert_eq!(Rule::frame(v), Some((from_bp, cfa_off, bp_off)));
    }
}

#[test]
fn the_other_rules_round_trip_and_are_not_frames() {
    let all = [Rule::Other, Rule::NoCfi, Rule::End];
    for r in all {
        assert_eq!(Rule::unpack(r.pack()), r);
        assert_eq!(Rule::frame(r.pack()), None, "{r:?}");
    }
    let packed: std::collections::BTreeSet<u64> = all.iter().map(|r| r.pack()).collect();
    assert_eq!(packed.len(), 3, "distinct packings");
    assert_eq!(
        Rule::Other.pack(),
        0,
        "an all-zero cache entry means `Other`, never a frame rule"
    );
}

#[test]
fn compact_rules_are_read_from_real_cfi() {
    let m = this_module();
    let mut c = Box::new(RuleCache::new());
    for (what, ra, rule) in expectations().into_iter().take(4) {
        assert_eq!(lookup(&mut c, m, 1, ra), rule, "{what}");
    }
}

#[test]
fn the_outermost_frame_ends_the_walk() {
    let mut c = Box::new(RuleCache::new());
    assert_eq!(
        lookup(&mut c, this_module(), 1, ra!(offheap_cfi_odd_undefined_ra)),
        Rule::End
    );
}

#[test]
fn rules_of_other_shapes_are_refused_as_other() {
    let m = this_module();
    let mut c = Box::new(RuleCache::new());
    for (what, ra, rule) in expectations() {
        if rule == Rule::Other {
            assert_eq!(lookup(&mut c, m, 1, ra), Rule::Other, "{what}");
        }
    }
}

#[test]
fn offsets_at_the_edges_of_the_packing_fit_or_are_refused() {
    let m = this_module();
    let mut c = Box::new(RuleCache::new());
    for (what, ra, rule) in expectations() {
        if what.starts_with("rbp") || what.starts_with("cfa at") || what.starts_with("cfa past") {
            assert_eq!(lookup(&mut c, m, 1, ra), rule, "{what}");
        }
    }
}

#[test]
fn addresses_without_cfi_walk_frame_pointers() {
    let m = this_module();
    let mut c = Box::new(RuleCache::new());
    assert_eq!(
        lookup(&mut c, m, 1, ra!(offheap_cfi_none)),
        Rule::NoCfi,
        "inside the image, no FDE"
    );
    assert_eq!(
        lookup(&mut c, m, 1, 0x1000),
        Rule::NoCfi,
        "below every image"
    );
    assert_eq!(
        lookup(&mut c, m, 1, m[0].hi + 1),
        Rule::NoCfi,
        "past its text"
    );
    assert_eq!(
        lookup(&mut c, &[], 2, ra!(offheap_cfi_frame_based)),
        Rule::NoCfi,
        "no images at all"
    );
}

#[test]
fn a_second_lookup_is_a_hit() {
    let m = this_module();
    let mut c = Box::new(RuleCache::new());
    let ra = ra!(offheap_cfi_frame_based);
    let before = deep_calls();
    assert_eq!(lookup(&mut c, m, 7, ra), frame(true, 16, -16));
    assert_eq!(deep_calls(), before + 1, "a miss evaluates the CFI");
    for _ in 0..3 {
        assert_eq!(lookup(&mut c, m, 7, ra), frame(true, 16, -16));
    }
    assert_eq!(deep_calls(), before + 1, "hits do not");
}

#[test]
fn a_new_generation_forgets_every_cached_rule() {
    let m = this_module();
    let mut c = Box::new(RuleCache::new());
    let ra = ra!(offheap_cfi_frame_pushed);
    assert_eq!(lookup(&mut c, m, 1, ra), frame(false, 16, -16));
    // The module set changed (the image was unloaded): the answer must come from the new set.
    let before = deep_calls();
    assert_eq!(lookup(&mut c, &[], 2, ra), Rule::NoCfi);
    assert_eq!(deep_calls(), before + 1);
    // And back: nothing of generation 2 survives into generation 3.
    assert_eq!(lookup(&mut c, m, 3, ra), frame(false, 16, -16));
    assert_eq!(deep_calls(), before + 2);
}

#[test]
fn colliding_addresses_evict_each_other_without_mixing_answers() {
    let m = this_module();
    let mut c = Box::new(RuleCache::new());
    let ra = ra!(offheap_cfi_frame_based);
    // Find an address (below every image: NoCfi) that takes the same cache entry: after it,
    // looking `ra` up again is a miss.
    let mut other = None;
    for k in 1..100_000u64 {
        let cand = 0x10_0000 + k * 8;
        lookup(&mut c, m, 1, ra);
        lookup(&mut c, m, 1, cand);
        let before = deep_calls();
        assert_eq!(lookup(&mut c, m, 1, ra), frame(true, 16, -16));
        if deep_calls() != before {
            other = Some(cand);
            break;
        }
    }
    let other = other.expect("a 2048-entry direct-mapped cache has collisions");
    for _ in 0..3 {
        assert_eq!(lookup(&mut c, m, 1, other), Rule::NoCfi);
        assert_eq!(lookup(&mut c, m, 1, ra), frame(true, 16, -16));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_cache_never_changes_an_answer(
        picks in prop::collection::vec((0usize..20, 1u64..4), 1..200)
    ) {
        let m = this_module();
        let table = expectations();
        let mut c = Box::new(RuleCache::new());
        let mut last = None;
        for (pick, generation) in picks {
            // The labelled addresses and a few without CFI.
            let (ra, want) = match table.get(pick) {
                Some(&(_, ra, rule)) => (ra, rule),
                None => (0x2000 + pick as u64 * 0x40, Rule::NoCfi),
            };
            let before = deep_calls();
            prop_assert_eq!(lookup(&mut c, m, generation, ra), want);
            if last == Some((ra, generation)) {
                prop_assert_eq!(deep_calls(), before, "a repeated lookup is a hit");
            }
            last = Some((ra, generation));
        }
    }
}
