//! Per-layer histogram of the mask-comparison metrics (PNG or SVG by extension): per-feature
//! Jaccard and Hamming distributions, rows and columns overlaid.

use std::path::Path;

use plotters::prelude::*;

use crate::compare::LayerComparison;
use crate::error::{PruneError, Result};

const BINS: usize = 20;

fn counts(values: &[f64]) -> Vec<usize> {
    let mut c = vec![0usize; BINS];
    for &v in values {
        let b = ((v.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        c[b] += 1;
    }
    c
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> PruneError {
    PruneError::Write {
        file: path.display().to_string(),
        reason: format!("plotting: {e}"),
    }
}

/// Draws the histogram of one layer's comparison to `path` (written through a temporary file
/// in the same directory and a rename).
pub fn plot_layer_histogram(
    path: &Path,
    cmp: &LayerComparison,
    label_a: &str,
    label_b: &str,
) -> Result<()> {
    let size = (1200u32, 520u32);
    sparsity_plot::render_atomic(
        path,
        size,
        |root| draw(root, cmp, label_a, label_b),
        |root| draw(root, cmp, label_a, label_b),
    )
    .map_err(|e| draw_err(path, e))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    cmp: &LayerComparison,
    label_a: &str,
    label_b: &str,
) -> std::result::Result<(), String> {
    let font = sparsity_plot::FONT;
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!(
        "{} [{}x{}]: {} vs {} (layer Jaccard {:.3}, Hamming {:.3})",
        cmp.name,
        cmp.shape[0],
        cmp.shape[1],
        label_a,
        label_b,
        cmp.layer.jaccard,
        cmp.layer.hamming
    );
    let root = root.titled(&title, (font, 20)).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((1, 2));
    let series = [
        (
            "Jaccard of kept positions",
            &cmp.rows.jaccard,
            &cmp.columns.jaccard,
        ),
        ("Hamming fraction", &cmp.rows.hamming, &cmp.columns.hamming),
    ];
    for (panel, (metric, rows, cols)) in panels.iter().zip(series) {
        let (cr, cc) = (counts(rows), counts(cols));
        let frac = |c: &Vec<usize>, n: usize| -> Vec<f64> {
            c.iter()
                .map(|&k| if n == 0 { 0.0 } else { k as f64 / n as f64 })
                .collect()
        };
        let (fr, fc) = (frac(&cr, rows.len()), frac(&cc, cols.len()));
        let ymax = fr
            .iter()
            .chain(fc.iter())
            .cloned()
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .caption(metric, (font, 18))
            .build_cartesian_2d(0f64..1f64, 0f64..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(format!("{metric} per feature"))
            .y_desc("fraction of features")
            .label_style((font, 14))
            .draw()
            .map_err(|e| e.to_string())?;
        let w = 1.0 / BINS as f64;
        for (vals, color, name, shift) in [
            (&fr, BLUE, "rows (output features)", 0.0),
            (&fc, RED, "columns (input features)", w / 2.0),
        ] {
            chart
                .draw_series(vals.iter().enumerate().map(|(b, &v)| {
                    let x0 = b as f64 * w + shift;
                    Rectangle::new([(x0, 0.0), (x0 + w / 2.0, v)], color.mix(0.7).filled())
                }))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.mix(0.7).filled())
                });
        }
        chart
            .configure_series_labels()
            .label_font((font, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// Bar chart of a whole-model run's per-layer relative reconstruction errors (PNG, atomic),
/// captioned with the method, pattern and held-out perplexity before → after.
#[cfg(feature = "models")]
pub fn plot_model_pruning(path: &Path, report: &crate::model::ModelPruneReport) -> Result<()> {
    let errors: Vec<f64> = report
        .layers
        .iter()
        .map(|l| l.rel_recon_error.unwrap_or(f64::NAN))
        .collect();
    let finite_max = errors
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let y_max = if finite_max > 0.0 {
        finite_max * 1.1
    } else {
        1.0
    };
    let ppl = match (&report.perplexity_before, &report.perplexity_after) {
        (Some(b), Some(a)) => format!(
            ", held-out perplexity {:.2} → {:.2}",
            b.perplexity, a.perplexity
        ),
        _ => String::new(),
    };
    let title = format!(
        "{} {} {} (overall sparsity {:.3}){ppl}",
        report.family,
        report.options.method.name(),
        report.options.pattern,
        report.overall_sparsity
    );
    let labels: Vec<String> = report
        .layers
        .iter()
        .map(|l| {
            l.target
                .name
                .trim_end_matches(".weight")
                .replace("transformer.h.", "h")
                .replace("backbone.layers.", "L")
                .replace(".mixer", "")
        })
        .collect();
    let n = errors.len().max(1);
    let height = (130 + 24 * n as u32).max(320);
    sparsity_plot::png_atomic(path, (1100, height), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&title, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(230)
            .build_cartesian_2d(0f64..y_max, (0..n).into_segmented())
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc("relative reconstruction error  ‖(W − Wₚ)Xᵀ‖² / ‖WXᵀ‖²")
            .draw()
            .map_err(|x| e(&x))?;
        chart
            .draw_series(
                errors
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| {
                        let mut r = Rectangle::new(
                            [
                                (0.0, SegmentValue::Exact(i)),
                                (v, SegmentValue::Exact(i + 1)),
                            ],
                            BLUE.mix(0.7).filled(),
                        );
                        r.set_margin(3, 3, 0, 0);
                        r
                    }),
            )
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))
    })
    .map_err(|e| PruneError::Write {
        file: path.display().to_string(),
        reason: e.to_string(),
    })
}
