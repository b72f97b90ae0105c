//! The default human report: a summary a Go engineer can act on first (who leaks, from which
//! Go function, how fast), then the stacks. Colour only when writing to a terminal.

use super::{human_bytes, human_rate, Context};
use crate::model::origin::Origin;
use crate::model::StackSeries;
use crate::verdict::Verdict;
use std::io::Write;

/// How many non-runtime stacks to print in full; the JSON has them all.
const MAX_STACKS: usize = 20;
const MAX_RUNTIME_STACKS: usize = 3;

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
    fn verdict(&self, v: Verdict) -> String {
        let code = match v {
            Verdict::Leak => "1;31",
            Verdict::Growing => "33",
            Verdict::Bounded => "36",
            Verdict::Transient | Verdict::Startup => "32",
            _ => "0",
        };
        self.c(code, v.as_str())
    }
}

fn caller_text(s: &StackSeries) -> String {
    match s.go_caller() {
        Some(f) => match f.location() {
            Some(loc) => format!("{} ({})", f.display_name(), short_loc(&loc)),
            None => f.display_name(),
        },
        None => {
            // No Go caller (a C thread): the innermost named frame that is not an allocator.
            s.frames
                .iter()
                .find(|f| {
                    f.function.as_deref().is_some_and(|n| {
                        !matches!(
                            n,
                            "malloc" | "calloc" | "realloc" | "mmap" | "mmap64" | "free"
                        )
                    })
                })
                .map(|f| format!("{} [C]", f.display_name()))
                .unwrap_or_else(|| "??".into())
        }
    }
}

/// The last two path components are enough to find a file.
fn short_loc(loc: &str) -> String {
    let parts: Vec<&str> = loc.rsplitn(3, '/').collect();
    if parts.len() == 3 {
        format!("{}/{}", parts[1], parts[0])
    } else {
        loc.to_string()
    }
}

pub fn render(ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let m = ctx.model;
    let p = Paint(ctx.colour);
    let n = m.dumps();
    writeln!(
        out,
        "{} pid {}  {}",
        p.bold("offheap report:"),
        m.pid,
        if m.exe.is_empty() { "?" } else { &m.exe }
    )?;
    if ctx.processes.len() > 1 {
        let others: Vec<String> = ctx
            .processes
            .iter()
            .filter(|q| q.pid != m.pid)
            .map(|q| format!("{} ({} dumps)", q.pid, q.dumps))
            .collect();
        writeln!(
            out,
            "  other processes in the input: {} (pick one with --pid)",
            others.join(", ")
        )?;
    }
    let seq = match (m.seqs.first(), m.seqs.last()) {
        (Some(a), Some(b)) => format!("seq {a}..{b}"),
        _ => String::new(),
    };
    writeln!(
        out,
        "  {n} dump{} over {:.1} s ({seq}){}",
        if n == 1 { "" } else { "s" },
        m.duration_s(),
        if m.window_start > 0 {
            format!(
                "; verdicts from the marked epoch on (seq {}..)",
                m.seqs[m.window_start]
            )
        } else {
            String::new()
        }
    )?;
    let t = &m.last_totals;
    let rss = m.rss.last().copied().unwrap_or(0) as f64;
    let tracked = m.tracked.last().copied().unwrap_or(0) as f64;
    let untracked = m.untracked.last().copied().unwrap_or(0) as f64;
    writeln!(
        out,
        "  memory at the last dump: RSS {} ({}), tracked {} (malloc {} in {} blocks, mmap {} in {}), untracked {} ({})",
        human_bytes(rss),
        human_rate(m.rss_rate),
        human_bytes(tracked),
        human_bytes(t.malloc.bytes as f64),
        t.malloc.count,
        human_bytes(t.mmap.bytes as f64),
        t.mmap.count,
        human_bytes(untracked),
        human_rate(m.untracked_rate),
    )?;
    if m.sampled() {
        writeln!(
            out,
            "  {}",
            p.c(
                "33",
                &format!(
                    "figures are estimates: allocations were sampled every {} on average",
                    human_bytes(m.sample_bytes as f64)
                )
            )
        )?;
    }
    if m.last_self.stacks_dropped > 0 {
        writeln!(
            out,
            "  {} stacks were dropped by a full stack store (their bytes sit under stack id 1)",
            m.last_self.stacks_dropped
        )?;
    }
    if n == 1 {
        writeln!(
            out,
            "  {}",
            p.dim("one dump only: no verdicts (take more dumps, e.g. OFFHEAP_INTERVAL, to tell leaks from caches)")
        )?;
    }
    writeln!(out)?;

    // Suspects.
    let suspects = m.suspects();
    if suspects.is_empty() {
        if n > 1 {
            writeln!(out, "{} none: no stack keeps growing.", p.bold("Suspects:"))?;
        }
    } else {
        writeln!(out, "{}", p.bold("Suspects"))?;
        writeln!(
            out,
            "  {:>3}  {:<8} {:>4}  {:>13}  {:>10}  {:>8}  go caller",
            "#", "verdict", "conf", "rate", "bytes", "count"
        )?;
        for (i, s) in suspects.iter().take(10).enumerate() {
            writeln!(
                out,
                "  {:>3}  {:<8} {:>4.2}  {:>13}  {:>10}  {:>8}  {}",
                i + 1,
                p.verdict(s.class.verdict)
                    + &" ".repeat(8usize.saturating_sub(s.class.verdict.as_str().len())),
                s.class.confidence,
                human_rate(s.class.rate),
                human_bytes(s.last_bytes()),
                s.last_count().round() as u64,
                caller_text(s)
            )?;
        }
        if suspects.len() > 10 {
            writeln!(out, "  … {} more suspects", suspects.len() - 10)?;
        }
    }
    if n > 1 || untracked > 0.0 {
        writeln!(
            out,
            "{} {} ({}) — anonymous mappings no tracked call made (raw syscalls such as syscall.Mmap)",
            p.bold("Untracked:"),
            human_bytes(untracked),
            human_rate(m.untracked_rate)
        )?;
    }
    let rt: Vec<&StackSeries> = m
        .stacks
        .iter()
        .filter(|s| s.origin == Origin::GoRuntime)
        .collect();
    let committed: f64 = rt
        .iter()
        .filter(|s| s.kind != "mmap_reserved")
        .map(|s| s.last_bytes())
        .sum();
    let reserved: f64 = rt
        .iter()
        .filter(|s| s.kind == "mmap_reserved")
        .map(|s| s.last_bytes())
        .sum();
    if !rt.is_empty() {
        writeln!(
            out,
            "{} {} in {} stacks, plus {} of reserved address space (Go heap arenas, thread creation; not suspects)",
            p.bold("Go runtime:"),
            human_bytes(committed),
            rt.len(),
            human_bytes(reserved)
        )?;
    }
    writeln!(out)?;

    // Stacks.
    let ordered = super::json::ordered(m);
    let user: Vec<&&StackSeries> = ordered
        .iter()
        .filter(|s| s.origin != Origin::GoRuntime && (s.last_bytes() > 0.0 || s.is_suspect()))
        .collect();
    writeln!(out, "{}", p.bold("Stacks (live at the last dump)"))?;
    for (i, s) in user.iter().take(MAX_STACKS).enumerate() {
        stack(
            out,
            &p,
            i + 1,
            s,
            m.times_ms.last().copied().unwrap_or(0),
            n > 1,
        )?;
    }
    if user.len() > MAX_STACKS {
        writeln!(
            out,
            "  … {} more stacks (--format json lists all)",
            user.len() - MAX_STACKS
        )?;
    }
    if !rt.is_empty() {
        writeln!(out, "{}", p.bold("Go runtime stacks (largest)"))?;
        for (i, s) in rt.iter().take(MAX_RUNTIME_STACKS).enumerate() {
            stack(
                out,
                &p,
                i + 1,
                s,
                m.times_ms.last().copied().unwrap_or(0),
                n > 1,
            )?;
        }
    }
    if let Some(f) = &ctx.fail {
        writeln!(out)?;
        if f.reasons.is_empty() {
            writeln!(out, "--fail-on {}: passed", f.policy)?;
        } else {
            writeln!(out, "{} {}:", p.c("1;31", "--fail-on tripped:"), f.policy)?;
            for r in &f.reasons {
                writeln!(out, "  {r}")?;
            }
        }
    }
    Ok(())
}

fn stack(
    out: &mut dyn Write,
    p: &Paint,
    i: usize,
    s: &StackSeries,
    now_ms: u64,
    series: bool,
) -> anyhow::Result<()> {
    let mut head = format!(
        "[{i}] {} {} {}: {} in {} allocations",
        p.verdict(s.class.verdict),
        s.origin.as_str(),
        s.kind,
        human_bytes(s.last_bytes()),
        s.last_count().round() as u64
    );
    if series {
        head += &format!(
            ", {}, confidence {:.2}",
            human_rate(s.class.rate),
            s.class.confidence
        );
    }
    if let Some(o) = s.last.as_ref().and_then(|o| o.oldest_ms) {
        head += &format!(
            ", oldest {:.1} s old",
            now_ms.saturating_sub(o) as f64 / 1000.0
        );
    }
    if let Some(pat) = &s.suppressed {
        head += &format!(" (suppressed by leak:{pat})");
    }
    writeln!(out, "{head}")?;
    if s.frames.is_empty() {
        writeln!(out, "    {}", p.dim("(no stack captured)"))?;
    }
    for (k, f) in s.frames.iter().enumerate() {
        let name =
            if f.go && !crate::model::origin::is_go_plumbing(f.function.as_deref().unwrap_or("")) {
                p.bold(&f.display_name())
            } else {
                f.display_name()
            };
        let loc = f.location().unwrap_or_else(|| {
            f.module
                .as_deref()
                .map(|m| m.rsplit('/').next().unwrap_or(m).to_string())
                .unwrap_or_default()
        });
        writeln!(
            out,
            "    #{k:<2} {name}{} {}",
            if f.inlined { " (inlined)" } else { "" },
            p.dim(&loc)
        )?;
    }
    if s.end == "truncated" || s.end == "broken" {
        writeln!(out, "    {}", p.dim(&format!("(stack {})", s.end)))?;
    }
    Ok(())
}
