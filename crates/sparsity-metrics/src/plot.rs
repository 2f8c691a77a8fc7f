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
