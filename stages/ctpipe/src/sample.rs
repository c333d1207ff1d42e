//! Sampling: consistency models in 1, 2 or more steps; denoisers (EDM teachers) with Heun's
//! method on the Karras grid.
//!
//! Noise is drawn per sample from seeded streams (sample i uses the same noise in any batch),
//! as EDM's generate.py does with one seed per image.

use crate::coupling::vc::posterior;
use crate::model::ModelSpec;
use crate::nn::dropout::Dropout;
use crate::nn::Network;
use crate::precond::{Phase, Precond, PrecondKind};
use crate::ode::{self, NetDenoiser, Solver};
use crate::rng::per_sample_normal;
use candle_core::{Device, Result, Tensor};

/// Samples from a consistency model: 1 step from σ_max, then one step per level in `mids`
/// (2-step sampling: `mids = [σ_mid]`). Each extra step re-noises the estimate to the level
/// (x̂ + σ·z, ECT's convention; VCT draws z from its encoder at x̂ and uses its kernel).
pub fn consistency_samples(
    spec: &ModelSpec,
    net: &Network,
    encoder: Option<&Network>,
    mids: &[f64],
    seed: u64,
    first: u64,
    n: usize,
    device: &Device,
) -> Result<Tensor> {
    let shape = spec.sample_shape();
    let kernel = spec.kernel.kernel();
    let precond = spec.precond;
    let z = per_sample_normal(seed, "sample", first, n, &shape, device)?;
    let x = kernel.noisy(&z.zeros_like()?, &z, &vec![spec.sigma_max; n])?;
    // Detach every evaluation: the weights are variables, and an undetached chain would keep
    // every intermediate of every step alive (fresh memory for each, slow on the CPU).
    let mut xhat = precond.apply(net, &x, &vec![spec.sigma_max; n], Phase::Eval, &mut Dropout::off())?.detach();
    for (k, &sigma) in mids.iter().enumerate() {
        let eps = per_sample_normal(seed, &format!("sample-step{}", k + 1), first, n, &shape, device)?;
        let noise = match encoder {
            Some(enc) => {
                let (mean, scale) = posterior(enc, &xhat, spec.precond.sigma_data, &mut Dropout::off())?;
                mean.add(&scale.mul(&eps)?)?.detach()
            }
            None => eps,
        };
        let x = kernel.noisy(&xhat, &noise, &vec![sigma; n])?;
        xhat = precond.apply(net, &x, &vec![sigma; n], Phase::Eval, &mut Dropout::off())?.detach();
    }
    Ok(xhat)
}

/// EDM's deterministic sampler on a trained denoiser: Heun steps on the Karras grid of `steps`
/// levels from σ_max to σ_min, then to 0; 2·steps − 1 evaluations.
pub fn heun_samples(denoiser: &Network, precond: Precond, sigma_max: f64, steps: usize, seed: u64, first: u64, n: usize, shape: &[usize], device: &Device) -> Result<Tensor> {
    let z = per_sample_normal(seed, "sample", first, n, shape, device)?;
    heun_from(denoiser, precond, sigma_max, steps, &z)
}

/// The Heun sampler from given initial noise (sampled at unit scale).
pub fn heun_from(denoiser: &Network, precond: Precond, sigma_max: f64, steps: usize, z: &Tensor) -> Result<Tensor> {
    let d = NetDenoiser { net: denoiser, precond };
    ode::solve(&d, Solver::Heun, &ode::sampling_grid(precond.sigma_min, sigma_max, steps), z)
}

/// Samples for a trained model: its ODE solver if it is a denoiser (`steps` Heun levels),
/// else `steps` consistency steps with intermediate levels `mids` (len = steps − 1).
pub fn model_samples(spec: &ModelSpec, net: &Network, encoder: Option<&Network>, steps: usize, mids: &[f64], seed: u64, first: u64, n: usize, device: &Device) -> Result<Tensor> {
    if spec.is_denoiser() {
        let precond = Precond { kind: PrecondKind::Edm, ..spec.precond };
        heun_samples(net, precond, spec.sigma_max, steps, seed, first, n, &spec.sample_shape(), device)
    } else {
        consistency_samples(spec, net, encoder, &mids[..steps.saturating_sub(1).min(mids.len())], seed, first, n, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytic::GaussianMixture;

    /// Heun on the exact denoiser of the two-Gaussians toy puts every sample on a mode, and
    /// uses 2·steps − 1 evaluations.
    #[test]
    fn heun_with_the_ideal_denoiser_lands_on_the_modes() {
        let dev = Device::Cpu;
        let g = GaussianMixture::two_gaussians();
        let z = per_sample_normal(0, "sample", 0, 2000, &[2], &dev).unwrap();
        let calls = std::cell::Cell::new(0);
        let d = |x: &Tensor, s: &[f64]| {
            calls.set(calls.get() + 1);
            g.denoise(x, s)
        };
        let x = ode::solve(&d, Solver::Heun, &ode::sampling_grid(0.002, 80.0, 18), &z).unwrap();
        assert_eq!(calls.get(), 35);
        let pts: Vec<[f64; 2]> = x.to_vec2::<f32>().unwrap().iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
        let c = crate::metrics::toy::mode_coverage(&pts, &[[0.0, 0.5], [0.0, -0.5]], 0.1);
        assert_eq!(c.near, 1.0);
        assert!(c.per_mode.iter().all(|&f| (f - 0.5).abs() < 0.03), "{c:?}");
    }
}
