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

/// Guidance by a weaker model of the same kind (Karras et al. 2024, "Guiding a diffusion model
/// with a bad version of itself"; SCT guides with earlier EMA snapshots): every evaluation
/// becomes f_w = f_weak + w·(f − f_weak), computed as w·f + (1 − w)·f_weak so that w = 1 gives
/// the model and w = 0 the weak one exactly.
pub struct Guide<'a> {
    pub spec: &'a ModelSpec,
    pub net: &'a Network,
    pub w: f64,
}

/// One evaluation of a consistency model at per-sample levels (detached: the weights are
/// variables, and an undetached chain would keep every intermediate of every step alive).
fn evaluate(spec: &ModelSpec, net: &Network, guide: Option<&Guide>, labels: Option<&Tensor>, x: &Tensor, sigmas: &[f64]) -> Result<Tensor> {
    let f = spec.precond.apply_cond(net, x, sigmas, labels, Phase::Eval, &mut Dropout::off())?.detach();
    match guide {
        None => Ok(f),
        Some(g) => {
            let weak = g.spec.precond.apply_cond(g.net, x, sigmas, labels, Phase::Eval, &mut Dropout::off())?.detach();
            (f * g.w)?.add(&(weak * (1.0 - g.w))?)
        }
    }
}

/// The class labels of samples `first..first + n` of a model conditioned on `classes` classes
/// (none for an unconditional one): all `class`, or sample i of class i mod classes, so that
/// any n draws the classes evenly and sample i is the same whatever its batch.
pub fn sample_labels(classes: usize, class: Option<u32>, first: u64, n: usize, device: &Device) -> Result<Option<Tensor>> {
    if classes == 0 {
        return Ok(None);
    }
    let labels: Vec<u32> = (0..n as u64).map(|i| class.unwrap_or(((first + i) % classes as u64) as u32)).collect();
    crate::nn::one_hot(&labels, classes, device).map(Some)
}

/// Samples from a consistency model: 1 step from σ_max, then one step per level in `mids`
/// (2-step sampling: `mids = [σ_mid]`). Each extra step re-noises the estimate to the level
/// (x̂ + σ·z, ECT's convention; VCT draws z from its encoder at x̂ and uses its kernel).
/// A phased model instead takes one deterministic evaluation per phase, from σ_max down the
/// edges (each maps its phase's upper edge to the lower one), and ignores `mids`.
#[allow(clippy::too_many_arguments)]
pub fn consistency_samples(
    spec: &ModelSpec,
    net: &Network,
    encoder: Option<&Network>,
    guide: Option<&Guide>,
    mids: &[f64],
    seed: u64,
    first: u64,
    n: usize,
    class: Option<u32>,
    device: &Device,
) -> Result<Tensor> {
    let labels = sample_labels(spec.network.label_dim(), class, first, n, device)?;
    let labels = labels.as_ref();
    let shape = spec.sample_shape();
    let kernel = spec.kernel.kernel();
    let z = per_sample_normal(seed, "sample", first, n, &shape, device)?;
    let x = kernel.noisy(&z.zeros_like()?, &z, &vec![spec.sigma_max; n])?;
    if let Some(edges) = spec.precond.edges() {
        return phased_walk(&edges, x, |x, sigma| evaluate(spec, net, guide, labels, x, &vec![sigma; n]));
    }
    let mut xhat = evaluate(spec, net, guide, labels, &x, &vec![spec.sigma_max; n])?;
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
        xhat = evaluate(spec, net, guide, labels, &x, &vec![sigma; n])?;
    }
    Ok(xhat)
}

/// A phased model's sampler: from s_M down, one evaluation at each upper edge s_{m+1}, which
/// the model maps to s_m (precond.rs); M evaluations in all.
pub fn phased_walk(edges: &[f64], x: Tensor, mut eval: impl FnMut(&Tensor, f64) -> Result<Tensor>) -> Result<Tensor> {
    let mut x = x;
    for m in (0..edges.len() - 1).rev() {
        x = eval(&x, edges[m + 1])?;
    }
    Ok(x)
}

/// EDM's deterministic sampler on a trained denoiser: Heun steps on the Karras grid of `steps`
/// levels from σ_max to σ_min, then to 0; 2·steps − 1 evaluations. `labels`: one-hot classes
/// of a conditional denoiser.
#[allow(clippy::too_many_arguments)]
pub fn heun_samples(denoiser: &Network, precond: Precond, sigma_max: f64, steps: usize, seed: u64, first: u64, n: usize, shape: &[usize], labels: Option<&Tensor>, device: &Device) -> Result<Tensor> {
    let z = per_sample_normal(seed, "sample", first, n, shape, device)?;
    heun_from(denoiser, precond, sigma_max, steps, labels, &z)
}

/// The Heun sampler from given initial noise (sampled at unit scale).
pub fn heun_from(denoiser: &Network, precond: Precond, sigma_max: f64, steps: usize, labels: Option<&Tensor>, z: &Tensor) -> Result<Tensor> {
    let d = NetDenoiser { net: denoiser, precond, labels };
    ode::solve(&d, Solver::Heun, &ode::sampling_grid(precond.sigma_min, sigma_max, steps), z)
}

/// Samples for a trained model: its ODE solver if it is a denoiser (`steps` Heun levels),
/// else `steps` consistency steps with intermediate levels `mids` (len = steps − 1), or one
/// per phase for a phased model; guided by a weaker model when `guide` is given.
#[allow(clippy::too_many_arguments)]
pub fn model_samples(spec: &ModelSpec, net: &Network, encoder: Option<&Network>, guide: Option<&Guide>, steps: usize, mids: &[f64], seed: u64, first: u64, n: usize, class: Option<u32>, device: &Device) -> Result<Tensor> {
    if spec.is_denoiser() {
        let precond = Precond { kind: PrecondKind::Edm, ..spec.precond };
        let labels = sample_labels(spec.network.label_dim(), class, first, n, device)?;
        heun_samples(net, precond, spec.sigma_max, steps, seed, first, n, &spec.sample_shape(), labels.as_ref(), device)
    } else {
        consistency_samples(spec, net, encoder, guide, &mids[..steps.saturating_sub(1).min(mids.len())], seed, first, n, class, device)
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

    /// A phased sampler takes one evaluation per phase, at the upper edges from σ_max down.
    /// With the closed-form denoiser of the two-Gaussians toy inside the phased
    /// parameterisation each step is a DDIM (Euler) jump to the lower edge: one phase lands on
    /// the data's mean, many land on the modes.
    #[test]
    fn phased_sampling_evaluates_once_per_phase() {
        let dev = Device::Cpu;
        let g = GaussianMixture::two_gaussians();
        for m in [1usize, 2, 4, 64] {
            let edges = crate::schedule::phase_edges(m, 0.002, 80.0);
            let z = (per_sample_normal(0, "sample", 0, 2000, &[2], &dev).unwrap() * 80.0).unwrap();
            let mut seen = Vec::new();
            let x = phased_walk(&edges, z, |x, sigma| {
                seen.push(sigma);
                let lower = edges[crate::schedule::phase_of(&edges, sigma)];
                let d = g.denoise(x, &vec![sigma; 2000])?;
                // f = D + (s_m/σ)(x − D)
                d.add(&((x - &d)? * (lower / sigma))?)
            })
            .unwrap();
            let mut want: Vec<f64> = edges[1..].to_vec();
            want.reverse();
            assert_eq!(seen, want, "{m} phases");
            let pts: Vec<[f64; 2]> = x.to_vec2::<f32>().unwrap().iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
            let c = crate::metrics::toy::mode_coverage(&pts, &[[0.0, 0.5], [0.0, -0.5]], 0.1);
            if m == 1 {
                assert_eq!(c.near, 0.0, "{c:?}");
            } else if m == 64 {
                assert!(c.near > 0.99, "{m} phases: {c:?}");
            }
        }
    }

    /// Guidance with w = 1 is the model and with w = 0 the guide, exactly; w = 2 extrapolates
    /// 2f − f_weak (to f32 rounding).
    #[test]
    fn guidance_limits() {
        let dev = Device::Cpu;
        let kind = crate::data::schema::SampleKind::Points { dim: 2 };
        let cfg = crate::nn::preset("mlp-small", kind, 1, None).unwrap();
        let (a, b) = (crate::model::Weights::init(&cfg, 1, &dev).unwrap(), crate::model::Weights::init(&cfg, 2, &dev).unwrap());
        let precond = Precond { kind: PrecondKind::Ect, sigma_data: 0.5, sigma_min: 0.003, t_max: 5.0, phases: Some(2) };
        let spec = ModelSpec {
            format: crate::model::MODEL_FORMAT,
            method: "sct".into(),
            schedule: "ect".into(),
            network: cfg,
            encoder: None,
            precond,
            kernel: crate::methods::spec::KernelSpec::Ve,
            sigma_max: 5.0,
            sigma_mid: 0.821,
            data: kind,
            dataset: "test".into(),
            parameters: 0,
            steps: 0,
        };
        let sample = |net: &Network, guide: Option<&Guide>| consistency_samples(&spec, net, None, guide, &[], 3, 0, 64, None, &dev).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (fa, fb) = (sample(&a.net, None), sample(&b.net, None));
        assert_ne!(fa, fb);
        assert_eq!(sample(&a.net, Some(&Guide { spec: &spec, net: &b.net, w: 1.0 })), fa);
        assert_eq!(sample(&a.net, Some(&Guide { spec: &spec, net: &b.net, w: 0.0 })), fb);
        // One phase's worth: at M = 1 the guided result is one evaluation, 2f − f_weak.
        let one = ModelSpec { precond: Precond { phases: Some(1), ..precond }, ..spec.clone() };
        let s1 = |net: &Network, guide: Option<&Guide>| consistency_samples(&one, net, None, guide, &[], 3, 0, 64, None, &dev).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (f1, w1) = (s1(&a.net, None), s1(&b.net, None));
        let g2 = s1(&a.net, Some(&Guide { spec: &one, net: &b.net, w: 2.0 }));
        for ((g, f), w) in g2.iter().zip(&f1).zip(&w1) {
            assert!((g - (2.0 * f - w)).abs() < 1e-4, "{g} vs {}", 2.0 * f - w);
        }
    }
}
