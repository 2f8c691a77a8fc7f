//! Plot support shared by every crate: an embedded font (DejaVu Sans, so no system
//! fontconfig/freetype is needed) and atomic PNG/SVG output.

use std::path::Path;
use std::sync::OnceLock;

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

/// Why an atomic PNG could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    /// The embedded font could not be registered (text would be missing).
    #[error("{path}: the embedded plot font could not be registered")]
    Font {
        /// The PNG's path.
        path: String,
    },
    /// Creating the directory, the temporary file or renaming it failed.
    #[error("{path}: {source}")]
    Io {
        /// The PNG's path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The drawing closure failed.
    #[error("{path}: drawing failed: {message}")]
    Draw {
        /// The PNG's path.
        path: String,
        /// What failed.
        message: String,
    },
}

/// Draws a `size` (width, height) PNG with `draw` and writes it atomically: into a temporary file
/// in the target directory (created if missing), renamed over `path` only when drawing succeeded,
/// so a failed plot never leaves a half-written image. Registers the embedded font first.
pub fn png_atomic<F>(path: &Path, size: (u32, u32), draw: F) -> Result<(), PngError>
where
    F: FnOnce(
        plotters::drawing::DrawingArea<plotters::prelude::BitMapBackend<'_>, plotters::coord::Shift>,
    ) -> Result<(), String>,
{
    use plotters::prelude::IntoDrawingArea;
    let shown = || path.display().to_string();
    if !ensure_font() {
        return Err(PngError::Font { path: shown() });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io = |source| PngError::Io {
        path: shown(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = tempfile::Builder::new()
        .suffix(".png")
        .tempfile_in(dir)
        .map_err(io)?;
    draw(plotters::prelude::BitMapBackend::new(tmp.path(), size).into_drawing_area()).map_err(
        |message| PngError::Draw {
            path: shown(),
            message,
        },
    )?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
