//! Measuring samples: feature statistics, the Fréchet distance and KID (images), and toy-data
//! metrics (mode coverage, sliced Wasserstein, MMD).

pub mod frechet;
pub mod kid;
pub mod stats;
pub mod toy;
