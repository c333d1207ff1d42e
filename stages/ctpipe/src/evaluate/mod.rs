//! Measuring models: reference statistics of a dataset (`precompute-encoder`), FD and toy
//! metrics of model samples (`evaluate-fid`), and the profile-level report.

pub mod fid;
pub mod precompute;
pub mod report;
