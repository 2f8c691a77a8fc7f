//! Report plots: a bar chart comparing every method side by side (one bar per model), and a
//! percentile-progression plot (threshold and sparsity against p), as the original study drew
//! them ("Comprehensive Sparsity Comparison", "Percentile-Based Sparsity Analysis"), PNG or SVG.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{MetricsError, Result};
use crate::report::SparsityReport;
use sparsity_plot::FONT;

use sparsity_plot::PALETTE as COLORS;

fn plot_err(path: &Path, e: impl std::fmt::Display) -> MetricsError {
    MetricsError::Plot {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

type DrawResult = std::result::Result<(), String>;

/// Renders with the backend for `path`'s extension and writes the file atomically.
fn render<F>(
    path: &Path,
    size: (u32, u32),
    draw_png: F,
    draw_svg: impl FnOnce(DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<()>
where
    F: FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult,
{
    sparsity_plot::render_atomic(path, size, draw_png, draw_svg).map_err(|e| plot_err(path, e))
}

/// Methods drawn in the comparison chart (percentile entries are left to the other plot).
fn bar_methods(r: &SparsityReport) -> Vec<(String, f64)> {
    r.method_sparsities()
        .into_iter()
        .filter(|(m, _)| !m.starts_with("percentile_"))
        .collect()
}

fn draw_methods<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    reports: &[(&str, &SparsityReport)],
) -> DrawResult {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let methods: Vec<String> = reports
        .first()
        .map(|(_, r)| bar_methods(r).into_iter().map(|(m, _)| m).collect())
        .unwrap_or_default();
    let k = methods.len().max(1);
    let ymax = reports
        .iter()
        .flat_map(|(_, r)| bar_methods(r).into_iter().map(|(_, v)| v))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("Sparsity by method", (FONT, 28))
        .margin(15)
        .x_label_area_size(70)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..k as f64, 0f64..ymax)
        .map_err(|e| e.to_string())?;
    let labels = methods.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(k * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-9 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("method")
        .y_desc("sparsity")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(|e| e.to_string())?;
    let m = reports.len().max(1) as f64;
    let width = 0.8 / m;
    for (mi, (name, r)) in reports.iter().enumerate() {
        let color = COLORS[mi % COLORS.len()];
        let values = bar_methods(r);
        chart
            .draw_series(values.iter().enumerate().map(|(i, (_, v))| {
                let x0 = i as f64 + 0.1 + mi as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.95, *v)], color.filled())
            }))
            .map_err(|e| e.to_string())?
            .label(name.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart
            .draw_series(values.iter().enumerate().map(|(i, (_, v))| {
                let x = i as f64 + 0.1 + (mi as f64 + 0.5) * width;
                Text::new(
                    format!("{v:.3}"),
                    (x, *v + ymax * 0.01),
                    (FONT, 12).into_font().color(&BLACK).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Bottom,
                        ),
                    ),
                )
            }))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 16))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Bar chart of every method's sparsity, one bar per (model, method); `reports` pairs a model
/// label with its report. PNG or SVG by extension; written atomically.
pub fn plot_methods(path: &Path, reports: &[(&str, &SparsityReport)]) -> Result<()> {
    if reports.is_empty() {
        return Err(MetricsError::Empty {
            what: "reports to plot".into(),
        });
    }
    render(
        path,
        (1200, 700),
        |r| draw_methods(r, reports),
        |r| draw_methods(r, reports),
    )
}

fn percentile_points(r: &SparsityReport) -> Vec<(f64, f64, f64)> {
    r.percentile
        .0
        .iter()
        .filter_map(|(k, e)| {
            k.strip_prefix('p')?
                .parse::<f64>()
                .ok()
                .map(|p| (p, e.threshold, e.sparsity))
        })
        .collect()
}

fn draw_percentiles<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    reports: &[(&str, &SparsityReport)],
) -> DrawResult {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let tmax = reports
        .iter()
        .flat_map(|(_, r)| percentile_points(r).into_iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let tmax = if tmax > 0.0 { tmax * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Percentile progression: threshold and sparsity vs p",
            (FONT, 26),
        )
        .margin(15)
        .x_label_area_size(55)
        .y_label_area_size(90)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0f64..100f64, 0f64..tmax)
        .map_err(|e| e.to_string())?
        .set_secondary_coord(0f64..100f64, 0f64..1.05f64);
    chart
        .configure_mesh()
        .x_desc("percentile p")
        .y_desc("threshold = percentile(|v|, p)")
        .y_label_formatter(&|y| format!("{y:.3e}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .configure_secondary_axes()
        .y_desc("sparsity = mean(|v| < threshold)")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(|e| e.to_string())?;
    for (mi, (name, r)) in reports.iter().enumerate() {
        let color = COLORS[mi % COLORS.len()];
        let pts = percentile_points(r);
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                color.stroke_width(3),
            ))
            .map_err(|e| e.to_string())?
            .label(format!("{name}: threshold (left)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart
            .draw_series(
                pts.iter()
                    .map(|p| Circle::new((p.0, p.1), 5, color.filled())),
            )
            .map_err(|e| e.to_string())?;
        chart
            .draw_secondary_series(DashedLineSeries::new(
                pts.iter().map(|p| (p.0, p.2)),
                8,
                5,
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(format!("{name}: sparsity (right)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1))
            });
        chart
            .draw_secondary_series(
                pts.iter()
                    .map(|p| TriangleMarker::new((p.0, p.2), 6, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_secondary_series(LineSeries::new(
            [(0.0, 0.0), (100.0, 1.0)],
            grey.stroke_width(1),
        ))
        .map_err(|e| e.to_string())?
        .label("p/100 (sparsity by construction)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 15))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Percentile progression: thresholds (left axis) and sparsities (right axis) against p, one
/// colour per model, with the p/100 diagonal that percentile sparsity follows by construction.
pub fn plot_percentiles(path: &Path, reports: &[(&str, &SparsityReport)]) -> Result<()> {
    if reports.is_empty() {
        return Err(MetricsError::Empty {
            what: "reports to plot".into(),
        });
    }
    render(
        path,
        (1200, 700),
        |r| draw_percentiles(r, reports),
        |r| draw_percentiles(r, reports),
    )
}
