//! VC — learned variational noise coupling (Silvestri et al., "Training Consistency Models with
//! Variational Noise Coupling", ICML 2025; sony/vct `models/cm_base.py`, `models/ict.py`).
//!
//! An encoder q_φ(z | x) = N(μ_φ(x), diag(s_φ(x) + 1e-8)²) replaces z ~ N(0, I): it reads x/σd
//! with a constant noise label 0, outputs twice the data channels, μ is the first half and
//! s = softplus(second half). z = μ + s·ε is reparameterised and serves both points of the
//! pair; the encoder learns through the student point only (the teacher's copy is detached) and
//! through KL(q ‖ N(0, I)) = Σ_pixels ½(μ² + s² − 1) − ln s, which the loss adds with its
//! rescaled weight β_eff (`consistency.rs`). The encoder is trained jointly, same optimiser.

use super::{step_noise, Coupled, Coupling};
use crate::methods::consistency::{Kernel, Pairs};
use crate::methods::StepCtx;
use crate::nn::dropout::Dropout;
use crate::nn::ops::{per_sample_sum, softplus, to_f64_vec};
use crate::nn::Network;
use crate::precond::Precond;
use candle_core::{Result, Tensor};

/// Added to the posterior scale, as in the reference code.
pub const SCALE_FLOOR: f64 = 1e-8;

pub struct Vc {
    pub sigma_data: f64,
}

/// The posterior q(z | x): (mean, scale), each shaped like `x`.
pub fn posterior(encoder: &Network, x: &Tensor, sigma_data: f64, drop: &mut Dropout) -> Result<(Tensor, Tensor)> {
    let n = x.dim(0)?;
    let time = Tensor::zeros(n, x.dtype(), x.device())?;
    let out = encoder.forward(&(x / sigma_data)?, &time, None, drop)?;
    let c = out.dim(1)? / 2;
    let mean = out.narrow(1, 0, c)?;
    let scale = (softplus(&out.narrow(1, c, c)?)? + SCALE_FLOOR)?;
    Ok((mean, scale))
}

/// KL(N(mean, scale²) ‖ N(0, 1)) summed over each sample's values.
pub fn kl_to_standard_normal(mean: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let per_value = (((mean.sqr()? + scale.sqr()?)? - 1.0)? * 0.5)?.sub(&scale.log()?)?;
    per_sample_sum(&per_value)
}

impl Coupling for Vc {
    fn couple(&self, ctx: &StepCtx, x0: &Tensor, _pairs: &Pairs, _precond: &Precond, _kernel: &Kernel) -> Result<Coupled> {
        let encoder = ctx.encoder.ok_or_else(|| candle_core::Error::Msg("VC coupling without an encoder".into()))?;
        let eps = step_noise(ctx, x0)?;
        let mut drop = ctx.dropout("encoder-dropout");
        let (mean, scale) = posterior(encoder, x0, self.sigma_data, &mut drop)?;
        let noise = mean.add(&scale.mul(&eps)?)?;
        let kl = kl_to_standard_normal(&mean, &scale)?;
        let kl_mean = to_f64_vec(&kl)?.iter().sum::<f64>() / x0.dim(0)? as f64;
        let scale_mean = to_f64_vec(&scale.mean_all()?)?[0];
        Ok(Coupled { endpoint: x0.clone(), noise, kl: Some(kl), logs: vec![("kl", kl_mean), ("posterior_scale", scale_mean)] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The closed form against numerical integration of ∫ q(z) ln(q(z)/p(z)) dz in 1-D.
    #[test]
    fn kl_matches_numerical_integration() {
        let dev = Device::Cpu;
        for (mu, s) in [(0.0f64, 1.0f64), (0.7, 0.3), (-1.5, 2.0), (0.1, 0.05)] {
            let m = Tensor::new(&[[mu as f32]], &dev).unwrap();
            let sc = Tensor::new(&[[s as f32]], &dev).unwrap();
            let ours = kl_to_standard_normal(&m, &sc).unwrap().to_vec1::<f32>().unwrap()[0] as f64;
            let (lo, hi, n) = (mu - 12.0 * s, mu + 12.0 * s, 200_000);
            let h = (hi - lo) / n as f64;
            let mut integral = 0.0;
            for i in 0..=n {
                let z = lo + i as f64 * h;
                let lq = -0.5 * ((z - mu) / s).powi(2) - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
                let lp = -0.5 * z * z - 0.5 * (2.0 * std::f64::consts::PI).ln();
                let w = if i == 0 || i == n { 0.5 } else { 1.0 };
                integral += w * lq.exp() * (lq - lp) * h;
            }
            assert!((ours - integral).abs() < 1e-5 * integral.abs().max(1.0), "μ {mu} s {s}: {ours} vs {integral}");
        }
    }
}
