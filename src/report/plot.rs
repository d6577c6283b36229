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
    let pts: Vec<&(f64, f64, Option<f64>)> = series.iter().flat_map(|s| &s.points).collect();
    if pts.is_empty() {
        return Err("nothing to plot: no stage has both values".into());
    }
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
    let log_x = xmin > 0.0 && xmax / xmin >= 20.0;
    // On a log axis, points sit at ln(x) and the ticks are the swept values themselves.
    let tx = |x: f64| if log_x { x.ln() } else { x };
    let (x0, x1) = (tx(xmin), tx(xmax));
    let xpad = ((x1 - x0) * 0.06).max(1e-3);
    let root = SVGBackend::new(path, (860, 540)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("cannot draw `{}`: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(46)
        .y_label_area_size(64)
        .build_cartesian_2d(x0 - xpad..x1 + xpad, ylo..yhi)
        .map_err(|e| err(&e))?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_label)
        .y_desc(y_label)
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
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|p| Circle::new((tx(p.0), p.1), 4, color.filled())),
            )
            .map_err(|e| err(&e))?;
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(log_x)
}
