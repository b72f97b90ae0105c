//! The default human report, built to answer first and fit one screen for one leak: a short
//! summary, the suspects table (one row per culprit), the top suspects' stacks with runtime
//! and cgo trampoline frames folded, then live memory by caller and by allocation site (top
//! N; `--all` for everything). Colour only when writing to a terminal.

use super::{human_bytes, human_rate, human_seconds, text_ledger, Context};
use crate::model::groups::{self, Group, GroupBy};
use crate::model::ledger::Category;
use crate::model::origin::is_go_plumbing;
use crate::model::ProcessModel;
use crate::symbolize::SymFrame;
use crate::verdict::Verdict;
use std::io::Write;

/// Suspect groups whose stack is printed without `--all` (fewer with a smaller `--top`).
const STACKS_SHOWN: usize = 3;
/// Frames printed per stack without `--all` (after folding).
const FRAMES_SHOWN: usize = 10;

struct Paint(bool);

impl Paint {
    fn c(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.c("1", s)
    }
    fn dim(&self, s: &str) -> String {
        self.c("2", s)
    }
    /// The verdict padded to `width` (padding outside the colour codes).
    fn verdict(&self, v: Verdict, width: usize) -> String {
        let code = match v {
            Verdict::Leak => "1;31",
            Verdict::Growing => "33",
            Verdict::Insufficient => "35",
            Verdict::Bounded => "36",
            Verdict::Transient | Verdict::Startup => "32",
            _ => "0",
        };
        let s = v.as_str();
        format!(
            "{}{}",
            self.c(code, s),
            " ".repeat(width.saturating_sub(s.len()))
        )
    }
}

type Out<'a> = &'a mut dyn Write;

pub fn render(ctx: &Context, out: Out) -> anyhow::Result<()> {
    let p = Paint(ctx.colour);
    summary(ctx, &p, out)?;
    let suspects = groups::suspects(ctx.model);
    let creators = text_ledger::thread_groups(ctx.model);
    // What explains more of the growth leads: the user's suspects, or the causes that are not
    // theirs (glibc retention, the Go heap).
    let suspects_rate: f64 = suspects.iter().map(|g| g.rate.max(0.0)).sum();
    let causes_rate = ctx.model.ledger.as_ref().map_or(0.0, |l| l.causes_rate());
    let suspects_first = !suspects.is_empty() && suspects_rate >= causes_rate;
    if !suspects_first {
        text_ledger::causes(ctx, out)?;
    }
    suspects_table(ctx, &p, &suspects, creators.iter().any(|g| g.suspect), out)?;
    text_ledger::thread_suspects(ctx, &creators, out)?;
    untracked(ctx, &p, out)?;
    suspect_stacks(ctx, &p, &suspects, out)?;
    if suspects_first {
        text_ledger::causes(ctx, out)?;
    }
    live_table(ctx, &p, GroupBy::Caller, out)?;
    live_table(ctx, &p, GroupBy::Site, out)?;
    transients_table(ctx, &p, out)?;
    runtime_and_suppressions(ctx, &p, out)?;
    fail_outcome(ctx, &p, out)?;
    Ok(())
}

fn summary(ctx: &Context, p: &Paint, out: Out) -> anyhow::Result<()> {
    let m = ctx.model;
    let go = m
        .exe_facts
        .go
        .as_ref()
        .map(|g| {
            if g.main_module.is_empty() {
                format!(" ({})", g.version)
            } else {
                format!(" ({}, module {})", g.version, g.main_module)
            }
        })
        .unwrap_or_default();
    let exe = if m.exe.is_empty() { "?" } else { &m.exe };
    writeln!(out, "{} pid {} {exe}{go}", p.bold("offheap report:"), m.pid)?;
    // The ones with the most dumps; a directory of a test suite's dumps held 1,500 others,
    // listed in one line.
    let mut others: Vec<_> = ctx.processes.iter().filter(|q| !q.selected).collect();
    others.sort_by(|a, b| b.dumps.cmp(&a.dumps).then(a.pid.cmp(&b.pid)));
    if !others.is_empty() {
        let shown: Vec<String> = others
            .iter()
            .take(OTHERS_LISTED)
            .map(|q| format!("{} ({} dumps)", q.pid, q.dumps))
            .collect();
        let more = match others.len().saturating_sub(OTHERS_LISTED) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        writeln!(
            out,
            "  other processes in the input: {}{more} (pick one with --pid)",
            shown.join(", ")
        )?;
    }
    window_line(m, out)?;
    rss_line(m, out)?;
    text_ledger::ledger_block(m, out)?;
    requested_line(m, out)?;
    probes_line(m, out)?;
    notes(ctx, p, out)?;
    writeln!(out)?;
    Ok(())
}

fn window_line(m: &ProcessModel, out: Out) -> anyhow::Result<()> {
    let n = m.dumps();
    let (a, b) = (
        m.points.first().map_or(0, |x| x.seq),
        m.points.last().map_or(0, |x| x.seq),
    );
    let window = if m.window_start > 0 {
        format!(
            "; verdicts from the marked epoch on (seq {}.., {} dumps)",
            m.points[m.window_start].seq,
            m.window_dumps()
        )
    } else {
        String::new()
    };
    let ended = match &m.last.exit {
        Some(e) => format!("; ended: {}", exit_text(e)),
        None => String::new(),
    };
    if n == 1 {
        writeln!(out, "  1 dump (seq {a}){ended}")?;
        return Ok(());
    }
    writeln!(
        out,
        "  {n} dumps over {:.1} s (seq {a}..{b}, {}){window}{ended}",
        m.duration_s(),
        spacing(m),
    )?;
    Ok(())
}

/// `every 2.0 s`, or `0.5–5.0 s apart` when snapshots and marks made the dumps irregular.
fn spacing(m: &ProcessModel) -> String {
    let (lo, hi) = m.interval_range_s;
    if hi > lo * 1.25 + 0.1 {
        format!("{lo:.1}–{hi:.1} s apart")
    } else {
        format!("every {:.1} s", m.interval_s)
    }
}

/// `RSS 162.0 MiB (+7.1 MiB/s)`: resident figures only.
fn rss_line(m: &ProcessModel, out: Out) -> anyhow::Result<()> {
    let threads = text_ledger::threads_text(m)
        .map(|t| format!("; {t}"))
        .unwrap_or_default();
    // One dump has no rate to give.
    let rate = if m.dumps() < 2 {
        String::new()
    } else {
        format!(" ({})", human_rate(m.rss_rate))
    };
    writeln!(
        out,
        "  RSS {}{rate}{threads}",
        human_bytes(m.last_point().map_or(0, |x| x.rss) as f64),
    )?;
    Ok(())
}

/// What was requested and mapped: address space, on a line of its own (never next to RSS).
fn requested_line(m: &ProcessModel, out: Out) -> anyhow::Result<()> {
    let t = &m.last.totals;
    writeln!(
        out,
        "  requested (address space, not resident): malloc {} in {} blocks, mappings {} in {}",
        human_bytes(t.malloc.bytes as f64),
        t.malloc.count,
        human_bytes(t.mmap.bytes as f64),
        t.mmap.count,
    )?;
    Ok(())
}

/// The Go probes' states, when the library reported them and one is off.
fn probes_line(m: &ProcessModel, out: Out) -> anyhow::Result<()> {
    let Some(go) = &m.exe_facts.go else {
        return Ok(());
    };
    if go.probes.iter().all(|p| p.state == "on") {
        return Ok(());
    }
    let states: Vec<String> = go
        .probes
        .iter()
        .map(|p| match &p.reason {
            Some(r) if p.state != "on" => format!("{} {} ({r})", p.name, p.state),
            _ => format!("{} {}", p.name, p.state),
        })
        .collect();
    writeln!(out, "  Go probes: {}", states.join(", "))?;
    Ok(())
}

fn exit_text(e: &offheap_format::schema::ExitInfo) -> String {
    match (e.path.as_str(), e.status, e.signal) {
        (_, _, Some(sig)) => format!("killed by signal {sig}"),
        (path, Some(st), _) => format!("{path} with status {st}"),
        (path, None, None) => path.to_string(),
    }
}

fn notes(ctx: &Context, p: &Paint, out: Out) -> anyhow::Result<()> {
    let m = ctx.model;
    if m.sampled() {
        let s = format!(
            "figures are estimates: allocations were sampled every {} on average",
            human_bytes(m.sample_bytes as f64)
        );
        writeln!(out, "  {}", p.c("33", &s))?;
        if let Some((estimate, exact)) = m.estimate_off() {
            let s = format!(
                "estimated live malloc {} but glibc counts {}: the estimates rest on few samples \
                 (a smaller OFFHEAP_SAMPLE_BYTES, or a longer run, gives more)",
                human_bytes(estimate),
                human_bytes(exact as f64)
            );
            writeln!(out, "  {}", p.c("33", &s))?;
        }
    }
    if m.last.self_.stacks_dropped > 0 {
        writeln!(out, "  {}", stacks_dropped_line(&m.last))?;
    }
    if m.last.self_.lost_records > 0 {
        writeln!(
            out,
            "  {} allocations were not recorded (the library's table could not grow)",
            m.last.self_.lost_records
        )?;
    }
    let problems = ctx.diag.warnings.len() + ctx.diag.errors.len();
    if problems > 0 {
        writeln!(
            out,
            "  {}",
            p.dim(&format!("{problems} warning(s) on stderr"))
        )?;
    }
    if m.dumps() == 1 {
        writeln!(
            out,
            "  {}",
            p.dim("one dump only: no verdicts (take more dumps to tell leaks from caches: OFFHEAP_INTERVAL, or `offheap run --interval`)")
        )?;
    }
    if let Some(l) = &m.late_dumps {
        writeln!(
            out,
            "  {}",
            p.dim(&format!(
                "{} dump(s) in {:.1} s where OFFHEAP_INTERVAL={} asks for {}: under sampling a \
                 single-threaded program has no thread of ours, and a periodic dump waits for its \
                 next sampled allocation (OFFHEAP_THREAD=always keeps the schedule)",
                l.dumps, l.uptime_s, l.configured_interval_s, l.expected
            ))
        )?;
    }
    Ok(())
}

/// A C++ name without its parameter list (`rocksdb::DBImpl::Get(…)`): tables need the
/// function, not its signature. Go and C names pass unchanged.
fn short_name(name: &str) -> String {
    if !name.contains("::") {
        return name.to_string();
    }
    let mut depth = 0i32;
    for (i, c) in name.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            '(' if depth == 0 && !name[..i].ends_with("operator") && i > 0 => {
                return format!("{}(…)", &name[..i]);
            }
            _ => {}
        }
    }
    name.to_string()
}

fn culprit_text(g: &Group) -> String {
    let mut s = short_name(&g.name);
    if let Some(v) = g.via() {
        s += &format!(" via {}", short_name(v));
        if g.vias.len() > 1 {
            s += &format!(" (+{} more)", g.vias.len() - 1);
        }
    }
    if let Some(loc) = &g.location {
        s += &format!("  {}", short_loc(loc));
    }
    s
}

/// The last two path components are enough to find a file.
pub fn short_loc(loc: &str) -> String {
    let parts: Vec<&str> = loc.rsplitn(3, '/').collect();
    if parts.len() == 3 {
        format!("{}/{}", parts[1], parts[0])
    } else {
        loc.to_string()
    }
}

fn suspects_table(
    ctx: &Context,
    p: &Paint,
    suspects: &[Group],
    thread_suspects: bool,
    out: Out,
) -> anyhow::Result<()> {
    let m = ctx.model;
    if suspects.is_empty() {
        return no_suspects(m, p, thread_suspects, out);
    }
    writeln!(
        out,
        "{}",
        p.bold("Suspects (your code, one row per function and kind)")
    )?;
    writeln!(
        out,
        "  {:>2}  {:<12} {:>4}  {:>12}  {:>9}  {:>7}  {:>6}  {:<6}  culprit",
        "#", "verdict", "conf", "rate", "live", "blocks", "stacks", "kind"
    )?;
    suspect_rows(ctx, p, suspects, out)?;
    insufficient_note(m, p, suspects, out)?;
    writeln!(out)?;
    Ok(())
}

/// Under the suspects, why some are `insufficient`: too few dumps in the window, or (under
/// sampling) too few sampled blocks behind their estimates.
fn insufficient_note(
    m: &ProcessModel,
    p: &Paint,
    suspects: &[Group],
    out: Out,
) -> anyhow::Result<()> {
    let insufficient = || {
        suspects
            .iter()
            .filter(|g| g.verdict == Verdict::Insufficient)
    };
    if insufficient().next().is_none() {
        return Ok(());
    }
    if m.window_dumps() < m.thresholds.min_dumps {
        writeln!(
            out,
            "  {}",
            p.dim(&format!(
                "insufficient: grows over {} dumps, verdicts need {} (a filling cache looks like a leak until it is full)",
                m.window_dumps(),
                m.thresholds.min_dumps
            ))
        )?;
    }
    let few_samples = insufficient()
        .flat_map(|g| g.series.iter().map(|&i| &m.series[i]))
        .any(|s| s.class.reason == crate::verdict::TOO_FEW_SAMPLES);
    if few_samples {
        writeln!(
            out,
            "  {}",
            p.dim(&format!(
                "insufficient: estimated from fewer than {} sampled blocks, too few to tell a leak from chance (sampling every {}: lower OFFHEAP_SAMPLE_BYTES, or run longer)",
                m.thresholds.min_samples,
                human_bytes(m.sample_bytes as f64)
            ))
        )?;
    }
    Ok(())
}

/// The Suspects line when there are none: why none yet under sampling, or that nothing grows.
fn no_suspects(m: &ProcessModel, p: &Paint, thread_suspects: bool, out: Out) -> anyhow::Result<()> {
    let unsampled = m.ledger.as_ref().and_then(|l| l.unsampled_growth);
    match unsampled {
        _ if m.dumps() <= 1 || thread_suspects => {}
        Some(u) => writeln!(
            out,
            "{} none yet: live malloc memory grows {}, but no sampled stack does.\n  \
             Sampling every {}, a leak at that rate is sampled about once every {}: run \
             longer, or set OFFHEAP_SAMPLE_BYTES lower.\n",
            p.bold("Suspects:"),
            human_rate(u.rate),
            human_bytes(u.sample_bytes as f64),
            human_seconds(u.seconds_per_sample)
        )?,
        None if !m.suppression.used.is_empty() => writeln!(
            out,
            "{} none left: your suppressions took {} stack(s) out (\"Suppressed:\" at the end).\n",
            p.bold("Suspects:"),
            m.suppression.used.iter().map(|u| u.1).sum::<usize>()
        )?,
        None => writeln!(
            out,
            "{} none: nothing of yours keeps growing.\n",
            p.bold("Suspects:")
        )?,
    }
    Ok(())
}

/// One row per suspect, up to the view's limit, then how many more there are.
fn suspect_rows(ctx: &Context, p: &Paint, suspects: &[Group], out: Out) -> anyhow::Result<()> {
    let shown = ctx.view.limit(suspects.len());
    for (i, g) in suspects.iter().take(shown).enumerate() {
        writeln!(
            out,
            "  {:>2}  {} {:>4.2}  {:>12}  {:>9}  {:>7}  {:>6}  {:<6}  {}",
            i + 1,
            p.verdict(g.verdict, 12),
            g.confidence,
            human_rate(g.rate),
            human_bytes(g.bytes),
            g.count.round() as u64,
            g.stacks(ctx.model),
            g.kind.as_str(),
            culprit_text(g)
        )?;
    }
    if suspects.len() > shown {
        writeln!(
            out,
            "  … {} more suspects (--all lists them)",
            suspects.len() - shown
        )?;
    }
    Ok(())
}

fn untracked(ctx: &Context, p: &Paint, out: Out) -> anyhow::Result<()> {
    let m = ctx.model;
    let last = m.last_point().map_or(0, |x| x.untracked);
    // The ledger already has a line for it; this paragraph is for untracked memory that
    // grows or is large enough to be worth a look.
    let worth_a_line = m.untracked_rate != 0.0 || last >= 1 << 20 || m.ledger.is_none() && last > 0;
    if !worth_a_line {
        return Ok(());
    }
    writeln!(
        out,
        "{} {} mapped ({}) in {} mappings no tracked call made (raw syscalls such as syscall.Mmap)",
        p.bold("Untracked:"),
        human_bytes(last as f64),
        human_rate(m.untracked_rate),
        m.last.untracked_count
    )?;
    writeln!(out)?;
    Ok(())
}

fn suspect_stacks(ctx: &Context, p: &Paint, suspects: &[Group], out: Out) -> anyhow::Result<()> {
    let m = ctx.model;
    let n = if ctx.view.all {
        suspects.len()
    } else {
        ctx.view.limit(STACKS_SHOWN.min(suspects.len()))
    };
    for (i, g) in suspects.iter().take(n).enumerate() {
        let members: Vec<usize> = if ctx.view.all {
            g.series.clone()
        } else {
            g.series.iter().take(1).copied().collect()
        };
        for (k, &si) in members.iter().enumerate() {
            let s = &m.series[si];
            let tag = if members.len() > 1 {
                format!("[{}.{}]", i + 1, k + 1)
            } else {
                format!("[{}]", i + 1)
            };
            writeln!(out, "{tag} {}", stack_heading(m, p, g, s))?;
            frames(ctx, p, &m.frames_of(s.stack), out)?;
        }
        if !ctx.view.all && g.series.len() > 1 {
            writeln!(
                out,
                "    {}",
                p.dim(&format!(
                    "(the largest of {} stacks into this function; --all lists every one)",
                    g.stacks(m)
                ))
            )?;
        }
    }
    if n > 0 {
        writeln!(out)?;
    }
    Ok(())
}

/// `leak main.handleRequest · malloc · 1.2 MiB in 1304 blocks, +48.8 KiB/s, oldest 26.1 s old
/// — why`.
fn stack_heading(m: &ProcessModel, p: &Paint, g: &Group, s: &crate::model::Series) -> String {
    let oldest = s
        .last
        .as_ref()
        .filter(|r| r.count > 0)
        .map(|r| {
            format!(
                ", oldest {:.1} s old",
                m.now_ms().saturating_sub(r.oldest_ms) as f64 / 1000.0
            )
        })
        .unwrap_or_default();
    let syscall = if s.via == offheap_format::Via::Syscall {
        " by raw syscall"
    } else {
        ""
    };
    let sampled = match &s.last {
        Some(r) if m.sampled() && s.kind == offheap_format::Kind::Malloc => {
            format!(" ({} sampled)", r.count)
        }
        _ => String::new(),
    };
    format!(
        "{} {} · {}{syscall} · {} in {} blocks{sampled}, {}{oldest} — {}",
        p.verdict(s.class.verdict, 0),
        p.bold(&short_name(&g.name)),
        s.kind.as_str(),
        human_bytes(s.last_bytes),
        s.last_count.round() as u64,
        human_rate(s.class.rate),
        s.class.reason
    )
}

/// Frames folded in the default view: runtime and cgo plumbing, and unnamed frames (a
/// stripped binary's cgo wrappers), which say nothing to the reader.
fn is_trampoline(f: &SymFrame) -> bool {
    f.function
        .as_deref()
        .is_none_or(|n| is_go_plumbing(n) || n == "runtime.cgocall")
}

fn frames(ctx: &Context, p: &Paint, frames: &[SymFrame], out: Out) -> anyhow::Result<()> {
    if frames.is_empty() {
        writeln!(out, "    {}", p.dim("(no stack)"))?;
        return Ok(());
    }
    let all_unnamed = frames.iter().all(|f| f.function.is_none());
    let shown: Vec<&SymFrame> = frames
        .iter()
        .filter(|f| ctx.view.all || all_unnamed || !is_trampoline(f))
        .collect();
    let folded = frames.len() - shown.len();
    let limit = if ctx.view.all {
        shown.len()
    } else {
        FRAMES_SHOWN
    };
    for f in shown.iter().take(limit) {
        let name = if f.go && !is_trampoline(f) {
            p.bold(&f.display_name())
        } else {
            f.display_name()
        };
        let loc = f.location().map(|l| short_loc(&l)).unwrap_or_else(|| {
            f.module
                .as_deref()
                .map(|m| m.rsplit('/').next().unwrap_or(m).to_string())
                .unwrap_or_default()
        });
        writeln!(
            out,
            "    {name}{} {}",
            if f.inlined { " (inlined)" } else { "" },
            p.dim(&loc)
        )?;
    }
    let more = shown.len().saturating_sub(limit);
    if folded > 0 || more > 0 {
        let mut parts = Vec::new();
        if more > 0 {
            parts.push(format!("{more} more frames"));
        }
        if folded > 0 {
            parts.push(format!("{folded} runtime/cgo/unnamed frames folded"));
        }
        writeln!(
            out,
            "    {}",
            p.dim(&format!("({}; --all shows them)", parts.join(", ")))
        )?;
    }
    Ok(())
}

fn live_table(ctx: &Context, p: &Paint, by: GroupBy, out: Out) -> anyhow::Result<()> {
    let m = ctx.model;
    let rows = groups::live(m, by, ctx.view.include_runtime);
    if rows.is_empty() {
        return Ok(());
    }
    let shown = ctx.view.limit(rows.len());
    let (title, column) = match by {
        GroupBy::Caller => ("Live memory by caller", "caller"),
        GroupBy::Site => ("Live memory by allocation site", "site"),
    };
    let more = if rows.len() > shown {
        format!(" (top {shown} of {}; --all lists all)", rows.len())
    } else {
        String::new()
    };
    writeln!(out, "{}{more}", p.bold(title))?;
    writeln!(
        out,
        "  {:<12} {:>9}  {:>7}  {:>6}  {:<6}  {column}",
        "verdict", "live", "blocks", "stacks", "kind"
    )?;
    for g in rows.iter().take(shown) {
        let mut what = match by {
            GroupBy::Caller => culprit_text(g),
            GroupBy::Site => match &g.location {
                Some(l) => format!("{}  {}", short_name(&g.name), short_loc(l)),
                None => short_name(&g.name),
            },
        };
        if g.verdict.is_suspect() && all_suppressed(m, g) {
            what.push_str("  (suppressed)");
        }
        writeln!(
            out,
            "  {} {:>9}  {:>7}  {:>6}  {:<6}  {what}",
            p.verdict(g.verdict, 12),
            human_bytes(g.bytes),
            g.count.round() as u64,
            g.stacks(m),
            g.kind.as_str(),
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// Whether every stack of the group matched a suppression (its verdict stands, but it is
/// not a suspect).
fn all_suppressed(m: &ProcessModel, g: &Group) -> bool {
    g.series.iter().all(|&i| {
        m.stack(m.series[i].stack)
            .is_some_and(|info| info.suppressed.is_some())
    })
}

/// What came and went: not leaks, but the answer when RSS stepped up and glibc kept it.
fn transients_table(ctx: &Context, p: &Paint, out: Out) -> anyhow::Result<()> {
    let rows = groups::transients(ctx.model);
    if rows.is_empty() {
        return between_dumps_lines(ctx, p, out, true);
    }
    let shown = ctx.view.limit(rows.len());
    let more = if rows.len() > shown {
        format!(" (top {shown} of {}; --all lists all)", rows.len())
    } else {
        String::new()
    };
    writeln!(
        out,
        "{}{more}",
        p.bold("Came and went (transient: freed again, not leaks; freed memory glibc keeps shows as malloc_retained)")
    )?;
    writeln!(
        out,
        "  {:>9}  {:>8}  {:>9}  {:<6}  caller",
        "peak", "uptime", "live now", "kind"
    )?;
    for t in rows.iter().take(shown) {
        writeln!(
            out,
            "  {:>9}  {:>8}  {:>9}  {:<6}  {}",
            human_bytes(t.peak_bytes),
            format!("{:.1} s", t.peak_at_s),
            human_bytes(t.group.bytes),
            t.group.kind.as_str(),
            culprit_text(&t.group),
        )?;
    }
    between_dumps_lines(ctx, p, out, false)?;
    writeln!(out)?;
    Ok(())
}

/// Allocations that came and went between dumps (no dump saw one live): their totals, under
/// "Came and went" (with its heading when nothing else is in it).
fn between_dumps_lines(ctx: &Context, p: &Paint, out: Out, alone: bool) -> anyhow::Result<()> {
    let m = ctx.model;
    if m.between_dumps.is_empty() {
        return Ok(());
    }
    if alone {
        writeln!(out, "{}", p.bold("Came and went (freed again, not leaks)"))?;
    }
    writeln!(
        out,
        "  between dumps, never live when one was taken (peaks unseen: more dumps, or \
         OFFHEAP_INTERVAL lower, show them):"
    )?;
    for b in &m.between_dumps {
        writeln!(
            out,
            "  {:>9} in {} allocations ({} each on average)  {}",
            human_bytes(b.bytes as f64),
            b.allocs,
            human_bytes(b.mean_block_bytes()),
            caller_via(m, b.stack),
        )?;
    }
    if alone {
        writeln!(out)?;
    }
    Ok(())
}

fn runtime_and_suppressions(ctx: &Context, p: &Paint, out: Out) -> anyhow::Result<()> {
    let m = ctx.model;
    let rt = m.go_runtime_totals();
    if rt.stacks > 0 {
        let resident = m.ledger.as_ref().map_or(String::new(), |l| {
            let g = l.category(Category::GoRuntime).bytes;
            format!(" ({} resident)", human_bytes(g as f64))
        });
        writeln!(
            out,
            "{} {} mapped{resident} in {} stacks, plus {} reserved address space: Go's heap \
             arenas and thread creation, not suspects{}",
            p.bold("Go runtime:"),
            human_bytes(rt.bytes),
            rt.stacks,
            human_bytes(rt.reserved_bytes),
            if ctx.view.include_runtime {
                ""
            } else {
                " (--include go-runtime lists them)"
            }
        )?;
    }
    for (pat, n, bytes) in &m.suppression.used {
        writeln!(
            out,
            "{} leak:{pat} suppressed {n} stack(s), {} live",
            p.bold("Suppressed:"),
            human_bytes(*bytes)
        )?;
    }
    for pat in &ctx.unmatched_suppressions {
        writeln!(out, "{} leak:{pat} matched nothing", p.bold("Suppressed:"))?;
    }
    for (pat, first) in &m.suppression.shadowed {
        writeln!(
            out,
            "{} leak:{pat} suppressed nothing: leak:{first} suppressed its stacks first",
            p.bold("Suppressed:")
        )?;
    }
    Ok(())
}

fn fail_outcome(ctx: &Context, p: &Paint, out: Out) -> anyhow::Result<()> {
    let Some(f) = &ctx.fail else {
        return Ok(());
    };
    writeln!(out)?;
    if f.reasons.is_empty() {
        writeln!(out, "--fail-on {}: passed", f.policy)?;
    } else {
        writeln!(out, "{} {}:", p.c("1;31", "--fail-on tripped:"), f.policy)?;
        for r in &f.reasons {
            writeln!(out, "  {r}")?;
        }
    }
    for r in &f.not_counted {
        writeln!(out, "  not counted: {r}")?;
    }
    Ok(())
}

/// `main.handleExport via C.render_scratch`: the caller a stack is charged to, and its entry.
pub fn caller_via(m: &ProcessModel, stack: u64) -> String {
    match m.caller_of(stack) {
        (name, Some(via)) => format!("{name} via {via}"),
        (name, None) => name,
    }
}

/// How many other processes of the input the header names.
const OTHERS_LISTED: usize = 8;

/// Why stacks were dropped, and how to keep them: the store's size and what chose it.
fn stacks_dropped_line(last: &crate::model::LastDump) -> String {
    let dropped = last.self_.stacks_dropped;
    let head = format!(
        "{dropped} stacks were dropped by a full stack store (their bytes sit under \"stack store full\")"
    );
    match (last.max_stacks, last.address_limit) {
        (0, _) => head,
        (held, Some(limit)) => format!(
            "{head}: it held {held} stacks, a size chosen to leave the host its address-space limit \
             (RLIMIT_AS {}); OFFHEAP_MAX_STACKS sets more",
            human_bytes(limit as f64)
        ),
        (held, None) => format!("{head}: it held {held} stacks; OFFHEAP_MAX_STACKS sets more"),
    }
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn cpp_signatures_are_cut_go_and_c_names_kept() {
        assert_eq!(
            short_name(
                "rocksdb::BlockBasedTable::Open(rocksdb::ReadOptions const&, unsigned long)"
            ),
            "rocksdb::BlockBasedTable::Open(…)"
        );
        assert_eq!(
            short_name("std::vector<int, std::allocator<int> >::push_back(int const&)"),
            "std::vector<int, std::allocator<int> >::push_back(…)"
        );
        assert_eq!(
            short_name("rocksdb::Foo::operator()(int)"),
            "rocksdb::Foo::operator()(…)"
        );
        assert_eq!(short_name("main.(*cache).put"), "main.(*cache).put");
        assert_eq!(short_name("leaky_c_helper"), "leaky_c_helper");
    }
}
