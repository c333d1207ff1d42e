//! Measuring models: reference statistics of a dataset (`precompute-encoder`), FD and toy
//! metrics of model samples (`evaluate-fid`), the papers' own measurements on the toys, the
//! profile-level report, and FID between files from other tools (`fid_files`, the `fid` tool).

pub mod fid;
pub mod fid_files;
pub mod precompute;
pub mod report;
pub mod toy_measures;
