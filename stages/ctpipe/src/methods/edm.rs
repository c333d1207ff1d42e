//! EDM denoising pre-training (Karras et al. 2022; NVlabs/edm `training/loss.py` EDMLoss):
//! ln σ ~ N(P_mean = −1.2, P_std = 1.2), y = x + σ·n, loss = λ(σ)·‖D(y, σ) − x‖² with
//! λ(σ) = (σ² + σd²)/(σ·σd)², summed over each sample's values (EDM sums the elementwise loss
//! and divides by the batch). The result is a denoiser: the teacher of distillation and the
//! initialisation ECT and SCT tune from.

use super::{LossOutput, Method, StepCtx};
use crate::nn::ops::per_sample_sum;
use crate::precond::{Phase, Precond};
use candle_core::{Result, Tensor};
use rand_distr::{Distribution, StandardNormal};

/// EDM's loss weight λ(σ) = (σ² + σd²)/(σ·σd)² (NVlabs/edm training/loss.py:75): the inverse of the variance of
/// the network's effective target, so every level contributes alike at initialisation.
pub fn weight(sigma: f64, sigma_data: f64) -> f64 {
    (sigma * sigma + sigma_data * sigma_data) / (sigma * sigma_data).powi(2)
}

pub struct EdmLoss {
    pub p_mean: f64,
    pub p_std: f64,
    pub precond: Precond,
}

impl Method for EdmLoss {
    fn loss(&self, ctx: &StepCtx, x0: &Tensor) -> Result<LossOutput> {
        let n = x0.dim(0)?;
        let mut rng = crate::rng::stream(ctx.seed, "sigma", ctx.progress.step);
        let sigma: Vec<f64> = ctx.draw_rows(n, |all| {
            (0..all)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (self.p_mean + self.p_std * z).exp()
                })
                .collect()
        });
        let noise = crate::coupling::step_noise(ctx, x0)?;
        let y = crate::methods::consistency::Kernel::Ve.noisy(x0, &noise, &sigma)?;
        let mut drop = ctx.dropout("dropout");
        let denoised = self.precond.apply_cond(ctx.net, &y, &sigma, ctx.class_labels, Phase::Train, &mut drop)?;
        let lambda: Vec<f32> = sigma.iter().map(|&s| weight(s, self.precond.sigma_data) as f32).collect();
        let lambda = Tensor::from_vec(lambda, n, x0.device())?.to_dtype(x0.dtype())?;
        let per_sample_loss = per_sample_sum(&denoised.sub(x0)?.sqr()?)?.mul(&lambda)?;
        Ok(LossOutput { per_sample: per_sample_loss, logs: Vec::new() })
    }

    fn precond(&self) -> Precond {
        self.precond
    }
}

#[cfg(test)]
mod tests {
    /// λ(σ) by hand: 8 at σ = σd = 0.5, 5 at σ = 1, → 1/σd² = 4 as σ → ∞ and ≈ 1/σ² as σ → 0.
    #[test]
    fn loss_weight_closed_form() {
        assert_eq!(super::weight(0.5, 0.5), 8.0);
        assert_eq!(super::weight(1.0, 0.5), 5.0);
        assert!((super::weight(1e4, 0.5) - 4.0).abs() < 1e-7);
        assert!((super::weight(1e-3, 0.5) * 1e-6 - 1.0).abs() < 1e-5);
    }
}
