//! Measuring samples: toy-data metrics (mode coverage; later sliced Wasserstein and MMD) and,
//! for images, feature statistics and the Fréchet distance.

pub mod toy;
