//! SVG growth chart over time: the top suspects, tracked total, untracked mappings and RSS,
//! drawn with `plotters` (SVG backend only, no font files needed).

use super::Context;
use crate::model::StackSeries;
use plotters::prelude::*;
use std::io::Write;

const MIB: f64 = 1024.0 * 1024.0;
const TOP: usize = 5;

fn label_for(s: &StackSeries) -> String {
    let who = s
        .go_caller()
        .or_else(|| s.frames.iter().find(|f| f.function.is_some()))
        .map(|f| f.display_name())
        .unwrap_or_else(|| "??".into());
    format!("{} {} ({})", s.class.verdict.as_str(), who, s.kind)
}

pub fn render(ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let m = ctx.model;
    let t0 = m.times_ms.first().copied().unwrap_or(0);
    let xs: Vec<f64> = m
        .times_ms
        .iter()
        .map(|&t| t.saturating_sub(t0) as f64 / 1000.0)
        .collect();
    let mut lines: Vec<(String, Vec<f64>, RGBColor)> = vec![
        (
            "RSS".into(),
            m.rss.iter().map(|&b| b as f64 / MIB).collect(),
            RGBColor(0, 0, 0),
        ),
        (
            "tracked (malloc + mmap)".into(),
            m.tracked.iter().map(|&b| b as f64 / MIB).collect(),
            RGBColor(31, 119, 180),
        ),
        (
            "untracked mappings".into(),
            m.untracked.iter().map(|&b| b as f64 / MIB).collect(),
            RGBColor(148, 103, 189),
        ),
    ];
    // Top suspects; without any, the largest non-runtime stacks still show the shapes.
    let mut top: Vec<&StackSeries> = m.suspects().into_iter().take(TOP).collect();
    if top.is_empty() {
        top = super::json::ordered(m)
            .into_iter()
            .filter(|s| s.origin != crate::model::origin::Origin::GoRuntime)
            .take(TOP)
            .collect();
    }
    let palette = [
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];
    for (i, s) in top.iter().enumerate() {
        lines.push((
            label_for(s),
            s.bytes.iter().map(|&b| b / MIB).collect(),
            palette[i % palette.len()],
        ));
    }
    let xmax = xs.last().copied().unwrap_or(0.0).max(1.0);
    let ymax = lines
        .iter()
        .flat_map(|l| l.1.iter().copied())
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.1;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 650)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| anyhow::anyhow!("chart: {e}");
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "offheap: pid {} {}{}",
                    m.pid,
                    m.exe,
                    if m.sampled() { " (estimates)" } else { "" }
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("seconds since the first dump")
            .y_desc("MiB")
            .draw()
            .map_err(|x| e(&x))?;
        for (name, ys, colour) in &lines {
            let style = ShapeStyle::from(colour).stroke_width(2);
            chart
                .draw_series(LineSeries::new(
                    xs.iter().copied().zip(ys.iter().copied()),
                    style,
                ))
                .map_err(|x| e(&x))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    out.write_all(svg.as_bytes())?;
    Ok(())
}
