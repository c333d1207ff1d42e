//! Measuring samples: feature statistics and the Fréchet distance (images), and toy-data
//! metrics (mode coverage, sliced Wasserstein, MMD).

pub mod frechet;
pub mod stats;
pub mod toy;
