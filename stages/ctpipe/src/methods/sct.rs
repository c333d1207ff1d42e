//! SCT — stable consistency tuning (Wang, Geng, Li 2024, arXiv 2410.18958): ECT with a
//! variance-reduced target. The spec (methods.md §6; no public code) reads the paper's target
//! through the score identity: replace the one clean sample x in ECT's Euler step
//! x_r = x_t + (r − t)·(x_t − x)/t by the self-normalised estimate
//! x̂₀ = Σ_j w_j·x^(j), w_j = softmax_j(−‖x_t − x^(j)‖² / (2t²)) over a reference set that holds
//! the sample's own clean image.
//!
//! With x̂₀ = x + δ, the teacher point is x_r = x + r·ε + (1 − r/t)·δ: ECT's point plus a
//! correction. Written this way, a reference set of the sample's own image alone gives δ = 0
//! exactly and SCT reduces to ECT bit for bit. The weights are computed on the host in f64 from
//! direct differences: at small t the softmax is very sharp, and the usual expansion
//! ‖a‖² + ‖b‖² − 2a·b in f32 would be off by more than the logits' scale.
//!
//! Only part (a) of SCT is implemented: the smoother progressive schedule (b), phased multistep
//! tuning with edge skipping (c) and guidance by a weaker model (d) are not specified well enough
//! to implement (the spec marks them unverified).

use crate::nn::ops::to_f64_vec;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Which clean samples serve as references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum References {
    /// Every clean sample of the batch (the "batch-based" stable target).
    Batch,
    /// Only the sample's own image: the target is ECT's (for ablations and the identity test).
    Own,
}

/// δ_i = Σ_j w_ij·ref_j − x_i for each sample i, where x_t = `noisy`, x = `clean` (the
/// endpoints), t = `t[i]`, and the references are the batch's clean samples.
pub fn correction(noisy: &Tensor, clean: &Tensor, t: &[f64], refs: References) -> Result<Tensor> {
    match refs {
        References::Own => clean.zeros_like(),
        References::Batch => {
            let n = clean.dim(0)?;
            let d = clean.elem_count() / n;
            let xt = to_f64_vec(noisy)?;
            let xr = to_f64_vec(clean)?;
            let mut w = vec![0f32; n * n];
            let mut logits = vec![0f64; n];
            for i in 0..n {
                let a = &xt[i * d..(i + 1) * d];
                for (j, l) in logits.iter_mut().enumerate() {
                    let b = &xr[j * d..(j + 1) * d];
                    let sq: f64 = a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum();
                    *l = -sq / (2.0 * t[i] * t[i]);
                }
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                for j in 0..n {
                    w[i * n + j] = ((logits[j] - max).exp() / total) as f32;
                }
            }
            let w = Tensor::from_vec(w, (n, n), clean.device())?.to_dtype(clean.dtype())?;
            let flat = clean.reshape((n, d))?;
            let mean = w.matmul(&flat)?.reshape(clean.shape())?;
            mean.sub(clean)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn weights_follow_the_gaussian_kernel() {
        let dev = Device::Cpu;
        // Two 1-D references at 0 and 1; x_t = 0.25 with t = 0.5 for sample 0.
        let clean = Tensor::new(&[[0f32], [1.0]], &dev).unwrap();
        let noisy = Tensor::new(&[[0.25f32], [5.0]], &dev).unwrap();
        let delta = correction(&noisy, &clean, &[0.5, 1e-3], References::Batch).unwrap().to_vec2::<f32>().unwrap();
        // w ∝ exp(−d²/(2t²)): d² = 0.0625 and 0.5625 → w₁ = 1/(1 + e^{(0.5625−0.0625)/0.5}) = 1/(1 + e).
        let w1 = 1.0 / (1.0 + 1f64.exp());
        assert!((delta[0][0] as f64 - w1).abs() < 1e-6, "{}", delta[0][0]);
        // Tiny t: all weight on the nearest reference (sample 1's own image): δ = 0 exactly.
        assert_eq!(delta[1][0], 0.0);
        let own = correction(&noisy, &clean, &[0.5, 1e-3], References::Own).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(own, [[0.0], [0.0]]);
    }
}
