//! Distances between student and teacher outputs, one value per sample, and loss weightings.

use crate::nn::ops::per_sample_sum;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// How student and teacher outputs are compared, one value per sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distance {
    /// √(‖a − b‖² + c²) − c over the whole flattened sample. iCT (and GC, utils.py:92-97):
    /// c = 0.00054·√D; ECT on CIFAR: c = 0, the unsquared L2 norm.
    PseudoHuber { c: f64 },
    /// Σ_j (√((a_j − b_j)² + c²) − c): pseudo-Huber per value, summed over the sample, as
    /// sony/vct's iCT loss computes it (models/ict.py:29-30 per element, :142 summed), with the
    /// same c = 0.00054·√D.
    PseudoHuberPerValue { c: f64 },
    /// ‖a − b‖² (CD's l2, the GC toy).
    L2Squared,
}

/// Keeps √ differentiable where student and teacher agree exactly (c = 0).
const SQRT_GUARD: f64 = 1e-20;

impl Distance {
    pub fn per_sample(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let sq = per_sample_sum(&a.sub(b)?.sqr()?)?;
        match *self {
            Distance::PseudoHuber { c } => (sq + (c * c + SQRT_GUARD))?.sqrt()? - c,
            Distance::PseudoHuberPerValue { c } => per_sample_sum(&((a.sub(b)?.sqr()? + (c * c + SQRT_GUARD))?.sqrt()? - c)?),
            Distance::L2Squared => Ok(sq),
        }
    }
}

/// Per-sample loss weights λ(σ_hi, σ_lo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weighting {
    /// 1 / (σ_hi − σ_lo): iCT's 1/Δσ, ECT's 1/(t − r).
    InverseGap,
    /// 1/σd² + 1/σ_hi² (ECT's "snr+k" on ImageNet).
    Karras,
    /// 1 (CD).
    Uniform,
}

impl Weighting {
    /// How VCT scales its KL weight β at the top pair (σ_hi, σ_lo) of ECT's schedule: by the
    /// consistency weight 1/(σ_hi − σ_lo) with that weighting, not at all with the others —
    /// sony/vct ecm.py:154-163 (`kl_loss_scale = 1/(t_w − r_w)·β` for 'consistency', raw β
    /// else).
    pub fn kl_scale(&self, hi: f64, lo: f64) -> f64 {
        match self {
            Weighting::InverseGap => 1.0 / (hi - lo),
            Weighting::Karras | Weighting::Uniform => 1.0,
        }
    }

    pub fn weight(&self, hi: f64, lo: f64, sigma_data: f64) -> f64 {
        match self {
            Weighting::InverseGap => 1.0 / (hi - lo),
            Weighting::Karras => 1.0 / (sigma_data * sigma_data) + 1.0 / (hi * hi),
            Weighting::Uniform => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn distances_closed_form() {
        let d = Device::Cpu;
        let a = Tensor::new(&[[3f32, 0.0], [1.0, 1.0]], &d).unwrap();
        let b = Tensor::new(&[[0f32, 4.0], [1.0, 1.0]], &d).unwrap();
        // ‖a − b‖ = 5 and 0.
        let h = Distance::PseudoHuber { c: 0.03 }.per_sample(&a, &b).unwrap().to_vec1::<f32>().unwrap();
        assert!((h[0] as f64 - ((25.0f64 + 0.0009).sqrt() - 0.03)).abs() < 1e-5);
        assert!(h[1].abs() < 1e-7);
        let l2 = Distance::PseudoHuber { c: 0.0 }.per_sample(&a, &b).unwrap().to_vec1::<f32>().unwrap();
        assert!((l2[0] - 5.0).abs() < 1e-6 && l2[1].abs() < 1e-9);
        assert_eq!(Distance::L2Squared.per_sample(&a, &b).unwrap().to_vec1::<f32>().unwrap(), [25.0, 0.0]);
        // Per value: (√(9 + c²) − c) + (√(16 + c²) − c) = 7 − 2c + O(c²), against 5 for the whole sample.
        let v = Distance::PseudoHuberPerValue { c: 0.03 }.per_sample(&a, &b).unwrap().to_vec1::<f32>().unwrap();
        let want = (9.0f64 + 0.0009).sqrt() - 0.03 + (16.0f64 + 0.0009).sqrt() - 0.03;
        assert!((v[0] as f64 - want).abs() < 1e-5 && v[1].abs() < 1e-6, "{v:?}");
        assert_eq!(Weighting::InverseGap.weight(2.0, 1.5, 0.5), 2.0);
        assert_eq!(Weighting::Karras.weight(2.0, 1.5, 0.5), 4.25);
    }

    /// The unsquared norm keeps a finite gradient where student and teacher coincide.
    #[test]
    fn zero_distance_has_finite_gradient() {
        let d = Device::Cpu;
        let v = candle_core::Var::new(&[[1f32, 2.0]], &d).unwrap();
        let t = Tensor::new(&[[1f32, 2.0]], &d).unwrap();
        let loss = Distance::PseudoHuber { c: 0.0 }.per_sample(v.as_tensor(), &t).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let g: Vec<f32> = g.get(&v).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
    }
}
