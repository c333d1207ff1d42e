//! The canonical dataset: what a `fetch-data` artifact holds (documented in docs/dataset.md).
//!
//! Two splits, `train.parquet` and `test.parquet`, of either images (uint8, height × width ×
//! channels, row-major HWC) or points (f32 vectors, for the 2-D toys), each row with an integer
//! label. The dataset's description ([`DatasetInfo`]) is stored in every Parquet file's
//! key-value metadata (`ctpipe.dataset`) and in `dataset.json`, so a split file stands alone.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// What one sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SampleKind {
    Images { height: u32, width: u32, channels: u32 },
    Points { dim: u32 },
}

impl SampleKind {
    /// Values per sample (pixels × channels, or coordinates).
    pub fn sample_len(&self) -> usize {
        match *self {
            // Saturating: a corrupt description must fail its check, not wrap around.
            SampleKind::Images { height, width, channels } => (height as usize).saturating_mul(width as usize).saturating_mul(channels as usize),
            SampleKind::Points { dim } => dim as usize,
        }
    }

    /// Channels for images, dimensions for points: the axis statistics are taken over.
    pub fn channels(&self) -> usize {
        match *self {
            SampleKind::Images { channels, .. } => channels as usize,
            SampleKind::Points { dim } => dim as usize,
        }
    }
}

/// The description of a dataset, shared by its splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Human-readable origin, e.g. `toy2d:two-gaussians` or `hub:uoft-cs/cifar10@<commit>`.
    pub name: String,
    #[serde(flatten)]
    pub kind: SampleKind,
    /// `class_names[label]`; labels run from 0 to `class_names.len() - 1`.
    pub class_names: Vec<String>,
}

/// The most values one sample may hold (a 4096 × 4096 RGB image); larger descriptions are
/// corrupt, not data.
pub const MAX_SAMPLE_LEN: usize = 4096 * 4096 * 3;

impl DatasetInfo {
    /// Check the description itself: positive sizes within [`MAX_SAMPLE_LEN`], 1, 3 or 4
    /// channels (grey, RGB, RGBA), at least one class name.
    pub fn check(&self, what: &str) -> Result<()> {
        match self.kind {
            SampleKind::Images { height, width, channels } => {
                if height == 0 || width == 0 || !matches!(channels, 1 | 3 | 4) {
                    bail!("{what}: images of {height}×{width}×{channels} (expected positive sizes and 1, 3 or 4 channels)");
                }
            }
            SampleKind::Points { dim: 0 } => bail!("{what}: points of dimension 0"),
            SampleKind::Points { .. } => {}
        }
        if self.kind.sample_len() > MAX_SAMPLE_LEN {
            bail!("{what}: {} values per sample (at most {MAX_SAMPLE_LEN})", self.kind.sample_len());
        }
        if self.class_names.is_empty() {
            bail!("{what}: no class names");
        }
        Ok(())
    }
}

/// The values of one split, in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    /// `rows × sample_len` bytes, HWC per image.
    Images(Vec<u8>),
    /// `rows × dim` values.
    Points(Vec<f32>),
}

/// One split in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub samples: Samples,
    pub labels: Vec<i32>,
}

impl Split {
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Check the lengths and labels against the dataset description.
    pub fn check(&self, info: &DatasetInfo, what: &str) -> Result<()> {
        let len = info.kind.sample_len();
        let values = match (&self.samples, info.kind) {
            (Samples::Images(v), SampleKind::Images { .. }) => v.len(),
            (Samples::Points(v), SampleKind::Points { .. }) => v.len(),
            _ => bail!("{what}: samples do not match the dataset kind {:?}", info.kind),
        };
        if values != self.rows() * len {
            bail!("{what}: {values} values for {} rows of {len}", self.rows());
        }
        if let Some(bad) = self.labels.iter().find(|&&l| l < 0 || l as usize >= info.class_names.len()) {
            bail!("{what}: label {bad} outside 0..{} (the class names)", info.class_names.len());
        }
        if let Samples::Points(xs) = &self.samples
            && let Some(i) = xs.iter().position(|v| !v.is_finite())
        {
            bail!("{what}: row {} holds {} (points must be finite)", i / len.max(1), xs[i]);
        }
        Ok(())
    }
}

/// A whole dataset in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub info: DatasetInfo,
    pub train: Split,
    pub test: Split,
}

/// The names of the two splits, in file order.
pub const SPLITS: [&str; 2] = ["train", "test"];
