//! EDM denoising pre-training (Karras et al. 2022; NVlabs/edm `training/loss.py` EDMLoss):
//! ln σ ~ N(P_mean = −1.2, P_std = 1.2), y = x + σ·n, loss = λ(σ)·‖D(y, σ) − x‖² with
//! λ(σ) = (σ² + σd²)/(σ·σd)², summed over each sample's values (EDM sums the elementwise loss
//! and divides by the batch). The result is a denoiser: the teacher of distillation and the
//! initialisation ECT and SCT tune from.

use super::{LossOutput, Method, StepCtx};
use crate::nn::dropout::Dropout;
use crate::nn::ops::per_sample_sum;
use crate::precond::{Phase, Precond};
use candle_core::{Result, Tensor};
use rand_distr::{Distribution, StandardNormal};

pub struct EdmLoss {
    pub p_mean: f64,
    pub p_std: f64,
    pub precond: Precond,
}

impl Method for EdmLoss {
    fn loss(&self, ctx: &StepCtx, x0: &Tensor) -> Result<LossOutput> {
        let n = x0.dim(0)?;
        let mut rng = crate::rng::stream(ctx.seed, "sigma", ctx.progress.step);
        let sigma: Vec<f64> = (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (self.p_mean + self.p_std * z).exp()
            })
            .collect();
        let noise = crate::coupling::step_noise(ctx, x0)?;
        let y = crate::methods::consistency::Kernel::Ve.noisy(x0, &noise, &sigma)?;
        let mut drop = Dropout::record(crate::rng::stream(ctx.seed, "dropout", ctx.progress.step));
        let denoised = self.precond.apply(ctx.net, &y, &sigma, Phase::Train, &mut drop)?;
        let sd = self.precond.sigma_data;
        let lambda: Vec<f32> = sigma.iter().map(|s| ((s * s + sd * sd) / (s * sd).powi(2)) as f32).collect();
        let lambda = Tensor::from_vec(lambda, n, x0.device())?.to_dtype(x0.dtype())?;
        let per_sample_loss = per_sample_sum(&denoised.sub(x0)?.sqr()?)?.mul(&lambda)?;
        Ok(LossOutput { per_sample: per_sample_loss, logs: Vec::new() })
    }

    fn precond(&self) -> Precond {
        self.precond
    }
}
