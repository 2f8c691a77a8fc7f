//! The comparison between models, its plots (PNG) and the Markdown report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use sparsity_plot::FONT;

use super::depth::{
    DepthComparison, Estimate, MEASURES, ModelTexts, compare_depth, measure_description,
    measure_name,
};
use super::{AnalysisConfig, AnalysisError, ModelAnalysis};

use sparsity_plot::PALETTE as COLORS;

/// Why writing the report failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A plot could not be drawn or written.
    #[error("plot {path}: {reason}")]
    Plot {
        /// Output path.
        path: String,
        /// Cause.
        reason: String,
    },
    /// A metrics plot failed.
    #[error(transparent)]
    Metrics(#[from] sparsity_metrics::MetricsError),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// Output path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// One measure of the residual stream (`block_out`) at each model's first analysed layer: a
/// description without uncertainty; the answer comes from [`Comparison::neurons`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasureComparison {
    /// Measure key (as in `SparsityReport::method_sparsities`).
    pub measure: String,
    /// Value per model (first analysed layer, `block_out`, per-sequence-mean variances).
    pub values: BTreeMap<String, f64>,
    /// max − min over the models.
    pub spread: f64,
    /// `tautological` (equals its parameter by construction), `not comparable` (computed at
    /// different absolute thresholds) or `descriptive` (no interval: never a verdict).
    pub verdict: String,
}

/// The comparison of every analysed model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// The residual stream at the first analysed layer, per measure (descriptive).
    pub measures: Vec<MeasureComparison>,
    /// The neuron-level comparison over every layer at matched depth, with paired bootstrap
    /// intervals (absent with fewer than two models with per-text statistics).
    #[serde(default)]
    pub neurons: Option<DepthComparison>,
    /// The answers in sentences.
    pub summary: String,
}

/// Builds the comparison from the analyses (models without a sparsity stage are skipped).
pub fn compare(
    analyses: &[ModelAnalysis],
    config: &AnalysisConfig,
) -> Result<Comparison, AnalysisError> {
    let mut per: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut thresholds = Vec::new();
    for a in analyses {
        let Some(sp) = &a.sparsity else { continue };
        thresholds.push(sp.threshold);
        let Some((_, layer)) = sp.layers.iter().next() else {
            continue;
        };
        for (k, v) in layer.block_out.per_sequence_mean.method_sparsities() {
            per.entry(k).or_default().insert(a.model.clone(), v);
        }
    }
    let same_threshold = thresholds.windows(2).all(|w| w[0] == w[1]);
    let mut measures = Vec::new();
    for (measure, values) in per {
        let (lo, hi) = values
            .values()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let spread = if values.len() > 1 { hi - lo } else { 0.0 };
        let verdict = if measure.starts_with("percentile_")
            || measure.starts_with("calibrated_")
            || measure == "optimal"
        {
            "tautological"
        } else if measure == "traditional" && !same_threshold {
            "not comparable"
        } else {
            "descriptive"
        };
        measures.push(MeasureComparison {
            measure,
            values,
            spread,
            verdict: verdict.to_string(),
        });
    }
    let with_texts: Vec<ModelTexts<'_>> = analyses
        .iter()
        .filter_map(|a| {
            Some(ModelTexts {
                model: &a.model,
                site: a
                    .sparsity
                    .as_ref()
                    .and_then(|s| s.layers.values().next())
                    .map_or("neurons", |l| {
                        l.neurons.site.split('.').next().unwrap_or("neurons")
                    }),
                stats: a.neuron_texts.as_ref()?,
            })
        })
        .collect();
    let neurons = if with_texts.len() >= 2 {
        Some(compare_depth(
            &with_texts,
            config.bootstrap_resamples,
            0.95,
            config.seed,
        )?)
    } else {
        None
    };
    let mut summary = String::new();
    match &neurons {
        None if analyses.len() < 2 => {
            summary.push_str("Only one model was analysed, so nothing is compared.");
        }
        None => summary.push_str(
            "The neuron-level comparison needs per-text statistics of at least two models; a stage failed.",
        ),
        Some(d) => {
            for c in &d.comparisons {
                for m in &c.summary {
                    summary.push_str(&m.sentence);
                    summary.push('\n');
                }
            }
        }
    }
    Ok(Comparison {
        measures,
        neurons,
        summary: summary.trim_end().to_string(),
    })
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::Plot {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Draws a PNG through a temporary file and a rename ([`sparsity_plot::png_atomic`]).
fn png<F>(path: &Path, size: (u32, u32), draw: F) -> Result<(), ReportError>
where
    F: FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
{
    sparsity_plot::png_atomic(path, size, draw).map_err(|e| match e {
        sparsity_plot::PlotError::Io(e) => ReportError::Io {
            path: path.display().to_string(),
            source: e.into_io(),
        },
        other => plot_err(path, other),
    })
}

/// A line chart: one series per (label, points).
fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    log_y: bool,
) -> Result<(), ReportError> {
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    if pts.is_empty() {
        return Err(plot_err(path, "no data"));
    }
    let xmax = pts.iter().map(|p| p.0).fold(0.0f64, f64::max).max(1.0);
    let xmin = pts.iter().map(|p| p.0).fold(0.0f64, f64::min);
    let ys: Vec<f64> = pts
        .iter()
        .map(|p| if log_y { p.1.max(1e-12).log10() } else { p.1 })
        .collect();
    let (mut ylo, mut yhi) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if yhi.partial_cmp(&ylo) != Some(std::cmp::Ordering::Greater) {
        ylo -= 0.5;
        yhi += 0.5;
    }
    let pad = (yhi - ylo) * 0.08;
    png(path, (1000, 620), |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 26))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(xmin - 0.2..xmax + 0.2, (ylo - pad)..(yhi + pad))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(if log_y {
                format!("log10 {y_label}")
            } else {
                y_label.to_string()
            })
            .label_style((FONT, 16))
            .axis_desc_style((FONT, 18))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (label, p)) in series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            let p: Vec<(f64, f64)> = p
                .iter()
                .map(|&(x, y)| (x, if log_y { y.max(1e-12).log10() } else { y }))
                .collect();
            chart
                .draw_series(LineSeries::new(p.clone(), c.stroke_width(3)))
                .map_err(|e| e.to_string())?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
            chart
                .draw_series(p.iter().map(|&pt| Circle::new(pt, 5, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 16))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    })
}

/// Every measure of the neuron-level comparison against relative depth: one panel per measure,
/// one line per model with its bootstrap interval as a band.
fn depth_bands(path: &Path, d: &DepthComparison) -> Result<(), ReportError> {
    png(path, (1600, 860), |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (title, body) = root.split_vertically(50);
        title
            .draw_text(
                &format!(
                    "Neuron sparsity against relative depth ({:.0} % bootstrap bands over {} texts, {} resamples)",
                    d.confidence * 100.0,
                    d.texts,
                    d.resamples
                ),
                &(FONT, 24).into_text_style(&title),
                (20, 14),
            )
            .map_err(|e| e.to_string())?;
        let panels = body.split_evenly((2, 4));
        for (panel, key) in panels.iter().zip(MEASURES) {
            let pts: Vec<&Estimate> = d
                .models
                .iter()
                .flat_map(|m| m.layers.iter().filter_map(|l| l.values.get(key)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let lo = pts
                .iter()
                .map(|e| e.lo.min(e.value))
                .fold(f64::INFINITY, f64::min);
            let hi = pts
                .iter()
                .map(|e| e.hi.max(e.value))
                .fold(f64::NEG_INFINITY, f64::max);
            let pad = ((hi - lo) * 0.08).max(1e-3);
            let caption = if key == "traditional"
                && d.models
                    .windows(2)
                    .any(|w| w[0].threshold != w[1].threshold)
            {
                "traditional (thresholds differ: not comparable)".to_string()
            } else {
                measure_name(key).to_string()
            };
            let mut chart = ChartBuilder::on(panel)
                .caption(caption, (FONT, 18))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0.0..1.0, (lo - pad)..(hi + pad))
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("relative depth")
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, m) in d.models.iter().enumerate() {
                let c = COLORS[i % COLORS.len()];
                let est: Vec<(f64, &Estimate)> = m
                    .layers
                    .iter()
                    .filter_map(|l| Some((l.depth, l.values.get(key)?)))
                    .collect();
                if est.is_empty() {
                    continue;
                }
                let mut band: Vec<(f64, f64)> = est.iter().map(|(x, e)| (*x, e.lo)).collect();
                band.extend(est.iter().rev().map(|(x, e)| (*x, e.hi)));
                chart
                    .draw_series(std::iter::once(Polygon::new(band, c.mix(0.2).filled())))
                    .map_err(|e| e.to_string())?;
                let line: Vec<(f64, f64)> = est.iter().map(|(x, e)| (*x, e.value)).collect();
                chart
                    .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(m.model.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(line.iter().map(|&pt| Circle::new(pt, 3, c.filled())))
                    .map_err(|e| e.to_string())?;
            }
            if key == "hoyer" {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font((FONT, 13))
                    .draw()
                    .map_err(|e| e.to_string())?;
            }
        }
        root.present().map_err(|e| e.to_string())
    })
}

/// A line chart of [`write_report`]: file stem, title, x and y labels, series, log y, what.
type Chart<'a> = (
    &'a str,
    String,
    &'a str,
    &'a str,
    &'a [(String, Vec<(f64, f64)>)],
    bool,
    &'a str,
);

/// Counts of `log10(v)` (positive finite values) in `bins` equal bins: (bin centre, count).
fn log_histogram(values: &[f64], bins: usize) -> Option<Vec<(f64, f64)>> {
    let logs: Vec<f64> = values
        .iter()
        .filter(|v| v.is_finite() && **v > 0.0)
        .map(|v| v.log10())
        .collect();
    let lo = logs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if logs.is_empty() || bins == 0 {
        return None;
    }
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let mut counts = vec![0usize; bins];
    for v in &logs {
        let i = (((v - lo) / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    Some(
        counts
            .iter()
            .enumerate()
            .map(|(i, &c)| (lo + (i as f64 + 0.5) * width, c as f64))
            .collect(),
    )
}

/// Efficiency bars: per model the active-neuron ratio and the fraction of activations below its
/// threshold (left; thresholds named: they differ by family), forward tokens/s (right).
fn efficiency_bars(path: &Path, eff: &[(&str, &crate::Efficiency)]) -> Result<(), ReportError> {
    png(path, (1200, 560), |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(760);
        let n = eff.len();
        let mut chart = ChartBuilder::on(&left)
            .caption(
                "Active-neuron ratio and activations below threshold",
                (FONT, 20),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..(2 * (n + 1)) as f64, -0.08..1.1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("fraction")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(|e| e.to_string())?;
        for (g, (what, get)) in [
            (
                "efficiency ratio",
                (|e: &crate::Efficiency| e.efficiency_ratio) as fn(&crate::Efficiency) -> f64,
            ),
            ("below threshold", |e: &crate::Efficiency| e.mean_sparsity),
        ]
        .into_iter()
        .enumerate()
        {
            for (i, (model, e)) in eff.iter().enumerate() {
                let x0 = (g * (n + 1) + i) as f64 + 0.5;
                let c = COLORS[i % COLORS.len()];
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, 0.0), (x0 + 0.9, get(e))],
                        c.filled(),
                    )))
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{model} t={:.0e}", e.threshold),
                        (x0, get(e) + 0.02),
                        (FONT, 12).into_font(),
                    )))
                    .map_err(|e| e.to_string())?;
            }
            chart
                .draw_series(std::iter::once(Text::new(
                    what.to_string(),
                    ((g * (n + 1)) as f64 + 0.6, -0.05),
                    (FONT, 14).into_font(),
                )))
                .map_err(|e| e.to_string())?;
        }
        let tmax = eff
            .iter()
            .map(|(_, e)| e.tokens_per_second)
            .fold(0.0, f64::max)
            .max(1.0);
        let mut chart = ChartBuilder::on(&right)
            .caption("Forward tokens/s (this machine)", (FONT, 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..n as f64, 0.0..tmax * 1.1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (model, e)) in eff.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            let x0 = i as f64 + 0.1;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + 0.8, e.tokens_per_second)],
                    c.filled(),
                )))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    model.to_string(),
                    (x0, e.tokens_per_second * 1.02),
                    (FONT, 13).into_font(),
                )))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    })
}

/// A heat map of `m` (rows × cols) with a colour bar; `None` cells are drawn grey.
fn heat_map(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    m: &[Vec<Option<f64>>],
    row_names: &[String],
) -> Result<(), ReportError> {
    let rows = m.len();
    let cols = m.iter().map(Vec::len).max().unwrap_or(0);
    if rows == 0 || cols == 0 {
        return Err(plot_err(path, "empty matrix"));
    }
    let (lo, hi) = sparsity_plot::finite_range(m).unwrap_or((f64::INFINITY, f64::NEG_INFINITY));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let color = |v: f64| {
        let t = ((v - lo) / span).clamp(0.0, 1.0);
        viridis(t)
    };
    png(path, (1000, 760), |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (main, bar) = root.split_horizontally(880);
        let mut chart = ChartBuilder::on(&main)
            .caption(title, (FONT, 24))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(
                (0..cols as i32).into_segmented(),
                (0..rows as i32).into_segmented(),
            )
            .map_err(|e| e.to_string())?;
        let rn = row_names.to_vec();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(cols.min(40))
            .y_labels(rows.min(40))
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 18))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => i.to_string(),
                _ => String::new(),
            })
            .y_label_formatter(&move |v| match v {
                SegmentValue::CenterOf(i) => rn.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(m.iter().enumerate().flat_map(|(i, row)| {
                row.iter().enumerate().map(move |(j, v)| {
                    let c = match v {
                        Some(v) if v.is_finite() => color(*v),
                        _ => RGBColor(200, 200, 200),
                    };
                    let (i, j) = (i as i32, j as i32);
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(j), SegmentValue::Exact(i)),
                            (SegmentValue::Exact(j + 1), SegmentValue::Exact(i + 1)),
                        ],
                        c.filled(),
                    )
                })
            }))
            .map_err(|e| e.to_string())?;
        // colour bar
        let mut cb = ChartBuilder::on(&bar)
            .margin_top(60)
            .margin_bottom(60)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, lo..(lo + span))
            .map_err(|e| e.to_string())?;
        cb.configure_mesh()
            .disable_x_axis()
            .disable_mesh()
            .label_style((FONT, 12))
            .y_label_formatter(&|v| format!("{v:.2e}"))
            .draw()
            .map_err(|e| e.to_string())?;
        let steps = 100;
        cb.draw_series((0..steps).map(|k| {
            let a = lo + span * k as f64 / steps as f64;
            let b = lo + span * (k + 1) as f64 / steps as f64;
            Rectangle::new([(0.0, a), (1.0, b)], color(a).filled())
        }))
        .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    })
}

/// A viridis-like colour for t in [0, 1] (linear between five anchors of matplotlib's viridis).
fn viridis(t: f64) -> RGBColor {
    const A: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let (a, b) = (A[i], A[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The files of a written report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// Every plot.
    pub plots: Vec<PathBuf>,
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Writes every plot under `plots_dir` and `report.md` under `out_dir` (links relative to it).
pub fn write_report(
    out_dir: &Path,
    plots_dir: &Path,
    analyses: &[ModelAnalysis],
    comparison: &Comparison,
    json_name: &str,
    texts_source: &str,
) -> Result<ReportFiles, ReportError> {
    let mut plots: Vec<(String, PathBuf)> = Vec::new();
    if let Some(d) = &comparison.neurons {
        let p = plots_dir.join("Neuron_Sparsity_by_Depth.png");
        depth_bands(&p, d)?;
        plots.push((
            "Neuron sparsity against relative depth, with bootstrap bands".into(),
            p,
        ));
    }
    // layer-wise variance and sparsity curves
    let var_series: Vec<(String, Vec<(f64, f64)>)> = analyses
        .iter()
        .filter_map(|a| {
            let sp = a.sparsity.as_ref()?;
            Some((
                a.model.clone(),
                sp.layer_dynamics
                    .iter()
                    .map(|d| (d.layer as f64, d.mean_variance))
                    .collect(),
            ))
        })
        .collect();
    if !var_series.is_empty() {
        let p = plots_dir.join("Activation_Variance_Comparison.png");
        line_chart(
            &p,
            "Mean activation variance per layer (block_out, per-sequence mean)",
            "layer",
            "mean variance",
            &var_series,
            true,
        )?;
        plots.push(("Layer-wise activation variance".into(), p));
        let sp_series: Vec<(String, Vec<(f64, f64)>)> = analyses
            .iter()
            .filter_map(|a| {
                let sp = a.sparsity.as_ref()?;
                Some((
                    format!("{} (traditional t={:.0e})", a.model, sp.threshold),
                    sp.layer_dynamics
                        .iter()
                        .map(|d| (d.layer as f64, d.traditional_sparsity))
                        .collect(),
                ))
            })
            .collect();
        let p = plots_dir.join("Sparsity_Comparison.png");
        line_chart(
            &p,
            "Fraction of block_out neurons with variance below the traditional threshold",
            "layer",
            "sparsity",
            &sp_series,
            false,
        )?;
        plots.push(("Layer-wise traditional sparsity".into(), p));
        let nsp: Vec<(String, Vec<(f64, f64)>)> = analyses
            .iter()
            .filter_map(|a| {
                let sp = a.sparsity.as_ref()?;
                Some((
                    a.model.clone(),
                    sp.neuron_layer_dynamics
                        .iter()
                        .map(|d| (d.layer as f64, d.mean_variance))
                        .collect(),
                ))
            })
            .collect();
        let p = plots_dir.join("Neuron_Variance_Comparison.png");
        line_chart(
            &p,
            "Mean neuron variance per layer (mlp_act / mixer_gated)",
            "layer",
            "mean variance",
            &nsp,
            true,
        )?;
        plots.push(("Layer-wise neuron-site variance".into(), p));
    }
    // method bars and percentile progression (first analysed layer, block_out and neurons)
    for site in ["block_out", "neurons"] {
        let reports: Vec<(String, &sparsity_metrics::SparsityReport)> = analyses
            .iter()
            .filter_map(|a| {
                let (l, ls) = a.sparsity.as_ref()?.layers.iter().next()?;
                let r = if site == "block_out" {
                    &ls.block_out
                } else {
                    &ls.neurons
                };
                Some((format!("{} L{l} {}", a.model, r.site), &r.per_sequence_mean))
            })
            .collect();
        if reports.is_empty() {
            continue;
        }
        let refs: Vec<(&str, &sparsity_metrics::SparsityReport)> =
            reports.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        let p = plots_dir.join(format!("Comprehensive_Sparsity_Comparison_{site}.png"));
        sparsity_metrics::plot_methods(&p, &refs)?;
        plots.push((format!("Every sparsity measure side by side ({site})"), p));
        let p = plots_dir.join(format!("Percentile_Progression_{site}.png"));
        sparsity_metrics::plot_percentiles(&p, &refs)?;
        plots.push((format!("Percentile progression ({site})"), p));
    }
    // the original's threshold sweep, both sites of the first analysed layer of every model
    let sweep: Vec<(String, Vec<(f64, f64)>)> = analyses
        .iter()
        .filter_map(|a| {
            let (l, ls) = a.sparsity.as_ref()?.layers.iter().next()?;
            Some([&ls.block_out, &ls.neurons].map(|r| {
                let s = &r.threshold_sweep;
                (
                    format!("{} L{l} {}", a.model, r.site),
                    s.thresholds
                        .iter()
                        .zip(&s.per_sequence_mean)
                        .map(|(t, y)| (t.log10(), *y))
                        .collect::<Vec<_>>(),
                )
            }))
        })
        .flatten()
        .collect();
    if !sweep.is_empty() {
        let p = plots_dir.join("Threshold_Sweep.png");
        line_chart(
            &p,
            "Threshold sweep: fraction of neurons with variance below t (per-sequence mean)",
            "log10 threshold t",
            "mean(|v| < t)",
            &sweep,
            false,
        )?;
        plots.push((
            "Threshold sweep (the original's test_sparsity_thresholds)".into(),
            p,
        ));
    }
    // cross-layer influence and attention maps
    for a in analyses {
        if let Some(c) = &a.causal {
            let names: Vec<String> = c
                .cross_layer
                .sources
                .iter()
                .map(|l| format!("ablate L{l}"))
                .collect();
            let p = plots_dir.join(format!("Cross_Layer_Influence_{}.png", slug(&a.model)));
            heat_map(
                &p,
                &format!(
                    "{}: relative change of block_out when ablating top-k ({})",
                    a.model, c.mode
                ),
                "target layer",
                "source layer",
                &c.cross_layer.values,
                &names,
            )?;
            plots.push((format!("Cross-layer influence, {}", a.model), p));
        }
        if let Some(at) = &a.attention_neurons {
            for (l, m) in &at.maps {
                let mm: Vec<Vec<Option<f64>>> = m
                    .iter()
                    .map(|r| r.iter().map(|&v| Some(v)).collect())
                    .collect();
                let names: Vec<String> = (0..m.len()).map(|i| i.to_string()).collect();
                let p = plots_dir.join(format!("Attention_Map_{}_L{l}.png", slug(&a.model)));
                let what = if a.architecture == Some(sparsity_models::Architecture::StateSpace) {
                    "hidden attention (channel mean of min-max α)"
                } else {
                    "attention (head mean)"
                };
                heat_map(
                    &p,
                    &format!("{}: layer {l} {what}", a.model),
                    "key position",
                    "query position",
                    &mm,
                    &names,
                )?;
                plots.push((format!("Attention map, {} layer {l}", a.model), p));
            }
        }
    }

    // causal impacts: distribution, ranked (top-k) and cumulative; inter-layer effects
    for a in analyses {
        let Some(c) = &a.causal else { continue };
        let mut dist = Vec::new();
        let mut ranked_kl = Vec::new();
        let mut cumulative = Vec::new();
        let mut inter = Vec::new();
        for (l, lc) in &c.layers {
            let kl: Vec<f64> = lc.impacts.iter().map(|i| i.kl).collect();
            if let Some(h) = log_histogram(&kl, 20) {
                dist.push((format!("layer {l}"), h));
            }
            let mut sorted = kl.clone();
            sorted.sort_by(|x, y| y.total_cmp(x));
            let total: f64 = sorted.iter().filter(|v| v.is_finite()).sum();
            ranked_kl.push((
                format!("layer {l}"),
                sorted
                    .iter()
                    .enumerate()
                    .map(|(r, &v)| ((r + 1) as f64, v))
                    .collect::<Vec<_>>(),
            ));
            if total > 0.0 {
                let mut acc = 0.0;
                cumulative.push((
                    format!("layer {l}"),
                    sorted
                        .iter()
                        .enumerate()
                        .map(|(r, &v)| {
                            acc += v;
                            ((r + 1) as f64, acc / total)
                        })
                        .collect::<Vec<_>>(),
                ));
            }
            let pts: Vec<(f64, f64)> = lc
                .inter_layer_impact
                .iter()
                .enumerate()
                .filter_map(|(m, v)| Some((m as f64, (*v)?)))
                .collect();
            if !pts.is_empty() {
                inter.push((format!("ablate layer {l}"), pts));
            }
        }
        let model = slug(&a.model);
        let charts: [Chart<'_>; 4] = [
            (
                "Causal_Impact_Distribution",
                format!(
                    "{}: distribution of single-neuron causal impacts (candidates)",
                    a.model
                ),
                "log10 KL at the last position (nats)",
                "neurons",
                &dist,
                false,
                "Causal impact distribution",
            ),
            (
                "Causal_Ranked_Impact",
                format!(
                    "{}: single-neuron impact by rank (top-{} marked in the tables)",
                    a.model,
                    c.layers.values().next().map_or(0, |lc| lc.top.len())
                ),
                "rank",
                "KL (nats)",
                &ranked_kl,
                true,
                "Top-k impact (impact by rank)",
            ),
            (
                "Causal_Cumulative_Impact",
                format!(
                    "{}: cumulative share of the summed single-neuron impact",
                    a.model
                ),
                "neurons (by rank)",
                "share of Σ KL",
                &cumulative,
                false,
                "Cumulative impact",
            ),
            (
                "Inter_Layer_Impact",
                format!(
                    "{}: relative change of block_out downstream of the ablated top-k set",
                    a.model
                ),
                "target layer",
                "relative change",
                &inter,
                false,
                "Inter-layer effect",
            ),
        ];
        for (file, title, x, y, series, log_y, what) in charts {
            if series.is_empty() {
                continue;
            }
            let p = plots_dir.join(format!("{file}_{model}.png"));
            line_chart(&p, &title, x, y, series, log_y)?;
            plots.push((format!("{what}, {}", a.model), p));
        }
        if let Some(r) = a
            .attention_neurons
            .as_ref()
            .and_then(|at| at.rollout.as_ref())
        {
            let m: Vec<Vec<Option<f64>>> = r
                .iter()
                .map(|row| row.iter().map(|&v| Some(v)).collect())
                .collect();
            let names: Vec<String> = (0..m.len()).map(|i| i.to_string()).collect();
            let p = plots_dir.join(format!("Attention_Rollout_{model}.png"));
            heat_map(
                &p,
                &format!(
                    "{}: attention rollout to the deepest analysed layer (first text)",
                    a.model
                ),
                "key position",
                "query position",
                &m,
                &names,
            )?;
            plots.push((format!("Attention rollout, {}", a.model), p));
        }
    }
    let eff: Vec<(&str, &crate::Efficiency)> = analyses
        .iter()
        .filter_map(|a| Some((a.model.as_str(), a.efficiency.as_ref()?)))
        .collect();
    if !eff.is_empty() {
        let p = plots_dir.join("Efficiency_Comparison.png");
        efficiency_bars(&p, &eff)?;
        plots.push(("Efficiency".into(), p));
    }

    let md_path = out_dir.join("report.md");
    let md = markdown(
        analyses,
        comparison,
        &plots,
        out_dir,
        json_name,
        texts_source,
    );
    sparsity_io::write_atomic(&md_path, md.as_bytes())
        .map_err(sparsity_io::IoError::into_io)
        .map_err(|source| ReportError::Io {
            path: md_path.display().to_string(),
            source,
        })?;
    Ok(ReportFiles {
        markdown: md_path,
        plots: plots.into_iter().map(|(_, p)| p).collect(),
    })
}

fn rel(p: &Path, base: &Path) -> String {
    let pa = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let ba = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    match pa.strip_prefix(&ba) {
        Ok(r) => r.display().to_string(),
        Err(_) => {
            // plots outside the report dir: walk up
            let mut up = PathBuf::new();
            let mut b = ba.as_path();
            loop {
                if let Ok(r) = pa.strip_prefix(b) {
                    return up.join(r).display().to_string();
                }
                match b.parent() {
                    Some(parent) => {
                        up.push("..");
                        b = parent;
                    }
                    None => return pa.display().to_string(),
                }
            }
        }
    }
}

fn fmt_top(top: &[super::RankedNeuron]) -> String {
    top.iter()
        .map(|r| format!("{} ({:.3e})", r.neuron, r.score))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report's first section: the two questions answered in sentences built from the numbers.
fn answers(s: &mut String, analyses: &[ModelAnalysis], comparison: &Comparison) {
    let _ = writeln!(s, "## Answers\n\n### Which model's neurons are sparser?\n");
    match &comparison.neurons {
        Some(d) => {
            let _ = writeln!(
                s,
                "Neuron sites (`mlp_act` for transformers, `mixer_gated` for Mamba) of every layer, \
                 each layer of the shallower model matched with the nearest layer of the other by \
                 relative depth (l + ½)/L; {:.0} % percentile intervals from a paired bootstrap \
                 over the {} texts both models read ({} resamples, seed {}). A direction is stated \
                 only where the interval of the mean difference excludes 0 and every matched pair \
                 points the same way.\n",
                d.confidence * 100.0,
                d.texts,
                d.resamples,
                d.seed
            );
            for c in &d.comparisons {
                for m in &c.summary {
                    let _ = writeln!(s, "- {}", m.sentence);
                }
            }
        }
        None => {
            let _ = writeln!(s, "{}", comparison.summary);
        }
    }
    let _ = writeln!(s, "\n### Which neurons matter?\n");
    let mut any = false;
    for a in analyses {
        let Some(c) = &a.causal else { continue };
        let bs: Vec<(usize, &crate::causal::RandomBaseline)> = c
            .layers
            .iter()
            .filter_map(|(l, lc)| Some((*l, lc.random_baseline.as_ref()?)))
            .collect();
        if bs.is_empty() {
            continue;
        }
        any = true;
        let sig = bs.iter().filter(|(_, b)| b.significant).count();
        let mult: Vec<f64> = bs
            .iter()
            .filter_map(|(_, b)| b.multiple_of_random)
            .collect();
        let range = if mult.is_empty() {
            "–".to_string()
        } else {
            let lo = mult.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = mult.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{lo:.1}–{hi:.1}×")
        };
        let draws = bs[0].1.random_effects.len();
        let k = bs[0].1.k;
        let _ = writeln!(
            s,
            "- In {}, ablating each analysed layer's top-{k} causal neurons together (intervention \
             `{}`, {} prompts) moves the next-token distribution {range} as much as {k} random \
             neurons of the same layer ({draws} seeded draws); the top set beats the random sets \
             with Holm-corrected permutation p < 0.05 at {sig} of {} layers ({}).",
            a.model,
            c.mode,
            c.prompts,
            bs.len(),
            bs.iter()
                .map(|(l, b)| format!("layer {l}: p = {:.3}", b.p_holm))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !any {
        let _ = writeln!(s, "No causal stage with a random baseline ran.");
    }
    s.push('\n');
}

/// The neuron-level comparison's tables: per measure over all pairs, then per matched pair.
fn neuron_tables(s: &mut String, d: &DepthComparison) {
    let _ = writeln!(
        s,
        "\n## Neuron-level comparison at matched depth\n\nEvery measure is higher for the sparser \
         model. Intervals: {:.0} % paired bootstrap over {} texts ({} resamples). The per-model \
         values of every layer, with their intervals, are in the JSON (`comparison.neurons.models`) \
         and drawn in the depth plot below.\n",
        d.confidence * 100.0,
        d.texts,
        d.resamples
    );
    let _ = writeln!(s, "| measure | definition |\n|---|---|");
    for k in MEASURES {
        let _ = writeln!(
            s,
            "| `{k}` | {} |",
            measure_description(k).replace('|', "\\|")
        );
    }
    for c in &d.comparisons {
        let _ = writeln!(
            s,
            "\n### {} vs {}: over the {} matched layer pairs\n\n| measure | {} | {} | difference (a − b) [CI] | pairs: {} sparser / {} sparser / no verdict | sparser |\n|---|---|---|---|---|---|",
            c.a,
            c.b,
            c.pairs.len(),
            c.a,
            c.b,
            c.a,
            c.b
        );
        for m in &c.summary {
            let diff = m.difference.map_or("not comparable".to_string(), |e| {
                format!("{:+.4} [{:+.4}, {:+.4}]", e.value, e.lo, e.hi)
            });
            let _ = writeln!(
                s,
                "| `{}` | {:.4} | {:.4} | {} | {} / {} / {} | {} |",
                m.measure,
                m.mean_a,
                m.mean_b,
                diff,
                m.pairs_a_sparser,
                m.pairs_b_sparser,
                m.pairs_undecided,
                m.sparser.as_deref().unwrap_or("—")
            );
        }
        let keys: Vec<&str> = MEASURES
            .iter()
            .copied()
            .filter(|k| c.pairs.iter().any(|p| p.differences.contains_key(*k)))
            .collect();
        let _ = writeln!(
            s,
            "\nPer matched pair: {} − {} [CI]; `*` marks an interval that excludes 0.\n\n| {} layer (depth) | {} layer (depth) | {} |\n|---|---|{}",
            c.a,
            c.b,
            c.a,
            c.b,
            keys.join(" | "),
            "---|".repeat(keys.len())
        );
        for p in &c.pairs {
            let cells: Vec<String> = keys
                .iter()
                .map(|k| {
                    p.differences.get(*k).map_or("—".to_string(), |x| {
                        format!(
                            "{:+.3} [{:+.3}, {:+.3}]{}",
                            x.difference.value,
                            x.difference.lo,
                            x.difference.hi,
                            if x.sparser.is_some() { " *" } else { "" }
                        )
                    })
                })
                .collect();
            let _ = writeln!(
                s,
                "| {} ({:.2}) | {} ({:.2}) | {} |",
                p.layer_a,
                p.depth_a,
                p.layer_b,
                p.depth_b,
                cells.join(" | ")
            );
        }
    }
}

fn markdown(
    analyses: &[ModelAnalysis],
    comparison: &Comparison,
    plots: &[(String, PathBuf)],
    out_dir: &Path,
    json_name: &str,
    texts_source: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Neuron analysis report\n");
    let _ = writeln!(
        s,
        "Every number below comes from forward/backward passes of the models on these texts: \
         {texts_source} (texts and tokens used per model in the table below). The full results \
         are in [`{json_name}`]({json_name}).\n"
    );
    answers(&mut s, analyses, comparison);
    let _ = writeln!(
        s,
        "## Models\n\n| model | family | layers | texts | tokens | parameters | tokens/s |\n|---|---|---|---|---|---|---|"
    );
    for a in analyses {
        let (p, tps) = a
            .efficiency
            .as_ref()
            .map_or(("—".to_string(), "—".to_string()), |e| {
                (
                    e.total_parameters.to_string(),
                    format!("{:.0}", e.tokens_per_second),
                )
            });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            a.model, a.family, a.num_layers, a.num_texts, a.num_tokens, p, tps
        );
    }
    if let Some(d) = &comparison.neurons {
        neuron_tables(&mut s, d);
    }
    let _ = writeln!(
        s,
        "\n## Residual stream at the first analysed layer (descriptive)\n\n`block_out`, per-sequence-mean \
         variances, no interval: these values describe, they do not decide. `tautological` measures \
         equal their parameter by construction; `not comparable` ones count values below absolute \
         thresholds that differ between the models.\n"
    );
    let _ = writeln!(
        s,
        "| measure | {} | spread | status |",
        analyses
            .iter()
            .map(|a| a.model.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "|---|{}---|---|", "---|".repeat(analyses.len()));
    for m in &comparison.measures {
        let vals: Vec<String> = analyses
            .iter()
            .map(|a| {
                m.values
                    .get(&a.model)
                    .map_or("—".into(), |v| format!("{v:.4}"))
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {:.4} | {} |",
            m.measure,
            vals.join(" | "),
            m.spread,
            m.verdict
        );
    }
    for a in analyses {
        let _ = writeln!(s, "\n## {}\n", a.model);
        if !a.failures.is_empty() {
            let _ = writeln!(
                s,
                "**Failed stages** (run with `--keep-going`; their fields are empty):\n"
            );
            for f in &a.failures {
                let _ = writeln!(s, "- `{}`: {}", f.stage, f.error);
            }
            s.push('\n');
        }
        if let Some(sp) = &a.sparsity {
            let _ = writeln!(
                s,
                "### Sparsity per layer (traditional threshold {:e})\n",
                sp.threshold
            );
            let _ = writeln!(
                s,
                "| layer | site | mean variance (per-seq) | traditional | entropy | gini | hoyer | calibrated 50% τ | most reasonable |\n|---|---|---|---|---|---|---|---|---|"
            );
            for (l, ls) in &sp.layers {
                for r in [&ls.block_out, &ls.neurons] {
                    let ps = &r.per_sequence_mean;
                    let cal = r
                        .per_token
                        .activation
                        .as_ref()
                        .and_then(|a| a.calibrated.iter().find(|c| (c.target - 0.5).abs() < 1e-9))
                        .map_or("—".to_string(), |c| format!("{:.3e}", c.threshold));
                    let _ = writeln!(
                        s,
                        "| {l} | {} | {:.4e} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} |",
                        r.site,
                        r.mean_variance,
                        ps.traditional.sparsity,
                        ps.entropy.sparsity_from_entropy,
                        ps.gini.sparsity_from_gini,
                        ps.hoyer.hoyer_sparsity,
                        cal,
                        ps.most_reasonable
                    );
                }
            }
            let _ = writeln!(
                s,
                "\nLayer dynamics (all layers; `optimal_fallback` marks layers whose sparsity is 0.3 by construction):\n"
            );
            let _ = writeln!(
                s,
                "| layer | mean variance | traditional sparsity | sparsity used | threshold source |\n|---|---|---|---|---|"
            );
            for d in &sp.layer_dynamics {
                let _ = writeln!(
                    s,
                    "| {} | {:.4e} | {:.3} | {:.3} | {:?} |",
                    d.layer,
                    d.mean_variance,
                    d.traditional_sparsity,
                    d.sparsity,
                    d.threshold_source
                );
            }
        }
        if let Some(ds) = &a.delta_sensitive {
            let _ = writeln!(
                s,
                "\n### Delta-sensitive neurons\n\nEach ranking names its definition (see `docs/analysis.md`).\n\n| layer | definition | site | top neurons (score) |\n|---|---|---|---|"
            );
            for (l, d) in ds {
                for (k, r) in &d.rankings {
                    let _ = writeln!(s, "| {l} | `{k}` | {} | {} |", r.site, fmt_top(&r.top));
                }
            }
        }
        if let Some(c) = &a.causal {
            let _ = writeln!(
                s,
                "\n### Causal neurons (intervention `{}`, KL at the last position averaged over {} prompts)\n",
                c.mode, c.prompts
            );
            let _ = writeln!(
                s,
                "| layer | site | candidates | top neurons (KL) | perplexity clean → top-k ablated |\n|---|---|---|---|---|"
            );
            for (l, lc) in &c.layers {
                let _ = writeln!(
                    s,
                    "| {l} | {} | {} ({}) | {} | {:.3} → {:.3} |",
                    lc.site,
                    lc.impacts.len(),
                    lc.candidate_selection,
                    fmt_top(&lc.top),
                    lc.perplexity_clean,
                    lc.perplexity_ablated
                );
            }
            let _ = writeln!(
                s,
                "\nThe top-k set against random sets of k other neurons of the layer (same intervention, \
                 seeded draws; effect = mean KL at the last position; permutation p = (1 + draws at \
                 least as large) / (1 + draws), Holm over the layers):\n"
            );
            let _ = writeln!(
                s,
                "| layer | k | top-k effect | random mean ± sd | × random | rank among draws | p | Holm p | significant |\n|---|---|---|---|---|---|---|---|---|"
            );
            for (l, lc) in &c.layers {
                match &lc.random_baseline {
                    Some(b) => {
                        let _ = writeln!(
                            s,
                            "| {l} | {} | {:.3e} | {:.3e} ± {:.1e} | {} | {} of {} | {:.3} | {:.3} | {} |",
                            b.k,
                            b.top_effect,
                            b.random_mean,
                            b.random_sd,
                            b.multiple_of_random
                                .map_or("–".to_string(), |m| format!("{m:.1}")),
                            b.draws_at_least_top + 1,
                            b.random_effects.len() + 1,
                            b.p_value,
                            b.p_holm,
                            if b.significant { "yes" } else { "no" }
                        );
                    }
                    None => {
                        let _ = writeln!(
                            s,
                            "| {l} | {} | – | – (fewer than 2k neurons) | – | – | – | – | – |",
                            lc.top.len()
                        );
                    }
                }
            }
        }
        if !a.ranking_agreement.is_empty() {
            let _ = writeln!(
                s,
                "\n### Agreement between rankings\n\nJaccard index of the top-k sets of two rankings \
                 of the same layer and site, what two random k-sets would give, and Spearman's ρ \
                 between their scores over the neurons both scored (the causal stage scores its \
                 candidates only).\n\n| layer | site | rankings | k | shared | Jaccard | chance | \
                 Spearman ρ (neurons) |\n|---|---|---|---|---|---|---|---|"
            );
            for g in &a.ranking_agreement {
                let _ = writeln!(
                    s,
                    "| {} | {} | `{}` vs `{}` | {} | {} | {:.3} | {:.3} | {} ({}) |",
                    g.layer,
                    g.site,
                    g.a,
                    g.b,
                    g.k,
                    g.shared,
                    g.jaccard,
                    g.chance_jaccard,
                    g.spearman.map_or("–".to_string(), |r| format!("{r:+.3}")),
                    g.spearman_neurons
                );
            }
        }
        if let Some(at) = &a.attention_neurons {
            let _ = writeln!(s, "\n### Attention neurons\n");
            if let Some(e) = at.scan_reconstruction_max_abs_error {
                let _ = writeln!(
                    s,
                    "Materialised hidden attention reproduces `mixer_gated` to {e:.2e} (max abs).\n"
                );
            }
            let _ = writeln!(
                s,
                "| layer | method | neurons | mean activation | diversity | top neurons |\n|---|---|---|---|---|---|"
            );
            for (l, ms) in &at.layers {
                for (m, r) in ms {
                    let _ = writeln!(
                        s,
                        "| {l} | {m} | {} | {:.4} | {:.4} | {} |",
                        r.neurons_analyzed,
                        r.mean_activation,
                        r.neuron_diversity,
                        fmt_top(&r.top)
                    );
                }
            }
        }
        if let Some(e) = &a.efficiency {
            let _ = writeln!(
                s,
                "\n### Efficiency\n\n{} parameters ({}); {} of {} neurons active (mean |a| > {:e}), efficiency ratio {:.3}; mean neuron variance {:.4e}; {:.3} of activations below the threshold; {:.0} tokens/s forward on this machine.",
                e.total_parameters,
                e.parameters_by_component
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                e.active_neurons,
                e.total_neurons,
                e.threshold,
                e.efficiency_ratio,
                e.mean_variance,
                e.mean_sparsity,
                e.tokens_per_second
            );
        }
    }
    let _ = writeln!(s, "\n## Plots\n");
    for (title, p) in plots {
        let r = rel(p, out_dir);
        let _ = writeln!(s, "### {title}\n\n![{title}]({r})\n");
    }
    s
}
