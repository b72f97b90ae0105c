//! Verdicts on synthetic series: each shape must get exactly its verdict.

use super::*;

/// 21 points, 2 s apart (a 40 s run with 2 s dumps).
fn ts() -> Vec<f64> {
    (0..21).map(|i| i as f64 * 2.0).collect()
}

fn series(f: impl Fn(f64) -> f64) -> Vec<f64> {
    ts().into_iter().map(f).collect()
}

fn th() -> Thresholds {
    Thresholds::default()
}

/// Only the survival of early allocations is known.
fn survives(survival: Option<f64>) -> Facts {
    Facts {
        survival,
        interval_s: 2.0,
        ..Facts::default()
    }
}

#[test]
fn linear_growth_with_survivors_is_a_leak_at_the_true_rate() {
    let ys = series(|t| 50_000.0 * t);
    let c = classify(&ts(), &ys, &survives(Some(1.0)), &th());
    assert_eq!(c.verdict, Verdict::Leak);
    assert!((c.rate - 50_000.0).abs() < 1e-6, "{}", c.rate);
    assert!(c.confidence > 0.9, "{}", c.confidence);
}

#[test]
fn noisy_leak_is_still_a_leak() {
    // Request jitter: ±5% around the line.
    let ys = series(|t| 1000.0 + 2000.0 * t * (1.0 + 0.05 * (t * 1.7).sin()));
    let c = classify(&ts(), &ys, &survives(Some(0.95)), &th());
    assert_eq!(c.verdict, Verdict::Leak);
    assert!((c.rate - 2000.0).abs() / 2000.0 < 0.1, "{}", c.rate);
}

#[test]
fn growth_whose_old_allocations_are_freed_is_growing_not_leak() {
    let ys = series(|t| 1000.0 * t);
    let c = classify(&ts(), &ys, &survives(Some(0.1)), &th());
    assert_eq!(c.verdict, Verdict::Growing);
}

#[test]
fn missing_survival_information_does_not_block_a_leak() {
    let ys = series(|t| 100.0 + 1000.0 * t);
    let c = classify(&ts(), &ys, &survives(None), &th());
    assert_eq!(c.verdict, Verdict::Leak);
}

#[test]
fn cache_that_fills_then_plateaus_is_bounded() {
    // 800 KiB cache filled in 16 s, then flat (with eviction churn of a block).
    let ys = series(|t| {
        if t < 16.0 {
            51_200.0 * t
        } else {
            819_200.0
                + if (t as u64 / 2).is_multiple_of(2) {
                    0.0
                } else {
                    2048.0
                }
        }
    });
    let c = classify(&ts(), &ys, &survives(Some(0.0)), &th());
    assert_eq!(c.verdict, Verdict::Bounded);
}

#[test]
fn step_up_then_flat_is_bounded() {
    let ys = series(|t| if t < 10.0 { 0.0 } else { 1_000_000.0 });
    let c = classify(&ts(), &ys, &survives(Some(1.0)), &th());
    assert_eq!(c.verdict, Verdict::Bounded);
}

#[test]
fn burst_released_is_transient() {
    let ys = series(|t| {
        if (5.0..7.0).contains(&t) {
            2_000_000.0
        } else {
            0.0
        }
    });
    let c = classify(&ts(), &ys, &survives(None), &th());
    assert_eq!(c.verdict, Verdict::Transient);
}

#[test]
fn mostly_released_is_transient() {
    let ys = series(|t| if t < 20.0 { 1_000_000.0 } else { 50_000.0 });
    let c = classify(&ts(), &ys, &survives(None), &th());
    assert_eq!(c.verdict, Verdict::Transient);
}

#[test]
fn all_zero_in_window_is_transient() {
    let ys = series(|_| 0.0);
    assert_eq!(
        classify(&ts(), &ys, &survives(None), &th()).verdict,
        Verdict::Transient
    );
}

#[test]
fn constant_from_the_start_is_startup() {
    let ys = series(|_| 65_536.0);
    let c = classify(&ts(), &ys, &survives(Some(1.0)), &th());
    assert_eq!(c.verdict, Verdict::Startup);
    assert_eq!(c.rate, 0.0);
}

#[test]
fn a_constant_level_whose_blocks_are_replaced_is_bounded() {
    // A cache that filled before the window: the level stays, every early block was evicted.
    let ys = series(|_| 409_600.0);
    let facts = Facts {
        survival: Some(0.0),
        turnover: Some((200, 200)),
        ..survives(None)
    };
    let c = classify(&ts(), &ys, &facts, &th());
    assert_eq!(c.verdict, Verdict::Bounded);
    // The same level made of the same blocks is startup.
    let kept = Facts {
        survival: Some(1.0),
        turnover: Some((0, 0)),
        ..survives(None)
    };
    assert_eq!(classify(&ts(), &ys, &kept, &th()).verdict, Verdict::Startup);
}

#[test]
fn sampling_noise_on_a_full_cache_is_not_growth() {
    // A cache estimated from ~16 sampled blocks: its level moves by a quarter by chance, here
    // up over the second half. Counted exactly that would be growth; from 16 samples it is not.
    let ys = series(|t| 400_000.0 + 5_000.0 * (t - 20.0).max(0.0));
    let facts = Facts {
        survival: Some(0.0),
        turnover: Some((500, 480)),
        samples: Some(16),
        ..survives(None)
    };
    let c = classify(&ts(), &ys, &facts, &th());
    assert!(!c.verdict.is_suspect(), "{:?}: {}", c.verdict, c.reason);
    let exact = Facts {
        samples: None,
        sample_mean_bytes: None,
        ..facts
    };
    assert!(classify(&ts(), &ys, &exact, &th()).verdict.is_suspect());
}

#[test]
fn tiny_jitter_around_a_constant_is_startup() {
    let ys = series(|t| {
        1_000_000.0
            + if (t as u64 / 2).is_multiple_of(2) {
                0.0
            } else {
                32.0
            }
    });
    assert_eq!(
        classify(&ts(), &ys, &survives(Some(1.0)), &th()).verdict,
        Verdict::Startup
    );
}

#[test]
fn one_point_is_single_dump_and_none_is_unknown() {
    assert_eq!(
        classify(&[1.0], &[4096.0], &survives(None), &th()).verdict,
        Verdict::SingleDump
    );
    assert_eq!(
        classify(&[], &[], &survives(None), &th()).verdict,
        Verdict::Unknown
    );
}

#[test]
fn two_points_of_growth_are_insufficient_not_a_leak() {
    // A filling cache and a leak look alike over two dumps.
    let c = classify(&[0.0, 2.0], &[0.0, 100_000.0], &survives(Some(1.0)), &th());
    assert_eq!(c.verdict, Verdict::Insufficient);
    assert!(c.confidence < 0.5, "{}", c.confidence);
    assert!(!c.verdict.is_suspect() && c.verdict.is_listed());
    // Asked to judge from two dumps, the same series is a (weak) leak.
    let two = Thresholds {
        min_dumps: 2,
        ..th()
    };
    let c = classify(&[0.0, 2.0], &[0.0, 100_000.0], &survives(Some(1.0)), &two);
    assert_eq!(c.verdict, Verdict::Leak);
}

/// 1,499 allocations in the first 16 s, none freed, then no traffic: the leak stopped.
#[test]
fn a_leak_whose_traffic_stopped_is_still_a_leak() {
    let ys = series(|t| 1000.0 * t.min(16.0));
    let facts = Facts {
        survival: Some(1.0),
        turnover: Some((1499, 0)),
        max_age_s: Some(40.0),
        interval_s: 2.0,
        samples: None,
        sample_mean_bytes: None,
    };
    let c = classify(&ts(), &ys, &facts, &th());
    assert_eq!(c.verdict, Verdict::Leak, "{}", c.reason);
    // The same shape with evictions (an LRU that filled up) is bounded.
    let lru = Facts {
        survival: Some(0.3),
        turnover: Some((4000, 2500)),
        ..facts
    };
    assert_eq!(classify(&ts(), &ys, &lru, &th()).verdict, Verdict::Bounded);
}

/// A 1 s burst every 4 s, caught by some dumps and not by others (the last one included).
#[test]
fn recurring_short_bursts_are_transient_whichever_dump_catches_one() {
    let ts: Vec<f64> = (0..30).map(|i| i as f64).collect();
    let ys: Vec<f64> = ts
        .iter()
        .map(|t| {
            if (*t as u64) % 4 == 1 {
                2_000_000.0
            } else {
                0.0
            }
        })
        .collect();
    let facts = Facts {
        survival: Some(0.0),
        turnover: Some((7000, 6800)),
        max_age_s: Some(1.0),
        interval_s: 1.0,
        samples: None,
        sample_mean_bytes: None,
    };
    // 29 dumps end between bursts, 30 end in one.
    for n in [29, 30] {
        let c = classify(&ts[..n], &ys[..n], &facts, &th());
        assert_eq!(c.verdict, Verdict::Transient, "{n} dumps: {}", c.reason);
    }
}

#[test]
fn up_and_down_ending_near_start_but_high_is_bounded() {
    // A pool that grew to its working level and shrank a little: ends above half the peak.
    let ys = series(|t| {
        if t < 10.0 {
            100_000.0 * t
        } else {
            1_000_000.0 - 20_000.0 * (t - 10.0)
        }
    });
    // starts at 0, ends at 400 KB (> 10% of the 1 MB peak): not transient, still above start.
    let c = classify(&ts(), &ys, &survives(Some(0.0)), &th());
    assert_eq!(c.verdict, Verdict::Bounded);
}

#[test]
fn fit_is_exact_on_a_line() {
    let (s, r2) = fit(&[0.0, 1.0, 2.0, 3.0], &[1.0, 3.0, 5.0, 7.0]);
    assert!((s - 2.0).abs() < 1e-12 && (r2 - 1.0).abs() < 1e-12);
    assert_eq!(fit(&[1.0, 1.0], &[1.0, 2.0]), (0.0, 0.0));
}

#[test]
fn robust_slope_ignores_one_outlier() {
    // 64 KiB/s growth with a 1 MiB start-up mapping in the first dump only.
    let xs: Vec<f64> = (0..9).map(|i| 2.0 + 2.0 * i as f64).collect();
    let mut ys: Vec<f64> = xs.iter().map(|x| 65536.0 * x).collect();
    ys[0] += 1_048_576.0;
    let s = super::robust_slope(&xs, &ys);
    assert_eq!(s, 65536.0);
    assert!(
        super::fit(&xs, &ys).0 < 40_000.0,
        "least squares is tilted by it"
    );
}

/// examples/go/arenachurn's churn path, dumped every second: a floor of survivors (about
/// 4.1 MB, reached after three rounds) and peaks wherever a dump caught a round in flight.
/// The bytes are a **regression** copy of one recorded run (`offheap dump cat`, stack of
/// `churn_round`); the **truth** is the program's: survivors of a fixed count, freed three
/// rounds later, so the churn path's memory is bounded.
#[test]
fn churn_with_peaks_of_work_in_flight_is_bounded_not_growing() {
    let ts: Vec<f64> = (1..=20).map(|i| i as f64 * 1.05).collect();
    let ys = [
        1378227.0, 2920596.0, 4157355.0, 7236213.0, 10316227.0, 7822730.0, 4126250.0, 6964728.0,
        6694870.0, 4148952.0, 9605700.0, 5981008.0, 12038397.0, 4083428.0, 6416883.0, 4143302.0,
        4182217.0, 17128887.0, 4136681.0, 4136681.0,
    ];
    let facts = Facts {
        survival: Some(0.0),
        turnover: Some((5_462_727, 5_448_360)),
        max_age_s: Some(4.2),
        interval_s: 1.05,
        samples: None,
        sample_mean_bytes: None,
    };
    let c = classify(&ts, &ys, &facts, &th());
    assert_eq!(c.verdict, Verdict::Bounded, "{}", c.reason);
    // A backlog raises its floor as well: still growing.
    let backlog: Vec<f64> = ys
        .iter()
        .enumerate()
        .map(|(i, y)| y + 400_000.0 * i as f64)
        .collect();
    let c = classify(&ts, &backlog, &facts, &th());
    assert_eq!(c.verdict, Verdict::Growing, "{}", c.reason);
}

/// A leak estimated from 9 samples of 512 KiB whose last third drew none: growth at the
/// window's rate would have drawn ~2 there, so the flat tail is chance.
#[test]
fn a_sampled_leak_whose_tail_drew_no_sample_is_not_levelled_off() {
    let mean = 512.0 * 1024.0;
    let ts: Vec<f64> = (0..10).map(|i| 2.0 * i as f64).collect();
    let ys: Vec<f64> = [0.0, 1.0, 2.0, 4.0, 6.0, 9.0, 9.0, 9.0, 9.0, 9.0]
        .iter()
        .map(|k| k * mean)
        .collect();
    let sampled = Facts {
        survival: Some(1.0),
        turnover: Some((9, 0)),
        max_age_s: Some(18.0),
        interval_s: 2.0,
        samples: Some(9),
        sample_mean_bytes: Some(mean),
    };
    let c = classify(&ts, &ys, &sampled, &th());
    assert_eq!(c.verdict, Verdict::Leak, "{}", c.reason);
    // Counted exactly, the same shape did level off; with nothing freed, the reason says so
    // (it read "while freeing").
    let counted = Facts {
        samples: None,
        sample_mean_bytes: None,
        ..sampled
    };
    let c = classify(&ts, &ys, &counted, &th());
    assert_eq!(c.verdict, Verdict::Bounded, "{}", c.reason);
    assert!(
        c.reason.contains("nothing it allocated was freed"),
        "{}",
        c.reason
    );
}

#[test]
fn a_shape_read_from_a_few_samples_is_insufficient_unless_nothing_is_left() {
    let th = th();
    let shaped = |v: Verdict| Classification::new(v, 0.0, 0.8, "shape");
    for v in [
        Verdict::Bounded,
        Verdict::Startup,
        Verdict::Leak,
        Verdict::Growing,
    ] {
        let c = with_samples(shaped(v), Some(2), true, &th);
        assert_eq!(c.verdict, Verdict::Insufficient, "{v:?}");
        assert_eq!(c.reason, TOO_FEW_SAMPLES);
    }
    // An LRU's sampled entries, evicted in turn, come and go while it stays full.
    let c = with_samples(shaped(Verdict::Transient), Some(3), true, &th);
    assert_eq!(c.verdict, Verdict::Insufficient);
    // Nothing live at the end is a fact even from few samples.
    let c = with_samples(shaped(Verdict::Transient), Some(3), false, &th);
    assert_eq!(c.verdict, Verdict::Transient);
    // Enough samples, or none taken (every block counted): unchanged.
    assert_eq!(
        with_samples(shaped(Verdict::Bounded), Some(8), true, &th).verdict,
        Verdict::Bounded
    );
    assert_eq!(
        with_samples(shaped(Verdict::Bounded), None, true, &th).verdict,
        Verdict::Bounded
    );
}
