// Tests run on std threads: the disallowed-methods rule is about the library's own threads.
#![allow(clippy::disallowed_methods)]

use super::*;

fn slot(addr: u64, size: u64) -> Slot {
    Slot {
        addr,
        size,
        stack: 7,
        generation: 1,
        epoch: 2,
        flags: 0,
        birth_ms: 99,
    }
}

fn open_log() -> YoungLog {
    let log = YoungLog::new();
    // SAFETY: a test's own log, used by this thread only.
    unsafe { log.open_in_child() };
    log
}

#[test]
fn a_closed_log_keeps_nothing() {
    let log = YoungLog::new();
    assert!(!log.record(&slot(0x1000, 8)));
    assert!(log.take(0x1000).is_none());
    assert_eq!(log.close(|_| panic!("nothing to drain")), 0);
}

#[test]
fn records_are_taken_back_exactly_once() {
    let log = open_log();
    for i in 1..=10u64 {
        assert!(log.record(&slot(i * 0x10, i)));
    }
    let s = log.take(0x50).expect("recorded");
    assert_eq!((s.addr, s.size, s.stack, s.birth_ms), (0x50, 5, 7, 99));
    assert!(log.take(0x50).is_none(), "taken once");
    assert!(log.take(0x1230).is_none(), "never recorded");
    let mut drained: Vec<u64> = Vec::new();
    assert_eq!(log.close(|s| drained.push(s.addr)), 9);
    drained.sort_unstable();
    assert_eq!(
        drained,
        vec![0x10, 0x20, 0x30, 0x40, 0x60, 0x70, 0x80, 0x90, 0xa0]
    );
    assert!(!log.is_open());
    assert!(!log.record(&slot(0x10, 1)), "closed after the drain");
    assert!(
        log.take(0x10).is_none(),
        "the drained records are the table's now"
    );
}

#[test]
fn a_full_log_refuses_and_still_drains_everything() {
    let log = open_log();
    for i in 1..=ENTRIES as u64 {
        assert!(log.record(&slot(i * 0x10, 1)));
    }
    assert!(
        !log.record(&slot(0xdead0, 1)),
        "full: the caller uses the table"
    );
    assert!(log.take(0x10).is_some());
    assert!(log.record(&slot(0xdead0, 1)), "room again after a free");
    let mut n = 0;
    assert_eq!(log.close(|_| n += 1), ENTRIES);
    assert_eq!(n, ENTRIES);
}

#[test]
fn reopening_in_a_child_forgets_the_parents_records() {
    let log = open_log();
    assert!(log.record(&slot(0x40, 4)));
    // SAFETY: as in open_log.
    unsafe { log.open_in_child() };
    assert!(log.take(0x40).is_none());
    assert_eq!(log.close(|_| {}), 0);
}

#[test]
fn concurrent_records_and_frees_lose_nothing_across_a_close() {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    let log = Arc::new(open_log());
    let table = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let leaked = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let (log, table, leaked) = (log.clone(), table.clone(), leaked.clone());
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    let addr = ((t << 32) | (i + 1)) << 4;
                    if !log.record(&slot(addr, 1)) {
                        table.lock().unwrap().insert(addr);
                    }
                    // Free it: the log first, then the table; one of them must have it.
                    if log.take(addr).is_none() && !table.lock().unwrap().remove(&addr) {
                        leaked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1));
    log.close(|s| {
        table.lock().unwrap().insert(s.addr);
    });
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        leaked.load(Ordering::Relaxed),
        0,
        "every free found its record"
    );
    assert!(
        table.lock().unwrap().is_empty(),
        "and nothing stayed behind"
    );
}
