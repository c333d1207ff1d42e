//! Pictures people would rather look at than numbers: sample grids and scatter plots (PNG),
//! line plots such as loss curves (SVG, written by hand: no font stack needed).

pub mod grid;
pub mod plot;
