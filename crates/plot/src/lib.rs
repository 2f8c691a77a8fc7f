//! # sparsity-plot
//!
//! Plot support shared by every sparsity-lab crate that draws (each behind its own `plots`
//! feature): an embedded font (DejaVu Sans, so no system fontconfig/freetype is needed) and
//! atomic PNG/SVG output: the image is drawn into a temporary file beside the target and
//! renamed over it only when drawing succeeded, so a failed plot never leaves a half-written
//! image.
//!
//! ```
//! use plotters::prelude::*;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("line.png");
//! sparsity_plot::png_atomic(&path, (320, 240), |root| {
//!     root.fill(&WHITE).map_err(|e| e.to_string())?;
//!     let mut chart = ChartBuilder::on(&root)
//!         .caption("y = x", (sparsity_plot::FONT, 16))
//!         .build_cartesian_2d(0f64..1.0, 0f64..1.0)
//!         .map_err(|e| e.to_string())?;
//!     chart
//!         .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], &BLUE))
//!         .map_err(|e| e.to_string())?;
//!     root.present().map_err(|e| e.to_string())
//! })?;
//! assert!(path.is_file());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::{BitMapBackend, DrawingArea, IntoDrawingArea, SVGBackend};
use sparsity_io::atomic::TempPath;

/// The series colours every chart uses, in order (matplotlib's first six `tab10` colours).
pub const PALETTE: [plotters::style::RGBColor; 6] = [
    plotters::style::RGBColor(31, 119, 180),
    plotters::style::RGBColor(255, 127, 14),
    plotters::style::RGBColor(44, 160, 44),
    plotters::style::RGBColor(214, 39, 40),
    plotters::style::RGBColor(148, 103, 189),
    plotters::style::RGBColor(140, 86, 75),
];

/// The smallest and largest finite value of a matrix whose cells may be missing (`None`) or
/// not finite; `None` when no cell is finite (a colour scale needs at least one).
pub fn finite_range(values: &[Vec<Option<f64>>]) -> Option<(f64, f64)> {
    let mut it = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|v| v.is_finite());
    let first = it.next()?;
    Some(it.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
}

/// The font family name every plot should use.
pub const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTERED: OnceLock<bool> = OnceLock::new();

/// Registers the embedded DejaVu Sans font with plotters under [`FONT`] (normal, bold and
/// italic styles all map to it). Call before drawing text; calling it again is free.
/// Returns `false` if the embedded font could not be parsed (text would then be missing).
pub fn ensure_font() -> bool {
    *REGISTERED.get_or_init(|| {
        use plotters::style::{FontStyle, register_font};
        [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ]
        .into_iter()
        .all(|style| register_font(FONT, style, FONT_BYTES).is_ok())
    })
}

/// Output format, chosen by the file extension (`.png` or `.svg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Portable Network Graphics (bitmap).
    Png,
    /// Scalable Vector Graphics.
    Svg,
}

impl ImageFormat {
    /// The format for `path`'s extension, or `None` for anything but `png`/`svg`.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "png" => Some(Self::Png),
            "svg" => Some(Self::Svg),
            _ => None,
        }
    }
}

/// Why an image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The embedded font could not be registered (text would be missing).
    #[error("{path}: the embedded plot font could not be registered")]
    Font {
        /// The image's path.
        path: String,
    },
    /// Creating the directory, the temporary file or renaming it failed.
    #[error(transparent)]
    Io(#[from] sparsity_io::IoError),
    /// The drawing closure failed.
    #[error("{path}: drawing failed: {message}")]
    Draw {
        /// The image's path.
        path: String,
        /// What failed.
        message: String,
    },
    /// The file extension names no supported format.
    #[error("{path}: unsupported image format (expected {expected})")]
    Format {
        /// The image's path.
        path: String,
        /// The supported extensions.
        expected: &'static str,
    },
}

/// The former name of [`PlotError`].
pub type PngError = PlotError;

/// A bitmap drawing area, as [`png_atomic`] hands it to the drawing closure.
pub type PngArea<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// An SVG drawing area, as [`svg_atomic`] hands it to the drawing closure.
pub type SvgArea<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn begin(path: &Path, suffix: &str) -> Result<TempPath, PlotError> {
    if !ensure_font() {
        return Err(PlotError::Font {
            path: path.display().to_string(),
        });
    }
    Ok(sparsity_io::atomic::temp_beside(path, suffix)?)
}

fn finish(path: &Path, tmp: TempPath, drawn: Result<(), String>) -> Result<(), PlotError> {
    drawn.map_err(|message| PlotError::Draw {
        path: path.display().to_string(),
        message,
    })?;
    Ok(tmp.persist(path)?)
}

/// Draws a `size` (width, height) PNG with `draw` and writes it atomically (see the crate
/// docs). Registers the embedded font first.
pub fn png_atomic<F>(path: &Path, size: (u32, u32), draw: F) -> Result<(), PlotError>
where
    F: FnOnce(PngArea<'_>) -> Result<(), String>,
{
    let tmp = begin(path, ".png")?;
    let drawn = draw(BitMapBackend::new(tmp.path(), size).into_drawing_area());
    finish(path, tmp, drawn)
}

/// Draws a `size` SVG with `draw` and writes it atomically, like [`png_atomic`].
pub fn svg_atomic<F>(path: &Path, size: (u32, u32), draw: F) -> Result<(), PlotError>
where
    F: FnOnce(SvgArea<'_>) -> Result<(), String>,
{
    let tmp = begin(path, ".svg")?;
    let drawn = draw(SVGBackend::new(tmp.path(), size).into_drawing_area());
    finish(path, tmp, drawn)
}

/// Draws `path` as PNG or SVG, chosen by its extension ([`ImageFormat::from_path`]), with the
/// drawing closure for that backend, and writes it atomically. Charts generic over
/// `DrawingBackend` pass the same function twice.
pub fn render_atomic<P, S>(
    path: &Path,
    size: (u32, u32),
    draw_png: P,
    draw_svg: S,
) -> Result<(), PlotError>
where
    P: FnOnce(PngArea<'_>) -> Result<(), String>,
    S: FnOnce(SvgArea<'_>) -> Result<(), String>,
{
    match ImageFormat::from_path(path) {
        Some(ImageFormat::Png) => png_atomic(path, size, draw_png),
        Some(ImageFormat::Svg) => svg_atomic(path, size, draw_svg),
        None => Err(PlotError::Format {
            path: path.display().to_string(),
            expected: ".png or .svg",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_drawing_leaves_nothing() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x.png");
        let r = png_atomic(&path, (10, 10), |_| Err("nope".into()));
        assert!(matches!(r, Err(PlotError::Draw { .. })));
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        assert_eq!(
            ImageFormat::from_path(Path::new("a.SVG")),
            Some(ImageFormat::Svg)
        );
        assert_eq!(ImageFormat::from_path(Path::new("a.pdf")), None);
        Ok(())
    }
}

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
