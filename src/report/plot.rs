//! Line plots of a metric against a swept parameter, as SVG (plotters).

use std::path::Path;

use plotters::prelude::*;

/// One line: `(x, y, standard deviation)` points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, Option<f64>)>,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Writes an SVG line plot; x is on a log scale when all x are positive and span 20x or more.
pub fn line_plot_svg(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<bool, String> {
    nothing_to_plot(series)?;
    let root = SVGBackend::new(path, (860, 540)).into_drawing_area();
    draw_lines(&root, title, (x_label, y_label), series, true)
        .map_err(|e| format!("cannot draw `{}`: {e}", path.display()))
}

/// The same plot as SVG text, `size` pixels, for pages that inline it; `log_x`
/// allows the log scale (curves over steps never want it).
pub fn line_chart_svg(
    size: (u32, u32),
    title: &str,
    axes: (&str, &str),
    series: &[Series],
    log_x: bool,
) -> Result<String, String> {
    nothing_to_plot(series)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_lines(&root, title, axes, series, log_x)
            .map_err(|e| format!("cannot draw `{title}`: {e}"))?;
    }
    Ok(svg)
}

fn nothing_to_plot(series: &[Series]) -> Result<(), String> {
    if series.iter().all(|s| s.points.is_empty()) {
        return Err("nothing to plot: no stage has both values".into());
    }
    Ok(())
}

/// Draws the lines on `root` (at least one point); returns whether x is on a log scale.
fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    allow_log_x: bool,
) -> Result<bool, String> {
    let pts: Vec<&(f64, f64, Option<f64>)> = series.iter().flat_map(|s| &s.points).collect();
    let (xmin, xmax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let lo = pts
        .iter()
        .map(|p| p.1 - p.2.unwrap_or(0.0))
        .fold(f64::MAX, f64::min);
    let hi = pts
        .iter()
        .map(|p| p.1 + p.2.unwrap_or(0.0))
        .fold(f64::MIN, f64::max);
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let (ylo, yhi) = (lo - pad, hi + pad);
    let log_x = allow_log_x && xmin > 0.0 && xmax / xmin >= 20.0;
    // On a log axis, points sit at ln(x) and the ticks are the swept values themselves.
    let tx = |x: f64| if log_x { x.ln() } else { x };
    let (x0, x1) = (tx(xmin), tx(xmax));
    let xpad = ((x1 - x0) * 0.06).max(1e-3);
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(46)
        .y_label_area_size(64)
        .build_cartesian_2d(x0 - xpad..x1 + xpad, ylo..yhi)
        .map_err(|e| err(&e))?;
    let mut mesh = chart.configure_mesh();
    let number = |x: &f64| super::fmt_number(*x);
    mesh.x_desc(x_label)
        .y_desc(y_label)
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&number)
        .y_label_formatter(&number)
        .light_line_style(WHITE.mix(0.0));
    if log_x {
        mesh.x_labels(0).disable_x_mesh();
    }
    mesh.draw().map_err(|e| err(&e))?;
    if log_x {
        let mut ticks: Vec<f64> = pts.iter().map(|p| p.0).collect();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        for t in ticks {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(tx(t), ylo), (tx(t), yhi)],
                    BLACK.mix(0.12),
                )))
                .map_err(|e| err(&e))?;
            let (px, py) = chart.backend_coord(&(tx(t), ylo));
            let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ),
            );
            root.draw(&Text::new(super::fmt_number(t), (px, py + 6), style))
                .map_err(|e| err(&e))?;
        }
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Markers only where points are few enough to tell apart.
        let markers = if s.points.len() <= 60 { 4 } else { 0 };
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|p| (tx(p.0), p.1)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        if markers > 0 {
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|p| Circle::new((tx(p.0), p.1), markers, color.filled())),
                )
                .map_err(|e| err(&e))?;
        }
        for p in &s.points {
            if let Some(sd) = p.2 {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(tx(p.0), p.1 - sd), (tx(p.0), p.1 + sd)],
                        color,
                    )))
                    .map_err(|e| err(&e))?;
            }
        }
    }
    // One line needs no legend: the title names it.
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(log_x)
}
