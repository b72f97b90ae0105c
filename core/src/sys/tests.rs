//! System-call helpers: raw calls agree with libc and report −errno without touching errno,
//! the errno guard restores, own mappings are zeroed, page-rounded and listed until unmapped,
//! and the line buffer keeps room for its newline and neutralises control characters.

use super::*;
use core::fmt::Write;

#[test]
fn raw_results_in_the_last_page_are_errors() {
    assert_eq!(raw::error(-1), Some(1));
    assert_eq!(raw::error(-4095), Some(4095));
    assert_eq!(
        raw::error(-4096),
        None,
        "an address in the last page, not an errno"
    );
    assert_eq!(raw::error(0), None);
    assert_eq!(raw::error(12345), None);
}

#[test]
fn raw_calls_agree_with_libc_and_leave_errno_alone() {
    // SAFETY: getpid and gettid have no preconditions.
    let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
    assert_eq!(crate::raw_syscall!(libc::SYS_getpid), pid as isize);
    assert_eq!(crate::raw_syscall!(libc::SYS_gettid), tid as isize);
    set_errno(1234);
    let r = crate::raw_syscall!(libc::SYS_close, -1i32 as usize);
    assert_eq!(raw::error(r), Some(libc::EBADF));
    assert_eq!(errno(), 1234, "a raw call does not write errno");
}

#[test]
fn the_errno_guard_restores_what_it_saved_or_was_told() {
    set_errno(7);
    {
        let _g = ErrnoGuard::save();
        set_errno(99);
    }
    assert_eq!(errno(), 7);
    {
        let mut g = ErrnoGuard::save();
        set_errno(99);
        g.set_saved(libc::ENOMEM);
    }
    assert_eq!(errno(), libc::ENOMEM);
}

#[test]
fn round_up_goes_to_the_next_multiple() {
    assert_eq!(round_up(0, PAGE), 0);
    assert_eq!(round_up(1, PAGE), 4096);
    assert_eq!(round_up(4096, PAGE), 4096);
    assert_eq!(round_up(4097, PAGE), 8192);
    assert_eq!(round_up(17, 16), 32);
}

#[test]
fn own_mappings_are_zeroed_listed_and_forgotten_when_unmapped() {
    set_errno(55);
    let p = map_own(5000);
    assert!(!p.is_null());
    assert_eq!(p as usize % PAGE, 0);
    assert_eq!(errno(), 55, "errno as it was");
    // SAFETY: map_own gave 5000 bytes rounded up to two pages, readable and writable.
    let bytes = unsafe { core::slice::from_raw_parts_mut(p, 2 * PAGE) };
    assert!(bytes.iter().all(|&b| b == 0));
    bytes[2 * PAGE - 1] = 1;
    let range = (p as u64, p as u64 + 2 * PAGE as u64);
    assert!(
        own_maps_sorted().contains(&range),
        "listed with its rounded length"
    );
    let sorted = own_maps_sorted();
    assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
    unmap_own(p, 5000);
    assert!(!own_maps_sorted().contains(&range));
}

#[test]
fn a_mapping_noted_as_ours_is_listed() {
    // Not a real mapping: only the bookkeeping is under test (an address no test maps).
    note_own_mapping(0x7e00_0000_0000, 3 * PAGE as u64);
    assert!(own_maps_sorted().contains(&(0x7e00_0000_0000, 0x7e00_0000_3000)));
    OWN_MAPS.lock().remove(0x7e00_0000_0000);
    assert!(!own_maps_sorted().iter().any(|r| r.0 == 0x7e00_0000_0000));
}

#[test]
fn clocks_move_forward_and_agree() {
    let a = monotonic_ns();
    let ms = coarse_ms();
    let b = monotonic_ns();
    assert!(b >= a);
    // The coarse clock is the fine one as of the last tick (4 ms at HZ=250, 10 ms at 100):
    // read between `a` and `b`, it is at most `b` and at most a tick (+ rounding) before `a`,
    // however long this thread is descheduled in between.
    assert!(ms <= b / 1_000_000, "{ms} vs {b}");
    assert!(ms + 20 >= a / 1_000_000, "{ms} vs {a}");
    assert!(wall_ns() > 1_600_000_000 * 1_000_000_000, "after 2020");
}

#[test]
fn a_line_replaces_control_characters_and_ends_with_one_newline() {
    let mut l = LineBuf::new();
    write!(l, "a\nb\tc\x7fd").unwrap();
    l.end_line();
    assert_eq!(l.as_bytes(), b"a?b?c?d\n");
}

#[test]
fn a_long_line_is_cut_keeping_room_for_its_newline() {
    let mut l = LineBuf::new();
    for _ in 0..100 {
        write!(l, "0123456789").unwrap();
    }
    assert_eq!(l.as_bytes().len(), 511);
    l.end_line();
    let b = l.as_bytes();
    assert_eq!(b.len(), 512);
    assert_eq!(b[511], b'\n');
    assert!(b[..511].iter().all(u8::is_ascii_digit));
    write!(l, "more").unwrap();
    l.end_line();
    assert_eq!(
        l.as_bytes().len(),
        512,
        "a full line ends once, in its last byte"
    );
    assert_eq!(l.as_bytes()[511], b'\n');
    assert_eq!(l.as_bytes().iter().filter(|&&c| c == b'\n').count(), 1);
}
