//! Feature encoders for the Fréchet distance: what a `precompute-encoder` artifact describes and
//! `evaluate-fid` re-opens.
//!
//! - [`inception`] — pytorch-fid's FID Inception-v3 (2048-d pool3), weights from a file or the Hub
//! - [`classifier`] — a small CNN trained on the dataset's labels (in-domain, 28×28 grayscale)
//! - identity — the raw coordinates (2-D toys)
//! - [`pil_resize`] — PIL's bicubic resize, for clean-fid's protocol (the `fid` tool's `--resize clean`)
//!
//! Every encoder takes samples as the models produce them, N×C×H×W in [−1, 1] (N×D for points),
//! and first quantizes images to the 256 levels of a saved PNG, as FID tools measure saved images.

pub mod classifier;
pub mod inception;
pub mod pil_resize;
pub mod weights;

use crate::error::{bad_input, TagContext};
use crate::metrics::stats::{FeatureStats, StatsAccumulator};
use crate::store::Artifact;
use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// A feature extractor.
pub trait Encoder {
    /// Feature dimension.
    fn dim(&self) -> usize;
    /// Features of a batch of samples (N×C×H×W or N×D, values in [−1, 1]) → N × dim, f32.
    fn features(&self, x: &Tensor) -> Result<Tensor>;
}

/// How to rebuild an encoder: `encoder.json` of a `precompute-encoder` artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EncoderSpec {
    /// Points as they are.
    Identity { dim: usize },
    /// The trained CNN whose weights are `encoder.safetensors` in the artifact.
    Classifier { config: classifier::ClassifierConfig, test_accuracy: f64 },
    /// FID Inception-v3 from verified weights.
    Inception { weights: weights::WeightsSource },
}

impl EncoderSpec {
    pub fn name(&self) -> &'static str {
        match self {
            EncoderSpec::Identity { .. } => "identity",
            EncoderSpec::Classifier { .. } => "classifier",
            EncoderSpec::Inception { .. } => "inception",
        }
    }
}

/// The identity encoder of point data.
pub struct Identity(pub usize);

impl Encoder for Identity {
    fn dim(&self) -> usize {
        self.0
    }
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.to_dtype(candle_core::DType::F32)?.flatten_from(1)?)
    }
}

/// Round images in [−1, 1] to the 256 levels of uint8 and back (clamping first), so generated
/// samples are measured as the PNGs a user would save; dataset images pass through unchanged.
pub fn quantize(x: &Tensor) -> Result<Tensor> {
    Ok(((levels(x)? / 127.5)? - 1.0)?)
}

/// Images in [−1, 1] as the byte values 0–255 a saved picture holds (clamped, rounded), f32.
pub fn levels(x: &Tensor) -> Result<Tensor> {
    Ok(((x.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?.round()?)
}

/// Open the encoder a `precompute-encoder` artifact describes.
pub fn open(art: &Artifact, device: &Device) -> Result<(EncoderSpec, Box<dyn Encoder>)> {
    let path = art.file("encoder.json")?;
    let text = std::fs::read_to_string(&path).bad_input_ctx(|| format!("{}: cannot read", path.display()))?;
    let spec: EncoderSpec = serde_json::from_str(&text).bad_input_ctx(|| format!("{}: not an encoder description", path.display()))?;
    let enc = build(&spec, Some(art), device)?;
    Ok((spec, enc))
}

/// Build an encoder from its description (the classifier's weights come from `art`).
pub fn build(spec: &EncoderSpec, art: Option<&Artifact>, device: &Device) -> Result<Box<dyn Encoder>> {
    Ok(match spec {
        EncoderSpec::Identity { dim } => Box::new(Identity(*dim)),
        EncoderSpec::Classifier { config, .. } => {
            let art = art.ok_or_else(|| bad_input("a classifier encoder needs its artifact"))?;
            let tensors = crate::model::load_tensors(&art.file("encoder.safetensors")?, device)?;
            Box::new(classifier::Classifier::from_tensors(config, tensors, device)?)
        }
        EncoderSpec::Inception { weights } => Box::new(inception::FidInception::load(&weights.resolve(&weights::INCEPTION)?, device)?),
    })
}

/// Feature statistics of samples produced batch by batch by `next_batch` (None when done).
pub fn statistics(encoder: &dyn Encoder, mut next_batch: impl FnMut() -> Result<Option<Tensor>>) -> Result<FeatureStats> {
    let mut acc = StatsAccumulator::new(encoder.dim());
    while let Some(x) = next_batch()? {
        let x = if x.rank() == 4 { quantize(&x)? } else { x };
        acc.add(&encoder.features(&x)?)?;
    }
    acc.finish()
}

/// Feature statistics of a tensor of samples, in batches of `batch`.
pub fn statistics_of(encoder: &dyn Encoder, x: &Tensor, batch: usize) -> Result<FeatureStats> {
    let n = x.dim(0)?;
    let mut first = 0;
    statistics(encoder, || {
        if first >= n {
            return Ok(None);
        }
        let k = (n - first).min(batch);
        let b = x.narrow(0, first, k)?;
        first += k;
        Ok(Some(b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_hits_uint8_levels_and_keeps_them() {
        let x = Tensor::new(&[-1.5f32, -1.0, -0.003, 0.0, 0.5, 0.999, 2.0], &Device::Cpu).unwrap();
        let q: Vec<f32> = quantize(&x).unwrap().to_vec1().unwrap();
        for v in &q {
            let level = (v + 1.0) * 127.5;
            assert!((level - level.round()).abs() < 1e-4 && (0.0..=255.0).contains(&level), "{v}");
        }
        assert_eq!((q[0], q[6]), (-1.0, 1.0));
        // Dataset pixels (k / 127.5 − 1) are fixed points.
        let px: Vec<f32> = (0..256).map(|k| k as f32 / 127.5 - 1.0).collect();
        let back: Vec<f32> = quantize(&Tensor::new(px.as_slice(), &Device::Cpu).unwrap()).unwrap().to_vec1().unwrap();
        for (a, b) in px.iter().zip(&back) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
