//! Measuring models: reference statistics of a dataset (`precompute-encoder`), FD and toy
//! metrics of model samples (`evaluate-fid`), the papers' own measurements on the toys, and the
//! profile-level report.

pub mod fid;
pub mod precompute;
pub mod report;
pub mod toy_measures;
