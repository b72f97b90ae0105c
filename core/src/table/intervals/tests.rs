//! Interval arithmetic of the mmap table: munmap cutting (either end, middle holes, across
//! adjacent mappings and gaps), MAP_FIXED replacement, mprotect splits and relabels, mremap
//! grow/shrink/move (as the hooks compose it from `cut` and `insert`), `readable_region`,
//! and a property test of every operation against a page-by-page model.

use super::*;
use crate::table::Birth;
use proptest::prelude::*;
use std::collections::BTreeMap;

const P: u64 = 0x1000;
const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const RO: i32 = libc::PROT_READ;
const NONE: i32 = libc::PROT_NONE;

type Map = BTreeMap<u64, Interval>;

fn iv(end: u64, prot: i32, stack: u32) -> Interval {
    Interval {
        end,
        prot,
        file: false,
        via: Via::Libc,
        birth: Birth {
            stack,
            generation: stack as u16,
            epoch: 0,
            ms: stack * 10,
            sampled: false,
        },
    }
}

/// The table as `(start, end, prot, stack)` rows, for readable assertions.
fn rows(map: &Map) -> Vec<(u64, u64, i32, u32)> {
    map.iter()
        .map(|(&s, iv)| (s, iv.end, iv.prot, iv.birth.stack))
        .collect()
}

fn pieces(removed: &[(u64, Interval)]) -> Vec<(u64, u64, i32, u32)> {
    removed
        .iter()
        .map(|(s, iv)| (*s, iv.end, iv.prot, iv.birth.stack))
        .collect()
}

/// mremap as the hooks do it (track/mapping.rs): the interval holding the old start is the
/// template, the old range leaves the table, the new range replaces whatever was there.
fn remap(map: &mut Map, old: u64, old_len: u64, new: u64, new_len: u64) -> Vec<(u64, Interval)> {
    let template = map
        .range(..=old)
        .next_back()
        .filter(|(_, iv)| iv.end > old)
        .map(|(_, iv)| *iv)
        .expect("mremap of a tracked mapping");
    let removed = cut(map, old, old + old_len);
    insert(
        map,
        new,
        Interval {
            end: new + new_len,
            ..template
        },
    );
    removed
}

#[test]
fn unmapping_the_first_pages_keeps_the_tail_with_its_birth() {
    let mut m = Map::new();
    insert(&mut m, 16 * P, iv(32 * P, RW, 7));
    let removed = cut(&mut m, 16 * P, 18 * P);
    assert_eq!(pieces(&removed), vec![(16 * P, 18 * P, RW, 7)]);
    assert_eq!(rows(&m), vec![(18 * P, 32 * P, RW, 7)]);
    assert_eq!(
        m[&(18 * P)].birth.ms,
        70,
        "the whole birth survives the cut"
    );
}

#[test]
fn unmapping_the_last_pages_keeps_the_head() {
    let mut m = Map::new();
    insert(&mut m, 16 * P, iv(32 * P, RW, 7));
    let removed = cut(&mut m, 30 * P, 40 * P);
    assert_eq!(pieces(&removed), vec![(30 * P, 32 * P, RW, 7)]);
    assert_eq!(rows(&m), vec![(16 * P, 30 * P, RW, 7)]);
}

#[test]
fn a_hole_in_the_middle_splits_the_mapping_in_two() {
    let mut m = Map::new();
    insert(&mut m, 16 * P, iv(32 * P, RO, 3));
    let removed = cut(&mut m, 20 * P, 21 * P);
    assert_eq!(pieces(&removed), vec![(20 * P, 21 * P, RO, 3)]);
    assert_eq!(
        rows(&m),
        vec![(16 * P, 20 * P, RO, 3), (21 * P, 32 * P, RO, 3)]
    );
}

#[test]
fn an_unmap_across_adjacent_mappings_cuts_each_and_keeps_their_own_births() {
    let mut m = Map::new();
    insert(&mut m, 0, iv(4 * P, RW, 1));
    insert(&mut m, 4 * P, iv(8 * P, RW, 2));
    insert(&mut m, 8 * P, iv(12 * P, RW, 3));
    assert_eq!(
        m.len(),
        3,
        "adjacent mappings are not merged: each keeps its birth"
    );
    let removed = cut(&mut m, 2 * P, 10 * P);
    assert_eq!(
        pieces(&removed),
        vec![
            (2 * P, 4 * P, RW, 1),
            (4 * P, 8 * P, RW, 2),
            (8 * P, 10 * P, RW, 3)
        ]
    );
    assert_eq!(rows(&m), vec![(0, 2 * P, RW, 1), (10 * P, 12 * P, RW, 3)]);
}

#[test]
fn an_unmap_over_gaps_returns_only_what_was_tracked() {
    let mut m = Map::new();
    insert(&mut m, 2 * P, iv(3 * P, RW, 1));
    insert(&mut m, 6 * P, iv(9 * P, RW, 2));
    let removed = cut(&mut m, 0, 8 * P);
    assert_eq!(
        pieces(&removed),
        vec![(2 * P, 3 * P, RW, 1), (6 * P, 8 * P, RW, 2)]
    );
    assert_eq!(rows(&m), vec![(8 * P, 9 * P, RW, 2)]);
    assert!(
        cut(&mut m, 20 * P, 30 * P).is_empty(),
        "nothing tracked there"
    );
}

#[test]
fn an_unmap_that_only_touches_the_edges_changes_nothing() {
    let mut m = Map::new();
    insert(&mut m, 4 * P, iv(8 * P, RW, 1));
    assert!(
        cut(&mut m, 0, 4 * P).is_empty(),
        "ends where the mapping starts"
    );
    assert!(cut(&mut m, 8 * P, 9 * P).is_empty(), "starts where it ends");
    assert!(cut(&mut m, 6 * P, 6 * P).is_empty(), "empty range");
    assert!(cut(&mut m, 7 * P, 5 * P).is_empty(), "inverted range");
    assert_eq!(rows(&m), vec![(4 * P, 8 * P, RW, 1)]);
}

#[test]
fn map_fixed_over_tracked_mappings_replaces_only_the_overlap() {
    let mut m = Map::new();
    insert(&mut m, 0, iv(8 * P, RW, 1));
    insert(&mut m, 8 * P, iv(16 * P, RO, 2));
    insert(&mut m, 6 * P, iv(10 * P, NONE, 9));
    assert_eq!(
        rows(&m),
        vec![
            (0, 6 * P, RW, 1),
            (6 * P, 10 * P, NONE, 9),
            (10 * P, 16 * P, RO, 2)
        ]
    );
    // A new mapping that covers an old one entirely swallows it.
    insert(&mut m, 0, iv(16 * P, RW, 5));
    assert_eq!(rows(&m), vec![(0, 16 * P, RW, 5)]);
}

#[test]
fn mprotect_in_the_middle_splits_in_three_and_relabels_only_the_middle() {
    let mut m = Map::new();
    insert(&mut m, 0, iv(10 * P, NONE, 4));
    assert_eq!(m[&0].kind(), Kind::MmapReserved);
    protect(&mut m, 2 * P, 5 * P, RW);
    assert_eq!(
        rows(&m),
        vec![
            (0, 2 * P, NONE, 4),
            (2 * P, 5 * P, RW, 4),
            (5 * P, 10 * P, NONE, 4)
        ]
    );
    assert_eq!(
        m[&(2 * P)].kind(),
        Kind::Mmap,
        "a committed part of a reservation is memory"
    );
    assert_eq!(m[&(5 * P)].kind(), Kind::MmapReserved);
}

#[test]
fn mprotect_across_mappings_and_gaps_relabels_tracked_parts_only() {
    let mut m = Map::new();
    insert(&mut m, 0, iv(4 * P, RW, 1));
    insert(&mut m, 6 * P, iv(10 * P, RW, 2));
    protect(&mut m, 2 * P, 8 * P, RO);
    assert_eq!(
        rows(&m),
        vec![
            (0, 2 * P, RW, 1),
            (2 * P, 4 * P, RO, 1),
            (6 * P, 8 * P, RO, 2),
            (8 * P, 10 * P, RW, 2)
        ],
        "the gap [4, 6) stays untracked"
    );
    protect(&mut m, 20 * P, 30 * P, RW);
    assert_eq!(m.len(), 4, "mprotect of untracked memory tracks nothing");
}

#[test]
fn mremap_grows_in_place() {
    let mut m = Map::new();
    insert(&mut m, 16 * P, iv(20 * P, RW, 3));
    let removed = remap(&mut m, 16 * P, 4 * P, 16 * P, 10 * P);
    assert_eq!(pieces(&removed), vec![(16 * P, 20 * P, RW, 3)]);
    assert_eq!(rows(&m), vec![(16 * P, 26 * P, RW, 3)]);
}

#[test]
fn mremap_shrinks_in_place() {
    let mut m = Map::new();
    insert(&mut m, 16 * P, iv(26 * P, RW, 3));
    let removed = remap(&mut m, 16 * P, 10 * P, 16 * P, 3 * P);
    assert_eq!(pieces(&removed), vec![(16 * P, 26 * P, RW, 3)]);
    assert_eq!(rows(&m), vec![(16 * P, 19 * P, RW, 3)]);
}

#[test]
fn mremap_moves_and_the_old_range_is_untracked() {
    let mut m = Map::new();
    insert(&mut m, 16 * P, iv(20 * P, RO, 3));
    insert(&mut m, 20 * P, iv(22 * P, RW, 4));
    remap(&mut m, 16 * P, 4 * P, 64 * P, 8 * P);
    assert_eq!(
        rows(&m),
        vec![(20 * P, 22 * P, RW, 4), (64 * P, 72 * P, RO, 3)],
        "the moved mapping keeps its protection and birth; its neighbour is untouched"
    );
}

#[test]
fn mremap_fixed_onto_a_tracked_mapping_replaces_it() {
    let mut m = Map::new();
    insert(&mut m, 0, iv(4 * P, RW, 1));
    insert(&mut m, 10 * P, iv(20 * P, RO, 2));
    remap(&mut m, 0, 4 * P, 12 * P, 4 * P);
    assert_eq!(
        rows(&m),
        vec![
            (10 * P, 12 * P, RO, 2),
            (12 * P, 16 * P, RW, 1),
            (16 * P, 20 * P, RO, 2)
        ]
    );
}

#[test]
fn mremap_of_the_front_of_a_mapping_leaves_its_rest() {
    let mut m = Map::new();
    insert(&mut m, 0, iv(8 * P, RW, 1));
    remap(&mut m, 0, 2 * P, 32 * P, 2 * P);
    assert_eq!(
        rows(&m),
        vec![(2 * P, 8 * P, RW, 1), (32 * P, 34 * P, RW, 1)]
    );
}

#[test]
fn kinds_follow_file_and_protection() {
    let anon = iv(P, RW, 0);
    assert_eq!(anon.kind(), Kind::Mmap);
    assert_eq!(iv(P, NONE, 0).kind(), Kind::MmapReserved);
    let file = Interval { file: true, ..anon };
    assert_eq!(file.kind(), Kind::MmapFile);
    assert_eq!(
        Interval { prot: NONE, ..file }.kind(),
        Kind::MmapFile,
        "a file mapping stays a file mapping whatever its protection"
    );
}

#[test]
fn readable_regions_span_contiguous_readable_mappings_upwards() {
    let mut m = Map::new();
    insert(&mut m, 0, iv(4 * P, RW, 1));
    insert(&mut m, 4 * P, iv(6 * P, RO, 2));
    insert(&mut m, 6 * P, iv(8 * P, NONE, 3));
    insert(&mut m, 10 * P, iv(12 * P, RW, 4));
    insert(&mut m, 12 * P, iv(14 * P, RW, 5));
    assert_eq!(readable_region(&m, 0), Some((0, 6 * P)));
    assert_eq!(
        readable_region(&m, 5 * P + 8),
        Some((4 * P, 6 * P)),
        "stops at the PROT_NONE mapping"
    );
    assert_eq!(readable_region(&m, 6 * P), None, "inside PROT_NONE");
    assert_eq!(readable_region(&m, 8 * P), None, "in the gap");
    assert_eq!(readable_region(&m, 13 * P), Some((12 * P, 14 * P)));
    assert_eq!(readable_region(&m, 11 * P), Some((10 * P, 14 * P)));
    assert_eq!(readable_region(&m, 14 * P), None, "the end is exclusive");
    let mut wo = Map::new();
    insert(&mut wo, 0, iv(P, libc::PROT_WRITE, 1));
    assert_eq!(readable_region(&wo, 0), None, "write-only is not readable");
}

#[test]
fn the_generation_moves_on_with_every_invalidation() {
    let t = Intervals::new();
    let g0 = t.generation();
    {
        let mut map = t.lock();
        insert(&mut map, 0, iv(P, RW, 1));
        t.invalidate();
    }
    assert!(t.generation() > g0);
    let g1 = t.generation();
    t.invalidate();
    assert_ne!(t.generation(), g1, "a cached proof from g1 is dead");
    assert_eq!(t.lock_or_give_up().map(|m| m.len()), Some(1));
}

/// The model: page number -> (prot, stack) for every tracked page.
type Pages = BTreeMap<u64, (i32, u32)>;

fn pages_of(map: &Map) -> Pages {
    let mut pages = Pages::new();
    for (&s, iv) in map {
        for p in s / P..iv.end / P {
            assert!(
                pages.insert(p, (iv.prot, iv.birth.stack)).is_none(),
                "page {p} is in two intervals"
            );
        }
    }
    pages
}

fn well_formed(map: &Map) -> Result<(), TestCaseError> {
    let mut prev_end = 0;
    for (&s, iv) in map {
        prop_assert!(s < iv.end, "empty interval at {:#x}", s);
        prop_assert!(s >= prev_end, "overlap at {:#x}", s);
        prev_end = iv.end;
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Op {
    Map {
        at: u64,
        len: u64,
        prot: i32,
        stack: u32,
    },
    Unmap {
        at: u64,
        len: u64,
    },
    Protect {
        at: u64,
        len: u64,
        prot: i32,
    },
    Remap {
        old: u64,
        old_len: u64,
        new: u64,
        new_len: u64,
    },
}

fn prot() -> impl Strategy<Value = i32> {
    prop_oneof![Just(RW), Just(RO), Just(NONE)]
}

fn op() -> impl Strategy<Value = Op> {
    // A 48-page window with short lengths: overlaps, adjacency and exact edges are common.
    prop_oneof![
        (0u64..48, 1u64..12, prot(), 1u32..1000).prop_map(|(at, len, prot, stack)| Op::Map {
            at,
            len,
            prot,
            stack
        }),
        (0u64..48, 1u64..16).prop_map(|(at, len)| Op::Unmap { at, len }),
        (0u64..48, 1u64..16, prot()).prop_map(|(at, len, prot)| Op::Protect { at, len, prot }),
        (0u64..48, 1u64..8, 0u64..48, 1u64..12).prop_map(|(old, old_len, new, new_len)| {
            Op::Remap {
                old,
                old_len,
                new,
                new_len,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_operation_matches_a_page_model(ops in prop::collection::vec(op(), 1..40)) {
        let mut m = Map::new();
        let mut model = Pages::new();
        for op in ops {
            match op {
                Op::Map { at, len, prot, stack } => {
                    insert(&mut m, at * P, iv((at + len) * P, prot, stack));
                    for p in at..at + len {
                        model.insert(p, (prot, stack));
                    }
                }
                Op::Unmap { at, len } => {
                    let removed = cut(&mut m, at * P, (at + len) * P);
                    let expect: Pages = model.range(at..at + len).map(|(&p, &v)| (p, v)).collect();
                    for p in at..at + len {
                        model.remove(&p);
                    }
                    // What the cut returns is exactly what was tracked there, in order.
                    let got: Map = removed.iter().copied().collect();
                    prop_assert_eq!(got.len(), removed.len(), "pieces start apart");
                    prop_assert!(removed.windows(2).all(|w| w[0].1.end <= w[1].0));
                    well_formed(&got)?;
                    prop_assert_eq!(pages_of(&got), expect);
                }
                Op::Protect { at, len, prot } => {
                    protect(&mut m, at * P, (at + len) * P, prot);
                    for (_, v) in model.range_mut(at..at + len) {
                        v.0 = prot;
                    }
                }
                Op::Remap { old, old_len, new, new_len } => {
                    let Some(&(prot, stack)) = model.get(&old) else { continue };
                    remap(&mut m, old * P, old_len * P, new * P, new_len * P);
                    for p in old..old + old_len {
                        model.remove(&p);
                    }
                    for p in new..new + new_len {
                        model.insert(p, (prot, stack));
                    }
                }
            }
            well_formed(&m)?;
            prop_assert_eq!(pages_of(&m), model.clone());
        }
    }

    #[test]
    fn readable_regions_are_readable_and_reach_as_far_up_as_they_can(
        ops in prop::collection::vec((0u64..40, 1u64..8, prot(), 1u32..9), 0..20),
        addr_page in 0u64..48,
        offset in 0u64..P,
    ) {
        let mut m = Map::new();
        for (at, len, prot, stack) in ops {
            insert(&mut m, at * P, iv((at + len) * P, prot, stack));
        }
        let model = pages_of(&m);
        let readable = |p: u64| model.get(&p).is_some_and(|v| v.0 & libc::PROT_READ != 0);
        let addr = addr_page * P + offset;
        match readable_region(&m, addr) {
            None => prop_assert!(!readable(addr_page)),
            Some((lo, hi)) => {
                prop_assert!(lo <= addr && addr < hi);
                prop_assert!(lo % P == 0 && hi % P == 0);
                for p in lo / P..hi / P {
                    prop_assert!(readable(p), "page {} in the region is not readable", p);
                }
                prop_assert!(!readable(hi / P), "the region stops short of readable page {}", hi / P);
            }
        }
    }
}
