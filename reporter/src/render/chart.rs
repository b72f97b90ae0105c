//! SVG growth chart over time, drawn with `plotters` (SVG backend only, no font files).
//!
//! Two panels, each with its own scale: the process (resident memory only: the RSS ledger's
//! categories as stacked areas with RSS drawn on top; without a ledger, RSS and the resident
//! part of untracked mappings — a virtual size such as mapped bytes would dwarf RSS and mean
//! nothing next to it), and the suspects followed by the largest other live callers, so a
//! leak of kilobytes is not flattened on the floor of a gigabyte axis; callers smaller than a
//! tenth of the largest get a third panel with its own scale. Legends sit in a column
//! of their own beside each panel and never cover data.

use super::Context;
use crate::model::groups::{self, GroupBy};
use crate::model::ledger::Category;
use crate::model::ProcessModel;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::io::Write;

const TOP: usize = 5;
const W: u32 = 1150;
const H: u32 = 760;
const LEGEND_W: u32 = 330;

type Line = (String, Vec<f64>, RGBColor);

const PALETTE: [RGBColor; 5] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// The unit that keeps a panel's numbers readable.
fn unit(max: f64) -> (f64, &'static str) {
    if max >= 1024.0 * 1024.0 * 1024.0 {
        (1024.0 * 1024.0 * 1024.0, "GiB")
    } else if max >= 1024.0 * 1024.0 {
        (1024.0 * 1024.0, "MiB")
    } else if max >= 1024.0 {
        (1024.0, "KiB")
    } else {
        (1.0, "bytes")
    }
}

fn category_colour(c: Category) -> RGBColor {
    match c {
        Category::MallocLive => RGBColor(214, 39, 40),
        Category::MallocRetained => RGBColor(255, 152, 150),
        Category::Mmap => RGBColor(148, 103, 189),
        Category::GoRuntime => RGBColor(31, 119, 180),
        Category::ThreadStacks => RGBColor(255, 127, 14),
        Category::File => RGBColor(199, 199, 199),
        Category::Untracked => RGBColor(140, 86, 75),
        Category::OffheapSelf => RGBColor(44, 160, 44),
        Category::Other => RGBColor(127, 127, 127),
    }
}

/// The ledger's categories holding anything, bottom of the stack first (one-line legends).
fn ledger_areas(m: &ProcessModel) -> Vec<Line> {
    let Some(l) = &m.ledger else {
        return Vec::new();
    };
    l.categories
        .iter()
        .filter(|c| l.points.iter().flatten().any(|p| p.get(c.category) > 0))
        .map(|c| {
            let label = format!(
                "{} {} {}",
                c.category.name(),
                super::human_bytes(c.bytes as f64),
                super::human_rate(c.rate)
            );
            let ys = l
                .points
                .iter()
                .map(|p| p.map_or(0.0, |p| p.get(c.category) as f64))
                .collect();
            (label, ys, category_colour(c.category))
        })
        .collect()
}

fn process_lines(m: &ProcessModel) -> Vec<Line> {
    if m.ledger.is_some() {
        return vec![(
            format!("RSS {}", super::human_rate(m.rss_rate)),
            m.points.iter().map(|p| p.rss as f64).collect(),
            RGBColor(0, 0, 0),
        )];
    }
    let mut v = vec![(
        "RSS".to_string(),
        m.points.iter().map(|p| p.rss as f64).collect(),
        RGBColor(0, 0, 0),
    )];
    if m.points.iter().any(|p| p.untracked_resident > 0) {
        v.push((
            "untracked mappings (resident)".into(),
            m.points
                .iter()
                .map(|p| p.untracked_resident as f64)
                .collect(),
            RGBColor(148, 103, 189),
        ));
    }
    v
}

/// The suspects, then the largest other live callers (a bounded cache beside a leak shows the
/// difference the verdicts draw), up to TOP, each with its verdict in the legend.
fn culprit_lines(m: &ProcessModel) -> (String, Vec<Line>) {
    let suspects = groups::suspects(m);
    let title = if suspects.is_empty() {
        "largest live callers (no suspects)"
    } else {
        "suspects, then the largest live callers"
    };
    let others = groups::live(m, GroupBy::Caller, false)
        .into_iter()
        .filter(|g| {
            !suspects
                .iter()
                .any(|s| s.name == g.name && s.kind == g.kind)
        });
    let lines = suspects
        .iter()
        .cloned()
        .chain(others)
        .take(TOP)
        .enumerate()
        .map(|(i, g)| {
            // Two legend lines: who, then the verdict, kind and rate.
            let label = format!(
                "{}\n{} {} {}",
                g.name,
                g.verdict.as_str(),
                g.kind.as_str(),
                super::human_rate(g.rate)
            );
            (label, g.bytes_over_time(m), PALETTE[i % PALETTE.len()])
        })
        .collect();
    (title.to_string(), lines)
}

/// Lines at least a tenth of the largest, and the smaller ones: drawn on one axis, a leak of
/// kilobytes next to one of megabytes would be a flat line on the floor.
fn by_magnitude(lines: Vec<Line>) -> (Vec<Line>, Vec<Line>) {
    let peak = |l: &Line| l.1.iter().copied().fold(0.0f64, f64::max);
    let top = lines.iter().map(peak).fold(0.0f64, f64::max);
    lines.into_iter().partition(|l| peak(l) * 10.0 >= top)
}

/// Running sums of the areas' values, bottom first: area k is drawn from 0 to the sum of
/// areas 0..=k, so each band shows one category.
fn stacked(areas: &[Line], n: usize) -> Vec<Vec<f64>> {
    let mut acc = vec![0.0; n];
    areas
        .iter()
        .map(|a| {
            for (s, y) in acc.iter_mut().zip(&a.1) {
                *s += y;
            }
            acc.clone()
        })
        .collect()
}

fn panel(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    xs: &[f64],
    areas: &[Line],
    lines: &[Line],
) -> anyhow::Result<()> {
    let e = |x: &dyn std::fmt::Display| anyhow::anyhow!("chart: {x}");
    let (plot, key) = area.split_horizontally(W - LEGEND_W);
    let sums = stacked(areas, xs.len());
    let max = lines
        .iter()
        .map(|l| &l.1)
        .chain(sums.last())
        .flat_map(|ys| ys.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1.0);
    let (div, unit_name) = unit(max);
    let xmax = xs.last().copied().unwrap_or(0.0).max(1.0);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..xmax, 0f64..(max / div * 1.08))
        .map_err(|x| e(&x))?;
    // A label every ~40 px: a short panel with plotters' default ten is unreadable.
    let y_labels = (plot.dim_in_pixel().1 / 40).clamp(3, 10) as usize;
    chart
        .configure_mesh()
        .y_labels(y_labels)
        .x_desc("seconds since the first dump")
        .y_desc(unit_name)
        .draw()
        .map_err(|x| e(&x))?;
    for (sum, (_, _, colour)) in sums.iter().zip(areas).rev() {
        chart
            .draw_series(AreaSeries::new(
                xs.iter().copied().zip(sum.iter().map(|y| y / div)),
                0.0,
                colour.mix(0.85).filled(),
            ))
            .map_err(|x| e(&x))?;
    }
    for (_, ys, colour) in lines {
        let style = ShapeStyle::from(colour).stroke_width(2);
        chart
            .draw_series(LineSeries::new(
                xs.iter().copied().zip(ys.iter().map(|y| y / div)),
                style,
            ))
            .map_err(|x| e(&x))?;
    }
    draw_legend(&key, lines.iter().chain(areas.iter().rev()))
}

/// The key beside a panel: each series' colour and name (a name's later lines smaller).
fn draw_legend<'a>(
    key: &DrawingArea<SVGBackend, Shift>,
    series: impl Iterator<Item = &'a Line>,
) -> anyhow::Result<()> {
    let e = |x: &dyn std::fmt::Display| anyhow::anyhow!("chart: {x}");
    let mut y = 40;
    for (name, _, colour) in series {
        key.draw(&PathElement::new(
            vec![(8, y), (32, y)],
            ShapeStyle::from(colour).stroke_width(3),
        ))
        .map_err(|x| e(&x))?;
        for (k, text) in name.lines().enumerate() {
            let shown: String = if text.chars().count() > 44 {
                text.chars().take(43).collect::<String>() + "…"
            } else {
                text.to_string()
            };
            let style = if k == 0 { 13 } else { 12 };
            key.draw(&Text::new(
                shown,
                (38, y - 7 + 16 * k as i32),
                ("sans-serif", style),
            ))
            .map_err(|x| e(&x))?;
        }
        y += 16 * name.lines().count() as i32 + 10;
    }
    Ok(())
}

fn process_title(m: &ProcessModel) -> String {
    match m.ledger.as_ref().map(|l| l.explained) {
        Some(Some(x)) => format!(
            "process: resident memory by category, RSS on top (growth explained {:.0} %)",
            x * 100.0
        ),
        Some(None) => "process: resident memory by category, RSS on top".into(),
        None => "process: resident memory".into(),
    }
}

pub fn render(ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let m = ctx.model;
    let t0 = m.points.first().map_or(0, |p| p.uptime_ms);
    let xs: Vec<f64> = m
        .points
        .iter()
        .map(|p| p.uptime_ms.saturating_sub(t0) as f64 / 1000.0)
        .collect();
    let (title, culprits) = culprit_lines(m);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let e = |x: &dyn std::fmt::Display| anyhow::anyhow!("chart: {x}");
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let root = root
            .titled(
                &format!(
                    "offheap: pid {} {}{}",
                    m.pid,
                    m.exe,
                    if m.sampled() { " (estimates)" } else { "" }
                ),
                ("sans-serif", 18),
            )
            .map_err(|x| e(&x))?;
        let (top, bottom) = root.split_vertically(H / 2 - 20);
        panel(
            &top,
            &process_title(m),
            &xs,
            &ledger_areas(m),
            &process_lines(m),
        )?;
        let (large, small) = by_magnitude(culprits);
        if small.is_empty() {
            panel(&bottom, &format!("{title}: live bytes"), &xs, &[], &large)?;
        } else {
            let (upper, lower) = bottom.split_vertically((H / 2 + 20) / 2);
            panel(&upper, &format!("{title}: live bytes"), &xs, &[], &large)?;
            panel(
                &lower,
                "the smaller ones, on their own scale",
                &xs,
                &[],
                &small,
            )?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    out.write_all(svg.as_bytes())?;
    Ok(())
}
