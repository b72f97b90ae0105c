//! Flamegraph SVG of outstanding bytes by stack, drawn by `inferno` from folded stacks.
//!
//! Frames are written outermost first (the folded-stack convention); PROT_NONE reservations are
//! left out because they hold no memory. Each stack's root is tagged with its kind so malloc
//! and mmap memory do not merge into one tower.

use super::Context;
use std::io::Write;

/// Folded lines `root;…;leaf bytes`, one per (stack, kind) with live bytes.
pub fn folded(ctx: &Context) -> Vec<String> {
    let m = ctx.model;
    let mut lines = Vec::new();
    for s in &m.stacks {
        let bytes = s.last_bytes().round() as u64;
        if bytes == 0 || s.kind == "mmap_reserved" {
            continue;
        }
        let mut parts = vec![format!("[{}]", s.kind)];
        for f in s.frames.iter().rev() {
            // `;` separates frames and a space separates the count: neither may appear inside.
            parts.push(f.display_name().replace([';', ' '], "_"));
        }
        if s.frames.is_empty() {
            parts.push("[no stack]".into());
        }
        lines.push(format!("{} {bytes}", parts.join(";")));
    }
    lines
}

pub fn render(ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let lines = folded(ctx);
    let mut opt = inferno::flamegraph::Options::default();
    opt.title = format!("offheap: outstanding bytes, pid {}", ctx.model.pid);
    opt.subtitle = Some(format!(
        "{} at seq {}{}",
        ctx.model.exe,
        ctx.model.seqs.last().copied().unwrap_or(0),
        if ctx.model.sampled() {
            " (estimates)"
        } else {
            ""
        }
    ));
    opt.count_name = "bytes".into();
    opt.deterministic = true;
    if lines.is_empty() {
        // inferno refuses empty input; an empty but valid SVG says "nothing live" better.
        writeln!(
            out,
            r#"<?xml version="1.0" standalone="no"?><svg xmlns="http://www.w3.org/2000/svg" width="600" height="60"><text x="10" y="30">offheap: no outstanding memory in this dump</text></svg>"#
        )?;
        return Ok(());
    }
    inferno::flamegraph::from_lines(&mut opt, lines.iter().map(|s| s.as_str()), out)?;
    Ok(())
}
