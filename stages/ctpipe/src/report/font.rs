//! The one font every picture is drawn with: a DejaVu Sans subset embedded in the binary
//! (assets/fonts/README.md says which characters and how it was cut), registered with plotters'
//! ab_glyph text backend. No system font is looked up, so a plot or grid is the same bytes on
//! every machine, fonts installed or not.

use plotters::style::{register_font, FontStyle};
use std::sync::Once;

/// The family name plotters knows the embedded font by.
pub const FAMILY: &str = "ctpipe-sans";

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

/// Register the font (once per process); every drawing function calls it first. Also under
/// plotters' default family, so that a style left at its default finds it too.
pub fn ensure() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for family in [FAMILY, "sans-serif"] {
            register_font(family, FontStyle::Normal, FONT).unwrap_or_else(|_| panic!("the embedded font {FAMILY} does not parse"));
        }
    });
}
