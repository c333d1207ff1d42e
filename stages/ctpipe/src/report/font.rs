//! The one font pictures are drawn with: a DejaVu Sans subset embedded in the binary
//! (assets/fonts/README.md says which characters and how it was cut), registered with plotters'
//! ab_glyph text backend. PNG text is rasterised from it; SVG text is laid out with its metrics
//! and drawn by the viewer. No system font is looked up, so a plot or grid is the same bytes on
//! every machine, fonts installed or not.

use plotters::style::{register_font, FontStyle};
use std::sync::Once;

/// The family name plotters knows the embedded font by: plotters' default, which an SVG also
/// names, so that a viewer draws the SVG's text in its own sans-serif font (the layout was
/// measured with DejaVu Sans, which most sans-serif fonts are close to).
pub const FAMILY: &str = "sans-serif";

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

/// Register the font (once per process); every drawing function calls it first.
pub fn ensure() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| register_font(FAMILY, FontStyle::Normal, FONT).unwrap_or_else(|_| panic!("the embedded DejaVu Sans subset does not parse")));
}
