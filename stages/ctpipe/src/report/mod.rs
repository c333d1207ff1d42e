//! Pictures people would rather look at than numbers: sample grids and scatter plots (PNG),
//! line plots such as loss curves (SVG), drawn with plotters in one embedded font.

pub mod font;
pub mod grid;
pub mod plot;
