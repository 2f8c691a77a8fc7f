//! PNG plots: spy plots (plain, Hamming-gradient and cluster order), Hamming-distance
//! histograms and separation-ratio heat maps.
//!
//! Spy plots draw features on the x axis and bits (weight rows) on the y axis, bit 0 at the
//! top like `plt.spy` of the weight matrix. Big matrices are downsampled to the plot's pixel
//! grid: each pixel shows the fraction of set bits in the cells it covers (white = none,
//! black = all), so density structure stays visible instead of aliasing. Files are written
//! through a temporary file and a rename. Text uses the embedded font registered by
//! `sparsity_plot::ensure_font`.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use sparsity_plot::FONT;

use crate::binary::BinaryMatrix;
use crate::error::{ClusterError, Result};
use crate::ordering::check_permutation;

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn with_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult,
) -> Result<()> {
    let plot_err = |message: String| ClusterError::Plot {
        path: path.to_path_buf(),
        message,
    };
    match sparsity_plot::ImageFormat::from_path(path) {
        Some(sparsity_plot::ImageFormat::Png) => {}
        _ => return Err(plot_err("only .png output is supported".into())),
    }
    sparsity_plot::png_atomic(path, size, |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    })
    .map_err(|e| plot_err(e.to_string()))
}

/// Options of [`spy_plot`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpyPlotParams {
    /// Title line.
    pub title: String,
    /// x-axis description (e.g. "feature (Hamming-gradient order)").
    pub x_desc: String,
    /// Image size in pixels (default 1000 × 800).
    pub size: (u32, u32),
    /// Positions (in plotted order) where a new cluster starts; drawn as red lines.
    pub boundaries: Vec<usize>,
}

impl SpyPlotParams {
    /// Defaults with a title.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            x_desc: "feature".into(),
            size: (1000, 800),
            boundaries: Vec::new(),
        }
    }
}

/// Spy plot of `data` (features on x in `order`, or natural order when `None`; bits on y),
/// downsampled with density shading. Written to `path` (PNG).
pub fn spy_plot(
    data: &BinaryMatrix,
    order: Option<&[usize]>,
    params: &SpyPlotParams,
    path: &Path,
) -> Result<()> {
    let nf = data.n_features();
    let nb = data.n_bits();
    let natural: Vec<usize>;
    let order = match order {
        Some(o) => {
            check_permutation(o, nf)?;
            o
        }
        None => {
            natural = (0..nf).collect();
            &natural
        }
    };
    let title = format!(
        "{} ({} features x {} bits, density {:.3})",
        params.title,
        nf,
        nb,
        data.density()
    );
    with_png(path, params.size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            // y runs from nb at the bottom to 0 at the top (bit 0 on top, like `plt.spy`).
            .build_cartesian_2d(0f64..nf as f64, nb as f64..0f64)?;
        let nb_f = nb as f64;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(params.x_desc.as_str())
            .y_desc("bit (row), 0 at top")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        let area = chart.plotting_area();
        let (pw, ph) = area.dim_in_pixel();
        let (pw, ph) = (pw.max(1) as usize, ph.max(1) as usize);
        let cx = nf.min(pw);
        let cy = nb.min(ph);
        // Ones per cell and cell sizes.
        let mut ones = vec![0u32; cx * cy];
        let col_cell: Vec<usize> = (0..nf).map(|p| p * cx / nf).collect();
        let row_cell: Vec<usize> = (0..nb).map(|b| b * cy / nb).collect();
        let mut col_n = vec![0u32; cx];
        let mut row_n = vec![0u32; cy];
        for &c in &col_cell {
            col_n[c] += 1;
        }
        for &r in &row_cell {
            row_n[r] += 1;
        }
        for (p, &f) in order.iter().enumerate() {
            let c = col_cell[p];
            for (wi, &word) in data.feature_words(f).iter().enumerate() {
                let mut x = word;
                while x != 0 {
                    let b = wi * 64 + x.trailing_zeros() as usize;
                    ones[row_cell[b] * cx + c] += 1;
                    x &= x - 1;
                }
            }
        }
        let pix = area.strip_coord_spec();
        for py in 0..ph {
            let r = py * cy / ph;
            for px in 0..pw {
                let c = px * cx / pw;
                let dens = f64::from(ones[r * cx + c]) / f64::from(row_n[r] * col_n[c]);
                if dens > 0.0 {
                    let g = (255.0 * (1.0 - dens)).round() as u8;
                    pix.draw_pixel((px as i32, py as i32), &RGBColor(g, g, g))?;
                }
            }
        }
        for &b in &params.boundaries {
            let x = b as f64;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, 0.0), (x, nb_f)],
                RED.stroke_width(2),
            )))?;
        }
        Ok(())
    })
}

/// Histogram of normalised Hamming distances (`[0, 1]`) with `bins` equal bins over the data
/// range; the legend names `label` and the mean.
pub fn hamming_histogram(
    distances: &[f64],
    bins: usize,
    title: &str,
    label: &str,
    path: &Path,
) -> Result<()> {
    if distances.is_empty() || bins == 0 {
        return Err(ClusterError::InvalidParam {
            name: "histogram",
            value: format!("{} values, {bins} bins", distances.len()),
            reason: "need at least one value and one bin",
        });
    }
    if let Some(v) = distances.iter().find(|v| !v.is_finite()) {
        return Err(ClusterError::InvalidParam {
            name: "histogram value",
            value: v.to_string(),
            reason: "distances must be finite",
        });
    }
    let lo = distances.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = distances.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.005, hi + 0.005)
    };
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &d in distances {
        let b = (((d - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let mean = distances.iter().sum::<f64>() / distances.len() as f64;
    let ymax = counts.iter().copied().max().unwrap_or(1) as f64 * 1.1;
    with_png(path, (900, 600), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(lo..hi, 0f64..ymax)?;
        chart
            .configure_mesh()
            .x_desc("normalised Hamming distance")
            .y_desc("count")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .draw()?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BLUE.mix(0.6).filled())
            }))?
            .label(format!("{label} (n = {})", distances.len()))
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], BLUE.mix(0.6).filled()));
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(mean, 0.0), (mean, ymax)],
                RED.stroke_width(2),
            )))?
            .label(format!("mean = {mean:.4}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        Ok(())
    })
}

fn viridis(t: f64) -> RGBColor {
    const ANCHORS: [(f64, (f64, f64, f64)); 5] = [
        (0.0, (68.0, 1.0, 84.0)),
        (0.25, (59.0, 82.0, 139.0)),
        (0.5, (33.0, 145.0, 140.0)),
        (0.75, (94.0, 201.0, 98.0)),
        (1.0, (253.0, 231.0, 37.0)),
    ];
    let t = t.clamp(0.0, 1.0);
    let i = ANCHORS
        .iter()
        .rposition(|a| a.0 <= t)
        .unwrap_or(0)
        .min(ANCHORS.len() - 2);
    let (t0, c0) = ANCHORS[i];
    let (t1, c1) = ANCHORS[i + 1];
    let u = (t - t0) / (t1 - t0);
    let l = |a: f64, b: f64| (a + (b - a) * u).round() as u8;
    RGBColor(l(c0.0, c1.0), l(c0.1, c1.1), l(c0.2, c1.2))
}

/// Heat map of separation ratios: `values[row][col]` (`None` drawn grey as "n/a"), rows e.g.
/// methods, columns e.g. layers/projections; every cell is annotated with its value.
pub fn separation_heatmap(
    row_names: &[String],
    col_names: &[String],
    values: &[Vec<Option<f64>>],
    title: &str,
    path: &Path,
) -> Result<()> {
    if row_names.is_empty() || col_names.is_empty() {
        return Err(ClusterError::InvalidParam {
            name: "heat map",
            value: format!("{} rows x {} cols", row_names.len(), col_names.len()),
            reason: "need at least one row and one column",
        });
    }
    if values.len() != row_names.len() || values.iter().any(|r| r.len() != col_names.len()) {
        return Err(ClusterError::InvalidParam {
            name: "heat map values",
            value: format!("{} rows", values.len()),
            reason: "must be [rows][cols] matching the names",
        });
    }
    let range = sparsity_plot::finite_range(values);
    let (vmin, vmax) = range.unwrap_or((f64::INFINITY, f64::NEG_INFINITY));
    let (nr, nc) = (row_names.len(), col_names.len());
    let w = (240 + 150 * nc as u32).max(720);
    let h = (170 + 60 * nr as u32).max(360);
    let range_note = if range.is_none() {
        "all undefined (grey)".to_string()
    } else {
        format!("colour {vmin:.2} .. {vmax:.2}, grey = undefined")
    };
    // Cell (r, c) spans [2c, 2c + 2] × [2r, 2r + 2] in integer coordinates; the axis labels sit
    // on key points at the odd cell centres.
    let x_keys: Vec<i32> = (0..nc).map(|c| 2 * c as i32 + 1).collect();
    let y_keys: Vec<i32> = (0..nr).map(|r| 2 * r as i32 + 1).collect();
    let name_at = |names: &[String], v: i32| -> String {
        if v > 0 && v % 2 == 1 {
            names.get((v / 2) as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    with_png(path, (w, h), |root| {
        let (title_area, rest) = root.split_vertically(56);
        title_area.draw(&Text::new(
            title.to_string(),
            (12, 6),
            (FONT, 17).into_font(),
        ))?;
        title_area.draw(&Text::new(
            range_note.clone(),
            (12, 30),
            (FONT, 14).into_font().color(&RGBColor(80, 80, 80)),
        ))?;
        let mut chart = ChartBuilder::on(&rest)
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(150)
            .build_cartesian_2d(
                (0..2 * nc as i32).with_key_points(x_keys),
                (0..2 * nr as i32).with_key_points(y_keys),
            )?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(nc)
            .y_labels(nr)
            .x_desc("layer / projection")
            .y_desc("method")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .x_label_formatter(&|v| name_at(col_names, *v))
            .y_label_formatter(&|v| name_at(row_names, *v))
            .draw()?;
        for (r, row) in values.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                let color = match v {
                    Some(x) if x.is_finite() => {
                        let t = if vmax > vmin {
                            (x - vmin) / (vmax - vmin)
                        } else {
                            0.5
                        };
                        viridis(t)
                    }
                    _ => RGBColor(190, 190, 190),
                };
                let (x0, y0) = (2 * c as i32, 2 * r as i32);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, y0), (x0 + 2, y0 + 2)],
                    color.filled(),
                )))?;
                let text = match v {
                    Some(x) => format!("{x:.2}"),
                    None => "n/a".into(),
                };
                let fg = match v {
                    Some(x) if vmax > vmin && (x - vmin) / (vmax - vmin) > 0.6 => BLACK,
                    _ => WHITE,
                };
                chart.draw_series(std::iter::once(Text::new(
                    text,
                    (x0 + 1, y0 + 1),
                    (FONT, 16)
                        .into_font()
                        .color(&fg)
                        .pos(plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Center,
                        )),
                )))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_png(path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|b| b.len() > 1000 && b.starts_with(b"\x89PNG\r\n\x1a\n"))
    }

    #[test]
    fn plots_are_written_and_inputs_checked() {
        let dir = tempfile::tempdir().unwrap();
        let m = BinaryMatrix::from_fn(50, 130, |f, b| (f + b) % 3 == 0).unwrap();
        let mut p = SpyPlotParams::new("test");
        p.boundaries = vec![10, 20];
        let order: Vec<usize> = (0..50).rev().collect();
        let spy = dir.path().join("spy.png");
        spy_plot(&m, Some(&order), &p, &spy).unwrap();
        assert!(is_png(&spy));
        assert!(spy_plot(&m, Some(&order[1..]), &p, &spy).is_err());
        assert!(spy_plot(&m, None, &p, &dir.path().join("spy.svg")).is_err());
        let hist = dir.path().join("hist.png");
        hamming_histogram(&[0.1, 0.2, 0.2, 0.5], 10, "t", "d", &hist).unwrap();
        assert!(is_png(&hist));
        assert!(hamming_histogram(&[], 10, "t", "d", &hist).is_err());
        assert!(hamming_histogram(&[f64::NAN], 10, "t", "d", &hist).is_err());
        let heat = dir.path().join("heat.png");
        let rows = vec!["a".to_string(), "b".to_string()];
        let cols = vec!["k=4".to_string()];
        separation_heatmap(&rows, &cols, &[vec![Some(1.5)], vec![None]], "t", &heat).unwrap();
        assert!(is_png(&heat));
        assert!(separation_heatmap(&rows, &cols, &[vec![Some(1.5)]], "t", &heat).is_err());
        // No temporary files are left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".plot-")), "{names:?}");
    }
}
