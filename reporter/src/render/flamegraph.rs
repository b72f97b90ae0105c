//! Flamegraph SVG of outstanding bytes by stack, coloured by verdict.
//!
//! Drawn here rather than by a flamegraph library because the colour must say what the
//! report says: a frame takes the colour of the verdict that holds most of its bytes (red for
//! leaks, blue for bounded caches, green for released memory), and every frame's `<title>`
//! names its bytes and share. By default the graph shows what could be the user's problem: no
//! PROT_NONE reservations (address space, not memory) and no Go runtime memory
//! (`--include go-runtime` adds it). Frames are outermost at the bottom, each kind (`[malloc]`,
//! `[mmap]`) in a section of its own at full width, so the two kinds of memory do not merge and
//! the smaller is not a sliver beside the larger; a Go stack's innermost cgo and syscall
//! plumbing is left out, so each tower ends in the user's function.

use super::Context;
use crate::model::origin::Origin;
use crate::model::ProcessModel;
use crate::verdict::Verdict;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

const WIDTH: f64 = 1200.0;
const FRAME_H: f64 = 17.0;
const TOP: f64 = 62.0;
const PAD: f64 = 10.0;
const CHAR_W: f64 = 6.6;

struct Node {
    name: String,
    bytes: f64,
    by_verdict: HashMap<Verdict, f64>,
    children: HashMap<String, usize>,
}

struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                name: "all".into(),
                bytes: 0.0,
                by_verdict: HashMap::new(),
                children: HashMap::new(),
            }],
        }
    }

    /// Adds `bytes` along `path` (outermost first).
    fn add(&mut self, path: &[String], bytes: f64, verdict: Verdict) {
        let mut at = 0;
        self.credit(at, bytes, verdict);
        for name in path {
            let next = match self.nodes[at].children.get(name) {
                Some(&i) => i,
                None => {
                    self.nodes.push(Node {
                        name: name.clone(),
                        bytes: 0.0,
                        by_verdict: HashMap::new(),
                        children: HashMap::new(),
                    });
                    let i = self.nodes.len() - 1;
                    self.nodes[at].children.insert(name.clone(), i);
                    i
                }
            };
            at = next;
            self.credit(at, bytes, verdict);
        }
    }

    fn credit(&mut self, i: usize, bytes: f64, verdict: Verdict) {
        let n = &mut self.nodes[i];
        n.bytes += bytes;
        *n.by_verdict.entry(verdict).or_default() += bytes;
    }

    fn depth(&self, i: usize) -> usize {
        1 + self.nodes[i]
            .children
            .values()
            .map(|&c| self.depth(c))
            .max()
            .unwrap_or(0)
    }

    /// The verdict holding most of a node's bytes.
    fn verdict(&self, i: usize) -> Verdict {
        self.nodes[i]
            .by_verdict
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
            .map_or(Verdict::Unknown, |(v, _)| *v)
    }
}

/// The tree of what the view shows.
fn tree(ctx: &Context) -> Tree {
    let m = ctx.model;
    let mut t = Tree::new();
    for s in &m.series {
        if s.last_bytes <= 0.0 || s.is_reservation() {
            continue;
        }
        if !ctx.view.include_runtime && m.origin(s) == Origin::GoRuntime {
            continue;
        }
        let mut path = vec![format!("[{}]", s.kind.as_str())];
        let frames = m.frames_of(s.stack);
        let plumbing = m.plumbing_leaves(s.stack, &frames);
        path.extend(frames[plumbing..].iter().rev().map(|f| f.display_name()));
        if frames.is_empty() {
            path.push(
                m.stack(s.stack)
                    .and_then(|i| i.missing)
                    .map_or("[no stack]".to_string(), |w| format!("[{w}]")),
            );
        }
        t.add(&path, s.last_bytes, s.class.verdict);
    }
    t
}

/// Fill colour of a verdict; `shade` (0..1, from the name) varies neighbours a little.
fn colour(v: Verdict, shade: f64) -> String {
    let (h, s, l) = match v {
        Verdict::Leak => (2.0, 0.75, 0.55),
        Verdict::Growing => (30.0, 0.85, 0.55),
        Verdict::Insufficient => (285.0, 0.45, 0.62),
        Verdict::Bounded => (205.0, 0.60, 0.60),
        Verdict::Transient => (120.0, 0.40, 0.58),
        Verdict::Startup => (50.0, 0.15, 0.65),
        Verdict::SingleDump | Verdict::Unknown => (0.0, 0.0, 0.72),
    };
    format!(
        "hsl({h:.0},{:.0}%,{:.0}%)",
        s * 100.0,
        (l + 0.1 * shade) * 100.0
    )
}

fn shade(name: &str) -> f64 {
    let h = name
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    (h % 1000) as f64 / 1000.0
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `1,402,000`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One section of the graph: a kind's tower, as wide as the page for its own total.
struct Layout<'a> {
    t: &'a Tree,
    total: f64,
    /// The y of the section's bottom edge.
    bottom: f64,
    /// The section's kind (`[malloc]`), whose total the shares in titles are of.
    kind: &'a str,
    svg: String,
}

impl Layout<'_> {
    fn draw(&mut self, i: usize, x: f64, depth: usize) {
        let n = &self.t.nodes[i];
        let w = n.bytes / self.total * (WIDTH - 2.0 * PAD);
        if w < 0.3 {
            return;
        }
        let y = self.bottom - (depth as f64 + 1.0) * FRAME_H;
        let pct = 100.0 * n.bytes / self.total;
        let verdict = self.t.verdict(i);
        let _ = write!(
            self.svg,
            "<g><title>{} ({} bytes, {pct:.2}% of {}) {}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" \
             width=\"{w:.1}\" height=\"{:.1}\" rx=\"2\" fill=\"{}\"/>",
            escape(&n.name),
            thousands(n.bytes.round() as u64),
            escape(self.kind),
            verdict.as_str(),
            FRAME_H - 1.0,
            colour(verdict, shade(&n.name)),
        );
        let fits = ((w - 6.0) / CHAR_W).floor() as usize;
        if fits >= 3 {
            let label: String = if n.name.chars().count() > fits {
                n.name
                    .chars()
                    .take(fits.saturating_sub(2))
                    .collect::<String>()
                    + ".."
            } else {
                n.name.clone()
            };
            let _ = write!(
                self.svg,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x + 3.0,
                y + FRAME_H - 5.0,
                escape(&label)
            );
        }
        self.svg.push_str("</g>\n");
        let mut kids: Vec<usize> = n.children.values().copied().collect();
        kids.sort_by(|&a, &b| self.t.nodes[a].name.cmp(&self.t.nodes[b].name));
        let mut cx = x;
        for k in kids {
            self.draw(k, cx, depth + 1);
            cx += self.t.nodes[k].bytes / self.total * (WIDTH - 2.0 * PAD);
        }
    }
}

fn legend(t: &Tree) -> String {
    let mut present: Vec<Verdict> = t.nodes[0].by_verdict.keys().copied().collect();
    present.sort();
    let mut s = String::new();
    let mut x = PAD;
    for v in present {
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"36\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"46\">{}</text>",
            colour(v, 0.5),
            x + 16.0,
            v.as_str()
        );
        x += 24.0 + CHAR_W * v.as_str().len() as f64 + 12.0;
    }
    s
}

fn subtitle(m: &ProcessModel, ctx: &Context) -> String {
    format!(
        "{} at seq {}{}{}",
        m.exe,
        m.last_point().map_or(0, |p| p.seq),
        if m.sampled() { " (estimates)" } else { "" },
        if ctx.view.include_runtime {
            ""
        } else {
            "; Go runtime memory and PROT_NONE reservations left out (--include go-runtime)"
        }
    )
}

/// Height of a section's heading line.
const HEADING_H: f64 = 22.0;

/// The kinds under the root, largest first: each gets a section of its own, as wide as the
/// page, so a few hundred KiB of malloc leaks are not a sliver beside 25 MiB of mappings.
fn sections(t: &Tree) -> Vec<usize> {
    let mut kinds: Vec<usize> = t.nodes[0].children.values().copied().collect();
    kinds.sort_by(|&a, &b| t.nodes[b].bytes.total_cmp(&t.nodes[a].bytes));
    kinds
}

/// Draws each kind's section below the previous one; returns the SVG and the page height.
fn draw_sections(t: &Tree, total: f64) -> (String, f64) {
    let mut svg = String::new();
    let mut top = TOP;
    for k in sections(t) {
        let node = &t.nodes[k];
        let _ = writeln!(
            svg,
            "<text x=\"{PAD}\" y=\"{:.1}\" font-size=\"13\">{} — {} ({:.1} % of the total), at full width</text>",
            top + 14.0,
            escape(&node.name),
            super::human_bytes(node.bytes),
            100.0 * node.bytes / total.max(1.0)
        );
        let bottom = top + HEADING_H + (t.depth(k) as f64) * FRAME_H;
        let mut l = Layout {
            t,
            total: node.bytes.max(1.0),
            bottom,
            kind: &node.name,
            svg: String::new(),
        };
        l.draw(k, PAD, 0);
        svg.push_str(&l.svg);
        top = bottom + PAD;
    }
    (svg, top + PAD)
}

pub fn render(ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let m = ctx.model;
    let t = tree(ctx);
    let total = t.nodes[0].bytes;
    let (body, height) = draw_sections(&t, total);
    let height = height.max(TOP + 40.0);
    write!(
        out,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {WIDTH} {height:.0}\" font-family=\"Verdana, sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#fafafa\"/>\n\
         <text x=\"{PAD}\" y=\"18\" font-size=\"15\">offheap: outstanding bytes, pid {} — {} in total</text>\n\
         <text x=\"{PAD}\" y=\"32\" fill=\"#555\">{}</text>\n{}\n{body}{}</svg>\n",
        m.pid,
        super::human_bytes(total),
        escape(&subtitle(m, ctx)),
        legend(&t),
        if total > 0.0 {
            ""
        } else {
            "<text x=\"10\" y=\"80\">no outstanding memory in this view</text>\n"
        }
    )?;
    Ok(())
}
