//! An ordered parallel map with bounded memory: workers parse files ahead of the consumer by
//! at most a fixed window, and the consumer receives the results strictly in input order.
//!
//! Folding a dump into the model must happen in seq order (series are built left to right);
//! parsing is the expensive part and parallelises. The window keeps at most `window` parsed
//! but unfolded dumps in memory, whatever the number of files.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

struct State<R> {
    next: usize,
    consumed: usize,
    ready: BTreeMap<usize, R>,
}

/// Worker threads for parsing: the machine's cores, at most 8.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// Calls `work` on every item on up to `threads` threads and `consume(i, result)` on the
/// calling thread in index order. At most `window` results wait to be consumed.
pub fn ordered_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    window: usize,
    work: impl Fn(&T) -> R + Sync,
    mut consume: impl FnMut(usize, R),
) {
    let n = items.len();
    let threads = threads.clamp(1, n.max(1));
    let window = window.max(threads);
    let state = Mutex::new(State {
        next: 0,
        consumed: 0,
        ready: BTreeMap::new(),
    });
    let cv = Condvar::new();
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = {
                    let mut st = lock();
                    while st.next < n && st.next >= st.consumed + window {
                        st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                    if st.next >= n {
                        return;
                    }
                    st.next += 1;
                    st.next - 1
                };
                let r = work(&items[i]);
                lock().ready.insert(i, r);
                cv.notify_all();
            });
        }
        for i in 0..n {
            let r = {
                let mut st = lock();
                loop {
                    if let Some(r) = st.ready.remove(&i) {
                        st.consumed = i + 1;
                        break r;
                    }
                    st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            cv.notify_all();
            consume(i, r);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_order_with_a_bounded_window() {
        let items: Vec<u64> = (0..200).collect();
        let mut seen = Vec::new();
        ordered_map(
            &items,
            4,
            6,
            |&x| {
                // Uneven work so that results finish out of order.
                std::thread::sleep(std::time::Duration::from_micros((x * 37) % 300));
                x * 2
            },
            |i, r| {
                assert_eq!(r, items[i] * 2);
                seen.push(i);
            },
        );
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        let mut none = Vec::new();
        ordered_map(&[] as &[u8], 4, 4, |_| 0, |i, _: i32| none.push(i));
        assert!(none.is_empty());
    }
}
