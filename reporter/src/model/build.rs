//! Turning folded series into the model: symbolize every stack once, decide origins and
//! culprits, apply suppressions, classify every series, compute the process-wide rates.

use super::culprit::CodeOwner;
use super::fold::Folded;
use super::helpers::{moved_caller, CallSites};
use super::origin;
use super::{ledger, threads};
use super::{
    BetweenDumps, ExeFacts, FrameTable, LateDumps, ProcessModel, Series, StackInfo, SuppressionUse,
};
use crate::read::StackStore;
use crate::symbolize::{SymFrame, Symbolizer};
use crate::verdict::policy::Suppressions;
use crate::verdict::{self, Facts, Thresholds};
use offheap_format::schema::{Cumulative, Header};
use offheap_format::stack_id;
use offheap_format::Kind;
use std::collections::HashMap;
use std::sync::Arc;

/// What the model is built with besides the folded dumps.
pub struct BuildInputs<'a> {
    pub store: &'a StackStore,
    pub sym: &'a mut Symbolizer,
    pub suppressions: &'a Suppressions,
    pub thresholds: Thresholds,
    pub exe_facts: ExeFacts,
}

pub fn finish(f: Folded, inp: BuildInputs) -> ProcessModel {
    let facts = process_facts(&f);
    let mut m = ProcessModel {
        exe_facts: inp.exe_facts,
        points: f.points,
        last: f.last,
        thresholds: inp.thresholds,
        ..facts
    };
    let owner = code_owner(&m, inp.store);
    let creators = f.threads.creators.iter().map(|c| c.stack);
    let ids = f.series.iter().map(|s| s.stack).chain(creators);
    m.frames = add_stacks(
        &mut m.stacks,
        ids,
        inp.store,
        inp.sym,
        &owner,
        inp.suppressions,
    );
    for info in m.stacks.values_mut() {
        info.cumulative = f.cum_last.get(&info.id).copied();
        info.cumulative_at_window = f.cum_window.get(&info.id).copied();
    }
    m.series = f.series;
    // Without a mark the window is the whole run: bursts before the first dump count too.
    let none = HashMap::new();
    let baseline = if m.window_start == 0 {
        &none
    } else {
        &f.cum_window
    };
    m.between_dumps = between_dumps(&m, &f.cum_last, baseline);
    let unseen: Vec<u64> = m.between_dumps.iter().map(|b| b.stack).collect();
    let more = add_stacks(
        &mut m.stacks,
        unseen.into_iter(),
        inp.store,
        &mut *inp.sym,
        &owner,
        inp.suppressions,
    );
    m.frames.extend(more);
    charge_helpers_callers(
        &mut m,
        f.cum_last.keys().copied(),
        inp.store,
        inp.sym,
        &owner,
    );
    classify_all(&mut m);
    m.suppression = suppression_use(&m);
    process_rates(&mut m);
    m.threads = threads::build(&m, f.threads);
    m.ledger = ledger::build(&m, &f.ledger);
    // One RSS growth rate per report: with a ledger, the one its categories split, fitted to
    // the ledger's resident totals (the headline and "explained" showed two rates 0.1 KiB/s
    // apart when each took its own).
    if let Some(l) = &m.ledger {
        m.rss_rate = l.rss_rate;
    }
    m.late_dumps = late_dumps(&m, f.last_header.as_ref());
    m
}

/// Fewer than half the periodic dumps the interval asks for, in a single-threaded program
/// under sampling (the one case where the schedule waits for the program's own calls).
fn late_dumps(m: &ProcessModel, header: Option<&Header>) -> Option<LateDumps> {
    let configured_interval_s = header?.config.interval_s;
    let single_threaded = m.threads.created == 0 && m.threads.live.last().is_some_and(|&n| n <= 1);
    if configured_interval_s <= 0.0 || !m.sampled() || !single_threaded {
        return None;
    }
    let uptime_s = m.now_ms() as f64 / 1000.0;
    let expected = (uptime_s / configured_interval_s) as usize;
    (expected >= 2 && m.dumps() * 2 < expected).then_some(LateDumps {
        configured_interval_s,
        dumps: m.dumps(),
        expected,
        uptime_s,
    })
}

/// The model's process facts (from the last dump's header and the dump times), before any stack.
fn process_facts(f: &Folded) -> ProcessModel {
    let header = f.last_header.as_ref();
    ProcessModel {
        pid: header.map_or(0, |h| h.pid),
        exe: header.map(|h| h.exe.clone()).unwrap_or_default(),
        exe_build_id: header.and_then(|h| h.exe_build_id.clone()),
        cmdline: header.map(|h| h.cmdline.0.clone()).unwrap_or_default(),
        library_version: header
            .map(|h| h.library_version.clone())
            .unwrap_or_default(),
        sample_bytes: header.map_or(0, |h| h.config.sample_bytes),
        interval_s: median_interval_s(&f.points),
        interval_range_s: interval_range_s(&f.points, f.last.exit.is_some()),
        window_start: f.points.iter().position(|p| p.epoch > 0).unwrap_or(0),
        ..Default::default()
    }
}

/// Whose code a stack's culprit is: the Go main module's, or the executable's.
fn code_owner(m: &ProcessModel, store: &StackStore) -> CodeOwner {
    CodeOwner {
        main_module: m
            .exe_facts
            .go
            .as_ref()
            .map(|g| g.main_module.clone())
            .filter(|s| !s.is_empty()),
        exe_paths: exe_paths(&m.exe, store),
    }
}

/// Describes each stack named once (symbolized, with origin, culprit and suppression) into
/// `stacks`; returns the table of the frames symbolized on the way.
fn add_stacks(
    stacks: &mut HashMap<u64, StackInfo>,
    ids: impl Iterator<Item = u64>,
    store: &StackStore,
    sym: &mut Symbolizer,
    owner: &CodeOwner,
    supp: &Suppressions,
) -> FrameTable {
    let mut frames = FrameTable::new();
    for id in ids {
        if stacks.contains_key(&id) {
            continue;
        }
        let info = stack_info(id, store, sym, &mut frames, owner, supp);
        stacks.insert(id, info);
    }
    frames
}

/// Moves each culprit that is a shared helper out to its caller (`super::helpers`), learning
/// the call sites from the stacks described and from `counted` (stacks with allocations that
/// may never have been live in a dump).
fn charge_helpers_callers(
    m: &mut ProcessModel,
    counted: impl Iterator<Item = u64>,
    store: &StackStore,
    sym: &mut Symbolizer,
    owner: &CodeOwner,
) {
    let mut ids: Vec<u64> = m.stacks.keys().copied().chain(counted).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut sites = CallSites::default();
    for &id in &ids {
        let addrs = store.stacks.get(&id).map(|r| r.frames.clone());
        let flat = flat_frames(addrs.as_deref().unwrap_or(&[]), sym, &mut m.frames);
        sites.learn(&flat, &owner.user_frames(&flat));
    }
    for info in m.stacks.values_mut() {
        let flat = flat_frames(&info.addrs, sym, &mut m.frames);
        let user = owner.user_frames(&flat);
        let (innermost, _) = owner.caller_index(&flat);
        if let Some(idx) = moved_caller(&sites, &flat, &user, innermost) {
            info.culprit = owner.culprit_moved_to(&flat, idx);
        }
    }
}

/// A stack's symbolized frames, innermost first, inlined ones included.
fn flat_frames<'t>(
    addrs: &[u64],
    sym: &mut Symbolizer,
    table: &'t mut FrameTable,
) -> Vec<&'t SymFrame> {
    for &a in addrs {
        table.entry(a).or_insert_with(|| sym.symbolize(a));
    }
    let table: &'t FrameTable = table;
    addrs
        .iter()
        .flat_map(|a| table.get(a).map(|v| v.iter()).into_iter().flatten())
        .collect()
}

/// Stacks listed as allocating between dumps at most.
const BETWEEN_DUMPS_LISTED: usize = 5;

/// Stacks with no series whose counters say they allocated at least
/// `ledger_min_growth_bytes` since `window` (counters at the window's start; empty: since the
/// process started) and freed as many blocks as they made:
/// bursts that came and went between two dumps (a service's 24 MiB exports, 3.1 GB in all,
/// were in no view when no dump landed inside one).
fn between_dumps(
    m: &ProcessModel,
    last: &HashMap<u64, Cumulative>,
    window: &HashMap<u64, Cumulative>,
) -> Vec<BetweenDumps> {
    let seen: std::collections::HashSet<u64> = m.series.iter().map(|s| s.stack).collect();
    let mut v: Vec<BetweenDumps> = last
        .iter()
        .filter(|(id, _)| !seen.contains(id) && **id > u64::from(stack_id::STORE_FULL))
        .filter_map(|(&id, c)| {
            let w = window.get(&id);
            let allocs = c.allocs.saturating_sub(w.map_or(0, |w| w.allocs));
            let frees = c.frees.saturating_sub(w.map_or(0, |w| w.frees));
            let bytes = c.alloc_bytes.saturating_sub(w.map_or(0, |w| w.alloc_bytes));
            let big = bytes as f64 >= m.thresholds.ledger_min_growth_bytes;
            (allocs > 0 && frees >= allocs && big).then_some(BetweenDumps {
                stack: id,
                allocs,
                bytes,
            })
        })
        .collect();
    v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.stack.cmp(&b.stack)));
    v.truncate(BETWEEN_DUMPS_LISTED);
    v
}

/// Per suppression pattern that matched: how many series it hid and their bytes at the end.
fn suppression_use(m: &ProcessModel) -> SuppressionUse {
    let mut supp_use: HashMap<String, (usize, f64)> = HashMap::new();
    for s in &m.series {
        if let Some(p) = m.stacks.get(&s.stack).and_then(|i| i.suppressed.clone()) {
            let e = supp_use.entry(p).or_default();
            e.0 += 1;
            e.1 += s.last_bytes;
        }
    }
    let mut used: Vec<(String, usize, f64)> =
        supp_use.into_iter().map(|(p, (n, b))| (p, n, b)).collect();
    used.sort_by(|a, b| a.0.cmp(&b.0));
    let mut shadowed: Vec<(String, String)> = Vec::new();
    for info in m.stacks.values() {
        let Some(winner) = &info.suppressed else {
            continue;
        };
        for p in &info.shadowed {
            let suppressed_some = used.iter().any(|u| &u.0 == p);
            if !suppressed_some && !shadowed.iter().any(|s| &s.0 == p) {
                shadowed.push((p.clone(), winner.clone()));
            }
        }
    }
    shadowed.sort();
    SuppressionUse { used, shadowed }
}

/// The executable as module paths name it (the dump's `exe` and the first module).
fn exe_paths(exe: &str, store: &StackStore) -> Vec<String> {
    let mut v = vec![exe.to_string()];
    if let Some(first) = store.modules.first() {
        if first.path != exe {
            v.push(first.path.clone());
        }
    }
    v
}

fn stack_info(
    id: u64,
    store: &StackStore,
    sym: &mut Symbolizer,
    table: &mut FrameTable,
    owner: &CodeOwner,
    supp: &Suppressions,
) -> StackInfo {
    let rec = store.stacks.get(&id);
    let missing = match (id, rec) {
        (_, Some(_)) => None,
        (i, None) if i == u64::from(stack_id::NONE) => Some("no stack captured"),
        (i, None) if i == u64::from(stack_id::STORE_FULL) => Some("stack store full"),
        _ => Some(super::groups::MISSING_STACK),
    };
    let addrs: Arc<[u64]> = rec.map_or_else(|| Arc::from(Vec::new()), |r| r.frames.clone());
    let flat = flat_frames(&addrs, sym, table);
    let origin = origin::classify(&flat);
    // The Go runtime's own stacks are never suspects: a pattern "suppressing" one changed
    // nothing, and saying so would mislead.
    let names: Vec<&str> = flat.iter().filter_map(|f| f.function.as_deref()).collect();
    let suppressed = (origin != origin::Origin::GoRuntime)
        .then(|| supp.matches(names.iter().copied()))
        .flatten()
        .map(str::to_string);
    let shadowed = match &suppressed {
        Some(winner) => supp
            .all_matching(&names)
            .into_iter()
            .filter(|p| p != winner)
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    StackInfo {
        id,
        end: rec.map(|r| r.end),
        origin,
        thread_tls: origin::is_thread_tls(&flat),
        culprit: owner.culprit(&flat),
        suppressed,
        shadowed,
        missing,
        addrs,
        cumulative: None,
        cumulative_at_window: None,
    }
}

/// The shortest and longest gap between dumps; the exit dump's gap is left out when there
/// are others (a process ends when it ends, not on the interval).
fn interval_range_s(points: &[super::DumpPoint], ends_with_exit: bool) -> (f64, f64) {
    let mut gaps: Vec<u64> = points
        .windows(2)
        .map(|w| w[1].uptime_ms.saturating_sub(w[0].uptime_ms))
        .collect();
    if ends_with_exit && gaps.len() > 1 {
        gaps.pop();
    }
    let gaps = gaps.into_iter();
    let (lo, hi) = gaps.fold((u64::MAX, 0), |(lo, hi), g| (lo.min(g), hi.max(g)));
    if hi == 0 {
        return (0.0, 0.0);
    }
    (lo as f64 / 1000.0, hi as f64 / 1000.0)
}

fn median_interval_s(points: &[super::DumpPoint]) -> f64 {
    let mut d: Vec<u64> = points
        .windows(2)
        .map(|w| w[1].uptime_ms.saturating_sub(w[0].uptime_ms))
        .collect();
    if d.is_empty() {
        return 0.0;
    }
    d.sort_unstable();
    d[d.len() / 2] as f64 / 1000.0
}

fn classify_all(m: &mut ProcessModel) {
    let n = m.points.len();
    let ts = m.window_times();
    let early = m.window_start + (n - m.window_start).saturating_sub(1) / 3;
    let early_gen = m.points.get(early).map(|p| p.generation);
    let early_ms = m.points.get(early).map(|p| p.uptime_ms);
    let sampled = m.sampled();
    let mut classes = Vec::with_capacity(m.series.len());
    for s in &m.series {
        let ys = s.bytes.dense(n);
        let samples = (sampled && s.kind == Kind::Malloc).then(|| {
            let counts = s.samples.dense(n);
            let most = counts[m.window_start..]
                .iter()
                .fold(0.0, |a: f64, &b| a.max(b));
            most as u64
        });
        let facts = Facts {
            survival: survival(s, ys.get(early).copied(), early_gen, early_ms, sampled),
            turnover: m.stacks.get(&s.stack).and_then(|i| i.window_turnover()),
            max_age_s: Some(s.max_age_ms as f64 / 1000.0),
            interval_s: m.interval_s,
            samples,
            sample_mean_bytes: samples.map(|_| m.sample_bytes as f64),
        };
        let c = verdict::classify(&ts, &ys[m.window_start..], &facts, &m.thresholds);
        let live_at_end = ys.last().is_some_and(|&b| b > 0.0);
        classes.push(verdict::with_samples(
            c,
            samples,
            live_at_end,
            &m.thresholds,
        ));
    }
    for (s, c) in m.series.iter_mut().zip(classes) {
        s.class = c;
    }
}

/// Fraction of the bytes outstanding at the early dump that are still alive at the end.
fn survival(
    s: &Series,
    early_bytes: Option<f64>,
    early_gen: Option<u64>,
    early_ms: Option<u64>,
    sampled: bool,
) -> Option<f64> {
    let last = s.last.as_ref()?;
    let early_bytes = early_bytes?;
    if early_bytes <= 0.0 {
        return None;
    }
    if !last.by_generation.is_empty() {
        let g = early_gen?;
        // A row stands for the generations after the previous row's up to its own (merged
        // rows in long series): count the part of a straddling row that lies at or before g.
        let mut born_early = 0.0f64;
        let mut previous: Option<u64> = None;
        for &(gen, _, bytes) in &last.by_generation {
            let first = previous.map_or(gen, |p| p + 1);
            if gen <= g {
                born_early += bytes as f64;
            } else if first <= g {
                born_early += bytes as f64 * (g + 1 - first) as f64 / (gen + 1 - first) as f64;
            }
            previous = Some(gen);
        }
        // With sampling, by_generation holds sampled bytes; scale like the estimate.
        let scale = if sampled && last.bytes > 0 {
            last.est_bytes.unwrap_or(last.bytes as f64) / last.bytes as f64
        } else {
            1.0
        };
        return Some((born_early * scale / early_bytes).min(1.0));
    }
    // Without per-generation rows, the oldest live allocation tells whether anything from
    // back then survived, not how much: a weak yes/no.
    let t = early_ms?;
    Some(if last.oldest_ms <= t { 1.0 } else { 0.0 })
}

fn process_rates(m: &mut ProcessModel) {
    let ts = m.window_times();
    let w = m.window_start;
    let ys = |f: fn(&super::DumpPoint) -> u64| -> Vec<f64> {
        m.points[w..].iter().map(|p| f(p) as f64).collect()
    };
    // Process-wide series carry start-up noise (mappings that come and go): a robust slope.
    let rss = verdict::robust_slope(&ts, &ys(|p| p.rss));
    let untracked = verdict::robust_slope(&ts, &ys(|p| p.untracked));
    let tracked = verdict::fit(&ts, &ys(|p| p.tracked)).0;
    m.rss_rate = rss;
    m.untracked_rate = untracked;
    m.tracked_rate = tracked;
}
