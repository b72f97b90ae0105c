//! The text report's ledger: where the resident bytes are (one line per category, bytes and
//! growth; categories holding nothing folded into one line), how much of the RSS growth the
//! categories that name a cause explain, and, for the causes that are not leaks, what they
//! are and what to do: glibc arena retention (`MALLOC_ARENA_MAX`, `MALLOC_TRIM_THRESHOLD_`,
//! `malloc_trim`, another allocator) and the Go heap (`go tool pprof`). Also the thread
//! creators whose live threads keep growing. Every number comes from the model.

use super::{human_bytes, human_rate, Context};
use crate::model::ledger::{Category, LedgerModel, RetainedFacts};
use crate::model::threads::{self, CreatorGroup};
use crate::model::ProcessModel;
use std::io::Write;

type Out<'a> = &'a mut dyn Write;

fn pct(x: f64) -> String {
    format!("{:.0} %", x * 100.0)
}

/// `RSS … (+…/s)`, then one line per category, the zero ones folded, and the explained line.
pub fn ledger_block(m: &ProcessModel, out: Out) -> anyhow::Result<()> {
    let Some(l) = &m.ledger else {
        return Ok(());
    };
    writeln!(
        out,
        "  resident {} by where it is (growth over the verdict window):",
        human_bytes(l.rss_bytes as f64)
    )?;
    let mut zero = Vec::new();
    let mut steady = Vec::new();
    for c in &l.categories {
        if c.bytes == 0 && c.rate == 0.0 {
            zero.push(c.category.name());
            continue;
        }
        // Small and not growing: named on one line together, so the rows that matter stand out.
        if c.rate == 0.0 && c.bytes * 10 < l.rss_bytes {
            steady.push(format!(
                "{} {}",
                c.category.name(),
                human_bytes(c.bytes as f64)
            ));
            continue;
        }
        writeln!(
            out,
            "    {:<16} {:>10}  {:>13}  {}",
            c.category.name(),
            human_bytes(c.bytes as f64),
            human_rate(c.rate),
            c.category.what()
        )?;
    }
    if !steady.is_empty() {
        writeln!(out, "    not growing: {}", steady.join(", "))?;
    }
    if !zero.is_empty() {
        writeln!(out, "    0 B in {}", zero.join(", "))?;
    }
    if l.remainder_bytes != 0 {
        writeln!(
            out,
            "    {:<16} {:>10}  mappings that changed while the ledger read them",
            "remainder",
            human_bytes(l.remainder_bytes as f64)
        )?;
    }
    explained_line(m, l, out)
}

fn explained_line(m: &ProcessModel, l: &LedgerModel, out: Out) -> anyhow::Result<()> {
    if m.dumps() < 2 {
        writeln!(
            out,
            "  RSS growth explained: – (one dump: no growth to explain)"
        )?;
        return Ok(());
    }
    match l.explained {
        Some(x) => writeln!(
            out,
            "  RSS growth explained: {} ({} of {} by categories that name a cause; not: untracked, other)",
            pct(x),
            human_rate(l.named_rate),
            human_rate(l.rss_rate)
        )?,
        None => writeln!(
            out,
            "  RSS growth explained: – (RSS grew too little over the window to ask: {})",
            human_rate(l.rss_rate)
        )?,
    }
    Ok(())
}

/// The causes of RSS growth that are not leaks, in plain words.
pub fn causes(ctx: &Context, out: Out) -> anyhow::Result<()> {
    let Some(l) = &ctx.model.ledger else {
        return Ok(());
    };
    let mut any = false;
    for &c in &l.causes {
        let share = l.share(c);
        match c {
            Category::MallocRetained => {
                if let Some(r) = &l.retained {
                    retained(ctx.model, r, out)?;
                    any = true;
                }
            }
            Category::GoRuntime => {
                go_heap(l, share, out)?;
                any = true;
            }
            Category::Untracked => {
                writeln!(
                    out,
                    "Untracked memory grows: {} ({} of the RSS growth) is anonymous memory no \
                     tracked call made (a raw system call with the Go probes off, memory mapped \
                     before offheap started, a static allocator).",
                    human_rate(l.category(c).rate),
                    pct(share)
                )?;
                any = true;
            }
            _ => {}
        }
    }
    if let Some(r) = l.retained.as_ref().filter(|r| !r.growing) {
        retained(ctx.model, r, out)?;
        any = true;
    }
    if any {
        writeln!(out)?;
    }
    Ok(())
}

fn retained(m: &ProcessModel, r: &RetainedFacts, out: Out) -> anyhow::Result<()> {
    let h = |b: u64| human_bytes(b as f64);
    let opening = if r.growing {
        format!(
            "Not a leak: malloc_retained grows {} ({} of the RSS growth).",
            human_rate(r.rate),
            pct(r.share)
        )
    } else {
        format!(
            "Not a leak: malloc_retained holds {} of RSS. It stepped up (the rates above are \
             slopes, which a step barely moves) and grows {} now.",
            pct(r.rss_share),
            human_rate(r.rate)
        )
    };
    writeln!(
        out,
        "{opening} glibc's malloc keeps {} resident in {} that no live block uses; the live \
         blocks in them use {}.",
        h(r.retained),
        arenas_text(r),
        h(r.live)
    )?;
    let top: Vec<String> = r
        .top
        .iter()
        .map(|a| {
            format!(
                "{} arena {:#x}: {} retained of {} resident ({})",
                if a.main { "main" } else { "thread" },
                a.start,
                h(a.retained),
                h(a.resident),
                human_rate(a.retained_rate)
            )
        })
        .collect();
    writeln!(out, "  Largest: {}.", top.join("; "))?;
    came_and_went_into_arenas(m, out)?;
    writeln!(out, "  What helps: {}", remedies(r))?;
    Ok(())
}

/// What may have been freed into the arenas: memory that came and went in blocks an arena can
/// hold, largest peak first (freed chunks glibc keeps are where retained memory comes from).
fn came_and_went_into_arenas(m: &ProcessModel, out: Out) -> anyhow::Result<()> {
    use crate::model::groups::{self, GLIBC_ARENA_BLOCK_MAX};
    let came_and_went = groups::transients(m);
    let named: Vec<String> = came_and_went
        .iter()
        .filter(|t| t.group.kind == offheap_format::Kind::Malloc)
        .filter(|t| t.mean_block_bytes.is_none_or(|b| b < GLIBC_ARENA_BLOCK_MAX))
        .take(3)
        .map(|t| {
            let via = t
                .group
                .via()
                .map(|v| format!(" via {v}"))
                .unwrap_or_default();
            format!(
                "{}{via} ({} at its peak, at {:.1} s)",
                t.group.name,
                human_bytes(t.peak_bytes),
                t.peak_at_s
            )
        })
        .collect();
    if !named.is_empty() {
        writeln!(
            out,
            "  Came and went meanwhile, in blocks an arena may keep once freed: {}; see \"Came and went\".",
            named.join("; ")
        )?;
    }
    let unseen: Vec<String> = m
        .between_dumps
        .iter()
        .filter(|b| b.mean_block_bytes() < GLIBC_ARENA_BLOCK_MAX)
        .take(3)
        .map(|b| {
            format!(
                "{} ({} in {} allocations)",
                super::text::caller_via(m, b.stack),
                human_bytes(b.bytes as f64),
                b.allocs
            )
        })
        .collect();
    if !unseen.is_empty() {
        writeln!(
            out,
            "  Allocated and freed between dumps, in blocks an arena may keep: {}.",
            unseen.join("; ")
        )?;
    }
    Ok(())
}

/// `13 arenas (12 thread arenas hold 126.9 MiB of it)`, or the one shared arena.
fn arenas_text(r: &RetainedFacts) -> String {
    if r.thread_arenas == 0 {
        return format!("{} arena shared by every thread", r.arenas);
    }
    format!(
        "{} arenas ({} {} of it)",
        r.arenas,
        if r.thread_arenas == 1 {
            "1 thread arena holds".to_string()
        } else {
            format!("{} thread arenas hold", r.thread_arenas)
        },
        human_bytes(r.thread_retained as f64)
    )
}

/// The remedies, with the figures of this run; fewer arenas is offered only when threads
/// have arenas of their own (with one arena left, `MALLOC_ARENA_MAX` is already in effect).
fn remedies(r: &RetainedFacts) -> String {
    let h = |b: u64| human_bytes(b as f64);
    let mut v = Vec::new();
    if r.thread_arenas > 0 {
        v.push(format!(
            "MALLOC_ARENA_MAX=2 (threads share two arenas and reuse each other's freed chunks \
             instead of each keeping its own high-water mark: {} sits in thread arenas here)",
            h(r.thread_retained)
        ));
    }
    v.push(format!(
        "malloc_trim(0) called by the program (returns the free pages of every arena: up to {} \
         here)",
        h(r.retained)
    ));
    v.push(
        "MALLOC_TRIM_THRESHOLD_ lowered, e.g. =131072 (gives back free memory at the top of a \
         heap sooner; not below a live block)"
            .into(),
    );
    v.push("or another allocator (jemalloc, tcmalloc, mimalloc).".into());
    v.join("; ")
}

fn go_heap(l: &LedgerModel, share: f64, out: Out) -> anyhow::Result<()> {
    let g = l.category(Category::GoRuntime);
    writeln!(
        out,
        "The Go heap grows: go_runtime {} ({} of the RSS growth, {} resident) is Go's own heap, \
         goroutine stacks and metadata. offheap sees only its mappings; what holds it is in a \
         Go heap profile: go tool pprof http://<host>/debug/pprof/heap (net/http/pprof) or a \
         runtime/pprof.WriteHeapProfile file.{}",
        human_rate(g.rate),
        pct(share),
        human_bytes(g.bytes as f64),
        if l.young_go_heap() {
            " While it is this small it may be garbage not collected yet: Go's first \
             collection waits for 4 MiB of heap (GOGC=100)."
        } else {
            ""
        }
    )?;
    Ok(())
}

/// `threads: 30 live (+2.0/s), 268 created`.
pub fn threads_text(m: &ProcessModel) -> Option<String> {
    let t = &m.threads;
    let &live = t.live.last()?;
    if live == 0 && t.created == 0 {
        return None;
    }
    let rate = if m.dumps() < 2 {
        String::new()
    } else {
        format!(" ({:+.1}/s)", t.live_rate)
    };
    Some(format!(
        "threads: {live} live{rate}, {} created through pthread_create",
        t.created
    ))
}

/// Thread creators whose live threads keep growing: suspects like any leak.
pub fn thread_suspects(ctx: &Context, groups: &[CreatorGroup], out: Out) -> anyhow::Result<()> {
    let suspects: Vec<&CreatorGroup> = groups.iter().filter(|g| g.suspect).collect();
    if suspects.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "Thread suspects (threads that keep growing, by the function that starts them)"
    )?;
    writeln!(
        out,
        "  {:>2}  {:<12} {:>4}  {:>12}  {:>6}  {:>7}  creator",
        "#", "verdict", "conf", "rate", "live", "created"
    )?;
    let shown = ctx.view.limit(suspects.len());
    for (i, g) in suspects.iter().take(shown).enumerate() {
        let mut who = g.name.clone();
        if let Some(v) = &g.via {
            who += &format!(" via {v}");
        }
        if let Some(loc) = &g.location {
            who += &format!("  {}", super::text::short_loc(loc));
        }
        writeln!(
            out,
            "  T{:<1}  {:<12} {:>4.2}  {:>12}  {:>6}  {:>7}  {who}",
            i + 1,
            g.verdict.as_str(),
            g.confidence,
            format!("{:+.1} thr/s", g.rate),
            g.live,
            g.created
        )?;
    }
    tls_note(ctx.model, out)?;
    writeln!(out)?;
    Ok(())
}

/// Live thread-local storage, counted with the threads rather than with the stack that
/// happened to allocate it (glibc reuses a cached stack's TLS for a later thread).
fn tls_note(m: &ProcessModel, out: Out) -> anyhow::Result<()> {
    let (bytes, count) = m
        .series
        .iter()
        .filter(|s| m.stack(s.stack).is_some_and(|i| i.thread_tls))
        .fold((0.0, 0.0), |(b, c), s| (b + s.last_bytes, c + s.last_count));
    if count > 0.0 {
        writeln!(
            out,
            "  Threads' TLS ({} in {count} blocks from pthread_create) counts with the threads, not as \
             a suspect: \
             glibc hands a joined thread's cached stack and TLS to the next thread it starts, \
             so the stack that allocated a block does not say who keeps it.",
            human_bytes(bytes)
        )?;
    }
    Ok(())
}

/// The thread groups of the model (for the text renderer's ordering).
pub fn thread_groups(m: &ProcessModel) -> Vec<CreatorGroup> {
    threads::groups(m)
}
