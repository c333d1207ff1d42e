//! The probability-flow ODE of a denoiser, dx/dσ = (x − D(x, σ))/σ (EDM's form with s(t) = 1,
//! σ(t) = t), and its solvers: one Euler or Heun step between two noise levels, and EDM's
//! deterministic sampler (Karras et al. 2022, Algorithm 1 with S_churn = 0) along a grid.
//!
//! One step function serves the teacher's own sampler (one level for the whole batch) and
//! consistency distillation (one pair of levels per sample), so the ODE step a student is
//! distilled from is the one the teacher samples with.

use crate::nn::dropout::Dropout;
use crate::nn::Network;
use crate::precond::{per_sample, Phase, Precond};
use crate::schedule::karras_sigmas;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// D(x, σ): the denoised estimate of x at noise level σ, one σ per sample. A trained network
/// (through its preconditioning), the closed form of a Gaussian mixture, or any closure.
pub trait Denoiser {
    fn denoise(&self, x: &Tensor, sigmas: &[f64]) -> Result<Tensor>;
    /// The same for one-hot class `labels`; an unconditional denoiser ignores them.
    fn denoise_labels(&self, x: &Tensor, sigmas: &[f64], labels: Option<&Tensor>) -> Result<Tensor> {
        let _ = labels;
        self.denoise(x, sigmas)
    }
}

/// A denoiser with the batch's class labels attached (CD's teacher step for a conditional
/// teacher).
pub struct Labelled<'a> {
    pub inner: &'a dyn Denoiser,
    pub labels: Option<&'a Tensor>,
}

impl Denoiser for Labelled<'_> {
    fn denoise(&self, x: &Tensor, sigmas: &[f64]) -> Result<Tensor> {
        self.inner.denoise_labels(x, sigmas, self.labels)
    }
}

impl<F: Fn(&Tensor, &[f64]) -> Result<Tensor>> Denoiser for F {
    fn denoise(&self, x: &Tensor, sigmas: &[f64]) -> Result<Tensor> {
        self(x, sigmas)
    }
}

/// A network with its preconditioning as a denoiser: evaluation phase, no dropout, no
/// gradient (a teacher is never trained through).
pub struct NetDenoiser<'a> {
    pub net: &'a Network,
    pub precond: Precond,
    /// One-hot class labels for a conditional network.
    pub labels: Option<&'a Tensor>,
}

impl Denoiser for NetDenoiser<'_> {
    fn denoise(&self, x: &Tensor, sigmas: &[f64]) -> Result<Tensor> {
        self.denoise_labels(x, sigmas, self.labels)
    }

    fn denoise_labels(&self, x: &Tensor, sigmas: &[f64], labels: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.precond.apply_cond(self.net, x, sigmas, labels, Phase::Eval, &mut Dropout::off())?.detach())
    }
}

/// The ODE solver of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Solver {
    /// First order: one denoiser evaluation.
    Euler,
    /// Second order (Heun's trapezoidal correction): two evaluations; Euler when stepping to 0.
    Heun,
}

/// Noise levels, one per sample, multiplying a batch. When every sample has the same level the
/// product is a scalar one (the sampler's case), computed exactly as a scalar.
fn scale(t: &Tensor, levels: &[f64]) -> Result<Tensor> {
    if levels.iter().all(|&v| v == levels[0]) {
        t * levels[0]
    } else {
        t.broadcast_mul(&per_sample(levels, t)?)
    }
}

fn slope(d: &dyn Denoiser, x: &Tensor, sigmas: &[f64]) -> Result<Tensor> {
    let diff = (x - d.denoise(x, sigmas)?)?;
    if sigmas.iter().all(|&v| v == sigmas[0]) {
        diff / sigmas[0]
    } else {
        diff.broadcast_div(&per_sample(sigmas, &diff)?)
    }
}

/// One step of the PF-ODE from level `hi` to level `lo` (per sample, hi > lo ≥ 0). Heun needs
/// lo > 0 for every sample or lo = 0 for every sample (then it is an Euler step, as in EDM).
pub fn step(d: &dyn Denoiser, solver: Solver, x: &Tensor, hi: &[f64], lo: &[f64]) -> Result<Tensor> {
    let gap: Vec<f64> = hi.iter().zip(lo).map(|(h, l)| l - h).collect();
    let s1 = slope(d, x, hi)?;
    let euler = (x + scale(&s1, &gap)?)?;
    let to_zero = lo.iter().filter(|&&l| l <= 0.0).count();
    if solver == Solver::Euler || to_zero == lo.len() {
        return Ok(euler);
    }
    if to_zero > 0 {
        candle_core::bail!("a Heun step needs every target level above 0 or every one at 0");
    }
    let s2 = slope(d, &euler, lo)?;
    let half_gap: Vec<f64> = gap.iter().map(|g| 0.5 * g).collect();
    x + scale(&(s1 + s2)?, &half_gap)?
}

/// EDM's sampling grid: `levels` Karras levels (ρ = 7) from σ_max down to σ_min, then 0.
pub fn sampling_grid(sigma_min: f64, sigma_max: f64, levels: usize) -> Vec<f64> {
    let mut grid = karras_sigmas(levels.max(2), sigma_min, sigma_max, 7.0);
    grid.reverse();
    grid.push(0.0);
    grid
}

/// Solve the PF-ODE along `grid` (descending, ending at 0) from x = grid[0]·z: with Heun,
/// 2·(len − 1) − 1 denoiser evaluations.
pub fn solve(d: &dyn Denoiser, solver: Solver, grid: &[f64], z: &Tensor) -> Result<Tensor> {
    let n = z.dim(0)?;
    let mut x = (z * grid[0])?;
    for pair in grid.windows(2) {
        x = step(d, solver, &x, &vec![pair[0]; n], &vec![pair[1]; n])?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests;
